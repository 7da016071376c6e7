"""Two-time correlation C(q, t1, t2), optional time binning, and g2 from the two-time map.

Definition
----------
For a bin q of N_q pixels, frames first summed over time bins of ``b`` frames (``time_bin``)::

    X(T, p) = Σ_{j<b} I(b·T + j, p),   T = 0 … nT − 1,   nT = ⌊Nt / b⌋
              (the trailing Nt − b·nT frames are dropped)
    S(T, q) = Σ_{p∈q} X(T, p)
    C(q, T1, T2) = ⟨X(T1)·X(T2)⟩_p / (⟨X(T1)⟩_p·⟨X(T2)⟩_p)
                 = N_q·Σ_{p∈q} X(T1, p)·X(T2, p) / (S(T1, q)·S(T2, q))

C is symmetric; NaN where S(T1)·S(T2) = 0. The diagonal T1 = T2 holds ⟨X²⟩/⟨X⟩², shot noise
included. Time binning bounds the memory: C holds n_bins·nT² float32 values, so 100 000 frames
binned by 10 give 10 000² values (400 MB) per bin. By default ``time_bin`` is the smallest b with
nT <= ``max_frames``.

g2 from the two-time map
------------------------
For a lag of τ time bins (τ·b frames), the mean over the diagonal (NaN entries skipped)::

    g2_tt(q, τ) = mean_{T=0}^{nT−1−τ} C(q, T, T+τ)

and its error the standard error of that mean (σ/√n over the diagonal: indicative, the entries
are correlated). This is the mean of per-pair ratios, not the ratio of sums of the linear-lag g2:
both agree for stationary data, and differences reveal non-stationarity.

Partial g2 over age segments: the time-bin axis is cut into ``n_segments`` successive segments
[e_s, e_{s+1}) (e_s = ⌊s·nT/n_segments⌋); the partial g2 of segment s is the diagonal mean of the
block C(q, e_s:e_{s+1}, e_s:e_{s+1}) — pairs whose two times lie in the segment, so of age
(t1 + t2)/2 within it. A drift from segment to segment shows ageing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy

from .lazy_imports import import_module
from .frames import as_frame_source
from .intrange import check_int64_bound
from .qmask import DEFAULT_GROUPS, Binning, as_binning
from .spill import SpillArray, empty as empty_spillable

__all__ = [
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_SEGMENTS",
    "TwoTimeResult",
    "TimeBinner",
    "TwoTimeStream",
    "select_bins",
    "choose_time_bin",
    "twotime_from_binned",
    "gram",
    "diagonal_means",
    "g2_from_twotime",
    "partial_g2",
    "segment_edges",
    "moments_mean_err",
    "NumpyTwoTime",
]

#: Default largest number of time bins nT of a two-time map (nT² float32 per bin: 400 MB).
DEFAULT_MAX_FRAMES = 10_000
#: Default number of age segments of the partial g2.
DEFAULT_SEGMENTS = 4
#: Maps up to this size are gzipped by default (``write_nexus(compress="auto")``); larger ones are
#: stored plain: gzip (one thread in HDF5) writes two-time maps at 20-40 MB/s, so the 4 GB of
#: the defaults at 10 000 frames (10 bins of 10 000²) took minutes for a file only ~1.6x smaller
#: (noisy float32 compresses poorly), against ~2 s plain.
GZIP_MAPS_MAX_BYTES = 16 << 20


@dataclass
class TwoTimeResult:
    """Two-time correlation of selected bins, and the g2 derived from it.

    Attributes
    ----------
    C : ndarray, (n_sel, nT, nT) float32
        C(q, T1, T2) (see the module docstring); NaN where undefined.
    labels : ndarray, (n_sel,) int64
        qmask label of each map.
    n_pixels : ndarray, (n_sel,) int64
    time_bin : int
        Frames summed per time bin, b.
    n_frames : int
        Frames read, Nt (the last Nt − b·nT are not used).
    frame_sums : ndarray, (nT, n_sel)
        S(T, q), counts per time bin (int64 for integer frames).
    times : ndarray, (nT,) float64
        Centre of each time bin, frames: b·T + (b − 1)/2.
    g2, g2_err : ndarray, (n_sel, nT) float64
        g2 from the two-time map at lags ``g2_lags`` and its standard error.
    g2_lags : ndarray, (nT,) float64
        Lags in frames, τ·b.
    partial_g2, partial_g2_err : ndarray, (n_sel, n_segments, n_lags_seg) float64
        g2 of each age segment (NaN past the segment's length).
    partial_lags : ndarray, (n_lags_seg,) float64
        Lags of the partial g2, frames.
    segment_edges : ndarray, (n_segments + 1,) int64
        Segment boundaries, frames (b·e_s).
    frame_period : float or None
    method, device : str
    info : dict
    """

    C: numpy.ndarray
    labels: numpy.ndarray
    n_pixels: numpy.ndarray
    time_bin: int
    n_frames: int
    frame_sums: numpy.ndarray
    times: numpy.ndarray
    g2: numpy.ndarray
    g2_err: numpy.ndarray
    g2_lags: numpy.ndarray
    partial_g2: numpy.ndarray
    partial_g2_err: numpy.ndarray
    partial_lags: numpy.ndarray
    segment_edges: numpy.ndarray
    frame_period: Optional[float] = None
    method: str = ""
    device: str = "cpu"
    info: dict = field(default_factory=dict)

    mode = "twotime"

    @property
    def n_time_bins(self) -> int:
        return int(self.C.shape[-1])

    @property
    def lags(self) -> numpy.ndarray:
        """Alias of :attr:`g2_lags` (frames)."""
        return self.g2_lags

    def write_nexus(self, parent, name: str = "twotime", compress="auto", maps=None,
                    map_written=None):
        """Write as NeXus into an open h5py group: an NXcollection ``name`` holding NXdata
        ``maps`` (C, an image stack: one nT×nT image per bin in ``silx view``), ``g2`` and
        ``partial_g2``; returned.

        ``compress``: True gzips maps of more than 2²⁰ values; False stores them plain (the
        file ~1.6-4× larger: 40 MB instead of 9 MB for 10 maps of 1000² of Poisson data at
        0.01 counts, but written many times faster: gzip took most of the final write of a
        live two-time run); "auto" (default) gzips maps of at most
        :data:`GZIP_MAPS_MAX_BYTES` and stores larger ones plain. The dataset's
        ``compression`` says which.

        ``maps``: an h5py dataset of the same file already holding C as this method writes it
        (diagonal NaN; :class:`~ewoksxpcs.io.save.LiveMapsFile`, written while a live scan
        ran): moved into place (a link, no copy) instead of written. ``False``: C is not
        written (the updates of a live run with large maps), only its diagonal (the signal).

        ``map_written``: called with j after map j was written (the writer of the file
        flushes it to disk meanwhile: :func:`ewoksxpcs.io.save.save_results`).
        """
        from .multitau import _nx_group

        unit = "frame" if self.frame_period is None else "s"
        scale = 1.0 if self.frame_period is None else float(self.frame_period)
        top = _nx_group(parent, name, "NXcollection")
        top["time_bin"] = self.time_bin
        top["n_frames"] = self.n_frames
        m = _nx_group(top, "maps", "NXdata")
        m.attrs.update(signal="C", axes=["labels", "t1", "t2"], labels_indices=0,
                       t1_indices=1, t2_indices=2)
        m["title"] = "two-time correlation C(q, t1, t2)"
        # The diagonal (t1 = t2: shot noise, far above the rest) is stored apart so that the
        # viewers' automatic colour scale shows the off-diagonal correlation. Written by blocks
        # of rows (chunks of at most 2**20 values: gzip compresses a chunk in memory at once),
        # without a copy of the maps.
        n = self.C.shape[-1]
        diag = numpy.arange(n)
        if maps is False:
            m.attrs.update(signal="C_diagonal", axes=["labels", "t1"])
            del m.attrs["t2_indices"]
            m["note"] = (f"C ({self.C.nbytes / 2**20:.0f} MiB) not written in this update of a "
                         "live run; the final file has it")
            d = None
        elif maps is not None:
            if maps.shape != self.C.shape or maps.dtype != self.C.dtype:
                raise ValueError(f"maps written beforehand are {maps.shape} {maps.dtype}, "
                                 f"the result's {self.C.shape} {self.C.dtype}")
            parent.file.move(maps.name, f"{m.name}/C")
            d = m["C"]
        elif self.C.size:
            rows = max(1, min(n, 2**20 // max(n, 1)))
            if compress == "auto":
                compress = self.C.nbytes <= GZIP_MAPS_MAX_BYTES
            elif not isinstance(compress, bool):
                raise ValueError(f"compress must be True, False or 'auto', got {compress!r}")
            d = m.create_dataset("C", shape=self.C.shape, dtype=self.C.dtype,
                                 chunks=(1, rows, n),
                                 compression="gzip" if compress and self.C.size > 2**20
                                 else None)
            # Plain chunks go to the file as they are (write_direct_chunk: no selection nor
            # conversion in HDF5; 10 maps of 10 000², written and synced: 5.7-5.9 s against
            # 6.7-7.6 s through h5py on the 2-core development machine); gzipped ones through
            # h5py's filters.
            direct = d.compression is None
            for j in range(self.C.shape[0]):
                for r in range(0, n, rows):
                    if direct:  # a whole chunk, the rows past the map's end zero
                        block = numpy.empty((rows, n), dtype=self.C.dtype)
                        filled = min(rows, n - r)
                        block[:filled] = self.C[j, r: r + filled]
                        block[filled:] = 0
                    else:
                        block = numpy.array(self.C[j, r: r + rows])
                    k = numpy.arange(r, min(r + rows, n))
                    block[k - r, k] = numpy.nan
                    if direct:
                        d.id.write_direct_chunk((j, r, 0), block)
                    else:
                        d[j, r: r + block.shape[0]] = block
                if map_written is not None:
                    map_written(j)
        else:
            d = m.create_dataset("C", data=self.C)
        if d is not None:
            d.attrs["interpretation"] = "image"
            d.attrs["diagonal"] = "NaN here: C(q, t, t) is in C_diagonal"
        m.create_dataset("C_diagonal", data=self.C[:, diag, diag])
        m.create_dataset("labels", data=self.labels)
        for axis in ("t1", "t2"):
            m.create_dataset(axis, data=self.times * scale).attrs["units"] = unit
        m.create_dataset("frame_sums", data=self.frame_sums)
        m.create_dataset("n_pixels", data=self.n_pixels)
        g = _nx_group(top, "g2", "NXdata")
        g.attrs.update(signal="g2", axes=["labels", "tau"], labels_indices=0, tau_indices=1)
        g["title"] = "g2 from the two-time map (diagonal means)"
        g.create_dataset("g2", data=self.g2).attrs["interpretation"] = "spectrum"
        g.create_dataset("g2_errors", data=self.g2_err)
        g.create_dataset("labels", data=self.labels)
        g.create_dataset("tau", data=self.g2_lags * scale).attrs["units"] = unit
        p = _nx_group(top, "partial_g2", "NXdata")
        p.attrs.update(signal="g2", axes=["labels", "segment", "tau"], labels_indices=0,
                       segment_indices=1, tau_indices=2)
        p["title"] = "g2 of successive age segments"
        p.create_dataset("g2", data=self.partial_g2).attrs["interpretation"] = "spectrum"
        p.create_dataset("g2_errors", data=self.partial_g2_err)
        p.create_dataset("labels", data=self.labels)
        p.create_dataset("segment", data=numpy.arange(self.partial_g2.shape[1]))
        p.create_dataset("segment_edges", data=self.segment_edges * scale).attrs["units"] = unit
        p.create_dataset("tau", data=self.partial_lags * scale).attrs["units"] = unit
        return top

    @staticmethod
    def read_maps(maps) -> numpy.ndarray:
        """C (n_sel, nT, nT) from a ``maps`` group written by :meth:`write_nexus` (diagonal
        restored from ``C_diagonal``)."""
        C = maps["C"][()]
        if "C_diagonal" in maps:
            diag = numpy.arange(C.shape[-1])
            C[:, diag, diag] = maps["C_diagonal"][()]
        return C

    def __repr__(self) -> str:
        return (
            f"TwoTimeResult(method={self.method!r}, device={self.device!r}, "
            f"labels={self.labels.tolist()}, nT={self.n_time_bins}, time_bin={self.time_bin})"
        )


# ---------------------------------------------------------------------------------- helpers
def select_bins(binning: Binning, bins: Optional[Sequence[int]] = None):
    """Rows of the selected bins (labels), and the gathered-pixel columns of each.

    Parameters
    ----------
    binning : Binning
    bins : sequence of int, optional
        qmask labels; default: every bin.

    Returns
    -------
    rows : ndarray, (n_sel,) int64
        Bin rows in ``binning``.
    col_offsets : ndarray, (n_sel + 1,) int64
        Selected pixels of bin j are columns col_offsets[j]:col_offsets[j+1] of the selection.
    pixel_index : ndarray, (n_sel_pixels,) int64
        Flat pixel indices of the selection, bin by bin (Binning order).
    """
    if bins is None:
        rows = numpy.arange(binning.n_bins, dtype=numpy.int64)
    else:
        if numpy.isscalar(bins):
            bins = [bins]
        labels = numpy.asarray(bins)
        if labels.dtype.kind not in "iu" or labels.ndim != 1 or labels.size == 0:
            raise ValueError(f"twotime bins must be a non-empty list of integer labels, got {bins!r}")
        rows = numpy.searchsorted(binning.labels, labels)
        rows_c = numpy.minimum(rows, binning.n_bins - 1)
        missing = labels[binning.labels[rows_c] != labels]
        if missing.size:
            raise ValueError(
                f"twotime bins {missing.tolist()} are not qmask labels; labels are "
                f"{binning.labels.tolist()[:20]}"
            )
        rows = numpy.unique(rows_c).astype(numpy.int64)
    counts = binning.n_pixels[rows]
    col_offsets = numpy.concatenate([[0], numpy.cumsum(counts)]).astype(numpy.int64)
    pix = [binning.pixel_index[binning.bin_offsets[r]: binning.bin_offsets[r + 1]] for r in rows]
    pixel_index = numpy.concatenate(pix).astype(numpy.int64) if pix else numpy.zeros(0, numpy.int64)
    return rows, col_offsets, pixel_index


def choose_time_bin(n_frames: Optional[int], time_bin: Optional[int] = None,
                    max_frames: int = DEFAULT_MAX_FRAMES) -> int:
    """Frames per time bin: ``time_bin`` if given, else the smallest b with ⌊Nt/b⌋ <= max_frames."""
    if time_bin is not None:
        if isinstance(time_bin, bool) or not isinstance(time_bin, (int, numpy.integer)) or time_bin < 1:
            raise ValueError(f"time_bin must be an integer >= 1 (frames), got {time_bin!r}")
        return int(time_bin)
    if isinstance(max_frames, bool) or not isinstance(max_frames, (int, numpy.integer)) or max_frames < 1:
        raise ValueError(f"max_frames must be an integer >= 1, got {max_frames!r}")
    if n_frames is None or n_frames <= max_frames:
        return 1
    b = max(1, math.ceil(n_frames / max_frames))
    while n_frames // b > max_frames:
        b += 1
    return b


def binned_dtype(dtype, time_bin: int) -> numpy.dtype:
    """Exact storage type of sums of ``time_bin`` values of ``dtype`` (float64 for floats;
    integer frames unbinned keep their type: no wider copy of every frame)."""
    dtype = numpy.dtype(dtype)
    if dtype.kind == "f":
        return numpy.dtype(numpy.float64)
    if int(time_bin) == 1 and dtype.kind in "iu":
        return dtype
    info = numpy.iinfo(dtype)
    peak = max(abs(int(info.min)), int(info.max)) * int(time_bin)
    check_int64_bound(peak, what=f"a time bin of {time_bin} {dtype} frames",
                      how="the dtype's largest value × time_bin")
    return numpy.dtype(numpy.int32 if peak < 2**31 else numpy.int64)


class TimeBinner:
    """Sum consecutive groups of ``time_bin`` frames of gathered blocks, streaming.

    Parameters
    ----------
    time_bin : int
    dtype : numpy.dtype
        Storage type of the binned rows (see :func:`binned_dtype`).
    """

    def __init__(self, time_bin: int, dtype, capacity: Optional[int] = None):
        self.time_bin = int(time_bin)
        self.dtype = numpy.dtype(dtype)
        self._carry = None
        self._capacity = capacity
        self._rows = None  # SpillArray of binned rows, made at the first block (its width)
        self.n_frames = 0
        #: The rows completed by the last :meth:`feed`.
        self.last_rows = None
        #: Whether the rows are kept for :meth:`finish` (live two-time with its maps kept up to
        #: date does not need them; :meth:`restore` gives them back).
        self.keep = True

    @property
    def n_rows(self) -> int:
        """Binned rows so far (the carry holds fewer than ``time_bin`` frames)."""
        return self.n_frames // self.time_bin

    def feed(self, block: numpy.ndarray) -> None:
        """Take the next frames (n, n_pixels)."""
        self.n_frames += block.shape[0]
        x = block.astype(self.dtype, copy=False)
        if self._carry is not None:
            x = numpy.concatenate([self._carry, x])
        b = self.time_bin
        n = x.shape[0] // b
        if self._rows is None and self.keep:
            self._rows = SpillArray((x.shape[1],), self.dtype, capacity=self._capacity)
        new = (x[:n] if b == 1 or not n
               else x[: n * b].reshape(n, b, -1).sum(axis=1, dtype=self.dtype))
        if n and self.keep:
            self._rows.append(new)
        self.last_rows = new
        self._carry = x[n * b:].copy() if x.shape[0] > n * b else None

    def restore(self, rows: numpy.ndarray) -> None:
        """Keep the rows from now on, starting with ``rows`` (n_rows, n_pixels): the rows
        completed before the last feed (not kept), then that feed's ones."""
        if self.keep:
            raise RuntimeError("the binned rows were kept: nothing to restore")
        if rows.shape[0] + self.last_rows.shape[0] != self.n_rows:
            raise ValueError(f"{rows.shape[0]} rows restored, {self.n_rows} binned")
        self._rows = SpillArray((rows.shape[1],), self.dtype, capacity=self._capacity)
        self._rows.append(rows)
        self._rows.append(self.last_rows)
        self.keep = True

    def finish(self, n_pixels: int) -> numpy.ndarray:
        """Binned frames X (nT, n_pixels): in RAM, or a view of a temporary file's mapping
        beyond :data:`ewoksxpcs.engine.spill.DEFAULT_MAX_MEMORY` bytes."""
        if not self.keep:
            raise RuntimeError("the binned rows were not kept")
        if self._rows is None or not len(self._rows):
            return numpy.zeros((0, n_pixels), dtype=self.dtype)
        return self._rows.array()


#: Bytes of float64 pixel columns multiplied at once by :func:`twotime_from_binned`.
TWOTIME_BLOCK_BYTES = 64 * 1024**2


#: float32 sums of integer products are exact below 2**24.
_FLOAT32_EXACT = 2**24
_FLOAT64_EXACT = 2**53


def gram_dtype(x: numpy.ndarray) -> numpy.dtype:
    """The narrowest float type in which X·Xᵀ of the columns of integer ``x`` is exact.

    Every entry and partial sum of Σ_p X(T1, p)·X(T2, p) is at most max_T Σ_p X(T, p)²
    (Cauchy–Schwarz), so float32 is exact while that stays below 2²⁴, float64 below 2⁵³.
    Float ``x``: float64.
    """
    if x.dtype.kind not in "iub" or x.size == 0:
        return numpy.dtype(numpy.float64)
    sq = numpy.einsum("tp,tp->t", x, x, dtype=numpy.float64) if x.ndim == 2 else x
    peak = float(sq.max()) if sq.size else 0.0
    if peak < _FLOAT32_EXACT:
        return numpy.dtype(numpy.float32)
    if peak >= _FLOAT64_EXACT:
        raise ValueError(f"two-time sums of products reach {peak:.3g}, beyond exact float64")
    return numpy.dtype(numpy.float64)


#: Below this fraction of non-zero values, :func:`gram` adds the pairs of each pixel's non-zero
#: values (Σ_p n_p²/2 products) instead of the dense product (nT²·n_p/2 multiply-adds).
GRAM_EVENTS_DENSITY = 0.1
#: Time bins per side of the tiles of the sparse Gram matrix (int32: 576 KiB, about a core's L2
#: cache; 256 and 512 were slower on the 2-core AMD EPYC machine: more passes over the pixels, or
#: a tile out of cache).
GRAM_TILE = 384


def sparse_gram(x: numpy.ndarray) -> bool:
    """Whether :func:`gram_sparse_into` serves X: integer, fewer than ``GRAM_EVENTS_DENSITY``
    non-zero values."""
    return (x.dtype.kind in "iub" and x.size > 0
            and numpy.count_nonzero(x) < GRAM_EVENTS_DENSITY * x.size)


def gram_sparse_into(x: numpy.ndarray, G: numpy.ndarray) -> None:
    """Add the upper triangle of X·Xᵀ of integer X (nT, n_p) to ``G`` (nT, nT) int64 (in RAM or
    a view of a file mapping): the pairs of each pixel's non-zero values, tile by tile
    (numba threads, :func:`ewoksxpcs.engine.events_numba.gram_events`)."""
    import numba

    from . import events_numba

    xt = numpy.ascontiguousarray(x.T)  # pixel-major: nonzero() walks each pixel's times
    pix, t = numpy.nonzero(xt)
    values = xt[pix, t].astype(numpy.int64)  # products of int64 values: no wrap-around
    bounds = numpy.searchsorted(pix, numpy.arange(x.shape[1] + 1))
    # Every entry is at most max_T Σ_p X(T, p)² (Cauchy–Schwarz): int32 tiles below 2³¹.
    peak = numpy.bincount(t, weights=values.astype(numpy.float64) ** 2, minlength=1).max()
    probe = numpy.zeros(1, dtype=numpy.int32 if peak < 2**31 else numpy.int64)
    previous = numba.set_parallel_chunksize(1)  # tiles handed out one at a time
    try:
        events_numba.gram_events(t.astype(numpy.int64, copy=False), values, bounds[:-1],
                                 bounds[1:], x.shape[0], GRAM_TILE, G, probe)
    finally:
        numba.set_parallel_chunksize(previous)


def gram(x: numpy.ndarray, pixel_block: int = 65536) -> numpy.ndarray:
    """G = X·Xᵀ (nT, nT) of binned frames X (nT, n_p), exact for integer X.

    Sparse integer X (fewer than ``GRAM_EVENTS_DENSITY`` non-zero values): the pairs of each
    pixel's non-zero values, tile by tile of G in int64 (numba threads,
    :func:`ewoksxpcs.engine.events_numba.gram_events`). Otherwise BLAS ``syrk`` (one triangle:
    half the products of a matrix product) in float32 while its sums stay below 2²⁴, float64
    beyond (see :func:`gram_dtype`).

    Returns
    -------
    ndarray, (nT, nT) int64, float32 or float64
        The upper triangle (diagonal included) of G; the lower one is zero.
    """
    n_t = x.shape[0]
    if sparse_gram(x):
        G = numpy.zeros((n_t, n_t), dtype=numpy.int64)
        gram_sparse_into(x, G)
        return G
    blas = import_module("scipy.linalg.blas")

    dtype = gram_dtype(x)
    syrk = blas.ssyrk if dtype == numpy.float32 else blas.dsyrk
    n_t = x.shape[0]
    G = numpy.zeros((n_t, n_t), dtype=dtype, order="F")
    for p in range(0, x.shape[1], pixel_block):
        # Xᵀ of a C-ordered block is Fortran-ordered: syrk(trans=1) reads it without a copy.
        at = numpy.asfortranarray(x[:, p: p + pixel_block].T, dtype=dtype)
        G = syrk(1.0, at, beta=1.0, c=G, trans=1, lower=0, overwrite_c=1)
    return G


def _symmetric_rows(G: numpy.ndarray, r0: int, r1: int) -> numpy.ndarray:
    """Rows r0 … r1 − 1 of the symmetric matrix whose upper triangle is that of ``G`` (the
    lower one zero, as :func:`gram` leaves it), float64 (a new array)."""
    rows = G[r0:r1].astype(numpy.float64)
    rows += G[:, r0:r1].T  # in place: one (rows, nT) float64 temporary
    i = numpy.arange(r1 - r0)
    rows[i, r0 + i] -= G[r0 + i, r0 + i]  # the diagonal was added twice
    return rows


def maps_from_gram(C_j: numpy.ndarray, G: numpy.ndarray, s: numpy.ndarray, n_pixels: int,
                   rows: int) -> None:
    """C_j = N·G/(S·Sᵀ) (nT, nT) float32 from the upper triangle of an integer Gram matrix G
    (:func:`gram_sparse_into`; :class:`~ewoksxpcs.engine.live_pairs.LiveGram` repeats its
    operations column block by column block), ``rows`` rows at a time; ``s`` (nT,) the sums of the bin per time bin, ``n_pixels`` its pixels."""
    n_t = G.shape[0]
    s = s.astype(numpy.float64)
    with numpy.errstate(invalid="ignore", divide="ignore"):
        for r in range(0, n_t, rows):
            r1 = min(n_t, r + rows)
            num = _symmetric_rows(G, r, r1)
            num *= n_pixels
            # The same float64 operations as N·G/(S·Sᵀ), rounded once into the float32 maps.
            numpy.divide(num, numpy.outer(s[r:r1], s), out=C_j[r:r1], casting="same_kind")


class TwoTimeStream:
    """Frames fed chunk by chunk, binned in time; the binned frames so far at any time.

    What :meth:`NumpyTwoTime.binned_frames` runs on frames, and what live correlation feeds as
    frames arrive: the same code gives the same maps.

    Parameters
    ----------
    pixel_index : ndarray (n_sel_pixels,) int64
        Flat indices of the selected bins' pixels (:func:`select_bins`).
    time_bin : int or None
        Frames per time bin (None: from ``n_frames``, or binned further at the end when unknown).
    max_frames : int
        Largest nT when ``time_bin`` is None.
    dtype : numpy.dtype
        Pixel type of the frames.
    n_frames : int, optional
        Frames expected, when known.
    """

    def __init__(self, pixel_index, time_bin: Optional[int], max_frames: int, dtype,
                 n_frames: Optional[int] = None):
        self.pixel_index = pixel_index
        self.time_bin = time_bin
        self.max_frames = max_frames
        b = choose_time_bin(n_frames, time_bin, max_frames)
        n_t = None if n_frames is None else n_frames // b  # binned rows sized once when known
        self.binner = TimeBinner(b, binned_dtype(dtype, b), capacity=n_t)

    @property
    def n_frames(self) -> int:
        return self.binner.n_frames

    def feed(self, chunk: numpy.ndarray) -> None:
        """Take the next frames, (n, Ny, Nx)."""
        n = chunk.shape[0]
        self.binner.feed(numpy.take(chunk.reshape(n, -1), self.pixel_index, axis=1))

    def binned(self):
        """(X (nT, n_sel_pixels), time_bin, n_frames) of the frames fed so far."""
        x = self.binner.finish(self.pixel_index.size)
        b = self.binner.time_bin
        if self.time_bin is None and x.shape[0] > self.max_frames:
            # Length unknown in advance: bin the stored rows further.
            extra = choose_time_bin(x.shape[0], None, self.max_frames)
            n = x.shape[0] // extra
            x = x[: n * extra].reshape(n, extra, -1).sum(axis=1,
                                                         dtype=binned_dtype(x.dtype, extra))
            b *= extra
        return x, b, self.binner.n_frames


def twotime_from_binned(x: numpy.ndarray, col_offsets: numpy.ndarray,
                        pixel_block: Optional[int] = None,
                        progress=None) -> (numpy.ndarray, numpy.ndarray):
    """Two-time maps of binned frames X (nT, n_sel_pixels), bin by bin.

    The Gram matrix of each bin is exact for integer X: pairs of non-zero values for sparse
    integer X (:func:`gram_sparse_into`, numba), else float64 BLAS products (exact below 2⁵³);
    C = N·G/(S·Sᵀ) is then taken in float64 and stored as float32.

    The Gram matrix of each bin and the maps are arrays of :func:`ewoksxpcs.engine.spill.empty`
    (file-backed beyond its cap) filled by blocks of rows, and X is read by blocks of
    ``pixel_block`` columns (default: :data:`TWOTIME_BLOCK_BYTES` of float64): no anonymous
    temporary of nT² values or of the whole X.

    ``progress(fraction)``, if given, is called after each block of pixels.

    Returns
    -------
    C : ndarray, (n_sel, nT, nT) float32
    S : ndarray, (nT, n_sel)
        Sums per time bin (int64 for integer X, float64 otherwise).
    """
    n_sel = col_offsets.size - 1
    n_t = x.shape[0]
    if pixel_block is None:
        pixel_block = max(1, TWOTIME_BLOCK_BYTES // (8 * max(n_t, 1)))
    rows = max(1, TWOTIME_BLOCK_BYTES // (8 * max(n_t, 1)))  # rows of G per product
    C = empty_spillable((n_sel, n_t, n_t), numpy.float32)
    S = numpy.zeros((n_t, n_sel), dtype=numpy.int64 if x.dtype.kind in "iu" else numpy.float64)
    if S.dtype.kind == "i" and x.size and n_sel:  # int64 S(T, q) must not wrap
        widths = numpy.diff(col_offsets)
        peak = max(abs(int(x.max())), abs(int(x.min())))  # no |x| copy of the whole X
        check_int64_bound(float(peak) * widths.max(), what="two-time S",
                          how="max |X| × pixels of the largest bin")
    G = G_int = None  # float64 (dense path) and int64 (sparse path) Gram matrices, when needed
    for j in range(n_sel):
        c0, c1 = int(col_offsets[j]), int(col_offsets[j + 1])
        a = x[:, c0:c1]
        if sparse_gram(a):
            S[:, j] = a.sum(axis=1, dtype=S.dtype)
            if G_int is None:
                G_int = empty_spillable((n_t, n_t), numpy.int64)
            G_int[...] = 0
            gram_sparse_into(a, numpy.asarray(G_int))
            if progress is not None:
                progress((c1 - col_offsets[0]) / max(1, col_offsets[-1] - col_offsets[0]))
            maps_from_gram(C[j], G_int, S[:, j], c1 - c0, rows)
            continue
        if G is None:
            G = empty_spillable((n_t, n_t), numpy.float64)
        G[...] = 0
        for p in range(c0, c1, pixel_block):
            a = x[:, p: min(c1, p + pixel_block)]
            S[:, j] += a.sum(axis=1, dtype=S.dtype)
            a = a.astype(numpy.float64)
            for r in range(0, n_t, rows):
                G[r: r + rows] += a[r: r + rows] @ a.T  # float64: exact below 2**53
            if progress is not None:
                progress((min(c1, p + pixel_block) - col_offsets[0])
                         / max(1, col_offsets[-1] - col_offsets[0]))
        s = S[:, j].astype(numpy.float64)
        with numpy.errstate(invalid="ignore", divide="ignore"):
            for r in range(0, n_t, rows):
                C[j, r: r + rows] = (c1 - c0) * G[r: r + rows] / numpy.outer(s[r: r + rows], s)
    return C, S


#: Rows per block of :func:`_diagonal_sums` (its order of summation, which
#: :class:`~ewoksxpcs.engine.live_pairs.LiveGram` reproduces).
DIAGONAL_BLOCK = 512


def _diagonal_sums(C2: numpy.ndarray, block: int = DIAGONAL_BLOCK):
    """Sums, sums of squares and counts of the finite entries of each upper diagonal of C2 (n, n).

    Rows are processed in blocks; in a block, rows are padded with NaN and viewed with a
    stride of one row plus one element, so that column τ of the view is diagonal τ: one
    vectorised pass per block, O(n²) in all.
    """
    n = C2.shape[-1]
    s1 = numpy.zeros(n)
    s2 = numpy.zeros(n)
    cnt = numpy.zeros(n, dtype=numpy.int64)
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        rows = r1 - r0
        width = n - r0
        pad = numpy.full((rows, width + rows), numpy.nan)
        pad[:, :width] = C2[r0:r1, r0:]
        skew = numpy.lib.stride_tricks.as_strided(
            pad, shape=(rows, width), strides=(pad.strides[0] + pad.strides[1], pad.strides[1]))
        ok = numpy.isfinite(skew)
        vals = numpy.where(ok, skew, 0.0)
        s1[:width] += vals.sum(axis=0)
        s2[:width] += (vals * vals).sum(axis=0)
        cnt[:width] += ok.sum(axis=0)
    return s1, s2, cnt


def diagonal_means(C: numpy.ndarray):
    """Mean and standard error of each upper diagonal of square maps (NaN skipped).

    Parameters
    ----------
    C : ndarray, (..., n, n)

    Returns
    -------
    mean, err : ndarray, (..., n) float64
        Over C[..., T, T+τ], T = 0 … n−1−τ; NaN where no finite entry (err: fewer than two).
    """
    n = C.shape[-1]
    flat = C.reshape((-1, n, n))
    mean = numpy.full((flat.shape[0], n), numpy.nan)
    err = numpy.full((flat.shape[0], n), numpy.nan)
    for i in range(flat.shape[0]):
        mean[i], err[i] = moments_mean_err(*_diagonal_sums(flat[i]))
    return mean.reshape(C.shape[:-2] + (n,)), err.reshape(C.shape[:-2] + (n,))


def moments_mean_err(s1, s2, cnt):
    """Mean and standard error from sums ``s1``, sums of squares ``s2`` and counts ``cnt``
    (arrays of one shape; float64, float64, int64); NaN where cnt < 1 (err: cnt < 2)."""
    s1 = numpy.asarray(s1, dtype=numpy.float64)
    s2 = numpy.asarray(s2, dtype=numpy.float64)
    with numpy.errstate(invalid="ignore", divide="ignore"):
        m = s1 / cnt
        var = (s2 - cnt * m * m) / (cnt - 1)
        mean = numpy.where(cnt > 0, m, numpy.nan)
        err = numpy.where(cnt > 1, numpy.sqrt(numpy.maximum(var, 0) / cnt), numpy.nan)
    return mean, err


def segment_edges(n_t: int, n_segments: int) -> numpy.ndarray:
    """Boundaries (time bins, int64, n_segments' + 1) of the age segments of :func:`partial_g2`
    (n_segments' = min(n_segments, max(nT, 1)))."""
    if isinstance(n_segments, bool) or not isinstance(n_segments, (int, numpy.integer)) or n_segments < 1:
        raise ValueError(f"n_segments must be an integer >= 1, got {n_segments!r}")
    n_segments = int(min(n_segments, max(n_t, 1)))
    return (numpy.arange(n_segments + 1, dtype=numpy.int64) * n_t) // n_segments


def g2_from_twotime(C: numpy.ndarray, time_bin: int = 1):
    """g2 from two-time maps: diagonal means (see the module docstring).

    Parameters
    ----------
    C : ndarray, (n_sel, nT, nT)
    time_bin : int
        Frames per time bin (for the lags).

    Returns
    -------
    g2, g2_err : ndarray, (n_sel, nT) float64
    lags : ndarray, (nT,) float64
        Frames.
    """
    g2, err = diagonal_means(C)
    return g2, err, numpy.arange(C.shape[-1], dtype=numpy.float64) * time_bin


def partial_g2(C: numpy.ndarray, n_segments: int = DEFAULT_SEGMENTS, time_bin: int = 1):
    """g2 of successive age segments of two-time maps.

    Parameters
    ----------
    C : ndarray, (n_sel, nT, nT)
    n_segments : int
        1 <= n_segments <= nT.
    time_bin : int

    Returns
    -------
    g2, g2_err : ndarray, (n_sel, n_segments, L) float64
        L = longest segment (time bins); NaN past a segment's length.
    lags : ndarray, (L,) float64
        Frames.
    edges : ndarray, (n_segments + 1,) int64
        Segment boundaries in frames.
    """
    n_t = C.shape[-1]
    edges = segment_edges(n_t, n_segments)
    n_segments = edges.size - 1
    length = int(numpy.diff(edges).max()) if n_t else 0
    g2 = numpy.full((C.shape[0], n_segments, length), numpy.nan)
    err = numpy.full_like(g2, numpy.nan)
    for s in range(n_segments):
        a, b = int(edges[s]), int(edges[s + 1])
        m, e = diagonal_means(C[:, a:b, a:b])
        g2[:, s, : b - a], err[:, s, : b - a] = m, e
    lags = numpy.arange(length, dtype=numpy.float64) * time_bin
    return g2, err, lags, (edges * time_bin).astype(numpy.int64)


def make_result(C, S, rows, binning, time_bin, n_frames, n_segments, frame_period,
                method, device, info, diag=None) -> TwoTimeResult:
    """Assemble a :class:`TwoTimeResult` from maps and sums (shared by the backends).

    ``diag``: optional (s1, s2, cnt), each (n_sel, 1 + n_segments', nT), the moments of the
    upper diagonals of each whole map (index 0) and of its age segments (indices 1 …, row
    ranges of :func:`segment_edges`), computed by the backend (e.g. on the device) in place of
    :func:`g2_from_twotime` and :func:`partial_g2`.
    """
    n_t = C.shape[-1]
    if diag is None:
        g2, g2_err, lags = g2_from_twotime(C, time_bin)
        pg2, pg2_err, plags, edges = partial_g2(C, n_segments, time_bin)
    else:
        e = segment_edges(n_t, n_segments)
        mean, err = moments_mean_err(*diag)
        g2, g2_err = mean[:, 0], err[:, 0]
        lags = numpy.arange(n_t, dtype=numpy.float64) * time_bin
        length = int(numpy.diff(e).max()) if n_t else 0
        pg2 = numpy.full((C.shape[0], e.size - 1, length), numpy.nan)
        pg2_err = numpy.full_like(pg2, numpy.nan)
        for k in range(e.size - 1):
            w = int(e[k + 1] - e[k])
            pg2[:, k, :w], pg2_err[:, k, :w] = mean[:, 1 + k, :w], err[:, 1 + k, :w]
        plags = numpy.arange(length, dtype=numpy.float64) * time_bin
        edges = (e * time_bin).astype(numpy.int64)
    return TwoTimeResult(
        C=C,
        labels=binning.labels[rows].copy(),
        n_pixels=binning.n_pixels[rows].copy(),
        time_bin=int(time_bin),
        n_frames=int(n_frames),
        frame_sums=S,
        times=numpy.arange(n_t) * float(time_bin) + (time_bin - 1) / 2.0,
        g2=g2,
        g2_err=g2_err,
        g2_lags=lags,
        partial_g2=pg2,
        partial_g2_err=pg2_err,
        partial_lags=plags,
        segment_edges=edges,
        frame_period=frame_period,
        method=method,
        device=device,
        info=dict(info or {}),
    )


def events_selection_dense(events, pixel_index: numpy.ndarray, time_bin: int, dtype):
    """Binned frames X (nT, n_sel_pixels) of the selected pixels of an EventStack (NumPy)."""
    rows = numpy.searchsorted(events.pixel_index, pixel_index)
    rows_c = numpy.minimum(rows, max(events.n_pixels - 1, 0))
    if events.n_pixels == 0 or (events.pixel_index[rows_c] != pixel_index).any():
        raise ValueError("twotime bins use pixels that this EventStack does not hold (masked as bad)")
    from .events import count_blocks

    n_t = events.n_frames // time_bin
    x = numpy.zeros((n_t, pixel_index.size), dtype=dtype)
    starts, ends = events.offsets[rows_c], events.offsets[rows_c + 1]
    counts = ends - starts
    # Columns in blocks of at most EVENT_BLOCK events: bounded per-event temporaries.
    ends_c = numpy.cumsum(counts)
    for c0, c1 in count_blocks(ends_c):
        base = int(ends_c[c0 - 1]) if c0 else 0
        cnt = counts[c0:c1]
        col = numpy.repeat(numpy.arange(c0, c1), cnt)
        ev = numpy.repeat(starts[c0:c1] - (ends_c[c0:c1] - cnt), cnt) + numpy.arange(
            base, int(ends_c[c1 - 1]))
        tb = events.times[ev].astype(numpy.int64) // time_bin
        ok = tb < n_t
        numpy.add.at(x, (tb[ok], col[ok]), events.values[ev][ok].astype(dtype))
    return x


# ---------------------------------------------------------------------------------- backend
class NumpyTwoTime:
    """Two-time correlator on the CPU (NumPy + BLAS syrk, exact), frames or EventStack.

    Parameters
    ----------
    qmask : array_like (Ny, Nx) of int, or Binning
    bins : sequence of int, optional
        qmask labels of the maps (default: all bins).
    time_bin : int, optional
        Frames per time bin (default: see :func:`choose_time_bin`).
    max_frames : int
        Largest nT when ``time_bin`` is automatic.
    n_segments : int
        Age segments of the partial g2.
    n_groups, bad_pixels, chunk_frames
        As for the other correlators (``n_groups`` only shapes the binning).
    """

    name = "numpy"
    device_name = "cpu"
    #: Share of the time of the products after the frames are read (progress; see
    #: :func:`ewoksxpcs.workflow.pipeline.correlate_sums`), and the callback of their progress.
    compute_share = 0.5
    report_progress = None

    def __init__(self, qmask, bins=None, time_bin: Optional[int] = None,
                 max_frames: int = DEFAULT_MAX_FRAMES, n_segments: int = DEFAULT_SEGMENTS,
                 n_groups: int = DEFAULT_GROUPS, bad_pixels=None, chunk_frames: Optional[int] = None):
        self.binning = as_binning(qmask, n_groups=n_groups, bad_pixels=bad_pixels)
        self.rows, self.col_offsets, self.pixel_index = select_bins(self.binning, bins)
        choose_time_bin(None, time_bin, max_frames)  # validates both
        self.time_bin = time_bin
        self.max_frames = max_frames
        if isinstance(n_segments, bool) or not isinstance(n_segments, (int, numpy.integer)) or n_segments < 1:
            raise ValueError(f"n_segments must be an integer >= 1, got {n_segments!r}")
        self.n_segments = int(n_segments)
        self.chunk_frames = chunk_frames

    def binned_frames(self, data):
        """(X (nT, n_sel_pixels), time_bin, n_frames) of ``data``."""
        from .events import EventStack

        if isinstance(data, EventStack):
            self.binning.check_frame_shape(data.frame_shape)
            b = choose_time_bin(data.n_frames, self.time_bin, self.max_frames)
            x = events_selection_dense(data, self.pixel_index, b, binned_dtype(data.dtype, b))
            return x, b, data.n_frames
        source = as_frame_source(data)
        self.binning.check_frame_shape(source.frame_shape)
        stream = self.stream(source.dtype, source.n_frames)
        for chunk in source.iter_chunks(self.chunk_frames):
            stream.feed(chunk)
        return stream.binned()

    def stream(self, dtype, n_frames: Optional[int] = None) -> "TwoTimeStream":
        """A :class:`TwoTimeStream` of this correlator's pixels and time binning."""
        return TwoTimeStream(self.pixel_index, self.time_bin, self.max_frames, dtype, n_frames)

    def result_from_binned(self, x, time_bin: int, n_frames: int,
                           frame_period: Optional[float] = None, **info) -> TwoTimeResult:
        """The two-time maps and g2 of binned frames X (nT, n_sel_pixels)."""
        t0 = time.perf_counter()
        C, S = twotime_from_binned(x, self.col_offsets, progress=self.report_progress)
        return self._result(C, S, time_bin, n_frames, frame_period, t0, info)

    def _result(self, C, S, time_bin, n_frames, frame_period, t0, info,
                diag=None) -> TwoTimeResult:
        """:func:`make_result` of maps computed since ``t0`` (perf_counter), timings added;
        ``diag``: None, or a callable giving make_result's ``diag`` (timed with the g2)."""
        t1 = time.perf_counter()
        result = make_result(C, S, self.rows, self.binning, time_bin, n_frames, self.n_segments,
                             frame_period, self.name, self.device_name, info,
                             diag=None if diag is None else diag())
        result.info.setdefault("timings", {}).update(
            correlate_s=t1 - t0, g2_s=time.perf_counter() - t1)
        return result

    def result_from_gram(self, live_gram, time_bin: int, n_frames: int,
                         frame_period: Optional[float] = None, **info) -> TwoTimeResult:
        """The two-time maps and g2 kept up to date as the binned frames came
        (:class:`~ewoksxpcs.engine.live_pairs.LiveGram`, integer frames): the same result as
        :meth:`result_from_binned` of those frames; only the g2 of the age segments is computed
        here. The maps are a view of the live ones (later time bins do not change it)."""
        t0 = time.perf_counter()
        return self._result(live_gram.maps(), live_gram.frame_sums(), time_bin, n_frames,
                            frame_period, t0, info,
                            diag=lambda: live_gram.diagonal_sums(self.n_segments))

    def correlate(self, data, frame_period: Optional[float] = None, **info) -> TwoTimeResult:
        t0 = time.perf_counter()
        x, b, n_frames = self.binned_frames(data)
        if frame_period is None:
            frame_period = getattr(data, "frame_period", None)
        binning_s = time.perf_counter() - t0
        result = self.result_from_binned(x, b, n_frames, frame_period, **info)
        result.info["timings"]["correlate_s"] += binning_s  # time binning included, as before
        return result
