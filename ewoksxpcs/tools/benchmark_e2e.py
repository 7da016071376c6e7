"""``ewoksxpcs benchmark --suite e2e``: an Eiger 4M scan file to a NeXus g2 file, wall clock.

Issue 4's end-to-end case: 10 000 frames of 2162×2068 uint16 pixels, bitshuffle-LZ4 HDF5 (one
chunk per frame, 1000 frames per data file and a Bliss-like master file with a virtual dataset,
as Lima writes them), on local disk → ``ewoksxpcs run`` (the ``workflows/xpcs.json`` graph through
the Ewoks engine: load, q-mask from the geometry, correlation ``opencl-events`` on the GPU, which
compacts the frames there from the raw compressed chunks, normalisation, NeXus + PNG) → the
result file. ``scale`` s multiplies the frame count and the pixel count by s.

Steps and figures
-----------------
generate_s
    Writing the scan (16 processes on the device machine) with :func:`ewoksxpcs.tools.synthetic_eiger.write_eiger_scan` (not part of the figure).
cold_s
    Wall time of the ``ewoksxpcs run`` process (Python start, imports, OpenCL kernels compiled
    for the first time on this machine, …, result file closed), after the page cache was dropped
    when that is allowed (``cache_dropped``) -- the data then come from the disk. The Python
    bytecode of the modules it imports is written beforehand (``bytecode``), as a regular
    installation has it.
warm_s
    The same command again: files in the page cache, compiled kernels in the driver's cache.
cli_profile
    The command once more under cProfile: its top functions by cumulative time.
profile
    In-process times of the library steps (load, q-mask, compaction with its read / device
    split, correlation, normalisation, saving) on the warm files.
peers
    Decompression throughput of the same files by h5py + hdf5plugin (one thread, as any h5py
    reader gets it) and by :func:`ewoksxpcs.io.hdf5chunks.decode_chunks_cpu` (all cores), each over
    ``peer_frames`` frames: the time a CPU decompression of the whole scan would take.
check
    The g2 of the result against the generator's truth ``1 + β ρ^(2τ)`` (its rings are the
    q bins; the module gaps are masked): median |z| over the rings and the first lags
    (z = difference / g2_err).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

import numpy

__all__ = ["run_e2e", "EIGER_4M"]

#: Eiger 4M frame shape (rows, columns).
EIGER_4M = (2162, 2068)


def _drop_caches() -> bool:
    """Drop the page cache (root only); whether it was done."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


#: Modules an ``ewoksxpcs run`` imports (some lazily), compiled to bytecode before the timing.
_RUN_MODULES = (
    "ewoksxpcs.app.cli", "ewoksxpcs.workflow.pipeline", "ewoksxpcs.tasks.load_frames",
    "ewoksxpcs.tasks.build_qmask", "ewoksxpcs.tasks.correlate", "ewoksxpcs.tasks.normalise",
    "ewoksxpcs.tasks.save_results", "ewoksxpcs.io.save", "ewoksxpcs.engine.fit", "ewoksxpcs.workflow.maskbin",
    "ewoksxpcs.opencl.compact", "ewoksxpcs.opencl.bslz4_decoder", "ewoksxpcs.io.hdf5chunks",
    "ewoksxpcs.correlators.opencl_events", "ewoks", "ewokscore", "hdf5plugin", "pyopencl",
    "scipy.fft", "scipy.optimize", "matplotlib.figure", "matplotlib.backends.backend_agg",
    "matplotlib.ticker",
)


def _compile_bytecode() -> dict:
    """Write the bytecode of the modules a run imports, as a regular ``pip install`` does.

    An editable install, or an environment with PYTHONDONTWRITEBYTECODE set (the device
    machine), otherwise compiles ~500 modules from source in every process: 1-2 s per run
    that no installed pipeline pays. Files in read-only directories are left as they are.
    """
    import py_compile
    from concurrent.futures import ThreadPoolExecutor

    code = ("import importlib, sys\n"
            f"for m in {_RUN_MODULES!r}:\n"
            "    try:\n        importlib.import_module(m)\n    except Exception:\n        pass\n"
            "print('\\n'.join(sorted({getattr(m, '__file__', None) or '' for m in "
            "list(sys.modules.values())})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    files = [f for f in proc.stdout.splitlines() if f.endswith(".py")]

    def one(f):
        try:
            py_compile.compile(f, doraise=True)
            return True
        except (OSError, py_compile.PyCompileError):
            return False

    t = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        done = sum(pool.map(one, files))
    return {"modules": len(files), "compiled": int(done), "seconds": time.perf_counter() - t,
            "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "")}


def _peer_decode(master: str, peer_frames: int, threads: int) -> dict:
    """Decompression rates (frames/s) of h5py+hdf5plugin (one thread) and our CPU threads."""
    import h5py
    import hdf5plugin  # noqa: F401  registers the bitshuffle filter

    from ..io.hdf5chunks import decode_chunks_cpu, read_chunks
    from ..io.load import load_frames

    source = load_frames(master)
    n = min(peer_frames, source.n_frames)
    out = {}
    with h5py.File(source.filename, "r") as f:
        dset = f[source.path]
        buf = numpy.empty((1,) + tuple(dset.shape[1:]), dtype=dset.dtype)
        t = time.perf_counter()
        for i in range(n):
            dset.read_direct(buf, numpy.s_[i: i + 1])
        out["h5py_fps"] = n / (time.perf_counter() - t)
    layout, reason = source.chunk_layout()
    if layout is not None:
        frames = numpy.empty((n,) + tuple(layout.frame_shape), dtype=layout.dtype)
        t = time.perf_counter()
        raw, offsets = read_chunks(layout, 0, n, threads=threads)
        t_read = time.perf_counter() - t
        decode_chunks_cpu(layout, raw, offsets, frames, threads=threads)
        out["cpu_threads_fps"] = n / (time.perf_counter() - t)
        out["cpu_read_fps"] = n / t_read
        out["cpu_threads"] = threads or os.cpu_count()
    else:
        out["cpu_threads_reason"] = reason
    out["frames"] = n
    return out


def _cli_profile(cmd, stats_file: str, top: int = 30) -> list:
    """The command once more under cProfile: its top functions by cumulative time."""
    import io
    import pstats

    t = time.perf_counter()
    proc = subprocess.run([cmd[0], "-m", "cProfile", "-o", stats_file] + cmd[1:],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        return [f"failed ({proc.returncode}): {proc.stderr[-2000:]}"]
    text = io.StringIO()
    pstats.Stats(stats_file, stream=text).sort_stats("cumulative").print_stats(top)
    lines = [ln for ln in text.getvalue().splitlines() if ln.strip()]
    return [f"wall {wall:.2f} s under cProfile"] + lines[-top - 1:]


def _profile(master, labels, gaps, device, max_device_memory) -> dict:
    """In-process times of the library steps (files warm)."""
    from ..opencl.compact import compact_opencl
    from ..correlators import create_correlator
    from ..io.load import load_frames
    from ..engine.qmask import Binning

    prof = {}
    t = time.perf_counter()
    source = load_frames(master)
    prof["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    binning = Binning(labels, bad_pixels=gaps, n_groups=16)
    prof["qmask_s"] = time.perf_counter() - t
    t = time.perf_counter()
    detail = {}
    events = compact_opencl(source, bad_pixels=gaps, device=device,
                            max_device_memory=max_device_memory, profile=detail)
    prof["compact_s"] = time.perf_counter() - t
    prof["compact_detail"] = detail
    prof["n_events"] = int(events.n_events)
    corr = create_correlator(binning, "opencl-events", device=device)
    t = time.perf_counter()
    result = corr.correlate(events)
    prof["correlate_normalise_s"] = time.perf_counter() - t
    prof["correlate_timings"] = result.info.get("timings", {})
    return prof


def run_e2e(workdir: Optional[str] = None, scale: float = 1.0, counts: float = 0.01,
            device: str = "gpu", processes: int = 0, keep: bool = False,
            peer_frames: int = 500, max_device_memory: Optional[int] = None,
            on_step=print) -> dict:
    """Generate the scan, time ``ewoksxpcs run`` on it (cold and warm), profile, check.

    Parameters
    ----------
    workdir : str, optional
        Directory for the scan and the results (default: a temporary directory, removed at the
        end unless ``keep``).
    scale : float
        Frames and pixels multiplied by ``scale`` (0 < scale <= 1).
    counts : float
        Mean photons per pixel per frame.
    device : str
        OpenCL device of our run.
    processes : int
        Processes writing the scan (0: one per CPU).
    peer_frames : int
        Frames decompressed by the CPU peers.
    max_device_memory : int, optional
        Device memory budget of the compaction and the correlation (bytes).

    Returns
    -------
    dict
        The figures of the module docstring, plus sizes.
    """
    from .synthetic_eiger import read_eiger_truth, write_eiger_scan

    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    n_frames = max(20, int(round(10000 * scale)))
    side = scale**0.5
    shape = (max(64, int(EIGER_4M[0] * side)), max(64, int(EIGER_4M[1] * side)))
    own = workdir is None
    workdir = tempfile.mkdtemp(prefix="ewoksxpcs-e2e-") if own else workdir
    os.makedirs(workdir, exist_ok=True)
    row = {"frames": n_frames, "shape": list(shape), "counts": counts, "device": device}
    try:
        t = time.perf_counter()
        master = write_eiger_scan(os.path.join(workdir, "scan"), n_frames=n_frames, shape=shape,
                                  counts=counts, processes=processes,
                                  frames_per_file=max(1, -(-n_frames // 16)))
        row["generate_s"] = time.perf_counter() - t
        data_bytes = sum(os.path.getsize(os.path.join(d, f))
                         for d, _, fs in os.walk(os.path.dirname(master)) for f in fs)
        row["file_gb"] = data_bytes / 1e9
        row["raw_gb"] = n_frames * shape[0] * shape[1] * 2 / 1e9
        on_step(f"scan written: {row['file_gb']:.2f} GB on disk for {row['raw_gb']:.1f} GB of "
                f"frames, {row['generate_s']:.1f} s")
        truth = read_eiger_truth(master)
        gaps, labels = truth["gap_mask"], truth["labels"].astype(numpy.int32)
        numpy.save(os.path.join(workdir, "labels.npy"), labels)
        numpy.save(os.path.join(workdir, "gaps.npy"), gaps.astype(numpy.uint8))
        cmd = [sys.executable, "-m", "ewoksxpcs", "run", master,
               "--qmask", os.path.join(workdir, "labels.npy"),
               "--mask", os.path.join(workdir, "gaps.npy"),
               "--method", "opencl-events", "--device", device, "-q"]
        if max_device_memory:
            cmd += ["--option", f"max_device_memory={int(max_device_memory)}"]
        row["bytecode"] = _compile_bytecode()
        on_step(f"bytecode: {row['bytecode']}")
        for name in ("cold", "warm"):
            output = os.path.join(workdir, f"result_{name}.h5")
            if name == "cold":
                row["cache_dropped"] = _drop_caches()
            t = time.perf_counter()
            proc = subprocess.run(cmd + ["-o", output], capture_output=True, text=True)
            row[f"{name}_s"] = time.perf_counter() - t
            if proc.returncode:
                raise RuntimeError(f"ewoksxpcs run failed ({proc.returncode}):\n"
                                   f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            on_step(f"{name}: {row[f'{name}_s']:.2f} s wall")
        row["cli_profile"] = _cli_profile(cmd + ["-o", os.path.join(workdir, "result_prof.h5")],
                                          os.path.join(workdir, "cli.prof"))
        on_step("cli profile:\n" + "\n".join(row["cli_profile"]))
        row["check"] = _check(os.path.join(workdir, "result_warm.h5"), master)
        on_step(f"check: {row['check']}")
        row["profile"] = _profile(master, labels, gaps, device, max_device_memory)
        on_step(f"profile: {json.dumps(row['profile'], default=float)}")
        row["peers"] = _peer_decode(master, peer_frames, 0)
        fps = row["peers"]
        for key in ("h5py_fps", "cpu_threads_fps"):
            if key in fps:
                row[f"{key[:-4]}_full_scan_s"] = n_frames / fps[key]
        on_step(f"peers: {json.dumps(row['peers'], default=float)}")
        return row
    finally:
        if own and not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _check(result_file: str, master: str) -> dict:
    """g2 of the result against the truth 1 + β ρ_ring^(2τ) stored with the scan: median |z|
    over the rings and lags 1 … 20 (z = difference / g2_err)."""
    import h5py

    from .synthetic_eiger import eiger_g2, read_eiger_truth

    truth = read_eiger_truth(master)
    with h5py.File(result_file, "r") as f:
        g = f["entry/xpcs/g2"]
        g2, err = g["g2"][()], g["g2_errors"][()]
        lags, labels = g["lags"][()], g["labels"][()]
    sel = (lags >= 1) & (lags <= 20)
    expected = eiger_g2(truth["beta"], truth["rho"], lags[sel])[numpy.asarray(labels) - 1]
    z = numpy.abs(g2[:, sel] - expected) / err[:, sel]
    return {"beta": float(truth["beta"]), "rings": int(len(labels)),
            "g2_lag1": [round(float(v), 4) for v in g2[:, sel][:, 0]],
            "expected_lag1": [round(float(v), 4) for v in expected[:, 0]],
            "median_abs_z": float(numpy.nanmedian(z)),
            "frac_abs_z_below_3": float(numpy.mean(z[numpy.isfinite(z)] < 3))}
