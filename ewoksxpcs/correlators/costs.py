"""Cost model of the correlation methods, per machine kind: what ``auto`` compares.

The estimated time of a method is a sum of terms, each a constant (seconds per unit) times a
feature of the data (:func:`features`)::

    t(method) = Σ_f  COSTS[machine][mode][method][f] · feature_f(data)

Features (P: binned pixels, F: pixels of a frame, Nt: frames, λ: occupancy, the fraction of
non-zero pixel-frames, nT: time bins of a two-time map):

``frame_pixels``      F·Nt, every pixel of every frame read (file read, decode, compaction);
``frames``            Nt, per-frame work of any size (kernel launches, per-frame calls);
``pixel_frames``      P·Nt, binned pixel-frames (dense streaming work);
``pixel_frames_log``  P·Nt·log2(2·Nt) (FFT per pixel);
``pixel_frames_sq``   P·Nt² (all-lag products of dense frames: BLAS, OpenCL dense);
``events``            λ·P·Nt, binned events;
``pairs``             P·(k² + 2k)/2 with k = λ·Nt: event pairs i <= j of a pixel (Poisson);
``map_elements``      P·nT², two-time products;
``fixed``             1: set-up of the method (threads, kernels, buffers).

A method is one entry of ``COSTS[machine][mode]``: a backend added later (e.g. a CPU events
backend) needs one entry per mode and per machine kind it runs on, nothing else. A method absent
from a machine's table is never chosen there.

Machine kinds: ``cpu`` (no OpenCL GPU: NumPy/FFT methods, and OpenCL methods on a CPU OpenCL
device such as PoCL) and ``gpu`` (an OpenCL GPU present). The constants of ``cpu`` were measured
on the 2-core development machine (Intel Xeon, 2 logical CPUs, PoCL, quiet) by ``ewoksxpcs
benchmark --suite costs`` (run recorded in ``doc/benchmarks/cpu_2core_costs_session5.json``,
2026-12-02). The ``gpu`` constants of the OpenCL methods and of ``fft`` were measured on one
H200 (16 cores) by the same suite (``doc/benchmarks/h200_costs_gpu_session7.json``); the CPU
methods never chosen there keep estimates from the earlier records.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

__all__ = ["COSTS", "MACHINE_KINDS", "features", "estimate", "machine_kind"]

#: mode -> method -> feature -> seconds per unit, per machine kind.
COSTS: Dict[str, Dict[str, Dict[str, Dict[str, float]]]] = {
    # Measured (session 5): ewoksxpcs benchmark --suite costs --device cpu on the 2-core Intel
    # Xeon, quiet (PoCL; earlier constants came from a machine shared with other jobs, 5-10x
    # slower), fitted on 5 bitshuffle-LZ4 scans (256x256x2000 at 0.01 counts, 256x256x1000 at
    # 0.002, 128x128x1000 at 0.5, 48x48x4000 at 0.2, 512x512x1000 at 0.01); rows in
    # doc/benchmarks/cpu_2core_costs_session5.json. The read term (CPU decode, or PoCL decode +
    # compaction) is inside the fitted constants. PoCL's opencl-events pays per frame and gains
    # with large frames: slower than cpu-events at 256x256, faster at 512x512. The fixed
    # terms of fft and cpu-events add what a new `ewoksxpcs run` process pays for them beyond
    # opencl-events (the suite times warm calls): +0.13 s (fft) and +0.22 s (cpu-events: numba),
    # medians of 7 paired runs of a 64x64x200 scan (farm-bench, same machine).
    "cpu": {
        "linear": {
            "fft": {"frame_pixels": 7.45e-09, "frames": 1.6e-05, "pixel_frames_log": 0.0,
                    "fixed": 0.272},
            "matmul": {"frame_pixels": 6.04e-09, "frames": 0.000214, "pixel_frames_sq": 3.85e-12,
                       "fixed": 0.0},
            "opencl-events": {"frame_pixels": 1.68e-09, "frames": 0.0, "pairs": 2.69e-10,
                              "fixed": 0.189},
            "opencl-dense": {"frame_pixels": 2.51e-09, "frames": 0.000192,
                             "pixel_frames_sq": 4.63e-11, "fixed": 0.0},
            "cpu-events": {"frame_pixels": 2.42e-09, "frames": 0.0, "pairs": 6.53e-10,
                           "fixed": 0.22},
        },
        "multitau": {
            "numpy": {"frame_pixels": 4.09e-09, "pixel_frames": 0.0, "fixed": 0.0561},
            "opencl-events": {"frame_pixels": 2.57e-09, "events": 3.82e-08, "fixed": 0.143},
            "opencl": {"frame_pixels": 7.56e-09, "pixel_frames": 0.0, "fixed": 0.231},
        },
        # No OpenCL two-time on a CPU device: 26-51x slower than NumPy there (issue 10).
        "twotime": {
            "numpy": {"frame_pixels": 0.0, "pixel_frames": 0.0, "map_elements": 1.13e-11,
                      "fixed": 0.171},
        },
    },
    # One H200 (16 cores). Measured (session 7): ewoksxpcs benchmark --suite costs --device gpu
    # --scale 10 --methods opencl-events opencl-dense opencl fft, fitted on 5 bitshuffle-LZ4
    # scans (256x256x20 000 at 0.01 counts, 256x256x10 000 at 0.002, 128x128x10 000 at 0.5,
    # 48x48x40 000 at 0.2, 512x512x10 000 at 0.01); rows in
    # doc/benchmarks/h200_costs_gpu_session7.json. The two-time cases' maps (10 bins x 10 000^2
    # at most) cost too little next to the fixed and per-event terms for the fit to give them
    # a weight (0 for both OpenCL methods: they share that cost). Still ESTIMATES (not timed
    # there: never chosen on that machine), from the earlier records: matmul (linear) and the
    # NumPy multi-tau and two-time, the 2-core constants / 6 (16 unloaded cores).
    "gpu": {
        "linear": {
            "fft": {"frame_pixels": 0.0, "pixel_frames_log": 3.42e-10, "fixed": 1.09},
            "matmul": {"frame_pixels": 9e-11, "pixel_frames_sq": 2.0e-11, "fixed": 0.01},
            "opencl-events": {"frame_pixels": 1.21e-11, "pairs": 2.45e-12, "fixed": 0.167},
            "opencl-dense": {"frame_pixels": 2.46e-10, "pixel_frames_sq": 1.11e-13,
                             "fixed": 0.7},
        },
        "multitau": {
            "numpy": {"frame_pixels": 9e-11, "pixel_frames": 8.0e-9, "fixed": 0.01},
            "opencl-events": {"frame_pixels": 1.95e-11, "events": 3.06e-10, "fixed": 0.186},
            "opencl": {"frame_pixels": 4.77e-10, "pixel_frames": 0.0, "fixed": 1.06},
        },
        "twotime": {
            "numpy": {"frame_pixels": 9e-11, "pixel_frames": 2.0e-9, "map_elements": 2.0e-11,
                      "fixed": 0.01},
            "opencl-events": {"frame_pixels": 6.69e-11, "events": 3.73e-10,
                              "map_elements": 0.0, "fixed": 0.429},
            "opencl": {"frame_pixels": 0.0, "pixel_frames": 4.41e-10, "map_elements": 0.0,
                       "fixed": 1.34},
        },
    },
}

MACHINE_KINDS = tuple(COSTS)


def machine_kind(device_kind: Optional[str]) -> str:
    """The cost table of a machine whose chosen OpenCL device is ``device_kind`` (None: none)."""
    return "gpu" if device_kind in ("gpu", "accelerator") else "cpu"


def features(n_frames: int, frame_pixels: int, binned_pixels: int, occupancy: float,
             n_time_bins: Optional[int] = None) -> Dict[str, float]:
    """The features of the module docstring for data of these sizes (floats)."""
    nt = float(max(int(n_frames), 1))
    p = float(binned_pixels)
    k = float(occupancy) * nt
    n_t = float(n_time_bins if n_time_bins is not None else nt)
    return {
        "frame_pixels": float(frame_pixels) * nt,
        "frames": nt,
        "pixel_frames": p * nt,
        "pixel_frames_log": p * nt * math.log2(2.0 * nt),
        "pixel_frames_sq": p * nt * nt,
        "events": p * k,
        "pairs": p * (k * k + 2.0 * k) / 2.0,
        "map_elements": p * n_t * n_t,
        "fixed": 1.0,
    }


def estimate(machine: str, mode: str, method: str, feats: Dict[str, float]) -> Optional[float]:
    """Estimated seconds of ``method`` in ``mode`` on ``machine``; None if it has no entry."""
    entry = COSTS.get(machine, {}).get(mode, {}).get(method)
    if entry is None:
        return None
    return float(sum(c * feats[f] for f, c in entry.items()))
