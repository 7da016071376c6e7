"""Repeats: error-weighted average of g2 over result files, damaged repeats rejected.

Rejection rule (robust, per repeat r, over the bins of all repeats):

- baseline b_r: the mean over the bins of g2 over the second quarter of the lags τ > 0 (the
  first half of the lags averages at least half of the pairs in every mode);
- contrast c_r: the mean over the bins of g2 at the first lag τ > 0, minus the baseline;
- for x in (b, c): m = median_r x_r, s = max(1.4826·median_r |x_r − m|, median_r σ_r) where σ_r is
  the standard error of x_r from the g2 errors; repeat r is rejected when |x_r − m| > k·s for
  either (k = ``threshold``, default 4). With fewer than 3 repeats nothing is rejected.

Average of the kept repeats, per bin and lag: g2 = Σ w_r·g2_r / Σ w_r, w_r = 1/σ_r², error
(Σ w_r)^(−1/2) (points without a finite positive error are left out; NaN where none is left).

Output: a copy of the first kept file (same layout) whose ``entry/xpcs/g2`` holds the average,
without what no longer matches it (exact sums, fit, two-time maps, segments, excluded frames),
and ``entry/xpcs/average`` (NXcollection): the files, which were kept, b_r, c_r, the rule.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import List, Sequence

import numpy

__all__ = ["DEFAULT_THRESHOLD", "RepeatAverage", "read_g2", "repeat_statistics",
           "reject_repeats", "average_g2", "average_files"]

DEFAULT_THRESHOLD = 4.0

#: Groups of a result that no longer describe an averaged g2.
_DROPPED = ("sums", "fit", "twotime", "segments", "excluded_frames")


@dataclass
class RepeatAverage:
    """Average over repeats: g2, g2_err (n_bins, n_tau); kept (n_repeats,) bool; baseline and
    contrast (n_repeats,) of every repeat."""

    g2: numpy.ndarray
    g2_err: numpy.ndarray
    kept: numpy.ndarray
    baseline: numpy.ndarray
    contrast: numpy.ndarray


def read_g2(filename):
    """(g2, g2_err, tau, labels) of a result file."""
    import h5py

    with h5py.File(filename, "r") as f:
        if "entry/xpcs/g2/g2" not in f:
            raise ValueError(f"{filename} is not an ewoksxpcs result file (no entry/xpcs/g2)")
        g = f["entry/xpcs/g2"]
        return (g["g2"][()], g["g2_errors"][()], g["tau"][()], g["labels"][()])


def repeat_statistics(g2, g2_err, tau):
    """Baseline and contrast (with standard errors) of each repeat, see the module docstring.

    Parameters
    ----------
    g2, g2_err : ndarray (n_repeats, n_bins, n_tau)
    tau : ndarray (n_tau,)

    Returns
    -------
    baseline, baseline_err, contrast, contrast_err : ndarray (n_repeats,)
    """
    tau = numpy.asarray(tau, dtype=numpy.float64)
    pos = numpy.flatnonzero(tau > 0)
    drawn = pos[: max(2, pos.size // 2)]  # the first half: enough pairs in every mode
    first, tail = drawn[:1], drawn[drawn.size // 2:]
    with numpy.errstate(invalid="ignore"):
        def mean_err(cols):
            v = numpy.nanmean(g2[:, :, cols], axis=(1, 2))
            e = numpy.sqrt(numpy.nansum(g2_err[:, :, cols] ** 2, axis=(1, 2))) / \
                numpy.sum(numpy.isfinite(g2[:, :, cols]), axis=(1, 2))
            return v, e

        b, be = mean_err(tail)
        h, he = mean_err(first)
    return b, be, h - b, numpy.hypot(he, be)


def reject_repeats(values, errors, threshold: float = DEFAULT_THRESHOLD) -> numpy.ndarray:
    """(n_repeats,) bool, True for the repeats to keep (module docstring; one statistic)."""
    x = numpy.asarray(values, dtype=numpy.float64)
    if x.size < 3:
        return numpy.ones(x.size, dtype=bool)
    m = numpy.nanmedian(x)
    s = max(1.4826 * float(numpy.nanmedian(numpy.abs(x - m))),
            float(numpy.nanmedian(numpy.asarray(errors, dtype=numpy.float64))))
    return numpy.isfinite(x) & (numpy.abs(x - m) <= threshold * s)


def average_g2(g2, g2_err, tau, threshold: float = DEFAULT_THRESHOLD) -> RepeatAverage:
    """Reject and average (module docstring). g2, g2_err (n_repeats, n_bins, n_tau)."""
    g2 = numpy.asarray(g2, dtype=numpy.float64)
    err = numpy.asarray(g2_err, dtype=numpy.float64)
    b, be, c, ce = repeat_statistics(g2, err, tau)
    kept = reject_repeats(b, be, threshold) & reject_repeats(c, ce, threshold)
    if not kept.any():
        raise ValueError("every repeat was rejected: nothing to average")
    w = numpy.where(numpy.isfinite(err) & (err > 0) & numpy.isfinite(g2), 1.0 / err**2, 0.0)
    w[~kept] = 0.0
    sw = w.sum(axis=0)
    with numpy.errstate(invalid="ignore", divide="ignore"):
        avg = numpy.where(sw > 0, (w * numpy.nan_to_num(g2)).sum(axis=0) / sw, numpy.nan)
        avg_err = numpy.where(sw > 0, 1.0 / numpy.sqrt(sw), numpy.nan)
    return RepeatAverage(avg, avg_err, kept, b, c)


def average_files(filenames: Sequence[str], output: str, threshold: float = DEFAULT_THRESHOLD,
                  overwrite: bool = False) -> dict:
    """Average result files (module docstring) into ``output``.

    Returns
    -------
    dict
        ``output`` (absolute path), ``kept`` (list of file names), ``rejected`` (list).
    """
    import h5py

    from ..io.save import atomic_output, check_output

    filenames = [os.fspath(f) for f in filenames]
    if len(filenames) < 2:
        raise ValueError("give at least two result files to average")
    for name in filenames:
        if not os.path.exists(name):
            raise ValueError(f"result file {name!r} does not exist")
        if os.path.abspath(name) == os.path.abspath(output):
            raise ValueError(f"the output {output!r} is one of the inputs")
    check_output(output, overwrite)
    data = [read_g2(f) for f in filenames]
    g0, _, tau0, lab0 = data[0]
    for name, (g, _, tau, lab) in zip(filenames[1:], data[1:]):
        if g.shape != g0.shape or not numpy.allclose(tau, tau0) or not numpy.array_equal(lab, lab0):
            raise ValueError(
                f"{name} does not match {filenames[0]}: g2 {g.shape} vs {g0.shape}, or other "
                "delays or bins (average repeats of the same processing)"
            )
    res = average_g2(numpy.stack([d[0] for d in data]), numpy.stack([d[1] for d in data]), tau0,
                     threshold)
    first = filenames[int(numpy.flatnonzero(res.kept)[0])]
    with atomic_output(output, overwrite) as tmp:
        shutil.copyfile(first, tmp)
        with h5py.File(tmp, "a") as f:
            proc = f["entry/xpcs"]
            for name in _DROPPED:
                if name in proc:
                    del proc[name]
            g = proc["g2"]
            g["g2"][...] = res.g2
            g["g2_errors"][...] = res.g2_err
            a = proc.create_group("average")
            a.attrs["NX_class"] = "NXcollection"
            a["files"] = [os.path.abspath(n) for n in filenames]
            a["kept"] = res.kept
            a["baseline"] = res.baseline
            a["contrast"] = res.contrast
            a["threshold"] = float(threshold)
            a["rule"] = (
                "repeat rejected when its baseline or contrast departs from the median of the "
                "repeats by more than threshold * max(1.4826*MAD, median standard error); "
                "g2 = error-weighted mean of the kept repeats (ewoksxpcs.workflow.average)"
            )
    kept: List[str] = [n for n, k in zip(filenames, res.kept) if k]
    return {"output": os.path.abspath(output), "kept": kept,
            "rejected": [n for n, k in zip(filenames, res.kept) if not k]}
