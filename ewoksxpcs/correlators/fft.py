"""``fft``: n2 from zero-padded real FFTs of each pixel's time series (seed §2.2).

For a pixel series a(t), t < Nt, the autocorrelation for all lags is
c[τ] = Σ_t a[t]·a[t+τ] = irfft(|rfft(a, n)|²)[τ] with n ≥ 2·Nt − 1 (no wrap-around); n is the
next 5-smooth size. The inverse transform is linear, so the power spectra of the pixels of a
sub-bin are added first and inverted once per group of pixels: one forward transform per pixel,
few inverse ones. Pixels are processed in blocks (``pixel_block``), so the seed's 24·N_p·Nt bytes
of spectra are never held at once. Transforms use pyFFTW (threaded plans) or ``numpy.fft``.

Dense frames arrive frame-major; their binned pixels are kept in a
:class:`~ewoksxpcs.engine.pixel_series.GatheredStack` (native dtype, RAM or a temporary memmap) and read back
pixel block by pixel block. An :class:`~ewoksxpcs.engine.events.EventStack` is read pixel block by pixel
block too, each block's dense series built from its events (the stack is never densified whole).

Exactness for integers: the float64 FFT correlation of series with Σ_t a² = c0 has an error of
order ε·log2(n)·c0 (ε = 2⁻⁵³), far below ½ while c0 < 2^PRECISION_BITS (2⁴⁰, as in
:mod:`ewoksxpcs.engine.autocorr`). Pixels are grouped (within a sub-bin) so that the c0 of a group adds
up to less than 2⁴⁰; each group's summed spectrum is inverted and rounded to int64 exactly. A
pixel whose own c0 reaches 2⁴⁰ is split into pieces of B bits, a = Σ_i 2^(B·i)·a_i, with
Nt·(2^B)² ≤ 2⁴⁰; the cross-correlations of the pieces are each exact and combine in int64.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Optional

import numpy

from ..engine.lazy_imports import import_module
from ..engine.autocorr import PRECISION_BITS
from ..engine.intrange import check_int64_bound
from ..engine.pixel_series import GatheredStack
from ..engine.result import CorrelationSums
from .base import DenseCorrelator, accumulator_dtype
from .registry import register


def _pyfftw():
    """pyFFTW, or None if it is not installed (imported on first use: it pulls dask in)."""
    try:
        import pyfftw
    except ImportError:  # pragma: no cover - pyfftw is a dependency, numpy.fft the fallback
        return None
    return pyfftw

__all__ = ["FFTCorrelator", "fft_size", "FFT_LIBRARIES"]

FFT_LIBRARIES = ("pyfftw", "numpy")
#: Rows of one inverse transform (spectra summed per pixel group are inverted by slices of it).
INVERSE_ROWS = 8
#: Bytes of transform buffers of all worker threads together, when ``pixel_block`` is not given.
DEFAULT_FFT_MEMORY = 256 * 1024**2
_EXACT_LIMIT = 2.0**PRECISION_BITS


def fft_size(n_frames: int) -> int:
    """Transform length for Nt frames: the next 5-smooth size ≥ 2·Nt − 1 (1 for Nt ≤ 1)."""
    next_fast_len = import_module("scipy.fft").next_fast_len
    return int(next_fast_len(max(2 * int(n_frames) - 1, 1), real=True))


class _Transforms:
    """Batched real transforms of length ``nfft`` for blocks of ``batch`` series.

    :attr:`input` (batch, nfft) float64 holds the series, zero beyond column ``n_frames`` (the
    caller writes columns < n_frames only); :meth:`forward` returns the (batch, nfft//2 + 1)
    complex spectra (a buffer reused by the next call); :meth:`inverse` inverts real spectra.
    """

    def __init__(self, n_frames: int, batch: int, library: str, threads: int, planner: str):
        self.nt = n_frames
        self.nfft = fft_size(n_frames)
        self.nh = self.nfft // 2 + 1
        self.batch = batch
        self.library = library
        self.threads = threads
        self.flags = ("FFTW_MEASURE",) if planner == "measure" else ("FFTW_ESTIMATE",)
        self._inverse_plan = None
        # Owned by the worker thread using these buffers: Σ a² (or a bound) per sub-bin.
        self.c0_sub: Optional[numpy.ndarray] = None
        if library == "pyfftw":
            pyfftw = _pyfftw()
            self.input = pyfftw.zeros_aligned((batch, self.nfft), dtype="float64")
            self._output = pyfftw.empty_aligned((batch, self.nh), dtype="complex128")
            # FFTW_MEASURE overwrites the arrays while planning: plan before any data is written.
            self._plan = pyfftw.FFTW(self.input, self._output, axes=(-1,), direction="FFTW_FORWARD",
                                     flags=self.flags, threads=threads)
            self.input[...] = 0
        else:
            self.input = numpy.zeros((batch, self.nfft), dtype=numpy.float64)

    def forward(self) -> numpy.ndarray:
        if self.library == "pyfftw":
            self._plan()
            return self._output
        return numpy.fft.rfft(self.input, axis=-1)

    def inverse(self, spectra: numpy.ndarray) -> numpy.ndarray:
        """irfft of real spectra (g, nh) → correlations (g, n_frames) float64.

        Inverted :data:`INVERSE_ROWS` rows at a time through one plan (zero rows padding the
        last slice): one plan per thread, not one per group count, each of ~32·Nt bytes a row.
        """
        g = spectra.shape[0]
        out = numpy.empty((g, self.nt))
        for r0 in range(0, g, INVERSE_ROWS):
            r1 = min(g, r0 + INVERSE_ROWS)
            if self.library != "pyfftw":
                out[r0:r1] = numpy.fft.irfft(spectra[r0:r1], self.nfft, axis=-1)[:, : self.nt]
                continue
            plan = self._inverse_plan
            if plan is None:
                pyfftw = _pyfftw()
                src = pyfftw.empty_aligned((INVERSE_ROWS, self.nh), dtype="complex128")
                dst = pyfftw.empty_aligned((INVERSE_ROWS, self.nfft), dtype="float64")
                plan = self._inverse_plan = pyfftw.FFTW(
                    src, dst, axes=(-1,), direction="FFTW_BACKWARD",
                    flags=("FFTW_ESTIMATE", "FFTW_DESTROY_INPUT"), threads=self.threads)
            plan.input_array.real[: r1 - r0] = spectra[r0:r1]
            plan.input_array.real[r1 - r0:] = 0
            plan.input_array.imag[...] = 0
            plan(normalise_idft=True)  # scaled by 1/nfft, as numpy.fft.irfft
            out[r0:r1] = plan.output_array[: r1 - r0, : self.nt]
        return out


def _groups(weights: numpy.ndarray, subs: numpy.ndarray, limit: float):
    """Split rows (sorted by sub-bin) into runs of one sub-bin whose weights add below ``limit``.

    Every single weight is below ``limit``. Returns (starts, ends, sub-bin of each run).
    """
    starts, ends = [], []
    bounds = numpy.flatnonzero(numpy.diff(subs)) + 1
    seg_starts = numpy.concatenate([[0], bounds])
    seg_ends = numpy.concatenate([bounds, [subs.size]])
    for s, e in zip(seg_starts.tolist(), seg_ends.tolist()):
        cs = numpy.cumsum(weights[s:e])
        if cs[-1] < limit:
            starts.append(s)
            ends.append(e)
            continue
        start, base = 0, 0.0
        while start < e - s:
            end = int(numpy.searchsorted(cs, base + limit, side="left"))
            end = max(end, start + 1)
            starts.append(s + start)
            ends.append(s + end)
            base = float(cs[end - 1])
            start = end
    starts = numpy.asarray(starts, dtype=numpy.int64)
    return starts, numpy.asarray(ends, dtype=numpy.int64), subs[starts]


def _power_sums(fi: numpy.ndarray, fj: numpy.ndarray, starts, ends) -> numpy.ndarray:
    """Σ over each row run of Re(conj(F_i)·F_j), (n_runs, nh) float64."""
    vi = fi.view(numpy.float64)
    vj = vi if fj is fi else fj.view(numpy.float64)
    nh = fi.shape[1]
    out = numpy.empty((len(starts), nh), dtype=numpy.float64)
    for g, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        # Sum over pixels of re·re' + im·im', one contiguous pass (re and im interleaved).
        acc = numpy.einsum("pj,pj->j", vi[s:e], vj[s:e])
        out[g] = acc[0::2] + acc[1::2]
    return out


@register
class FFTCorrelator(DenseCorrelator):
    """Dense (or event) correlator by FFT of each pixel's time series (see the module docstring).

    Accepts frames (any :func:`~ewoksxpcs.engine.frames.as_frame_source` input) and
    :class:`~ewoksxpcs.engine.events.EventStack` objects.

    Options
    -------
    fft_library : {"pyfftw", "numpy"}
        Default "pyfftw" when importable.
    threads : int
        FFTW threads (default ``os.cpu_count()``).
    fftw_planner : {"estimate", "measure"}
        FFTW planning effort (default "estimate": planning is instantaneous; "measure" takes
        about a second per new size and runs the transforms ~20 % faster).
    pixel_block : int
        Pixel series transformed per batch and thread (default: 256 MiB of transform buffers
        shared among the threads).
    max_memory : int
        Bytes of gathered frames kept in RAM before they move to an unlinked temporary file
        mapped in memory (default :data:`ewoksxpcs.engine.spill.DEFAULT_MAX_MEMORY`, 64 MiB; see
        :mod:`ewoksxpcs.engine.spill`).
    chunk_frames : int
        Frames read per chunk from the source.
    """

    name = "fft"
    compute_share = 0.7  # the transforms, after the frames are gathered: most of the time
    description = "zero-padded real FFT per pixel series, spectra summed per sub-bin (exact); " \
                  "also reads EventStacks"

    @classmethod
    def option_names(cls):
        return ("chunk_frames", "fft_library", "threads", "fftw_planner", "pixel_block",
                "max_memory")

    def __init__(self, qmask, device=None, **options):
        super().__init__(qmask, device=device, **options)
        lib = self.options.get("fft_library")
        if lib is None:
            lib = "pyfftw" if _pyfftw() is not None else "numpy"
        if lib not in FFT_LIBRARIES:
            raise ValueError(f"fft_library must be one of {FFT_LIBRARIES}, got {lib!r}")
        if lib == "pyfftw" and _pyfftw() is None:
            raise ValueError("fft_library 'pyfftw' asked for but pyfftw is not installed")
        self.fft_library = lib
        planner = self.options.get("fftw_planner", "estimate")
        if planner not in ("estimate", "measure"):
            raise ValueError(f"fftw_planner must be 'estimate' or 'measure', got {planner!r}")
        self.fftw_planner = planner
        for opt in ("threads", "pixel_block"):
            v = self.options.get(opt)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, numpy.integer))
                                  or v < 1):
                raise ValueError(f"{opt} must be an integer >= 1, got {v!r}")
        self.threads = int(self.options.get("threads") or os.cpu_count() or 1)

    # ------------------------------------------------------------------ entry points
    def compute_sums(self, data) -> CorrelationSums:
        from ..engine.events import EventStack

        if isinstance(data, EventStack):
            self.binning.check_frame_shape(data.frame_shape)
            self.acc_dtype = accumulator_dtype(data.dtype)
            frame_sums = data.frame_sums_for(self.binning)  # first: it validates the events
            n2 = self._n2_events(data)
            return CorrelationSums(n2=n2, frame_sums=frame_sums,
                                   lags=numpy.arange(data.n_frames, dtype=numpy.int64))
        try:
            return super().compute_sums(data)
        finally:
            self._release()

    def _release(self):
        stack = getattr(self, "_stack", None)
        if stack is not None:
            stack.close()
        self._stack = None

    def _start(self, source):
        self._stack = GatheredStack(self.binning.n_binned_pixels, source.dtype,
                                    max_memory=self.options.get("max_memory"),
                                    n_frames=source.n_frames)

    def _feed(self, t0, block):
        self._stack.append(block)

    def _finish(self, n_frames):
        b = self.binning
        sub = b.sub_of_pixel()
        stack = self._stack

        def series_of(p0, p1):
            return stack.columns(p0, p1).T, sub[p0:p1]  # (pixels, Nt) native dtype

        n2 = self._run_blocks(n_frames, b.n_binned_pixels, series_of)
        self._release()
        return n2

    # ------------------------------------------------------------------ events
    def _n2_events(self, events) -> numpy.ndarray:
        b = self.binning
        nt = events.n_frames
        rank = numpy.searchsorted(events.pixel_index, b.pixel_index)
        first = events.offsets[rank]
        counts = events.offsets[rank + 1] - first
        active = numpy.flatnonzero(counts)  # pixels without events add nothing
        sub = b.sub_of_pixel()
        times, values = events.times, events.values

        def series_of(q0, q1):
            rows = active[q0:q1]
            cnt = counts[rows]
            total = int(cnt.sum())
            row_of_event = numpy.repeat(numpy.arange(rows.size), cnt)
            # Index of every event of these pixels: first[row] + rank within the row.
            within = numpy.arange(total) - numpy.repeat(numpy.cumsum(cnt) - cnt, cnt)
            idx = numpy.repeat(first[rows], cnt) + within
            series = numpy.zeros((rows.size, nt), dtype=values.dtype)
            series[row_of_event, times[idx].astype(numpy.int64)] = values[idx]
            return series, sub[rows]

        return self._run_blocks(nt, active.size, series_of)

    # ------------------------------------------------------------------ the transforms
    def _run_blocks(self, nt: int, n_series: int, series_of) -> numpy.ndarray:
        """n2 (n_sub, nt) of ``n_series`` pixel series, read by blocks as ``series_of(i0, i1)``.

        The blocks are shared among worker threads, each with its own transform buffers and
        plan; each adds its few inverse transforms to n2 under a lock. FFTW gets the threads left
        over when there are fewer blocks than threads.
        """
        n_sub = self.binning.n_sub
        n2 = numpy.zeros((n_sub, nt), dtype=self.acc_dtype)
        if nt == 0 or n_series == 0:
            return n2
        self._n2_lock = threading.Lock()
        nfft = fft_size(nt)
        batch = self.options.get("pixel_block")
        if batch is None:
            per_pixel = 8 * nfft + 16 * (nfft // 2 + 1) + 8 * nt
            batch = max(1, DEFAULT_FFT_MEMORY // (per_pixel * self.threads))
            # Every thread gets work, even for few series.
            batch = min(batch, -(-n_series // self.threads))
        batch = int(min(batch, n_series))
        starts = list(range(0, n_series, batch))
        n_workers = min(self.threads, len(starts))
        fft_threads = max(1, self.threads // n_workers)
        # Plans are made here, one at a time (the FFTW planner is not thread-safe).
        idle = queue.SimpleQueue()
        workers = []
        for _ in range(n_workers):
            w = _Transforms(nt, batch, self.fft_library, fft_threads, self.fftw_planner)
            w.c0_sub = numpy.zeros(n_sub)  # Σ a² (or a bound of it) per sub-bin, float64
            workers.append(w)
            idle.put(w)

        def task(i0):
            w = idle.get()
            try:
                series, subs = series_of(i0, min(i0 + batch, n_series))
                self._accumulate(w, series, subs, n2)
            finally:
                idle.put(w)

        if n_workers == 1:
            for k, i0 in enumerate(starts):
                task(i0)
                self._report((k + 1) / len(starts))
        else:
            with ThreadPoolExecutor(n_workers) as pool:
                futures = [pool.submit(task, i0) for i0 in starts]
                for k, f in enumerate(as_completed(futures)):  # reported from this thread
                    f.result()
                    self._report((k + 1) / len(starts))
        self._check_range(sum(w.c0_sub for w in workers))
        return n2

    def _accumulate(self, tr: _Transforms, series: numpy.ndarray, subs: numpy.ndarray,
                    n2: numpy.ndarray) -> None:
        """Add the autocorrelations of ``series`` (m, Nt) to n2 rows ``subs`` (m,), sorted."""
        m, nt = series.shape
        inp = tr.input
        if m < tr.batch:  # last, partial block: clear the rows left from the previous one
            inp[m:, :nt] = 0
        if series.dtype.kind == "f":
            inp[:m, :nt] = series
            spectra = tr.forward()[:m]
            starts, ends, gsub = _groups(numpy.zeros(m), subs, 1.0)
            corr = tr.inverse(_power_sums(spectra, spectra, starts, ends))
            with self._n2_lock:
                numpy.add.at(n2, gsub, corr)
            return
        inp[:m, :nt] = series
        peak = max(abs(int(series.max())), abs(int(series.min()))) if series.size else 0
        pixel_bound = float(nt) * peak * peak  # ≥ Σ a² of every pixel of the block
        if m * pixel_bound < _EXACT_LIMIT:
            # The whole block's Σ a² is below the limit: one group per sub-bin, no c0 needed.
            c0 = numpy.zeros(m)
            tr.c0_sub += numpy.bincount(subs, minlength=n2.shape[0]) * pixel_bound
        else:
            view = inp[:m, :nt]
            c0 = numpy.einsum("pt,pt->p", view, view)  # Σ a² per pixel (float64 estimate)
            tr.c0_sub += numpy.bincount(subs, weights=c0, minlength=n2.shape[0])
        if c0.max() < _EXACT_LIMIT:
            spectra = [tr.forward()[:m]]
            weights, bits = c0, 0
        else:
            spectra, weights, bits = self._pieces(tr, series)
        starts, ends, gsub = _groups(weights, subs, _EXACT_LIMIT)
        n_p = len(spectra)
        for i in range(n_p):
            for j in range(i, n_p):
                power = _power_sums(spectra[i], spectra[j], starts, ends)
                if i != j:  # corr(a_i, a_j) + corr(a_j, a_i)
                    power *= 2
                corr = numpy.rint(tr.inverse(power)).astype(numpy.int64)
                if bits:
                    corr <<= bits * (i + j)
                with self._n2_lock:
                    numpy.add.at(n2, gsub, corr)

    def _pieces(self, tr: _Transforms, series: numpy.ndarray):
        """Spectra of the B-bit pieces of integer series with large values."""
        m, nt = series.shape
        bits = max(1, (PRECISION_BITS - math.ceil(math.log2(nt + 1))) // 2)
        a = series.astype(numpy.int64)
        sign = numpy.sign(a)
        mag = numpy.abs(a)
        n_pieces = max(1, math.ceil(int(mag.max()).bit_length() / bits))
        mask = (1 << bits) - 1
        spectra, weights = [], numpy.zeros(m)
        for i in range(n_pieces):
            piece = sign * ((mag >> (bits * i)) & mask)
            tr.input[:m, :nt] = piece
            view = tr.input[:m, :nt]
            weights = numpy.maximum(weights, numpy.einsum("pt,pt->p", view, view))
            spectra.append(tr.forward()[:m].copy())
        return spectra, weights, bits

    def _check_range(self, totals: numpy.ndarray) -> None:
        """Raise ValueError if a sub-bin's Σ a² (≥ |n2|, Cauchy–Schwarz) leaves the int64 range.

        ``totals`` (n_sub,) are the sub-bins' Σ a², float64, exact per block or, for blocks
        of small values, an upper bound below 2**40 per block (bounds alone never get near the
        int64 range).
        """
        check_int64_bound(totals, self.binning)
