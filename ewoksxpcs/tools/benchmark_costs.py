"""``ewoksxpcs benchmark --suite costs``: measure the constants of ``auto``'s cost model.

For every mode and every method of the machine's table in
:mod:`ewoksxpcs.correlators.costs`, the correlation step (:func:`ewoksxpcs.workflow.pipeline.
correlate_sums`: reading and decoding the file, compaction where the method compacts, the
correlation sums) is timed on a few bitshuffle-LZ4 scan files written by
:func:`ewoksxpcs.tools.synthetic_eiger.write_eiger_scan` (sparse, dense, long). The
constants of each method are then fitted by non-negative least squares of the times on the
method's features (relative errors: each case weighs the same), and printed as the table to
paste into ``costs.py``.

A run whose predicted time (with the current table) exceeds ``max_s`` is skipped: it would not be
chosen anyway, and the fit uses the other cases.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Optional

import numpy

__all__ = ["COST_CASES", "fit_costs", "run_costs"]

#: (name, shape, frames, counts): bitshuffle-LZ4 uint16 scans; ``scale`` multiplies the frames
#: (use ``--scale 10`` or more on a GPU: these sizes are set-up dominated there).
COST_CASES = (
    ("sparse", (256, 256), 2000, 0.01),
    ("sparser", (256, 256), 1000, 0.002),
    ("dense", (128, 128), 1000, 0.5),
    ("long", (48, 48), 4000, 0.2),
    # large frames: per-frame costs apart from per-pixel ones (PoCL's opencl-events spends
    # 2e-4 s per frame: at 256x256 it is slower than cpu-events, at 512x512 faster)
    ("large", (512, 512), 1000, 0.01),
)


def _time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run_costs(device: Optional[str] = None, scale: float = 1.0, repeat: int = 1,
              max_s: float = 60.0, workdir: Optional[str] = None, on_step=print,
              methods=None, on_row=None) -> dict:
    """Time every method of the cost table on the cases and fit its constants.

    ``methods`` (names, default all) restricts the methods timed and fitted, e.g. to re-measure
    one backend: the others keep their constants. ``on_row(machine, rows)`` is called after
    each timing (a run cut short keeps what it measured: :func:`fit_costs` fits those rows).

    Returns
    -------
    dict
        ``machine`` (cost table kind), ``rows`` (case, mode, method, seconds, features),
        ``fitted`` (mode -> method -> feature -> seconds per unit).
    """
    from ..correlators import costs
    from ..correlators.auto import _opencl, describe_data
    from .synthetic_eiger import read_eiger_truth, write_eiger_scan
    from ..io.load import load_frames
    from ..workflow.pipeline import correlate_sums
    from ..engine.qmask import Binning
    from ..engine.twotime import choose_time_bin

    dev, _ = _opencl(device)
    machine = costs.machine_kind(dev.kind if dev is not None else None)
    own = workdir is None
    workdir = tempfile.mkdtemp(prefix="ewoksxpcs-costs-") if own else workdir
    rows = []
    try:
        for name, shape, n_frames, counts in COST_CASES:
            n_frames = max(50, int(n_frames * scale))
            # One writer process for the small cases (a pool costs more than it saves).
            big = n_frames * shape[0] * shape[1] > 10**8
            master = write_eiger_scan(os.path.join(workdir, name), n_frames=n_frames,
                                      shape=shape, counts=counts, processes=0 if big else 1,
                                      frames_per_file=max(1, n_frames // 4), gaps=False)
            labels = read_eiger_truth(master)["labels"].astype(numpy.int32)
            source = load_frames(master)
            binning = Binning(labels)
            feat = describe_data(source, binning, n_sample=32)
            n_t = n_frames // choose_time_bin(n_frames)
            f = costs.features(n_frames, shape[0] * shape[1], binning.n_binned_pixels,
                               feat.occupancy, n_t)
            on_step(f"case {name}: {shape[0]}x{shape[1]}x{n_frames}, occupancy "
                    f"{feat.occupancy:.3g}")
            for mode, table in costs.COSTS[machine].items():
                for method in table:
                    if methods and method not in methods:
                        continue
                    predicted = costs.estimate(machine, mode, method, f)
                    if predicted > max_s:
                        on_step(f"  {mode:8s} {method:14s} skipped (predicted {predicted:.0f} s)")
                        continue
                    dev_arg = device if method.startswith("opencl") else None
                    if method.startswith("opencl") and dev is None:
                        continue

                    def run():
                        correlate_sums(load_frames(master), binning, method=method,
                                       device=dev_arg, mode=mode)

                    run()  # kernels compiled, files in the page cache
                    seconds = _time(run, repeat)
                    rows.append({"case": name, "mode": mode, "method": method,
                                 "seconds": seconds, "features": f})
                    if on_row is not None:
                        on_row(machine, rows)
                    on_step(f"  {mode:8s} {method:14s} {seconds:8.3f} s "
                            f"(table predicted {predicted:.3g} s)")
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return {"machine": machine, "rows": rows, "fitted": fit_costs(machine, rows)}


def fit_costs(machine: str, rows) -> dict:
    """Constants of ``COSTS[machine]`` fitted to measured ``rows`` (:func:`run_costs`): per mode
    and method, non-negative least squares of the relative errors on the method's features.

    Returns
    -------
    dict
        mode -> method -> feature -> seconds per unit (3 significant digits), for the
        methods that have rows.
    """
    from scipy.optimize import nnls

    from ..correlators import costs

    fitted = {}
    for mode, table in costs.COSTS[machine].items():
        for method, entry in table.items():
            mine = [r for r in rows if r["mode"] == mode and r["method"] == method]
            if not mine:
                continue
            names = list(entry)
            a = numpy.array([[r["features"][n] / r["seconds"] for n in names] for r in mine])
            coef, _ = nnls(a, numpy.ones(len(mine)))
            fitted.setdefault(mode, {})[method] = {n: float(f"{c:.3g}") for n, c in
                                                   zip(names, coef)}
    return fitted
