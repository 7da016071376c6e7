"""Kernel variants of ``opencl-events`` on sparse events, timed and checked in one call (issue 12).

::

    python -m ewoksxpcs.tools.bench_events_variants --out ev.txt            # the H200 case
    python -m ewoksxpcs.tools.bench_events_variants --counts 0.1 --out ev01.txt  # one level
    python -m ewoksxpcs.tools.bench_events_variants --scale 0.05 --device cpu   # small, PoCL
    python -m ewoksxpcs.tools.bench_events_variants --host-steps --device cpu   # host steps only

Data: i.i.d. Poisson counts on 1024×1024 pixels × 10 000 frames at 0.01 and 0.1 counts/pixel/
frame, generated directly as an EventStack (:func:`ewoksxpcs.tools.benchmark_gpu.poisson_events`),
10 annular bins around a beamstop (the ``gpu`` suite's events cases). ``--scale s`` multiplies the
pixel count and the frame count by ``s`` (sides by √s).

For each case:

1. **Host steps** without any kernel: every step of :meth:`OpenCLEventCorrelator.correlate` that
   runs on the host, timed alone (checks, the device memory budget query, the host-planned
   walk's planning, the device plan's pixel rows, the staging copy of the events, the copy of
   :func:`~ewoksxpcs.correlators.opencl_events.pin_events`, the range check, s2 on the host,
   normalisation with s2 rows as the host's FFTs and as the device gives them).
   ``--host-steps`` runs only these (and the data's generation): on any machine, at full size.
2. **Exactness**: every variant's n2 and frame sums on a band of detector rows of the same data
   (as many rows as keep the NumPy reference to ~``--ref-pairs`` pairs) equal
   :func:`numpy_event_n2`, an exact NumPy sum over event pairs; on the whole stack every variant
   equals the first one, and dynamix's integer sums when dynamix runs.
3. **Speed**: per variant and feed (``host``: an EventStack in host memory; ``pinned``: the
   same in page-locked host memory, :func:`~ewoksxpcs.correlators.opencl_events.pin_events`,
   uploaded without staging copies; ``device``: its events already on the device), the best of ``--repeat`` whole ``correlate`` calls (n2, s2,
   normalisation), then one profiled call (``profile = True``: the device is waited for after each
   step, so the steps add up to more than the unprofiled call) giving upload (host time of the
   uploading thread), plan (host and device planning), plan_kernels (launches and kernels, with
   the wait for the uploads), s2 (on the device on GPUs), s2_wait, download and normalisation.
4. **dynamix** 0.1.0 ``EventCorrelator`` (when importable) on the same device, warmed up, each
   timed call the first of a new instance (its accumulator is never cleared), NumPy arrays
   (:func:`~ewoksxpcs.tools.benchmark_gpu.dynamix_events`).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

import numpy

__all__ = ["VARIANTS", "numpy_event_n2", "host_steps", "run", "main"]

#: Variants timed by default: (label, options of ``opencl-events``).
VARIANTS = (
    ("fold", {"strategy": "fold"}),
    ("fold-wg128", {"strategy": "fold", "work_group": 128}),
    ("fold-wg512", {"strategy": "fold", "work_group": 512}),
    ("rows", {"strategy": "rows"}),
    ("rows-wg128", {"strategy": "rows", "work_group": 128}),
    ("local32", {"strategy": "local32"}),
    ("local", {"strategy": "local"}),
    ("global", {"strategy": "global"}),
)

#: Counts per pixel per frame of the cases.
COUNTS = (0.01, 0.1)


def numpy_event_n2(events, binning):
    """Exact n2 (n_sub, n_frames) int64 of integer ``events`` by NumPy, pair distance after
    pair distance.

    Pairs (i, i + d) of one pixel for d = 0, 1, …: at each d the events still having a partner d
    further in their pixel are kept, and v_i·v_{i+d} is added at (sub-bin, t_{i+d} − t_i) by
    ``bincount`` in float64 — exact, the total of all products being checked below 2⁵³.
    """
    n_frames, n_sub = events.n_frames, binning.n_sub
    sub = events.pixel_sub_bins(binning)
    counts = events.events_per_pixel
    owner = numpy.repeat(numpy.arange(events.n_pixels), counts)
    ev_sub = sub[owner]
    binned = ev_sub >= 0
    t = events.times.astype(numpy.int64)
    v = events.values.astype(numpy.float64)
    pixel_sums = numpy.bincount(owner[binned], weights=v[binned], minlength=events.n_pixels)
    if float((pixel_sums * pixel_sums).sum()) >= 2.0**53:
        raise ValueError("numpy_event_n2: the sums could leave float64's exact integers")
    size = n_sub * n_frames
    n2 = numpy.zeros(size)
    alive = numpy.flatnonzero(binned)
    d = 0
    while alive.size:
        j = alive + d
        key = ev_sub[alive] * n_frames + (t[j] - t[alive])
        n2 += numpy.bincount(key, weights=v[alive] * v[j], minlength=size)
        d += 1
        alive = alive[alive + d < owner.size]
        alive = alive[owner[alive + d] == owner[alive]]
    return numpy.rint(n2).astype(numpy.int64).reshape(n_sub, n_frames)


def _row_band(events, labels, n_rows: int):
    """The first ``n_rows`` detector rows of a full-frame EventStack, and their labels."""
    from ..engine.events import EventStack

    nx = events.frame_shape[1]
    npix = n_rows * nx
    e1 = int(events.offsets[npix])
    band = EventStack(events.values[:e1], events.times[:e1], events.offsets[: npix + 1],
                      numpy.arange(npix, dtype=numpy.int64), (n_rows, nx), events.n_frames,
                      events.dtype, trusted=True)
    return band, labels[:n_rows]


def _ref_rows(events, labels, max_pairs: float) -> int:
    """Detector rows whose binned pixels hold at most ``max_pairs`` event pairs (at least 1)."""
    nx = events.frame_shape[1]
    n = numpy.diff(events.offsets).astype(numpy.float64) * (labels.ravel() > 0)
    per_row = (n * (n + 1) / 2).reshape(-1, nx).sum(axis=1)
    return int(max(1, numpy.searchsorted(numpy.cumsum(per_row), max_pairs, side="right")))


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def host_steps(events, binning, device=None, frame_sums=None) -> dict:
    """Seconds of each host step of ``opencl-events``' correlate on ``events``, no kernel run.

    ``frame_sums`` (n_frames, n_sub) int64, when known, spares computing them on the host (an
    input of the range check and of normalisation, not a timed step).

    Returns
    -------
    dict
        check_events_s, budget_first_s and budget_s (two queries of the device memory
        budget, made once per run: with NVML, on NVIDIA GPUs, the first of a process
        initialises it, as with ``--host-steps``), nvml (whether NVML answers it),
        sub_bins_s + plan_tasks_s + total_pairs_s (host-planned first-event walk: "local",
        "global"), fold_rows_s (the host part of the device-planned "fold", "rows",
        "local32"), staging_s (the events copied by threads into staging memory, as
        :func:`ewoksxpcs.opencl.device.upload_pinned` does for pageable arrays; none for
        pinned events), pin_s (:func:`~ewoksxpcs.correlators.opencl_events.pin_events`: once
        per EventStack, not per call), check_range_s, s2_host_s (FFTs, CPU devices),
        normalise_s (s2 rows of the host's FFTs given), normalise_dev_s (s2 rows laid out as
        the device's, GPUs), both with the numba jackknife loaded, n_tasks_walk.
    """
    from ..correlators.opencl_events import OpenCLEventCorrelator, _total_pairs, pin_events, \
        plan_tasks
    from ..engine.normalise import normalise, s2_rows
    from ..engine.result import CorrelationSums
    from ..opencl.device import _nvml_handles, copy_into, default_device_memory

    c = OpenCLEventCorrelator(binning, device=device, strategy="local")
    out = {}
    _, out["check_events_s"] = _timed(lambda: c._check_events(events))
    # The budget's query (NVML on NVIDIA GPUs): the process's first one, and a later one.
    _, out["budget_first_s"] = _timed(lambda: default_device_memory(c.dev))
    _, out["budget_s"] = _timed(lambda: default_device_memory(c.dev))
    out["nvml"] = "yes" if _nvml_handles() else "no"
    pix_sub, out["sub_bins_s"] = _timed(lambda: events.pixel_sub_bins(binning))
    total, out["total_pairs_s"] = _timed(
        lambda: _total_pairs(numpy.diff(events.offsets)[pix_sub >= 0]))
    geometry = c._geometry(False, events.values_dtype, events.n_frames)
    n_tiles = -(-events.n_frames // geometry[2])
    task_pairs = c._task_pairs(total, "local", geometry[2], n_tiles)
    edges = c._chunk_edges(events, False)

    def plan():
        n = 0
        for p0, p1 in zip(edges[:-1], edges[1:]):
            n += plan_tasks(events.offsets[p0: p1 + 1], pix_sub[p0:p1], task_pairs)[4].size
        return n

    out["n_tasks_walk"], out["plan_tasks_s"] = _timed(plan)
    fold = OpenCLEventCorrelator(binning, device=device, strategy="fold")
    _, out["fold_rows_s"] = _timed(lambda: fold._binned_rows(events))

    # The threads' copy into staging memory (destination pages touched beforehand, as the
    # reused pinned ring's are).
    dst = [numpy.ones_like(a) for a in (events.values, events.times)]
    _, out["staging_s"] = _timed(
        lambda: [copy_into(d, a) for d, a in zip(dst, (events.values, events.times))])
    del dst
    pinned, out["pin_s"] = _timed(lambda: pin_events(events, c.dev))
    del pinned
    if frame_sums is None:
        frame_sums = events.frame_sums_for(binning)
    _, out["check_range_s"] = _timed(lambda: c._check_range(events, frame_sums))
    lags = numpy.arange(events.n_frames)
    rows, out["s2_host_s"] = _timed(lambda: s2_rows(frame_sums, binning, lags, "auto"))
    sums = CorrelationSums(n2=numpy.zeros((binning.n_sub, events.n_frames), numpy.int64),
                           frame_sums=frame_sums, lags=lags)
    try:  # the fused jackknife, as loaded in the background by correlate (warm_numba)
        import importlib

        importlib.import_module("ewoksxpcs.engine.normalise_numba")
    except ImportError:  # pragma: no cover - numba missing: the NumPy path is timed
        pass
    normalise(sums, binning, s2=rows)  # first call: not timed
    _, out["normalise_s"] = _timed(lambda: normalise(sums, binning, s2=rows))
    rows = [None if r is None else numpy.ascontiguousarray(r) for r in rows]
    _, out["normalise_dev_s"] = _timed(lambda: normalise(sums, binning, s2=rows))
    return out


def _profiled(correlator, data) -> dict:
    """Per-step seconds of one profiled correlate call."""
    correlator.profile = True
    try:
        res = correlator.correlate(data)
    finally:
        correlator.profile = False
    prof = dict(correlator.last_profile)
    prof["normalise_s"] = res.info.get("timings", {}).get("normalise_s")
    return prof


STEP_KEYS = ("upload_s", "plan_s", "plan_kernels_s", "s2_s", "s2_wait_s", "download_s",
             "normalise_s")


def _fmt(v, spec="8.4f"):
    return f"{'-':>8}" if v is None else format(v, spec)


def run(scale: float = 1.0, counts: Sequence[float] = COUNTS, variants=VARIANTS,
        device: Optional[str] = "gpu", repeat: int = 3, ref_pairs: float = 2e8,
        dynamix: bool = True, file=None, host_only: bool = False) -> list:
    """Run the benchmark (see the module docstring); print to ``file``; return the rows.

    ``host_only``: only the data and the host steps (best of ``repeat`` each), one row per case
    (case, steps).

    Returns
    -------
    list of dict
        One per (case, variant, feed): case, variant, feed, best_s, steps (dict), exact_ref
        (bool), same_as_first (bool), dynamix_s, same_as_dynamix.
    """
    from .. import create_correlator
    from ..correlators.opencl_events import pin_events
    from ..engine.qmask import Binning
    from ..opencl.device import get_device, is_pinned
    from .benchmark import _beamstop_labels
    from .benchmark_gpu import poisson_events, resident_events

    file = file or sys.stdout

    def say(*a):
        print(*a, file=file, flush=True)

    dev = get_device(device)
    side = max(8, int(round(1024 * scale ** 0.5)))
    n_frames = max(16, int(round(10_000 * scale)))
    say(f"# opencl-events variants on {dev.name} ({dev.kind}); {side}x{side} pixels x "
        f"{n_frames} frames, 10 bins; best of {repeat}")
    rows = []
    for mean in counts:
        t0 = time.perf_counter()
        events = poisson_events((side, side), n_frames, mean, seed=3)
        labels = _beamstop_labels((side, side), 10)
        binning = Binning(labels)
        n = numpy.diff(events.offsets).astype(numpy.float64)[labels.ravel() > 0]
        say(f"\n## {mean:g} counts/px/frame: {events.n_events} events, "
            f"{(n * (n + 1) / 2).sum():.3g} pairs (generated in {time.perf_counter() - t0:.1f} s)")
        if host_only:
            steps = [host_steps(events, binning, device, events.frame_sums_for(binning))
                     for _ in range(max(1, repeat))]
            best = {k: (min(st[k] for st in steps) if isinstance(v, float) else v)
                    for k, v in steps[0].items()}
            say(f"host steps (no kernel; seconds, best of {max(1, repeat)}): " + ", ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items()))
            rows.append(dict(case=f"{mean:g}", steps=best))
            del events
            continue
        # Exactness against NumPy on a band of rows.
        n_rows = min(side, _ref_rows(events, labels, ref_pairs))
        band, band_labels = _row_band(events, labels, n_rows)
        band_binning = Binning(band_labels)
        ref_n2 = numpy_event_n2(band, band_binning)
        ref_sums = band.frame_sums_for(band_binning)
        exact = {}
        for label, options in variants:
            c = create_correlator(band_binning, method="opencl-events", device=device, **options)
            r = c.correlate(band)
            exact[label] = bool(numpy.array_equal(r.sums.n2, ref_n2)
                                and numpy.array_equal(r.sums.frame_sums, ref_sums))
        say(f"exact vs NumPy on rows 0-{n_rows - 1}: " + ", ".join(
            f"{k}={'yes' if v else 'NO'}" for k, v in exact.items()))
        # Speed.
        warm = poisson_events((16, 16), n_frames, mean, seed=1)  # same programs: compiled
        warm_binning = Binning(_beamstop_labels((16, 16), 2))
        resident = resident_events(events, dev)
        pinned, pin_s = _timed(lambda: pin_events(events, dev))
        times = getattr(pinned, "bus_times", pinned.times)  # uint16 up to 65 536 frames
        say(f"pinned feed: values and times page-locked: "
            f"{'yes' if is_pinned(pinned.values) and is_pinned(times) else 'NO'} "
            f"(times as {times.dtype}; pin_events {pin_s:.2f} s, once, not timed below)")
        first = frame_sums = None
        case_rows = []
        say(f"{'variant':<12} {'feed':<7} {'best_s':>8} " + " ".join(
            f"{k[:-2]:>8}" for k in STEP_KEYS) + "  hist tile tasks  exact same")
        for label, options in variants:
            try:  # compiles this variant's programs
                create_correlator(warm_binning, method="opencl-events", device=device,
                                  **options).correlate(warm)
            except Exception:
                pass  # the error shows again in the timed calls
            for feed, data in (("host", events), ("pinned", pinned), ("device", resident)):
                row = dict(case=f"{mean:g}", variant=label, feed=feed, exact_ref=exact[label])
                try:
                    c = create_correlator(binning, method="opencl-events", device=device,
                                          **options)
                    best, res = None, None
                    for _ in range(max(1, repeat)):
                        res, s = _timed(lambda: c.correlate(data))
                        best = s if best is None else min(best, s)
                    row["best_s"] = best
                    if first is None:
                        first, frame_sums = res.sums.n2, res.sums.frame_sums
                    row["same_as_first"] = bool(numpy.array_equal(res.sums.n2, first))
                    row["n2"] = res.n2  # per bin, as dynamix gives it
                    del res
                    row["steps"] = _profiled(c, data)
                except Exception as e:  # reported, the other variants still run
                    row["error"] = f"{type(e).__name__}: {e}"
                case_rows.append(row)
                steps = row.get("steps", {})
                say(f"{label:<12} {feed:<7} {_fmt(row.get('best_s'))} " + " ".join(
                    _fmt(steps.get(k)) for k in STEP_KEYS)
                    + f"  {steps.get('hist_bits', '-'):>4} {steps.get('lag_tile', '-'):>5} "
                    f"{steps.get('n_tasks', '-'):>5}  {'yes' if row['exact_ref'] else 'NO':>5} "
                    f"{'yes' if row.get('same_as_first') else 'NO':>4}"
                    + (f"  {row['error']}" if "error" in row else ""))
        del resident, pinned
        say("host steps (no kernel; seconds): " + ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in host_steps(events, binning, device, frame_sums).items()))
        if dynamix:
            _dynamix(events, labels, device, case_rows, say)
        for row in case_rows:
            row.pop("n2", None)
        rows.extend(case_rows)
        del events
    return rows


def _dynamix(events, labels, device, case_rows, say):
    """dynamix's EventCorrelator on the same data and device, warmed up, fed NumPy arrays
    (:func:`~ewoksxpcs.tools.benchmark_gpu.dynamix_events`), compared."""
    from .benchmark_gpu import dynamix_events

    try:
        peer_s, n2, _, _, _ = dynamix_events(events, labels, device, repeat=2)
    except Exception as e:
        say(f"dynamix EventCorrelator: not run ({type(e).__name__}: {e})")
        return
    say(f"dynamix EventCorrelator: {peer_s:.4f} s (warmed up, an instance's first call, NumPy "
        "arrays)")
    for row in case_rows:
        row["dynamix_s"] = peer_s
        if "n2" in row:
            row["same_as_dynamix"] = bool(row["n2"].shape == n2.shape
                                          and numpy.array_equal(row["n2"], n2))
        if row.get("best_s"):
            say(f"  {row['variant']:<12} {row['feed']:<7} {peer_s / row['best_s']:6.2f}x dynamix"
                f"  n2 {'==' if row.get('same_as_dynamix') else '!='} dynamix")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ewoksxpcs.tools.bench_events_variants",
        description="Time and check the opencl-events kernel variants (see the module docstring).")
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the 1024x1024 pixels and of the 10 000 frames")
    parser.add_argument("--counts", type=float, nargs="+", default=list(COUNTS))
    parser.add_argument("--device", default="gpu", help='OpenCL device ("gpu", "cpu", "P:D")')
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=None,
                        help=f"labels among {', '.join(v[0] for v in VARIANTS)}")
    parser.add_argument("--ref-pairs", type=float, default=2e8,
                        help="pairs of the NumPy reference's band of rows")
    parser.add_argument("--no-dynamix", action="store_true")
    parser.add_argument("--host-steps", action="store_true",
                        help="only the host steps (no kernel, no peer): any machine, full size")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        parser.error(f"--scale must be in (0, 1], got {args.scale}")
    variants = VARIANTS
    if args.variants:
        known = dict(VARIANTS)
        unknown = [v for v in args.variants if v not in known]
        if unknown:
            parser.error(f"unknown variant(s) {', '.join(unknown)}")
        variants = tuple((v, known[v]) for v in args.variants)

    class Tee:
        def __init__(self, *files):
            self.files = files

        def write(self, s):
            for f in self.files:
                f.write(s)

        def flush(self):
            for f in self.files:
                f.flush()

    out = open(args.out, "w") if args.out else None
    try:
        run(args.scale, args.counts, variants, args.device, args.repeat, args.ref_pairs,
            not args.no_dynamix, file=Tee(sys.stdout, out) if out else sys.stdout,
            host_only=args.host_steps)
    finally:
        if out:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
