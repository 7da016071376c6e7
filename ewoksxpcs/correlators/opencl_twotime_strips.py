"""The whole two-time map of a one-bin pass, computed in strips while the frames still stream.

Once the frames of time bins 0 … r1-1 are binned into X, the map's upper triangle in columns
r0 … r1-1 (rows 0 … r1-1) and, mirrored, its rows r0 … r1-1 (columns 0 … r1-1) depend on
nothing else: a *strip*. :class:`MapStrips` enqueues each strip's row sums and products
right after the binning kernel that completes its rows, on the binning queue (on a queue of
their own they were no faster), and a thread reads the strip's two final rectangles back into
the host map through the device's page-locked staging buffers (copies on a queue of their own).
When the last frames are binned only the last strip, the diagonals' moments and the last
read-back remain. On an H200 (one bin of 70 376 pixels, 100 000 frames, 10 000² map) the
products (25 ms) and the read-back (22 ms) used to follow the 0.47-0.49 s fill; with 40 strips
5-7 ms follow it, and the fill takes ~20-30 ms longer (with the products; the row sums alone
cost nothing measurable; ``doc/benchmarks/h200_twotime1bin_strips_*_session13.txt``).

Used by :class:`~ewoksxpcs.correlators.opencl_twotime.OpenCLTwoTime` for a pass of one bin over
page-locked frames whose whole map fits the device (``stream_maps``; default on GPUs).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy

from ..opencl.device import shared_staging

#: Strips per map: each a share of the products; the last one is what remains after the fill.
STRIPS = 32


class StagingBusy(RuntimeError):
    """The staging buffers are in use by another thread: compute the map after the fill."""


def strip_rows(n_t: int, tile: int, staging_bytes: int, strips: int | None = None) -> int:
    """Time bins per strip: a multiple of ``tile`` near ``n_t / strips`` (default
    :data:`STRIPS`), whose rectangles (at most ``n_t`` x strip float32) fit one staging
    buffer; 0 when even one tile does not."""
    strips = strips or STRIPS
    fit = staging_bytes // (4 * max(1, n_t)) // tile * tile
    want = max(1, round(n_t / (strips * tile))) * tile
    return int(min(want, fit))


class MapStrips:
    """Strips of one bin's whole map (n_t, n_t) float32 on the device, read into ``C_map``.

    Parameters
    ----------
    dev : OpenCLDevice
    queue : pyopencl.CommandQueue
        The in-order queue ``gram`` and ``rowsums`` enqueue on.
    gram : callable
        ``gram(z0, z1, n_t, r0, R, W, S, mirror, band, gx0, nx)`` of
        :meth:`OpenCLTwoTime._gram` for X, bin z = 0, returning its event (attributes
        ``tile``, the columns of its work-groups, ``label`` and ``mma``).
    rowsums : callable
        ``rowsums(r0, r1, wait_for)`` enqueues the exact and float32 row sums of X's rows
        r0 … r1-1 into ``S_dev`` and ``Sf_dev`` on ``queue``.
    n_t : int
        Time bins (rows of X, size of the map).
    rows : int
        Time bins per strip (:func:`strip_rows`), a multiple of ``gram.tile``.
    maps_dev : pyopencl.Buffer
        The whole map, n_t² float32.
    S_dev, Sf_dev : pyopencl.Buffer
        Row sums of X, n_t: exact (read by the owner once the fill is over), float32 (the
        products' operand).
    C_map : ndarray (n_t, n_t) float32
        The host map, C-contiguous, written in place.
    """

    def __init__(self, dev, queue, gram, rowsums, n_t, rows, maps_dev, S_dev, Sf_dev, C_map):
        import pyopencl

        self.queue, self.gram, self.rowsums = queue, gram, rowsums
        self.copy_queue = pyopencl.CommandQueue(dev.context)
        self.n_t, self.rows = int(n_t), int(rows)
        self.maps_dev, self.S_dev, self.Sf_dev, self.C_map = maps_dev, S_dev, Sf_dev, C_map
        self.done = 0  # rows of the map's strips enqueued
        self.count = 0  # strips enqueued
        self._bufs, self._lock = shared_staging(dev)
        if not self._lock.acquire(blocking=False):  # another thread reads through them
            raise StagingBusy()
        self._reads = []  # the read-backs (futures), one thread: each starts after the last
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ewoksxpcs-strips")
        self._closed = False
        #: Seconds the filling thread spent enqueuing strips.
        self.enqueue_s = 0.0

    def rows_ready(self, ready: int, event) -> None:
        """The rows 0 … ``ready``-1 of X are complete once ``event`` is: enqueue the strips
        they complete (the last one, ending at n_t, once ``ready`` = n_t)."""
        t0 = time.perf_counter()
        self._enqueue(ready, event)
        self.enqueue_s += time.perf_counter() - t0

    def _enqueue(self, ready, event) -> None:
        while self.done < self.n_t:
            r0 = self.done
            r1 = min(self.n_t, r0 + self.rows)
            if r1 > ready:
                return
            self._strip(r0, r1, event)
            self.done = r1

    def _strip(self, r0, r1, event) -> None:
        self.rowsums(r0, r1, [event] if event is not None else None)
        done = self.gram(0, 1, self.n_t, 0, r1, self.n_t, self.Sf_dev, 1, self.maps_dev,
                         r0 // self.gram.tile, -(-(r1 - r0) // self.gram.tile))
        self.queue.flush()
        self.count += 1
        self._reads.append(self._pool.submit(self._read_back, r0, r1, done))

    def _read_back(self, r0, r1, done) -> None:
        """Rows r0 … r1-1, columns 0 … r1-1 (the mirrored half and the diagonal block) and
        rows 0 … r0-1, columns r0 … r1-1 (the upper half) into the host map, once ``done``."""
        import pyopencl

        pitch = self.n_t * 4
        pieces = []
        for s, (rows, cols) in enumerate((((r0, r1), (0, r1)), ((0, r0), (r0, r1)))):
            n_rows, n_cols = rows[1] - rows[0], cols[1] - cols[0]
            if not n_rows or not n_cols:
                continue
            host = self._bufs[s][: n_rows * n_cols * 4].view(numpy.float32).reshape(n_rows, n_cols)
            evt = pyopencl.enqueue_copy(
                self.copy_queue, host, self.maps_dev, buffer_origin=(cols[0] * 4, rows[0]),
                host_origin=(0, 0), region=(n_cols * 4, n_rows), buffer_pitches=(pitch,),
                host_pitches=(n_cols * 4,), wait_for=[done], is_blocking=False)
            pieces.append((evt, self.C_map[rows[0]: rows[1], cols[0]: cols[1]], host))
        self.copy_queue.flush()
        for evt, dst, host in pieces:
            evt.wait()
            dst[...] = host

    def wait(self) -> None:
        """Block until every strip is in the host map."""
        self.queue.finish()
        for future in self._reads:
            future.result()
        self.copy_queue.finish()

    def close(self) -> None:
        """Wait for the copies in flight (also after an error), free the staging buffers."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
            self._lock.release()
