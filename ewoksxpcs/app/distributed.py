"""One large dataset across workers: correlate pixel blocks separately, merge the sums exactly.

n2 and the frame sums S are sums over pixels (:class:`~ewoksxpcs.engine.result.CorrelationSums`), so
the binned pixels can be split into disjoint blocks, each block correlated on its own worker,
and the partial sums added. Each pixel keeps its original sub-bin (bin and jackknife group):
a block only drops the sub-bins it has no pixel of, and its partial sums are added back into
those sub-bins' rows. Integer frames give int64 sums, so the merged n2, S, s2 and g2 are
*bit for bit* those of a single-process run; float32 frames agree within rounding (the order
of the float64 additions differs).

Blocks are bands of detector rows, balanced by their number of binned pixels, so a worker
reads only its band of each frame from the file (``dataset[t0:t1, y0:y1, :]``): frames are
never shipped to workers. Works with a ``dask.distributed.Client`` or any
``concurrent.futures.Executor`` (both have ``submit`` returning futures with ``result()``)::

    from dask.distributed import Client
    from ewoksxpcs.app.distributed import Hdf5Frames, correlate_blocks

    with Client("tcp://scheduler:8786") as client:
        result = correlate_blocks(Hdf5Frames("scan.h5", "/1.1/measurement/eiger"), qmask,
                                  executor=client, n_blocks=16, method="fft")
"""

from __future__ import annotations

import copy
import os
import socket
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy

from ..correlators import get_correlator_class
from ..engine.badframes import ExcludedFrameSource, bad_frame_mask
from ..engine.frames import ArrayFrameSource, FrameSource, check_dtype, validate_chunk
from ..engine.normalise import normalise
from ..engine.options import positive_int
from ..engine.qmask import DEFAULT_GROUPS, Binning, as_binning
from ..engine.result import CorrelationResult, CorrelationSums
from ..io.hdf5chunks import check_virtual_sources

__all__ = [
    "PixelBlock",
    "Hdf5Frames",
    "ArrayFrames",
    "split_row_blocks",
    "block_binning",
    "block_sums",
    "merge_block_sums",
    "correlate_blocks",
]


# ---------------------------------------------------------------------------- frame specs
class _RowBandSource(FrameSource):
    """Frames (n, y1-y0, Nx) of a 3-D array-like, reading only rows y0:y1 of each frame."""

    def __init__(self, array, rows: Tuple[int, int], start: int, stop: int, step: int,
                 frame_period: Optional[float], close=None):
        self.array = array
        self.rows = rows
        self.dtype = check_dtype(array.dtype)
        self.frame_shape = (rows[1] - rows[0], int(array.shape[2]))
        self._range = range(start, stop, step)
        self.n_frames = len(self._range)
        self.frame_period = frame_period
        self._close = close

    def iter_chunks(self, chunk_frames=None):
        chunk_frames = positive_int(chunk_frames, "chunk_frames") or self.default_chunk_frames()
        r, (y0, y1) = self._range, self.rows
        try:
            for i in range(0, len(r), chunk_frames):
                sub = r[i : i + chunk_frames]
                chunk = self.array[sub.start : sub.stop : sub.step, y0:y1, :]
                yield validate_chunk(chunk, self.frame_shape, self.dtype, i)
        finally:
            if self._close is not None:
                self._close()


def _frame_range(n_total: int, start: int, stop: Optional[int], step: int) -> Tuple[int, int, int]:
    stop = n_total if stop is None else int(stop)
    if step < 1:
        raise ValueError(f"frame step must be >= 1, got {step}")
    if not (0 <= start <= stop <= n_total):
        raise ValueError(f"frame range [{start}:{stop}] is outside the data's {n_total} frames")
    return int(start), stop, int(step)


@dataclass(frozen=True)
class Hdf5Frames:
    """Frames of an HDF5 dataset (Nt, Ny, Nx), described by name so that workers open it.

    Parameters
    ----------
    filename : str
        HDF5 file, on a file system every worker sees (external links and virtual datasets,
        e.g. BLISS Lima files, are followed by h5py).
    dataset : str
        Path of the 3-D dataset in the file.
    start, stop, step : int
        Frame range (slice semantics).
    frame_period : float, optional
        Seconds between frames.
    """

    filename: str
    dataset: str
    start: int = 0
    stop: Optional[int] = None
    step: int = 1
    frame_period: Optional[float] = None

    def _open(self):
        import h5py
        import hdf5plugin  # noqa: F401  (registers the compression filters)

        if not os.path.exists(self.filename):
            raise ValueError(f"HDF5 file {self.filename!r} does not exist")
        f = h5py.File(self.filename, "r")
        try:
            ds = f[self.dataset]
        except KeyError:
            f.close()
            raise ValueError(f"no dataset {self.dataset!r} in {self.filename!r}") from None
        if ds.ndim != 3:
            f.close()
            raise ValueError(
                f"{self.filename}::{self.dataset} must be 3-D (n_frames, Ny, Nx); got shape {ds.shape}"
            )
        try:  # HDF5 would read the frames of a lost source file as zeros
            check_virtual_sources(ds, int(self.start or 0),
                                  None if self.stop is None else int(self.stop))
        except BaseException:
            f.close()
            raise
        return f, ds

    def describe(self) -> Tuple[Tuple[int, int], numpy.dtype, int]:
        """Return ((Ny, Nx), dtype, n_frames of the range), reading only metadata."""
        f, ds = self._open()
        try:
            start, stop, step = _frame_range(ds.shape[0], self.start, self.stop, self.step)
            return tuple(int(n) for n in ds.shape[1:]), check_dtype(ds.dtype), len(range(start, stop, step))
        finally:
            f.close()

    def open(self, rows: Optional[Tuple[int, int]] = None) -> FrameSource:
        """A frame source over rows ``rows`` = (y0, y1) of each frame (all rows by default)."""
        f, ds = self._open()
        start, stop, step = _frame_range(ds.shape[0], self.start, self.stop, self.step)
        rows = (0, int(ds.shape[1])) if rows is None else rows
        return _RowBandSource(ds, rows, start, stop, step, self.frame_period, close=f.close)

    def band(self, rows: Tuple[int, int]) -> "_Hdf5Band":
        """The spec a worker gets: the file is opened there, only ``rows`` are read."""
        return _Hdf5Band(self, rows)


@dataclass(frozen=True)
class _Hdf5Band:
    spec: Hdf5Frames
    rows: Tuple[int, int]

    def open(self) -> FrameSource:
        return self.spec.open(self.rows)


@dataclass(frozen=True)
class ArrayFrames:
    """Frames held in memory by the caller (tests, small data): a worker receives only its band.

    Parameters
    ----------
    array : ndarray, (Nt, Ny, Nx)
    frame_period : float, optional
        Seconds between frames.
    """

    array: numpy.ndarray
    frame_period: Optional[float] = None

    def describe(self):
        if numpy.ndim(self.array) != 3:
            raise ValueError(f"frames must be 3-D (n_frames, Ny, Nx); got shape {numpy.shape(self.array)}")
        return tuple(self.array.shape[1:]), check_dtype(self.array.dtype), int(self.array.shape[0])

    def band(self, rows: Tuple[int, int]) -> "_ArrayBand":
        # A contiguous copy of the band: pickling a view would ship the whole base array.
        return _ArrayBand(numpy.ascontiguousarray(self.array[:, rows[0] : rows[1], :]), self.frame_period)


@dataclass(frozen=True)
class _ArrayBand:
    array: numpy.ndarray
    frame_period: Optional[float]

    def open(self) -> FrameSource:
        return ArrayFrameSource(self.array, frame_period=self.frame_period)


def _as_spec(frames):
    if isinstance(frames, (Hdf5Frames, ArrayFrames)):
        return frames
    if isinstance(frames, (str, os.PathLike)):
        # A URL (file.h5::/scan, Bliss entry, NeXus group): resolved once here to its dataset.
        from ..io.load import load_frames

        frames = load_frames(os.fspath(frames))
    if isinstance(frames, numpy.ndarray):
        return ArrayFrames(frames)
    from ..io.load import HDF5FrameSource

    if isinstance(frames, HDF5FrameSource):
        return Hdf5Frames(frames.filename, frames.path, frames.start, frames.stop, frames.step,
                          frames.frame_period)
    raise TypeError(
        "frames must be an HDF5 URL ('file.h5::/scan'), an HDF5FrameSource, an Hdf5Frames, an "
        f"ArrayFrames or a 3-D ndarray, not {type(frames).__name__}"
    )


# ---------------------------------------------------------------------------- pixel blocks
@dataclass
class PixelBlock:
    """Binned pixels of detector rows ``rows`` = (y0, y1), with their original sub-bins.

    Attributes
    ----------
    rows : (int, int)
        Row band y0:y1 of the frames the block reads.
    sub_rows : ndarray, (n_sub_block,) int64
        Index, in the full binning, of each sub-bin of :attr:`binning` (ascending).
    binning : Binning
        Binning of the band image (y1-y0, Nx) holding the block's pixels, one sub-bin per
        sub-bin of the full binning that has pixels in the band, in the same order.
    """

    rows: Tuple[int, int]
    sub_rows: numpy.ndarray
    binning: Binning

    @property
    def n_pixels(self) -> int:
        return self.binning.n_binned_pixels


def block_binning(binning: Binning, rows: Tuple[int, int]) -> Optional[PixelBlock]:
    """Restrict ``binning`` to the detector rows y0:y1, keeping every pixel's sub-bin.

    Returns
    -------
    PixelBlock or None
        None when the band has no binned pixel.
    """
    ny, nx = binning.shape
    y0, y1 = int(rows[0]), int(rows[1])
    if not (0 <= y0 < y1 <= ny):
        raise ValueError(f"row band {rows} is outside the image rows 0:{ny}")
    y = binning.pixel_index // nx
    sel = numpy.flatnonzero((y >= y0) & (y < y1))  # keeps bin → group → raster order
    if sel.size == 0:
        return None
    sub = binning.sub_of_pixel()[sel]
    sub_rows, sub_counts = numpy.unique(sub, return_counts=True)
    bins = binning.sub_bin[sub_rows]
    bin_rows, bin_first = numpy.unique(bins, return_index=True)
    groups = numpy.diff(numpy.concatenate([bin_first, [bins.size]])).astype(numpy.int64)
    bin_counts = numpy.add.reduceat(sub_counts, bin_first).astype(numpy.int64)

    # A shallow copy keeps any attribute the parent has; every per-pixel and per-bin
    # attribute is then replaced by the block's own, with the invariants of Binning().
    b = copy.copy(binning)
    b.shape = (y1 - y0, nx)
    b.n_groups = binning.n_groups
    b.labels = binning.labels[bin_rows].copy()
    b.pixel_index = (binning.pixel_index[sel] - y0 * nx).astype(numpy.int64)
    b.n_pixels = bin_counts
    b.bin_offsets = numpy.concatenate([[0], numpy.cumsum(bin_counts)]).astype(numpy.int64)
    b.n_groups_per_bin = groups
    b.bin_sub_offsets = numpy.concatenate([[0], numpy.cumsum(groups)]).astype(numpy.int64)
    b.sub_offsets = numpy.concatenate([[0], numpy.cumsum(sub_counts)]).astype(numpy.int64)
    b.sub_bin = numpy.repeat(numpy.arange(bin_rows.size), groups).astype(numpy.int64)
    b.sub_n_pixels = sub_counts.astype(numpy.int64)
    return PixelBlock(rows=(y0, y1), sub_rows=sub_rows.astype(numpy.int64), binning=b)


def split_row_blocks(binning: Binning, n_blocks: int) -> List[PixelBlock]:
    """Split the binned pixels into at most ``n_blocks`` row bands of similar pixel counts.

    Every binned pixel lands in exactly one block; bands without binned pixels are dropped.
    """
    n_blocks = int(n_blocks)
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
    ny, nx = binning.shape
    per_row = numpy.bincount(binning.pixel_index // nx, minlength=ny)
    cum = numpy.cumsum(per_row)
    total = int(cum[-1])
    # Row boundaries where the cumulative pixel count crosses k/n of the total.
    targets = (numpy.arange(1, n_blocks) * total) // n_blocks
    edges = numpy.unique(numpy.concatenate([[0], numpy.searchsorted(cum, targets, side="right"), [ny]]))
    blocks = []
    for y0, y1 in zip(edges[:-1], edges[1:]):
        block = block_binning(binning, (int(y0), int(y1)))
        if block is not None:
            blocks.append(block)
    return blocks


# ---------------------------------------------------------------------------- worker side
def block_sums(band, block: PixelBlock, method: str, device: Optional[str] = None,
               options: Optional[dict] = None,
               excluded: Optional[numpy.ndarray] = None) -> Tuple[CorrelationSums, dict]:
    """Correlate one pixel block where this runs (a worker): read its band, return its sums.

    Parameters
    ----------
    band : object with ``open() -> FrameSource``
        The block's frames (e.g. ``Hdf5Frames(...).band(rows)``), opened here.
    block : PixelBlock
    method : str
        Registry name of a correlator (not ``auto``: resolved once by the caller).
    device : str, optional
    options : dict, optional
        Backend options (``chunk_frames``, ...).
    excluded : ndarray (Nt,) bool, optional
        Bad frames, read as zeros (:mod:`ewoksxpcs.engine.badframes`).

    Returns
    -------
    sums : CorrelationSums
        n2 (n_sub_block, Nt) and frame sums (Nt, n_sub_block) of the block.
    info : dict
        host, pid, rows, pixels, seconds, device.
    """
    t0 = time.perf_counter()
    cls = get_correlator_class(method)
    correlator = cls(block.binning, device=device, **(options or {}))
    source = band.open()
    if excluded is not None and excluded.any():
        source = ExcludedFrameSource(source, excluded)
    sums = correlator.compute_sums(source)
    info = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "rows": list(block.rows),
        "pixels": block.n_pixels,
        "seconds": time.perf_counter() - t0,
        "device": correlator.device_name,
    }
    return sums, info


def merge_block_sums(binning: Binning, blocks: Sequence[PixelBlock],
                     parts: Sequence[CorrelationSums]) -> CorrelationSums:
    """Add the blocks' partial sums into the sums of the full binning (exact for int64).

    Returns
    -------
    CorrelationSums
        n2 (n_sub, Nt) and frame sums (Nt, n_sub) of the full binning.
    """
    if len(blocks) != len(parts) or not parts:
        raise ValueError(f"need one partial sum per block: {len(blocks)} blocks, {len(parts)} sums")
    n_frames = parts[0].frame_sums.shape[0]
    dtype = parts[0].n2.dtype
    n2 = numpy.zeros((binning.n_sub, parts[0].n2.shape[1]), dtype=dtype)
    fs = numpy.zeros((n_frames, binning.n_sub), dtype=parts[0].frame_sums.dtype)
    for block, part in zip(blocks, parts):
        if part.frame_sums.shape != (n_frames, block.sub_rows.size) or part.n2.dtype != dtype:
            raise ValueError(
                f"partial sums of block rows {block.rows} do not match: frame sums "
                f"{part.frame_sums.shape} {part.n2.dtype}, expected {(n_frames, block.sub_rows.size)} {dtype}"
            )
        # sub_rows are unique within a block: fancy-indexed += adds every row once.
        n2[block.sub_rows] += part.n2
        fs[:, block.sub_rows] += part.frame_sums
    return CorrelationSums(n2=n2, frame_sums=fs, lags=numpy.asarray(parts[0].lags, dtype=numpy.int64))


def _resolve_method(spec, binning, method, device):
    if method != "auto":
        get_correlator_class(method)  # raises on an unknown name, before anything is submitted
        return method, device, ""
    from ..correlators.auto import choose_method

    if isinstance(spec, ArrayFrames):
        return choose_method(spec.array, binning, device)
    f, ds = spec._open()
    try:
        return choose_method(ds, binning, device)
    finally:
        f.close()


def correlate_blocks(frames, qmask, executor=None, n_blocks: Optional[int] = None,
                     method: str = "auto", device: Optional[str] = None,
                     n_groups: int = DEFAULT_GROUPS, bad_pixels=None, bad_frames=None,
                     **options) -> CorrelationResult:
    """Correlate ``frames`` split into pixel blocks on workers; merge exactly; normalise once.

    Parameters
    ----------
    frames : str, HDF5FrameSource, Hdf5Frames, ArrayFrames or ndarray (Nt, Ny, Nx)
        The frames: a URL as :func:`ewoksxpcs.io.load.load_frames` takes (``"scan.h5::/1.1"``),
        resolved here to its HDF5 dataset and frame range; each worker opens the file and
        reads only its rows. An array is cut into row bands, each shipped to one worker.
    qmask : ndarray (Ny, Nx) of int, or Binning
        Label image (0 = unused).
    executor : dask.distributed.Client or concurrent.futures.Executor, optional
        Where blocks run (``submit(fn, *args)`` → future with ``result()``); None runs them
        one after the other in this process.
    n_blocks : int, optional
        Number of row bands. Default: the executor's worker count (dask), else 4.
    method : str
        Correlator registry name, or ``"auto"`` (resolved once, here).
    device : str, optional
        OpenCL device of OpenCL methods.
    n_groups : int
        Pixel groups per bin for the jackknife error bars.
    bad_pixels : ndarray (Ny, Nx) of bool, optional
    bad_frames : str, sequence of int or bool mask, optional
        Frames excluded from every pair, indices of the scan (the frame range applied):
        :mod:`ewoksxpcs.engine.badframes`.
    **options
        Backend options, e.g. ``chunk_frames``.

    Returns
    -------
    CorrelationResult
        Identical, for integer frames, to ``ewoksxpcs.correlate(frames, qmask, method)``;
        ``info["blocks"]`` lists where and how long each block ran.
    """
    spec = _as_spec(frames)
    frame_shape, _, n_frames = spec.describe()
    binning = as_binning(qmask, n_groups=n_groups, bad_pixels=bad_pixels)
    binning.check_frame_shape(frame_shape)
    if n_frames < 1:
        raise ValueError("frames: the frame range is empty")
    excluded = None
    if bad_frames is not None:
        start, step = getattr(spec, "start", 0) or 0, getattr(spec, "step", 1) or 1
        excluded = bad_frame_mask(bad_frames, n_frames,
                                  start + step * numpy.arange(n_frames, dtype=numpy.int64))
    method, device, reason = _resolve_method(spec, binning, method, device)
    if n_blocks is None:
        n_blocks = 4
        if executor is not None and hasattr(executor, "scheduler_info"):
            n_blocks = max(1, len(executor.scheduler_info().get("workers", {})))
    blocks = split_row_blocks(binning, n_blocks)
    t0 = time.perf_counter()
    if executor is None:
        outputs = [block_sums(spec.band(b.rows), b, method, device, options, excluded)
                   for b in blocks]
    else:
        kwargs = {"pure": False} if hasattr(executor, "scheduler_info") else {}
        futures = [
            executor.submit(block_sums, spec.band(b.rows), b, method, device, options, excluded,
                            **kwargs)
            for b in blocks
        ]
        outputs = [f.result() for f in futures]
    sums = merge_block_sums(binning, blocks, [o[0] for o in outputs])
    elapsed = time.perf_counter() - t0
    cls = get_correlator_class(method)
    info = {"blocks": [o[1] for o in outputs], "distributed_s": elapsed}
    if reason:
        info["auto_reason"] = reason
    if excluded is not None:
        info["excluded_frames"] = excluded
    return normalise(sums, binning, method=method, device=outputs[0][1]["device"],
                     s2_method=cls.s2_method, info=info)
