"""Cost model of the correlation methods, per machine kind: what ``auto`` compares.

The estimated time of a method is a sum of terms, each a constant (seconds per unit) times a
feature of the data (:func:`features`)::

    t(method) = Σ_f  COSTS[machine][mode][method][f] · feature_f(data)

Features (P: binned pixels, F: pixels of a frame, Nt: frames, λ: occupancy, the fraction of
non-zero pixel-frames, nT: time bins of a two-time map):

``frame_pixels``      F·Nt, every pixel of every frame read (file read, decode, compaction);
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
on the 2-core development machine (Intel Xeon, 2 logical CPUs, PoCL 6; shared with other jobs,
so within a factor ~1.5) by ``ewoksxpcs benchmark --suite costs`` (run recorded in
``doc/benchmarks/cpu_2core_costs.json``, 2026-12-02). The ``gpu`` constants are ESTIMATES for
one H200 derived from the records in ``doc/benchmarks`` (``h200_e2e*.json``, ``h200_gpu_suite``):
the lead replaces them with ``ewoksxpcs benchmark --suite costs`` on the device.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

__all__ = ["COSTS", "MACHINE_KINDS", "features", "estimate", "machine_kind"]

#: mode -> method -> feature -> seconds per unit, per machine kind.
COSTS: Dict[str, Dict[str, Dict[str, Dict[str, float]]]] = {
    # Measured: ewoksxpcs benchmark --suite costs --device cpu (2-core Xeon, PoCL, shared with
    # 7 other developers' jobs: times within a factor ~2), fitted on 4 bitshuffle-LZ4 scans
    # (256x256x2000 at 0.01 counts, 256x256x1000 at 0.002, 128x128x1000 at 0.5, 48x48x4000
    # at 0.2); rows in doc/benchmarks/cpu_2core_costs.json. The read term (CPU decode, or
    # PoCL decode + compaction) is inside the fitted constants.
    "cpu": {
        "linear": {
            "fft": {"frame_pixels": 0.0, "pixel_frames_log": 4.56e-09, "fixed": 1.11},
            "matmul": {"frame_pixels": 0.0, "pixel_frames_sq": 5.53e-11, "fixed": 3.12},
            "opencl-events": {"frame_pixels": 4.57e-08, "pairs": 3.44e-09, "fixed": 0.0},
            "opencl-dense": {"frame_pixels": 0.0, "pixel_frames_sq": 4.72e-10, "fixed": 0.0},
            # cpu-events (issue 16): pairs at 0.7x opencl-events' constant, the ratio of their
            # times in one run of `benchmark --suite cpu` on the 2-core AMD EPYC machine (loaded:
            # 5.06 vs 6.37 s at 0.01 counts, 14.6 vs 24.8 s at 0.1 counts, 512x512 px;
            # doc/benchmarks/cpu_suite_2core.txt); the read term as opencl-events' (reading and
            # decoding the file dominates; numba's compaction of frames in memory: 3.8e-8 s).
            "cpu-events": {"frame_pixels": 4.57e-08, "pairs": 2.4e-09, "fixed": 0.0},
        },
        "multitau": {
            "numpy": {"frame_pixels": 1.44e-07, "pixel_frames": 0.0, "fixed": 0.808},
            "opencl-events": {"frame_pixels": 6.13e-08, "events": 4.1e-07, "fixed": 0.0},
            "opencl": {"frame_pixels": 6.58e-08, "pixel_frames": 0.0, "fixed": 1.44},
        },
        # No OpenCL two-time on a CPU device: 26-51x slower than NumPy there (issue 10).
        "twotime": {
            "numpy": {"frame_pixels": 0.0, "pixel_frames": 0.0, "map_elements": 2.48e-10,
                      "fixed": 0.0},
        },
    },
    # ESTIMATES for one H200 (16 cores), to be replaced by a costs-suite run on the device.
    # Derived from doc/benchmarks: h200_e2e.json (Eiger 4M x 10 000 frames, 0.01 counts:
    # compaction from raw chunks 1.68 s for 4.5e10 pixel-frames -> 3.8e-11 s each; CPU decode on
    # 16 threads 2 516 frames/s -> 9e-11 s per pixel-frame; correlation 0.29 s);
    # h200_gpu_suite.txt (events 2.9e10 pairs/s at 0.01 and 6.7e11 at 0.1 counts -> 1.5e-11 s
    # per pair; multi-tau 512x1024x100 000 in 3.3 s -> 6e-11 s per binned pixel-frame;
    # two-time 10 bins x 519 020 pixels x 10 000^2 in 6.2 s -> 1.2e-13 s per map element).
    # Dense frames on the GPU: CPU decode + host->device at ~25 GB/s (2 bytes) -> 1.7e-10.
    # CPU methods: the 2-core constants / 6 (16 unloaded cores). Per-event multi-tau and
    # two-time costs: not measured, 1e-10 s per event (serial walk of a pixel's events).
    "gpu": {
        "linear": {
            "fft": {"frame_pixels": 9e-11, "pixel_frames_log": 2.0e-10, "fixed": 0.01},
            "matmul": {"frame_pixels": 9e-11, "pixel_frames_sq": 2.0e-11, "fixed": 0.01},
            "opencl-events": {"frame_pixels": 3.8e-11, "pairs": 1.5e-11, "fixed": 0.05},
            "opencl-dense": {"frame_pixels": 1.7e-10, "pixel_frames_sq": 1.5e-13, "fixed": 0.05},
        },
        "multitau": {
            "numpy": {"frame_pixels": 9e-11, "pixel_frames": 8.0e-9, "fixed": 0.01},
            "opencl-events": {"frame_pixels": 3.8e-11, "events": 1.0e-10, "fixed": 0.05},
            "opencl": {"frame_pixels": 1.7e-10, "pixel_frames": 6.0e-11, "fixed": 0.05},
        },
        "twotime": {
            "numpy": {"frame_pixels": 9e-11, "pixel_frames": 2.0e-9, "map_elements": 2.0e-11,
                      "fixed": 0.01},
            "opencl-events": {"frame_pixels": 3.8e-11, "events": 1.0e-10,
                              "map_elements": 1.2e-13, "fixed": 0.05},
            "opencl": {"frame_pixels": 1.7e-10, "pixel_frames": 1.0e-11,
                       "map_elements": 1.2e-13, "fixed": 0.05},
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
