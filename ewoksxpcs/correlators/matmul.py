"""``matmul``: n2 from BLAS products of time blocks (seed §2.1), streaming, exact for integers.

For one sub-bin k with gathered pixel matrix A (Nt, N_k), n2[k, τ] is the sum of the rank-τ
diagonal of A·Aᵀ. The frames are cut into time blocks of T frames; when block j arrives it is
multiplied with every block i ≤ j kept so far,

    C_ij = A_i · A_jᵀ  (T_i × T_j, a BLAS product per sub-bin),

and C_ij[a, b] belongs to lag τ = (t_j0 + b) − (t_i0 + a): the diagonals of the tile add to
n2[k, t_j0 − t_i0 + d], d = b − a. Memory is one T × T tile at a time (never Nt × Nt) plus the
gathered stack (native dtype; RAM or a temporary memmap, :class:`~ewoksxpcs.engine.pixel_series.GatheredStack`).

Exactness for integer frames: with P_i, P_j the largest |value| of the sub-bin in the two blocks,
every entry (and every partial sum BLAS forms) of C_ij is an integer of magnitude at most
B = P_i·P_j·N_k. The tiles (of a batch: the largest B of its sub-bins) are computed in float32
(sgemm) when B < 2²⁴, in float64 (dgemm) when B·min(T_i, T_j) < 2⁵³ (a bound of the diagonal
sums too), else in exact int64; diagonal sums stay in float32 only while B·min(T_i, T_j) < 2²⁴.
All are exact integers, added in int64.
float32 frames are multiplied in float64.

Batches and parallelism: the consecutive sub-bins of a bin (near-equal sizes) are multiplied by
one batched call, ``numpy.matmul`` on stacked (S, T, N_max) matrices zero-padded to the widest
(zeros add nothing), and their S tiles summed along diagonals in one reduction, so the Python
work per tile stays small. These tasks are shared among ``threads`` worker threads (NumPy
releases the GIL); a product of a few hundred pixels runs best on one BLAS thread, so BLAS gets
the threads left over, ``threads // workers``, through :mod:`threadpoolctl`. Sub-bins of at
most THIN_PIXELS pixels skip BLAS (``numpy.correlate`` per pixel).
"""

from __future__ import annotations

import contextlib
import os
import queue
from concurrent.futures import ThreadPoolExecutor

import numpy
from numpy.lib.stride_tricks import as_strided

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - without it BLAS keeps its own threads
    threadpool_limits = None

from ..engine.intrange import INT64_LIMIT, check_int64_bound, square_sums
from ..engine.pixel_series import GatheredStack
from .base import DenseCorrelator
from .registry import register

__all__ = ["MatMulCorrelator", "diagonal_sums"]

#: Default frames per time block (a tile is T × T; 512 keeps a float32 tile in L2).
DEFAULT_BLOCK_FRAMES = 512
#: Sub-bins of at most this many pixels skip BLAS: their tile diagonals are the
#: cross-correlations of each pixel's two block series (numpy.correlate, same result, ~T/N_k
#: times less memory traffic than a T × T tile).
THIN_PIXELS = 8
#: Most sub-bins multiplied by one batched BLAS call (numpy.matmul on stacked matrices).
MAX_BATCH = 16

_F32_EXACT = 2**24
_F64_EXACT = 2**53


class _Tiles:
    """S stacked (Ti, Tj) product buffers whose diagonals are summed through skewed views.

    Each tile lives in rows of length R = Ti + Tj − 1 after Ti − 1 leading zeros; columns
    Tj … R−1 stay zero. Viewed with row stride R + 1, row a of the view starts at tile column
    a − (Ti−1), so view column m holds C[a, a + m − (Ti−1)] or a zero of the padding: summing
    the view over its rows gives every diagonal d = m − (Ti − 1), without a loop over lags.
    """

    def __init__(self, s: int, ti: int, tj: int, dtype):
        self.ti, self.tj = ti, tj
        r = ti + tj - 1
        length = ti - 1 + ti * r
        flat = numpy.zeros((s, length), dtype=dtype)
        #: (S, Ti, Tj) view to write the products into (BLAS-compatible strides).
        self.out = flat[:, ti - 1:].reshape(s, ti, r)[:, :, :tj]
        item = flat.itemsize
        self.skew = as_strided(flat, shape=(s, ti, r), strides=(length * item, (r + 1) * item, item),
                               writeable=False)

    def diagonals(self, upper_only: bool, dtype=None) -> numpy.ndarray:
        """Diagonal sums (S, Ti + Tj − 1) for d = −(Ti−1) … Tj−1 (or (S, Tj), d ≥ 0)."""
        view = self.skew[:, :, self.ti - 1:] if upper_only else self.skew
        return view.sum(axis=1, dtype=dtype)


def diagonal_sums(c: numpy.ndarray) -> numpy.ndarray:
    """Sums of every diagonal of a 2-D array, d = −(Ti−1) … Tj−1 (d = column − row).

    Parameters
    ----------
    c : ndarray, (Ti, Tj)

    Returns
    -------
    ndarray, (Ti + Tj − 1,)
        Same dtype as ``c`` (floats summed in their own type).
    """
    c = numpy.asarray(c)
    if c.ndim != 2 or 0 in c.shape:
        raise ValueError(f"diagonal_sums needs a non-empty 2-D array; got shape {c.shape}")
    tiles = _Tiles(1, c.shape[0], c.shape[1], c.dtype)
    tiles.out[0] = c
    return tiles.diagonals(False)[0]


def _thin_diagonals(a, b, upper_only: bool, dtype) -> numpy.ndarray:
    """Diagonal sums of a·bᵀ for few pixels: Σ over pixels of correlate(b_p, a_p), in ``dtype``.

    ``numpy.correlate(x, y, "full")[m] = Σ_a x[a + m − (len(y) − 1)]·y[a]``: with x = b_p and
    y = a_p this is diagonal d = m − (Ti − 1) of a·bᵀ, as :meth:`_Tiles.diagonals` orders them.
    """
    ti = a.shape[0]
    a = numpy.asarray(a, dtype=dtype)
    b = a if upper_only else numpy.asarray(b, dtype=dtype)
    out = None
    for p in range(a.shape[1]):
        c = numpy.correlate(b[:, p], a[:, p], "full")
        out = c if out is None else out + c
    return out[ti - 1:] if upper_only else out


class _Task:
    """Consecutive sub-bins of one bin, multiplied together by one batched BLAS call.

    Attributes
    ----------
    k0, k1 : int
        Sub-bins k0 … k1−1.
    ranges : list of (int, int)
        Their pixel ranges in the gathered block.
    n_max : int
        Widest sub-bin (narrower ones are zero-padded: zeros add nothing to the products).
    thin : bool
        Sub-bins of at most THIN_PIXELS pixels: correlated pixel by pixel instead.
    """

    def __init__(self, binning, k0: int, k1: int):
        self.k0, self.k1 = k0, k1
        off = binning.sub_offsets
        self.ranges = [(int(off[k]), int(off[k + 1])) for k in range(k0, k1)]
        self.widths = [p1 - p0 for p0, p1 in self.ranges]
        self.n_max = max(self.widths)
        self.thin = self.n_max <= THIN_PIXELS


def _operand(scratch: dict, role: str, block: numpy.ndarray, task: _Task, dtype) -> numpy.ndarray:
    """The task's sub-bins of a time block as stacked, zero-padded matrices (S, T, n_max)."""
    shape = (task.k1 - task.k0, block.shape[0], task.n_max)
    key = (role,) + shape + (numpy.dtype(dtype).char,)
    buf = scratch.get(key)
    if buf is None:
        buf = scratch[key] = numpy.zeros(shape, dtype=dtype)
    for s, ((p0, p1), w) in enumerate(zip(task.ranges, task.widths)):
        buf[s, :, :w] = block[:, p0:p1]  # cast to the BLAS type while copying
        if w < task.n_max:
            buf[s, :, w:] = 0  # the buffer may hold a wider sub-bin of another task
    return buf


def _plan_tasks(binning, n_workers: int):
    """Split the sub-bins into tasks (consecutive sub-bins of one bin), ~4 per worker."""
    per_task = max(1, min(MAX_BATCH, -(-binning.n_sub // (4 * n_workers))))
    tasks = []
    for i in range(binning.n_bins):
        k, end = int(binning.bin_sub_offsets[i]), int(binning.bin_sub_offsets[i + 1])
        while k < end:
            tasks.append(_Task(binning, k, min(k + per_task, end)))
            k += per_task
    # Largest first, for a balanced pool.
    tasks.sort(key=lambda t: -sum(t.widths))
    return tasks


def _sub_bin_peaks(block: numpy.ndarray, offsets: numpy.ndarray) -> numpy.ndarray:
    """Largest |value| of each sub-bin in an integer block (n, n_pixels) → (n_sub,) int64."""
    if block.shape[0] == 0:
        return numpy.zeros(offsets.size - 1, dtype=numpy.int64)
    hi = numpy.maximum.reduceat(block.max(axis=0), offsets[:-1]).astype(numpy.int64)
    if block.dtype.kind == "u":
        return hi
    lo = numpy.minimum.reduceat(block.min(axis=0), offsets[:-1]).astype(numpy.int64)
    return numpy.maximum(hi, -lo)


@register
class MatMulCorrelator(DenseCorrelator):
    """Dense correlator by BLAS matrix products of time blocks (see the module docstring).

    Options
    -------
    block_frames : int
        Frames per time block T (default 512; a tile is T × T per sub-bin).
    threads : int
        Threads (default ``os.cpu_count()``): workers over the tasks (groups of sub-bins), each
        BLAS call on ``threads // workers`` threads.
    max_memory : int
        Bytes of gathered frames kept in RAM before they move to an unlinked temporary file
        mapped in memory (default :data:`ewoksxpcs.engine.spill.DEFAULT_MAX_MEMORY`, 64 MiB; see
        :mod:`ewoksxpcs.engine.spill`).
    chunk_frames : int
        Frames read per chunk from the source.
    """

    name = "matmul"
    description = "BLAS products of time blocks A_i·A_jᵀ per sub-bin, diagonals summed (exact)"

    @classmethod
    def option_names(cls):
        return ("chunk_frames", "block_frames", "max_memory", "threads")

    def __init__(self, qmask, device=None, **options):
        super().__init__(qmask, device=device, **options)
        for opt in ("block_frames", "threads"):
            v = self.options.get(opt)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, numpy.integer))
                                  or v < 1):
                raise ValueError(f"{opt} must be an integer >= 1, got {v!r}")
        self.threads = int(self.options.get("threads") or os.cpu_count() or 1)

    # ------------------------------------------------------------------ driver hooks
    def compute_sums(self, frames):
        self._tasks = _plan_tasks(self.binning, self.threads)
        n_workers = min(self.threads, len(self._tasks))
        # Threads left over when there are fewer tasks than threads go to BLAS.
        blas_threads = max(1, self.threads // n_workers)
        limits = (threadpool_limits(limits=blas_threads, user_api="blas")
                  if threadpool_limits is not None else contextlib.nullcontext())
        try:
            with limits:
                self._n_workers = n_workers
                self._pool = ThreadPoolExecutor(n_workers) if n_workers > 1 else None
                return super().compute_sums(frames)
        finally:
            self._release()

    def _release(self):
        stack = getattr(self, "_stack", None)
        if stack is not None:
            stack.close()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown()
        self._stack = None
        self._pool = None
        self._scratch = None
        self._pending = []

    def _start(self, source):
        b = self.binning
        block_frames = int(self.options.get("block_frames") or DEFAULT_BLOCK_FRAMES)
        if source.n_frames:
            block_frames = min(block_frames, source.n_frames)
        self._block_frames = block_frames
        self._integer = source.dtype.kind in "iu"
        self._stack = GatheredStack(b.n_binned_pixels, source.dtype,
                                    max_memory=self.options.get("max_memory"),
                                    n_frames=source.n_frames)
        self._pending = []
        self._n_pending = 0
        self._peaks = []  # per block: (n_sub,) int64 largest |value| (integer frames)
        # Scratch buffers (tiles, operands), one set per worker thread, handed out per task.
        self._scratch = queue.SimpleQueue()
        for _ in range(self._n_workers):
            self._scratch.put({})
        self._n2 = numpy.zeros((b.n_sub, source.n_frames or block_frames), dtype=self.acc_dtype)

    def _feed(self, t0, block):
        self._pending.append(block)
        self._n_pending += block.shape[0]
        t = self._block_frames
        while self._n_pending >= t:
            merged = self._pending[0] if len(self._pending) == 1 else numpy.concatenate(
                self._pending, axis=0)
            self._process(merged[:t])
            rest = merged[t:]
            self._pending = [rest] if rest.shape[0] else []
            self._n_pending = rest.shape[0]

    def _finish(self, n_frames):
        if self._n_pending:
            self._process(numpy.concatenate(self._pending, axis=0))
        self._pending, self._n_pending = [], 0
        if self._integer:
            self._check_range()
        n2 = numpy.array(self._n2[:, :n_frames])
        self._n2 = None
        return n2

    # ------------------------------------------------------------------ the products
    def _process(self, block_j: numpy.ndarray) -> None:
        """Multiply a new time block with itself and every block kept before it."""
        stack, b = self._stack, self.binning
        stack.append(block_j)
        j = stack.n_blocks - 1
        tj1 = stack.block_range(j)[1]
        if tj1 > self._n2.shape[1]:  # unknown Nt: grow the lag axis
            grown = numpy.zeros((b.n_sub, max(tj1, 2 * self._n2.shape[1])), dtype=self.acc_dtype)
            grown[:, : self._n2.shape[1]] = self._n2
            self._n2 = grown
        if self._integer:
            self._peaks.append(_sub_bin_peaks(block_j, b.sub_offsets))
        blocks = [stack.block(i) for i in range(j)] + [block_j]
        if self._pool is None:
            for task in self._tasks:
                self._run_task(task, blocks)
        else:
            futures = [self._pool.submit(self._run_task, t, blocks) for t in self._tasks]
            for f in futures:
                f.result()

    def _run_task(self, task: _Task, blocks) -> None:
        """Add the tiles (i, j) of the last block j to n2 for the sub-bins of ``task``."""
        scratch = self._scratch.get()
        try:
            if task.thin:
                self._thin_task(task, blocks)
            else:
                self._tile_task(task, blocks, scratch)
        finally:
            self._scratch.put(scratch)

    def _precision(self, task: _Task, i: int, j: int, m: int):
        """(BLAS dtype, diagonal-sum dtype) exact for tile (i, j), or None if it is all zero."""
        if not self._integer:
            return numpy.float64, numpy.float64
        pi, pj = self._peaks[i], self._peaks[j]
        bound = max(int(pi[k]) * int(pj[k]) * w for k, w in zip(range(task.k0, task.k1),
                                                               task.widths))
        if bound == 0:
            return None  # an all-zero block of these sub-bins adds nothing
        if bound < _F32_EXACT:
            return numpy.float32, (numpy.float32 if bound * m < _F32_EXACT else numpy.float64)
        if bound * m < _F64_EXACT:
            return numpy.float64, numpy.float64
        return numpy.int64, numpy.int64

    def _tile_task(self, task: _Task, blocks, scratch: dict) -> None:
        stack = self._stack
        j = len(blocks) - 1
        tj0, tj1 = stack.block_range(j)
        operands = {}
        for i in range(j + 1):
            ti0, ti1 = stack.block_range(i)
            same = i == j
            precision = self._precision(task, i, j, min(ti1 - ti0, tj1 - tj0))
            if precision is None:
                continue
            dtype, sum_dtype = precision
            if dtype not in operands:  # block j, gathered once per precision
                operands[dtype] = _operand(scratch, "b", blocks[j], task, dtype)
            bj = operands[dtype]
            ai = bj if same else _operand(scratch, "a", blocks[i], task, dtype)
            key = ("tile", task.k1 - task.k0, ti1 - ti0, tj1 - tj0, numpy.dtype(dtype).char)
            tiles = scratch.get(key)
            if tiles is None:
                tiles = scratch[key] = _Tiles(task.k1 - task.k0, ti1 - ti0, tj1 - tj0, dtype)
            numpy.matmul(ai, bj.transpose(0, 2, 1), out=tiles.out)
            sums = tiles.diagonals(same, sum_dtype)
            lag0 = 0 if same else tj0 - ti0 - (ti1 - ti0 - 1)
            self._n2[task.k0 : task.k1, lag0 : lag0 + sums.shape[1]] += sums.astype(
                self.acc_dtype, copy=False)

    def _thin_task(self, task: _Task, blocks) -> None:
        stack = self._stack
        j = len(blocks) - 1
        tj0, tj1 = stack.block_range(j)
        for i in range(j + 1):
            ti0, ti1 = stack.block_range(i)
            same = i == j
            precision = self._precision(task, i, j, min(ti1 - ti0, tj1 - tj0))
            if precision is None:
                continue
            dtype = numpy.int64 if precision[0] is numpy.int64 else numpy.float64
            lag0 = 0 if same else tj0 - ti0 - (ti1 - ti0 - 1)
            for k, (p0, p1) in zip(range(task.k0, task.k1), task.ranges):
                sums = _thin_diagonals(blocks[i][:, p0:p1], blocks[j][:, p0:p1], same, dtype)
                self._n2[k, lag0 : lag0 + sums.size] += sums.astype(self.acc_dtype, copy=False)

    def _check_range(self) -> None:
        """Raise ValueError if an n2 sum may have left the int64 range.

        |n2[k, τ]| ≤ n2[k, 0] = Σ I² (Cauchy–Schwarz); a cheap bound from the block peaks is
        tried first, the float64 sum of squares only when the bound is too large.
        """
        b = self.binning
        if not self._peaks:
            return
        sizes = self._stack.block_sizes().astype(numpy.float64)
        peaks = numpy.stack(self._peaks).astype(numpy.float64)  # (n_blocks, n_sub)
        bound = (sizes[:, None] * peaks**2).sum(axis=0) * b.sub_n_pixels
        for k in numpy.flatnonzero(bound >= INT64_LIMIT):
            s0, s1 = int(b.sub_offsets[k]), int(b.sub_offsets[k + 1])
            bound[k] = square_sums(self._stack.columns(s0, s1), [0, s1 - s0])[0]
        check_int64_bound(bound, b)
