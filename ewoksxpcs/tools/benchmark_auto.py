"""``ewoksxpcs benchmark --suite auto``: is ``auto`` within 25 % of the fastest method?

For each case (issue 10's CPU cases, :data:`AUTO_CASES`), a bitshuffle-LZ4 Bliss scan is written by
:func:`ewoksxpcs.tools.synthetic_eiger.write_eiger_scan` (its ring labels are the q-mask), then
``python -m ewoksxpcs run SCAN --qmask Q.npy -o R.h5`` runs in its own process with defaults only
(linear g2), once per method of the machine's cost table (``--method M``) and once with the
default ``auto``. The table gives each method's wall time (start-up, reading, correlation, saving
and the PNG included: what a user waits for), the method ``auto`` chose (read back from the result
file) with its estimates, and auto's time ÷ the best time.

Every method is first run once on a small scan (OpenCL kernels compiled and numba functions
cached, as on any machine after the first run, not timed). Methods run in the order of auto's
estimates, in ``rounds`` rounds (auto first in each; the best wall time of each is kept: the
machine may be shared); one still running after ``max(min_timeout, slack × best time so far)``
is stopped, reported as "> T s" (it cannot be the best) and left out of the later rounds. The
CPU time (user + system) of each kept run is printed beside it.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, List, Optional, Sequence

import numpy

__all__ = ["AUTO_CASES", "run_auto_suite", "format_rows"]

#: (name, shape, frames, photons per pixel per frame): issue 10's CPU cases.
AUTO_CASES = (
    ("sparse", (512, 512), 4000, 0.01),
    ("dense", (128, 128), 20000, 0.5),
    ("long", (64, 64), 100000, 0.05),
)


def _scan(workdir: str, name: str, shape, n_frames: int, counts: float):
    from .synthetic_eiger import read_eiger_truth, write_eiger_scan

    qmask = os.path.join(workdir, f"{name}_qmask.npy")
    master = os.path.join(workdir, name, "scan.h5")
    key = os.path.join(workdir, name, f"{shape[0]}x{shape[1]}x{n_frames}_{counts:g}")
    if os.path.exists(key) and os.path.exists(qmask):  # the same scan, written before
        return master, qmask
    master = write_eiger_scan(os.path.join(workdir, name), n_frames=n_frames, shape=tuple(shape),
                              counts=counts, frames_per_file=max(1, min(n_frames, 2000)),
                              processes=2, gaps=False, overwrite=True)
    open(key, "w").close()
    numpy.save(qmask, read_eiger_truth(master)["labels"].astype(numpy.int32))
    return master, qmask


def _run(master: str, qmask: str, out: str, method: Optional[str], timeout: float,
         env: dict) -> dict:
    """One ``ewoksxpcs run`` in a subprocess: seconds (None if stopped), method, reason."""
    import h5py

    cmd = [sys.executable, "-m", "ewoksxpcs", "run", master, "--qmask", qmask, "-o", out, "-q",
           "--overwrite"]
    if method is not None:
        cmd += ["--method", method]
    t0 = time.perf_counter()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"seconds": None, "stopped_after": timeout, "method": method, "reason": "",
                "error": ""}
    seconds = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    if proc.returncode:
        return {"seconds": None, "method": method, "reason": "",
                "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    with h5py.File(out, "r") as f:
        proc_ = f["entry/xpcs"]
        chosen = proc_["method"][()].decode()
        reason = proc_["auto_reason"][()].decode() if "auto_reason" in proc_ else ""
    return {"seconds": seconds, "cpu": cpu, "method": chosen, "reason": reason, "error": ""}


def run_auto_suite(cases: Optional[Sequence[str]] = None, scale: float = 1.0,
                   workdir: Optional[str] = None, rounds: int = 2, slack: float = 2.5,
                   min_timeout: float = 30.0, methods: Optional[Sequence[str]] = None,
                   on_step: Callable[[str], None] = print) -> List[dict]:
    """Time every method and ``auto`` on each case (module docstring).

    Parameters
    ----------
    cases : names of :data:`AUTO_CASES` (default: all)
    scale : float
        Multiplies the frames of every case (>= 50 frames).
    methods : names, optional
        The methods timed besides ``auto`` (default: every method of the cost table).
    rounds : int
        Rounds of runs (auto, then every method still in); the best wall time of each is kept
        (a machine shared with other work: the rounds see different loads).

    Returns
    -------
    list of dict
        Per case: ``case``, ``shape``, ``frames``, ``counts``, ``times`` (method -> seconds, or
        None), ``cpu`` (method -> CPU seconds of that run), ``stopped`` (method -> timeout),
        ``errors``, ``auto`` (seconds), ``auto_cpu``, ``auto_method``, ``auto_reason``,
        ``best``, ``ratio`` (auto ÷ the best of every method and auto).
    """
    from ..correlators import costs
    from ..correlators.auto import _opencl, choose
    from ..engine.qmask import Binning
    from ..io.load import load_frames

    names = [c[0] for c in AUTO_CASES]
    unknown = sorted(set(cases or ()) - set(names))
    if unknown:
        raise ValueError(f"unknown auto cases {unknown}; valid: {', '.join(names)}")
    dev, _ = _opencl(None)
    machine = costs.machine_kind(dev.kind if dev is not None else None)
    own = workdir is None
    workdir = tempfile.mkdtemp(prefix="ewoksxpcs-auto-") if own else workdir
    os.makedirs(workdir, exist_ok=True)
    env = dict(os.environ)
    rows = []
    try:
        # Warm-up: kernels compiled and numba functions cached for every method, not timed.
        master, qmask = _scan(workdir, "warmup", (32, 32), 200, 0.05)
        methods = [m for m in costs.COSTS[machine]["linear"] if not methods or m in methods]
        for method in list(methods):
            r = _run(master, qmask, os.path.join(workdir, "w.h5"), method, 600, env)
            if r["error"]:
                on_step(f"warm-up: {method} unavailable: {r['error']}")
                methods.remove(method)
        for name, shape, n_frames, counts in AUTO_CASES:
            if cases and name not in cases:
                continue
            n_frames = max(50, int(n_frames * scale))
            t0 = time.perf_counter()
            master, qmask = _scan(workdir, name, shape, n_frames, counts)
            on_step(f"case {name}: {shape[0]}x{shape[1]}x{n_frames}, {counts:g} counts "
                    f"(written in {time.perf_counter() - t0:.1f} s, not timed)")
            plan = choose("linear", load_frames(master), Binning(numpy.load(qmask)))
            order = sorted(methods, key=lambda m: plan.estimates.get(m, float("inf")))
            row = {"case": name, "shape": list(shape), "frames": n_frames, "counts": counts,
                   "machine": machine, "times": {}, "stopped": {}, "errors": {},
                   "estimates": plan.estimates}
            out = os.path.join(workdir, f"{name}_r.h5")
            row["cpu"], auto_times, auto_cpu = {}, [], []
            for round_ in range(rounds):
                # auto first, then the methods: each round sees about the same load
                a = _run(master, qmask, out, None, 1800.0, env)
                if a["seconds"]:
                    auto_times.append(a["seconds"])
                    auto_cpu.append(a["cpu"])
                on_step(f"  round {round_ + 1}: auto -> {a['method'] or a['error']} "
                        f"{a['seconds'] or float('nan'):8.2f} s")
                for method in order:
                    if method in row["stopped"] or method in row["errors"]:
                        continue
                    best = min([t for t in row["times"].values() if t] + auto_times
                               or [float("inf")])
                    timeout = max(min_timeout, slack * best) if best < float("inf") else 1800.0
                    r = _run(master, qmask, out, method, timeout, env)
                    if r["seconds"]:
                        old = row["times"].get(method)
                        if old is None or r["seconds"] < old:
                            row["times"][method], row["cpu"][method] = r["seconds"], r["cpu"]
                    elif r.get("stopped_after"):
                        row["stopped"][method] = r["stopped_after"]
                        row["times"].setdefault(method, None)
                    else:
                        row["errors"][method] = r["error"]
                        row["times"].setdefault(method, None)
                    on_step(f"  round {round_ + 1}: {method:14s} " + (
                        f"{r['seconds']:8.2f} s (CPU {r['cpu']:.1f} s)" if r["seconds"] else
                        f"stopped after {timeout:.0f} s" if not r["error"]
                        else f"error: {r['error']}"))
            best_auto = min(auto_times) if auto_times else None
            row.update(auto=best_auto, auto_cpu=min(auto_cpu) if auto_cpu else None,
                       auto_method=a["method"], auto_reason=a["reason"], rounds=rounds)
            timed = {m: t for m, t in row["times"].items() if t}
            row["best"] = min(timed, key=timed.get) if timed else None
            if best_auto and timed:
                row["ratio"] = best_auto / min(timed[row["best"]], best_auto)
            else:
                row["ratio"] = None
            on_step(f"  auto -> {a['method']}: best {best_auto or float('nan'):.2f} s, "
                    f"÷ best method ({row['best']}) = {row['ratio'] or float('nan'):.2f}")
            on_step(f"  reason: {a['reason']}")
            rows.append(row)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return rows


def format_rows(rows: List[dict]) -> str:
    """The suite's table: a line per case and method, then auto's choice and ratio."""
    lines = []
    for row in rows:
        ny, nx = row["shape"]
        lines.append(f"== {row['case']}: {ny}x{nx}x{row['frames']}, {row['counts']:g} counts "
                     f"(cost table '{row['machine']}')")
        lines.append(f"   {'method':14s} {'wall s':>9s} {'CPU s':>7s} {'estimate s':>11s}")
        for method, t in row["times"].items():
            est = row["estimates"].get(method)
            shown = (f"{t:9.2f} {row['cpu'][method]:7.1f}" if t else
                     f"> {row['stopped'][method]:.0f}".rjust(9) + " " * 8
                     if method in row["stopped"] else "error".rjust(9) + " " * 8)
            lines.append(f"   {method:14s} {shown} {'' if est is None else f'{est:11.3g}'}")
        ratio = row["ratio"]
        lines.append(f"   {'auto':14s} {row['auto'] or float('nan'):9.2f} "
                     f"{row['auto_cpu'] or float('nan'):7.1f}   chose "
                     f"{row['auto_method']}; auto ÷ best ({row['best']}) = "
                     f"{'nan' if ratio is None else f'{ratio:.2f}'}"
                     f"{'' if ratio is None or ratio <= 1.25 else '  (MISSED: > 1.25)'}")
        cpus = {m: c for m, c in row["cpu"].items() if c}
        if cpus and row["auto_cpu"]:
            m = min(cpus, key=cpus.get)
            lines.append(f"   CPU time: auto ÷ least ({m}) = {row['auto_cpu'] / cpus[m]:.2f} "
                         f"(load-robust; blind to the threads' parallelism)")
        lines.append(f"   why: {row['auto_reason']}")
    return "\n".join(lines)
