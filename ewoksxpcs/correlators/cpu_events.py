"""``cpu-events``: n2 of sparse data on the CPU, every event pair once (numba, threads).

n2[k, τ] = Σ_{pixels p of sub-bin k} Σ_{events i ≤ j of p, t_j − t_i = τ} v_i·v_j — the same sum
as ``opencl-events``, exact in 64-bit integers for integer events (float64 for float32 events).
Frames given instead of an EventStack are compacted first, by the numba compaction of
:mod:`ewoksxpcs.engine.compact_cpu`; the per-frame sub-bin sums are added by the pair kernel, in the
same pass over the events.

Work: the pairs of each pixel, n_p·(n_p + 1)/2, walked in a double loop that adds v_i·v_j to a
histogram over the lags. Written v = 1 + w, the all-ones pairs need only the times (most events of
sparse data are single photons) and the few events with v ≠ 1 add the difference afterwards
(:func:`ewoksxpcs.engine.events_numba._pairs_not_ones`). The binned pixels are taken in sub-bin order and cut into *tasks*
(runs of pixels of equal pair counts, more tasks than threads so that a loaded machine balances
them); a thread adds a task's pairs into a private uint32 histogram of the lags (Nt·4 bytes: it
stays in the L1/L2 cache where an int64 one would not; uint16 from :data:`U16_MIN_LAGS` lags on)
and flushes it into the int64 n2 when the sub-bin changes or before the count at one lag could
pass the histogram's range (a pixel adds at most Σv·max v at one lag), so the sums stay exact.
A task writes the sub-bins that lie wholly inside it straight into n2 (no other task
touches them) and its first and last sub-bins into rows of its own, added afterwards.

The cost is O(Σ_p n_p²): ahead of the FFT methods while events per pixel are few
(see README, "CPU benchmarks"); dense data go to ``fft``.
"""

from __future__ import annotations

import numpy

from .base import EventCorrelator
from .registry import register

__all__ = ["CPUEventCorrelator", "event_rows", "plan_pixel_tasks", "n2_events_cpu"]

#: Largest count a uint16 / uint32 histogram takes at one lag between two flushes.
_U16_LIMIT = 2**16 - 1
_U32_LIMIT = 2**32 - 1
#: From this many lags on, uint16 histograms (beyond 32 KiB as uint32: out of a core's L1 cache;
#: 1.3× faster at 10 000 frames on the 2-core AMD EPYC machine), flushed more often.
U16_MIN_LAGS = 8192
_INT64_LIMIT = 2**63 - 1
#: Tasks per thread (balance on a machine shared with other work).
TASKS_PER_THREAD = 16
#: Bytes of the per-task edge rows, at most.
EDGE_BYTES = 256 * 2**20


def event_rows(events, binning):
    """Rows of the EventStack of the binned pixels, in sub-bin order, and their sub-bins.

    Returns
    -------
    rows : ndarray (n_binned,) int64
        Row of each pixel of ``binning.pixel_index`` in the EventStack.
    pix_sub : ndarray (n_binned,) int64
        Its sub-bin (non-decreasing).
    """
    events.pixel_sub_bins(binning)  # raises if a binned pixel is not held
    rows = numpy.searchsorted(events.pixel_index, binning.pixel_index)
    pix_sub = numpy.repeat(numpy.arange(binning.n_sub, dtype=numpy.int64), binning.sub_n_pixels)
    return rows, pix_sub


def plan_pixel_tasks(n_events: numpy.ndarray, n_tasks: int) -> numpy.ndarray:
    """Cut pixels (in order) into ``n_tasks`` runs of about equal work.

    Parameters
    ----------
    n_events : ndarray (n,) int64
        Events per pixel; the work of a pixel is its pairs plus its events.
    n_tasks : int

    Returns
    -------
    ndarray (n_tasks + 1,) int64
        Task t is pixels cuts[t] … cuts[t+1] − 1 (possibly empty).
    """
    n = numpy.asarray(n_events, dtype=numpy.int64)
    work = numpy.cumsum(n * (n + 1) // 2 + n + 1)
    total = int(work[-1]) if work.size else 0
    targets = numpy.arange(1, n_tasks) * (total / max(n_tasks, 1))
    inner = numpy.searchsorted(work, targets, side="left") + 1
    return numpy.concatenate([[0], numpy.minimum(inner, n.size), [n.size]]).astype(numpy.int64)


def n2_events_cpu(events, binning, n_threads=None, progress=None):
    """n2 and the frame sums of an EventStack on the CPU threads (see the module docstring).

    Parameters
    ----------
    events : EventStack
        Non-negative events (checked by the caller, :meth:`EventStack.check_counts`).
    binning : Binning
    n_threads : int, optional
        numba threads (default: numba's, i.e. the usable cores).
    progress : callable, optional
        ``progress(fraction)`` after each batch of tasks (2 per thread: about 8 calls).

    Returns
    -------
    n2 : ndarray (n_sub, Nt)
        int64 for integer events (exact), float64 for float events.
    frame_sums : ndarray (Nt, n_sub)
        Per-frame sub-bin sums S(t, k), same dtype.
    """
    import numba

    from ..engine import events_numba

    n_lags = events.n_frames
    integer = events.values_dtype.kind in "iub"
    acc = numpy.int64 if integer else numpy.float64
    n2 = numpy.zeros((binning.n_sub, n_lags), dtype=acc)
    fs = numpy.zeros((binning.n_sub, n_lags), dtype=acc)
    rows, pix_sub = event_rows(events, binning)
    if rows.size == 0 or n_lags == 0 or events.n_events == 0:
        return n2, fs.T.copy()
    starts = events.offsets[rows]
    ends = events.offsets[rows + 1]
    values, times = events.values, events.times
    threads = int(n_threads or numba.get_num_threads())
    n_tasks = max(1, min(TASKS_PER_THREAD * threads, rows.size,
                         EDGE_BYTES // max(1, 16 * n_lags)))
    cuts = plan_pixel_tasks(ends - starts, n_tasks)
    n_tasks = cuts.size - 1
    edge_first = numpy.zeros((n_tasks, n_lags), dtype=acc)
    edge_last = numpy.zeros((n_tasks, n_lags), dtype=acc)
    fs_first = numpy.zeros((n_tasks, n_lags), dtype=acc)
    fs_last = numpy.zeros((n_tasks, n_lags), dtype=acc)
    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    # Tasks handed out one at a time (dynamic schedule): a thread slowed down by other work on
    # the machine takes fewer of them.
    previous_chunk = numba.set_parallel_chunksize(1)
    try:
        if integer:
            # A pixel adds at most s1·vmax at one lag (s1 = Σv; its times are distinct). While
            # that stays below the histogram's range for every pixel, narrow histograms
            # flushed in time are exact (the kernel bounds each pixel's additions exactly):
            # uint16 for long lags (the histogram stays in L1), uint32, else int64.
            vmax = float(values.max()) if values.size else 0.0
            n = (ends - starts).astype(numpy.float64)
            if (vmax * vmax * n * (n + 1) / 2).sum() >= 2.0**62 and \
                    _exact_products(values, starts, ends) >= 2.0**62:
                raise ValueError("cpu-events: n2 could exceed the int64 range; use 'fft'")
            lag_bound = vmax * vmax * float(n.max())  # ≥ s1·vmax of every pixel, no pass
            if n_lags >= U16_MIN_LAGS and lag_bound <= _U16_LIMIT:
                hist_dtype, limit = numpy.uint16, _U16_LIMIT
            elif lag_bound <= _U32_LIMIT:
                hist_dtype, limit = numpy.uint32, _U32_LIMIT
            else:
                hist_dtype, limit = numpy.int64, _INT64_LIMIT
            probe = numpy.zeros(1, dtype=hist_dtype)
        # Batches of tasks (all at once without progress): the bar moves between them.
        batch = n_tasks if progress is None else 2 * threads
        for i0 in range(0, n_tasks, batch):
            i1 = min(n_tasks, i0 + batch)
            c, rows_ = cuts[i0:i1 + 1], slice(i0, i1)
            if integer:
                events_numba.pairs_int(times, values, starts, ends, limit, pix_sub, n_lags, c,
                                       n2, edge_first[rows_], edge_last[rows_], fs,
                                       fs_first[rows_], fs_last[rows_], probe)
            else:
                events_numba.pairs_float(times, values, starts, ends, pix_sub, c, n2,
                                         edge_first[rows_], edge_last[rows_], fs,
                                         fs_first[rows_], fs_last[rows_])
            if progress is not None:
                progress(i1 / n_tasks)
    finally:
        numba.set_num_threads(previous)
        numba.set_parallel_chunksize(previous_chunk)
    for t in range(n_tasks):
        a, b = int(cuts[t]), int(cuts[t + 1])
        if b > a:
            n2[pix_sub[a]] += edge_first[t]
            fs[pix_sub[a]] += fs_first[t]
            if pix_sub[b - 1] != pix_sub[a]:
                n2[pix_sub[b - 1]] += edge_last[t]
                fs[pix_sub[b - 1]] += fs_last[t]
    return n2, numpy.ascontiguousarray(fs.T)


def _exact_products(values, starts, ends) -> float:
    """Σ_pixels Σ_{i≤j} v_i·v_j = Σ ((Σv)² + Σv²)/2, the total of n2 (float64, for a range check)."""
    v = values.astype(numpy.float64)
    c1 = numpy.concatenate([[0.0], numpy.cumsum(v)])
    c2 = numpy.concatenate([[0.0], numpy.cumsum(v * v)])
    s1, s2 = c1[ends] - c1[starts], c2[ends] - c2[starts]
    return float(((s1 * s1 + s2) / 2).sum())


@register
class CPUEventCorrelator(EventCorrelator):
    """Events on the CPU threads (numba); frames are compacted first on the CPU.

    Options
    -------
    n_threads : int, optional
        numba threads (default: all usable cores).
    chunk_frames : int, optional
        Frames per chunk when compacting frames.
    """

    name = "cpu-events"
    compute_share = 0.3  # the pairs, after the frames are read and compacted
    description = "every event pair once on the CPU threads (numba), exact integer sums"

    @classmethod
    def option_names(cls):
        return ("n_threads", "chunk_frames")

    def __init__(self, qmask, device=None, **options):
        super().__init__(qmask, device=device, **options)
        self.check_positive_int_options(("n_threads", "chunk_frames"))

    def compute_sums(self, data):
        from ..engine.compact_cpu import compact_cpu
        from ..engine.events import EventStack
        from ..engine.result import CorrelationSums

        if isinstance(data, EventStack):
            events = data
            self.binning.check_frame_shape(events.frame_shape)
            events.check_counts()
        else:
            events = compact_cpu(data, self.binning, chunk_frames=self.options.get("chunk_frames"))
        n2, frame_sums = n2_events_cpu(events, self.binning, self.options.get("n_threads"),
                                       progress=self._report if self.report_progress else None)
        return CorrelationSums(n2=n2, frame_sums=frame_sums,
                               lags=numpy.arange(events.n_frames, dtype=numpy.int64))
