"""``ewoksxpcs benchmark --suite memory``: peak anonymous memory of ``ewoksxpcs run`` against
the number of frames, on every CPU path.

Each case writes an HDF5 scan (``(Nt, Ny, Nx)`` uint8, bitshuffle-LZ4, one chunk per frame,
Poisson counts of a given mean: 0.05 = sparse, 2 = dense) and a ring q-mask, runs
``python -m ewoksxpcs run`` with defaults plus the path's own flags in a subprocess, and samples
the child's ``RssAnon`` (/proc/<pid>/status) every few milliseconds from a thread of this
process: the peak of anonymous resident memory, which temporary files mapped in memory
(:mod:`ewoksxpcs.engine.spill`) do not count. The slope between frame counts is the figure of merit
(issue 10: below 10 MB per 1 000 frames).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence

import numpy

__all__ = ["PATHS", "write_scan", "ring_qmask", "peak_rss_anon", "run_memory_suite"]

#: path name -> (extra ``ewoksxpcs run`` arguments, mean counts of its data)
PATHS: Dict[str, tuple] = {
    "auto sparse": ([], 0.05),  # defaults only: what auto picks on this machine
    "auto dense": ([], 2.0),
    "cpu-events": (["--method", "cpu-events"], 0.05),  # numba compaction to events
    "fft spill": (["--method", "fft", "--option", "max_memory=1048576"], 0.05),
    "fft sparse": (["--method", "fft"], 0.05),
    "fft dense": (["--method", "fft"], 2.0),
    "compaction+fft": (["--method", "fft", "--events-file", "{workdir}/events.h5"], 0.05),
    "matmul dense": (["--method", "matmul"], 2.0),
    "multitau": (["--mode", "multitau", "--method", "numpy"], 0.05),
    "twotime": (["--mode", "twotime", "--method", "numpy"], 0.05),
}
FRAMES = (5000, 10000, 20000, 40000)


def ring_qmask(shape, n_bins: int = 10) -> numpy.ndarray:
    """Label image of ``n_bins`` rings around the centre, (Ny, Nx) int32 (0 outside)."""
    ny, nx = shape
    y, x = numpy.mgrid[:ny, :nx]
    r = numpy.hypot(y - ny / 2, x - nx / 2)
    labels = 1 + (r / (r.max() / n_bins)).astype(numpy.int32)
    labels[labels > n_bins] = 0
    return labels


def write_scan(filename: str, n_frames: int, shape=(256, 256), mean_counts: float = 0.05,
               seed: int = 0, block: int = 500) -> str:
    """Write Poisson frames to ``filename::/data`` (uint8, bitshuffle-LZ4), streaming."""
    import h5py
    import hdf5plugin

    rng = numpy.random.default_rng(seed)
    with h5py.File(filename, "w") as f:
        d = f.create_dataset("data", shape=(n_frames,) + tuple(shape), dtype=numpy.uint8,
                             chunks=(1,) + tuple(shape), **hdf5plugin.Bitshuffle(cname="lz4"))
        for t0 in range(0, n_frames, block):
            t1 = min(n_frames, t0 + block)
            d[t0:t1] = numpy.minimum(rng.poisson(mean_counts, (t1 - t0,) + tuple(shape)), 255)
    return filename


def _rss_anon(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_rss_anon(command: Sequence[str], env: Optional[dict] = None,
                  interval: float = 0.005, timeout: Optional[float] = None) -> dict:
    """Run ``command``; return ``peak_rss_anon`` (bytes), ``seconds``, ``returncode``,
    ``stderr`` (last lines). RssAnon is sampled every ``interval`` s by a thread."""
    proc = subprocess.Popen(list(command), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            value = _rss_anon(proc.pid)
            if value is not None and value > peak[0]:
                peak[0] = value
            time.sleep(interval)

    t0 = time.perf_counter()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    sampler.join()
    return {"peak_rss_anon": peak[0], "seconds": time.perf_counter() - t0,
            "returncode": proc.returncode, "stderr": "\n".join(err.strip().splitlines()[-3:])}


def run_memory_suite(paths: Optional[Sequence[str]] = None, frames: Sequence[int] = FRAMES,
                     shape=(256, 256), workdir: Optional[str] = None, out=sys.stdout,
                     max_memory: Optional[int] = None, timeout: Optional[float] = None) -> List[dict]:
    """Peak RssAnon of ``ewoksxpcs run`` per path and frame count, and the slope (MB per 1 000
    frames) between consecutive counts; ``max_memory`` sets ``EWOKSXPCS_MAX_MEMORY``."""
    paths = list(paths or PATHS)
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        raise ValueError(f"unknown memory paths {unknown}; valid: {', '.join(PATHS)}")
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="ewoksxpcs-memory-")
    os.makedirs(workdir, exist_ok=True)
    qmask = os.path.join(workdir, "qmask.npy")
    numpy.save(qmask, ring_qmask(shape))
    env = dict(os.environ)
    if max_memory is not None:
        env["EWOKSXPCS_MAX_MEMORY"] = str(int(max_memory))
    rows = []
    print(f"{'path':16s} {'frames':>7s} {'peak RssAnon MB':>16s} {'MB/1000 frames':>15s} "
          f"{'time s':>7s}", file=out)
    try:
        for counts in sorted({PATHS[p][1] for p in paths}):
            for nt in frames:
                scan = os.path.join(workdir, f"scan_{counts:g}_{nt}.h5")
                if not os.path.exists(scan):
                    write_scan(scan, nt, shape, counts)
                for name in paths:
                    flags, c = PATHS[name]
                    if c != counts:
                        continue
                    result = os.path.join(workdir, "result.h5")
                    cmd = [sys.executable, "-m", "ewoksxpcs", "run", f"{scan}::/data",
                           "--qmask", qmask, "-o", result, "--overwrite", "--no-plot", "-q",
                           *[f.format(workdir=workdir) for f in flags]]
                    r = peak_rss_anon(cmd, env=env, timeout=timeout)
                    prev = [x for x in rows if x["path"] == name]
                    slope = None
                    if prev:
                        slope = ((r["peak_rss_anon"] - prev[-1]["peak_rss_anon"]) / 1e6
                                 / ((nt - prev[-1]["frames"]) / 1000))
                    row = {"path": name, "frames": nt, "shape": list(shape), "counts": counts,
                           "peak_rss_anon": r["peak_rss_anon"], "slope_mb_per_1000": slope,
                           "seconds": r["seconds"], "returncode": r["returncode"],
                           "note": r["stderr"] if r["returncode"] else ""}
                    rows.append(row)
                    print(f"{name:16s} {nt:7d} {r['peak_rss_anon'] / 1e6:16.0f} "
                          f"{'' if slope is None else f'{slope:15.1f}':>15s} "
                          f"{r['seconds']:7.1f} {row['note']}", file=out)
                    out.flush()
                os.remove(scan)
    finally:
        if own:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return rows
