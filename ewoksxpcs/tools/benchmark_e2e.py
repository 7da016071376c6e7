"""``ewoksxpcs benchmark --suite e2e``: what users run, a scan file to a NeXus result, timed.

Eiger 4M scans (10 000 frames of 2162×2068 uint16, bitshuffle-LZ4, one chunk per frame, a
Bliss-like master with a virtual dataset over 16 data files, the detector's pixel mask in the
file, as Lima writes them) at each of ``counts`` photons per pixel per frame, written by
:func:`ewoksxpcs.tools.synthetic_eiger.write_eiger_scan` (not timed). ``scale`` s multiplies
the frame count and the pixel count by s. Then, for each scan and each mode (linear, multitau, twotime), the
command a beamline trigger runs, **defaults only** (no method, device or mask option)::

    ewoksxpcs run scan.h5 --qmask labels.npy --mode MODE -o result.h5

Figures
-------
cold_s
    Wall time of the command after the page cache was dropped (when root: ``cache_dropped``)
    and with the OpenCL kernel caches off (pyopencl, NVIDIA, PoCL): data from disk, kernels
    compiled. Python bytecode is written beforehand (``bytecode``), as an installation has it.
warm_s
    The command again: files in the page cache, kernels in the caches (an untimed run with the
    caches on comes first: the cold run does not store its builds).
worker_s
    The same scans through one already-started Python process (``ewoksxpcs.app.cli.main`` called
    in a loop after one warm-up run of every case, as an ewoksjob worker runs jobs): no
    start-up, imports or kernel builds; the PNG helper process already running. Printed as the
    rows "through one persistent worker process".
stages
    Per warm run, from the result file (``parameters/correlate/timings_s``): ``compact_s``
    (read, host→device, decompression and compaction on the device), ``correlate_s``, and
    ``rest_s`` (start-up, imports, loading, q-mask, normalisation, saving: the wall time minus
    the two).
floors
    The physical floor of each stage on this machine: ``read`` the file bytes at the measured
    read rate (page cache warm; the disk after a cache drop, cold), ``h2d`` the file bytes
    (compressed chunks) at the measured host→device rate (pinned buffers), ``decode`` the frames'
    bytes written once at the measured device copy bandwidth. The data stage (``compact_s``, or
    ``correlate_s`` for a dense path) is printed with its ratio to the largest of the three
    (they overlap), each stage with its own ratio.
check
    The linear g2 against the generator's truth ``1 + β ρ^(2τ)`` (median |z| over the rings
    and lags 1 … 20).
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


MODES = ("linear", "multitau", "twotime")

#: Environment of a cold run: the OpenCL kernel caches of pyopencl, NVIDIA and PoCL off.
COLD_ENV = {"PYOPENCL_NO_CACHE": "1", "CUDA_CACHE_DISABLE": "1", "POCL_KERNEL_CACHE": "0"}


def _files_of(master: str) -> list:
    directory = os.path.dirname(os.path.abspath(master))
    return [os.path.join(directory, f) for f in sorted(os.listdir(directory))
            if f.endswith(".h5") and not f.startswith("result")]


def _read_rate(files) -> float:
    """Bytes per second reading ``files`` whole (8 MiB reads, no page-cache bypass)."""
    total = 0
    t = time.perf_counter()
    for name in files:
        with open(name, "rb", buffering=0) as f:
            while True:
                block = f.read(8 << 20)
                if not block:
                    break
                total += len(block)
    return total / max(time.perf_counter() - t, 1e-9)


def measure_floors(files, device: Optional[str] = None, cold: bool = False) -> dict:
    """Rates of this machine for the stage floors: file read (page cache; the disk after a
    cache drop when ``cold`` and root), host→device (pinned) and device copy bandwidth, B/s."""
    out = {"cache_dropped": _drop_caches() if cold else False}
    out["read_Bps"] = _read_rate(files)
    try:
        from ..opencl.device import get_device
        from .benchmark_gpu import measure_bandwidth

        dev = get_device(device)
        rates = measure_bandwidth(dev, nbytes=min(256 << 20, dev.max_mem_alloc // 2))
        out["h2d_Bps"] = rates["h2d_pinned"]
        out["device_copy_Bps"] = rates["device"]
        out["device"] = dev.name
    except Exception as e:  # no OpenCL: CPU paths only
        out["device"] = f"none ({e})"
    return out


def _stages(result_file: str, wall_s: float) -> dict:
    """Stage times recorded in the result file, and the rest of the wall time."""
    import h5py

    with h5py.File(result_file, "r") as f:
        proc = f["entry/xpcs"]
        g = proc["parameters/correlate/timings_s"]
        t = {k: float(g[k][()]) for k in g}
        out = {"method": proc["method"][()].decode(), "device": proc["device"][()].decode(),
               "auto_reason": proc["auto_reason"][()].decode()}
    out["compact_s"] = t.get("compact_s", 0.0)
    out["correlate_s"] = t.get("correlate_s", 0.0)
    out["rest_s"] = wall_s - out["compact_s"] - out["correlate_s"]
    return out


def _floor_ratios(row: dict, floors: dict, file_bytes: int, raw_bytes: int, cold: bool) -> dict:
    """Floors of the data stage (s) and its ratio to the largest (they overlap)."""
    rate = floors["cold" if cold and floors["cold"]["cache_dropped"] else "warm"]
    f = {"read_s": file_bytes / rate["read_Bps"]}
    if "h2d_Bps" in floors["warm"]:
        f["h2d_s"] = file_bytes / floors["warm"]["h2d_Bps"]
        f["decode_s"] = raw_bytes / floors["warm"]["device_copy_Bps"]
    data_s = row["compact_s"] or row["correlate_s"]
    floor = max(f.values())
    f["data_stage_s"] = data_s
    f["data_vs_floor"] = data_s / floor if floor > 0 else float("nan")
    return f


_WORKER = """
import json, sys, time
from ewoksxpcs.app.cli import main
cases = json.loads(sys.argv[1])
for label, argv in cases:  # warm-up: imports, kernels of every mode, the PNG helper process
    main(argv)
out = {}
for label, argv in cases:
    t = time.perf_counter()
    rc = main(argv)
    out[label] = time.perf_counter() - t if rc == 0 else None
print(json.dumps(out))
"""


def _worker(cases) -> dict:
    """Wall time of each case (label -> argv) through one already-started Python process."""
    proc = subprocess.run([sys.executable, "-c", _WORKER, json.dumps(cases)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"persistent worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _existing_scan(directory: str, n_frames: int, shape, counts: float):
    """The master file of a scan an earlier run of this suite wrote in ``directory`` with the
    same frames, shape and counts (reused: an A/B of two versions then writes it once), None
    when there is none; ValueError when it holds another scan."""
    from .synthetic_eiger import read_eiger_truth

    master = os.path.join(directory, "scan.h5")
    if not os.path.exists(master):
        return None
    try:
        truth = read_eiger_truth(master)
        same = (int(truth["n_frames"]) == n_frames
                and tuple(truth["labels"].shape) == tuple(shape)
                and float(truth["counts"]) == float(counts))
    except (OSError, KeyError) as e:
        raise ValueError(f"{master} is not a scan of this suite ({e}): remove it or choose "
                         "another work directory") from None
    if not same:
        raise ValueError(f"{master} holds another scan ({truth['n_frames']} frames of "
                         f"{tuple(truth['labels'].shape)} at {truth['counts']:g} counts): remove "
                         "it or choose another work directory")
    return master


def run_e2e(workdir: Optional[str] = None, scale: float = 1.0, counts=(0.01, 0.1),
            modes=MODES, processes: int = 0, keep: bool = False, worker: bool = True,
            drop_caches: bool = True, on_step=print, device: Optional[str] = None) -> dict:
    """Generate the scans, time ``ewoksxpcs run`` with defaults on them (cold, warm, worker).

    Parameters
    ----------
    workdir : str, optional
        Directory of the scans and results (default: a temporary one, removed unless ``keep``).
    scale : float
        Frames and pixels multiplied by ``scale`` (0 < scale <= 1).
    counts : sequence of float
        Mean photons per pixel per frame of each scan.
    modes : sequence of str
        Correlation modes.
    processes : int
        Processes writing the scans (0: one per CPU).
    worker : bool
        Also time the persistent-worker figure.
    drop_caches : bool
        Drop the page cache before the cold runs (root only; it slows every process of the
        machine for a while).
    device : str, optional
        OpenCL device ("cpu", "gpu", "P:D") given to every run (``--device``) and used for the
        floors; default: none given (the defaults-only figure).

    Returns
    -------
    dict
        ``rows`` (one per scan and mode: cold_s, warm_s, worker_s, stages, floors), ``floors``
        (the measured rates), ``scans``, ``check``.
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
    out = {"frames": n_frames, "shape": list(shape), "scans": {}, "rows": []}
    try:
        scans = {}
        for c in counts:
            t = time.perf_counter()
            master = _existing_scan(os.path.join(workdir, f"scan_{c:g}"), n_frames, shape, c)
            reused = master is not None
            if not reused:
                master = write_eiger_scan(os.path.join(workdir, f"scan_{c:g}"),
                                          n_frames=n_frames, shape=shape, counts=c,
                                          processes=processes,
                                          frames_per_file=max(1, -(-n_frames // 16)))
            files = _files_of(master)
            info = {"generate_s": time.perf_counter() - t, "reused": reused,
                    "file_bytes": sum(os.path.getsize(f) for f in files),
                    "raw_bytes": n_frames * shape[0] * shape[1] * 2}
            labels = os.path.join(workdir, f"labels_{c:g}.npy")
            numpy.save(labels, read_eiger_truth(master)["labels"].astype(numpy.int32))
            scans[c] = (master, labels, files)
            out["scans"][f"{c:g}"] = info
            on_step(f"scan {c:g} counts: {info['file_bytes'] / 1e9:.3g} GB on disk for "
                    f"{info['raw_bytes'] / 1e9:.3g} GB of frames "
                    + ("(reused)" if reused else f"({info['generate_s']:.1f} s)"))
        out["bytecode"] = _compile_bytecode()
        all_files = [f for _, _, fs in scans.values() for f in fs]
        out["floors"] = {"warm": measure_floors(all_files, device)}
        out["floors"]["cold"] = measure_floors(all_files, device, cold=drop_caches)
        out["device_option"] = device
        on_step(f"floors: {json.dumps(out['floors'], default=float)}")
        argvs = {}
        for c, (master, labels, _) in scans.items():
            for mode in modes:
                label = f"{mode} {c:g}"
                result = os.path.join(workdir, f"result_{mode}_{c:g}")
                argv = ["run", master, "--qmask", labels, "--mode", mode, "-q"]
                argv += (["--device", device] if device else []) + ["-o"]
                argvs[label] = argv + [result + "_worker.h5", "--overwrite"]
                row = {"mode": mode, "counts": c}
                # Untimed, with the kernel caches on: the cold run keeps them off (so it stores
                # nothing), and the warm run would otherwise compile whatever no earlier process
                # had compiled (0.4-0.8 s of NVIDIA builds in the warm figures of a fresh machine)
                subprocess.run([sys.executable, "-m", "ewoksxpcs"] + argv
                               + [f"{result}_prime.h5", "--overwrite"], capture_output=True)
                for name in ("cold", "warm"):
                    env = dict(os.environ, **(COLD_ENV if name == "cold" else {}))
                    if name == "cold":
                        row["cache_dropped"] = drop_caches and _drop_caches()
                    t = time.perf_counter()
                    proc = subprocess.run([sys.executable, "-m", "ewoksxpcs"] + argv
                                          + [f"{result}_{name}.h5"], capture_output=True,
                                          text=True, env=env)
                    row[f"{name}_s"] = time.perf_counter() - t
                    if proc.returncode:
                        raise RuntimeError(f"ewoksxpcs run failed ({proc.returncode}):\n"
                                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
                    row[f"{name}_stages"] = _stages(f"{result}_{name}.h5", row[f"{name}_s"])
                    info = out["scans"][f"{c:g}"]
                    row[f"{name}_floors"] = _floor_ratios(row[f"{name}_stages"], out["floors"],
                                                          info["file_bytes"], info["raw_bytes"],
                                                          name == "cold")
                out["rows"].append(row)
                on_step(_line(row))
        if worker:
            times = _worker(list(argvs.items()))
            for row in out["rows"]:
                row["worker_s"] = times.get(f"{row['mode']} {row['counts']:g}")
        linear = [c for c in scans if "linear" in modes]
        if linear:
            c = linear[0]
            out["check"] = _check(os.path.join(workdir, f"result_linear_{c:g}_warm.h5"),
                                  scans[c][0])
        on_step(table(out))
        return out
    finally:
        if own and not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _line(row: dict) -> str:
    s = row["warm_stages"]
    f = row["warm_floors"]
    return (f"{row['mode']:8s} {row['counts']:<5g} cold {row['cold_s']:7.2f} s  warm "
            f"{row['warm_s']:7.2f} s  [{s['method']} on {s['device']}]  compact "
            f"{s['compact_s']:.2f} s  correlate {s['correlate_s']:.2f} s  rest {s['rest_s']:.2f} s"
            f"  data stage {f['data_vs_floor']:.1f}x its floor")


def table(out: dict) -> str:
    """The rows as a text table: times per run kind and per stage, and the floor ratios."""
    lines = [f"e2e: {out['frames']} frames of {out['shape'][0]}x{out['shape'][1]} uint16 "
             "bitshuffle-LZ4, defaults only ('ewoksxpcs run scan.h5 --qmask labels.npy "
             "--mode MODE')",
             f"{'mode':8s} {'counts':>6s} {'cold_s':>7s} {'warm_s':>7s} {'worker_s':>8s} "
             f"{'compact_s':>9s} {'corr_s':>7s} {'rest_s':>7s} {'read_fl':>7s} {'h2d_fl':>7s} "
             f"{'dec_fl':>7s} {'x_floor':>7s}  method @ device"]
    for r in out["rows"]:
        s, f = r["warm_stages"], r["warm_floors"]
        w = r.get("worker_s")
        lines.append(
            f"{r['mode']:8s} {r['counts']:6g} {r['cold_s']:7.2f} {r['warm_s']:7.2f} "
            f"{(f'{w:8.2f}' if w is not None else '       -')} {s['compact_s']:9.2f} "
            f"{s['correlate_s']:7.2f} {s['rest_s']:7.2f} {f['read_s']:7.3f} "
            f"{f.get('h2d_s', float('nan')):7.3f} {f.get('decode_s', float('nan')):7.3f} "
            f"{f['data_vs_floor']:7.1f}  {s['method']} @ {s['device']}")
    workers = [r for r in out["rows"] if r.get("worker_s") is not None]
    if workers:
        lines.append("through one persistent worker process (cli.main called in one "
                     "already-started process, every case run once before):")
        for r in workers:
            lines.append(f"  {r['mode']:8s} {r['counts']:6g} {r['worker_s']:7.2f} s")
    if out.get("device_option"):
        lines.append(f"(runs given --device {out['device_option']})")
    fl = out.get("floors", {})
    if fl:
        w, c = fl["warm"], fl["cold"]
        lines.append(f"floors: read {w['read_Bps'] / 1e9:.3g} GB/s warm, "
                     f"{c['read_Bps'] / 1e9:.3g} GB/s cold (cache dropped: {c['cache_dropped']}); "
                     f"host->device {w.get('h2d_Bps', 0) / 1e9:.3g} GB/s; device copy "
                     f"{w.get('device_copy_Bps', 0) / 1e9:.3g} GB/s ({w.get('device')})")
    return "\n".join(lines)


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
