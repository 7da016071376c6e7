"""The parts of each frame that cross the bus: a few rectangles bounding the selected pixels.

A two-time map of one q bin reads a ring of pixels: on a 512×1024 detector, bin 5 of 10 rings
holds 13 % of the pixels but touches every row and 60 % of the columns, so whole frames (or
the rows that hold the bin) put 5-7× more bytes on the bus than needed, and the bus is the
floor of that case (52 GB of frames at 55 GB/s). :func:`frame_boxes` bounds the pixels with
one rectangle per run of columns in each of a few bands of rows; the frames then cross as
those rectangles, packed one after another per frame (:class:`FrameBoxes`), either by one
three-dimensional rectangular copy per rectangle from page-locked memory or gathered by
threads into a page-locked staging buffer and copied at once
(:func:`ewoksxpcs.opencl.device.upload_chunk`). The kernels read the packed frames through
:meth:`FrameBoxes.positions`, the packed place of each selected pixel.

The copy engine's time is not the bytes (H200, session 12, ``h200_rect_copy_probe_session12``):
each row of a rectangle costs at least ~2.7 ns (rows of 32 to 128 bytes cost the same), wider
rows their bytes at ~50 GB/s, and each rectangle of each frame ~100-250 ns more. For the ring
above, 16 equal bands (28 rectangles, 18 % of the frame's bytes) cost 5.6-6.5 us a frame,
64 bands (120 rectangles, 14 %) 12-14 us, one band (60 %) 6.3 us, whole frames 9.6 us. So for
page-locked frames the bands are chosen by that cost (:data:`RECT_COPY_COSTS`, dynamic
programming over :data:`BAND_STEPS` steps of rows): 8 rectangles, 26 % of the bytes,
4.6-5.1 us a frame (the one-bin two-time of 100 000 frames: 0.56 s against 0.62 s).

In a packed frame every rectangle's rows have the same pitch, the widest rectangle's width:
OpenCL's rectangular copies want the slice pitch (a packed frame) to be a multiple of the row
pitch. The copies move only each rectangle's own width; the device buffers hold the padding.

Frames in pageable memory (NumPy arrays, chunks decoded from a file) are copied by the host
into a page-locked staging buffer anyway: there the rectangles are gathered without padding,
each with its own width (:class:`GatheredBoxes`: one NumPy copy per rectangle for all the
frames a thread holds), or the selected pixels themselves, one run of consecutive pixels at a
time (:class:`PixelRuns`: no pixel that is not selected, but one NumPy call per run, and the
calls hold the GIL: on the H200's 16-core host, 1 018 runs of the ring above over chunks of 333
frames took 3.2-3.5 s per 100 000 frames with 8 threads, session 11). :func:`frame_layout`
chooses by the bytes, row pieces and NumPy calls of each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Optional, Tuple, Union

import numpy

__all__ = ["FrameBoxes", "frame_boxes", "BANDS", "BAND_STEPS", "BoxCosts", "RECT_COPY_COSTS",
           "gather_costs", "GatheredBoxes", "PixelRuns", "frame_layout",
           "BOX_UPLOAD", "CPU_BOX_UPLOAD", "RUN_COST_BYTES", "CALL_COST_BYTES"]

#: Bands of rows of :func:`frame_boxes` (each band: one rectangle per run of the columns it
#: needs).
BANDS = 16

#: How the selected part of page-locked frames crosses the bus (:func:`frame_layout`):
#: "rect", one three-dimensional rectangular copy per rectangle of :func:`frame_boxes`, read
#: where the frames lie; "gather", gathered by host threads into a page-locked staging buffer
#: (:class:`GatheredBoxes` or :class:`PixelRuns`), as for frames in pageable memory.
#: ``EWOKSXPCS_BOX_UPLOAD`` overrides it. H200, one ring x 100 000 page-locked frames (session
#: 11, h200_twotime1bin_gathered_boxes_session11.txt): rectangles 0.65-0.66 s, all gathered
#: 1.35-1.50 s.
BOX_UPLOAD = "rect"
#: The same for CPU devices, whose "copies" are loops of the host's own (PoCL on the 2-core
#: AMD EPYC, session 10, X of one ring from 2 000 page-locked 512x1024 frames: rectangles
#: 0.49-0.55 s, the pixels gathered 0.24-0.41 s; epyc2_twotime1bin_pinned_session10.txt;
#: session 11, noisy: rectangles 0.46-1.17 s, gathered 0.27-1.12 s,
#: epyc2_twotime1bin_gather_session11.txt).
CPU_BOX_UPLOAD = "gather"

#: What one row piece of a host gather (a run of :class:`PixelRuns`, a row of a rectangle of
#: :class:`GatheredBoxes`, in one frame) costs beyond its bytes, as bytes of a plain copy:
#: NumPy copies a run of a frame in ~30 ns where a whole-frame copy moves ~11 GB/s (2-core
#: AMD EPYC development machine, session 10: 24 ms for 1 000 frames x 796 runs, whole
#: 512x1024 uint8 frames 46 ms).
RUN_COST_BYTES = 320
#: What one NumPy call of a host gather costs beyond its row pieces, as bytes of a plain copy
#: (a call per run or rectangle per chunk; the calls hold the GIL, so threads do not share
#: this part): the ring's 1 018 runs over chunks of 333 frames took 3.2-3.5 s per 100 000
#: frames on the H200's 16-core host with 8 threads, the same runs over 2 000 frames a call
#: 1.0 s: ~9 us a call (session 11, h200_twotime1bin_gather_profile_session11.txt,
#: h200_host_gather_probe_session11.txt).
CALL_COST_BYTES = 100_000


@dataclass(frozen=True)
class FrameBoxes:
    """Rectangles of a frame, packed one after another (C order within each).

    Attributes
    ----------
    shape : (int, int)
        The frame (Ny, Nx).
    boxes : tuple of (y0, y1, x0, x1)
        Rows y0 … y1-1, columns x0 … x1-1 of each rectangle.
    """

    shape: Tuple[int, int]
    boxes: Tuple[Tuple[int, int, int, int], ...]

    @cached_property  # each computed once: the fields never change (frozen)
    def pitch(self) -> int:
        """Pixels between the rows of every rectangle in a packed frame (the widest width)."""
        return max(x1 - x0 for _, _, x0, x1 in self.boxes)

    @cached_property
    def row_offsets(self) -> numpy.ndarray:
        """(n_boxes + 1,) int64: first packed row of each rectangle, then the total."""
        heights = [y1 - y0 for y0, y1, _, _ in self.boxes]
        return numpy.concatenate([[0], numpy.cumsum(heights, dtype=numpy.int64)])

    @cached_property
    def offsets(self) -> numpy.ndarray:
        """(n_boxes + 1,) int64: first packed pixel of each rectangle, then the total."""
        return self.row_offsets * self.pitch

    @cached_property
    def packed_pixels(self) -> int:
        """Pixels of a packed frame (with the rows' padding)."""
        return int(self.offsets[-1])

    @cached_property
    def moved_pixels(self) -> int:
        """Pixels of a frame that cross the bus (the rectangles without padding)."""
        return sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in self.boxes)

    @cached_property
    def whole(self) -> bool:
        """Whether the one rectangle is the whole frame (no packing)."""
        return self.boxes == ((0, self.shape[0], 0, self.shape[1]),)

    def positions(self, flat_pixels) -> numpy.ndarray:
        """Packed place (int64) of each flat pixel index (Ny·Nx order); ValueError for a pixel
        in none of the rectangles."""
        return _box_positions(self.shape, self.boxes, self.offsets, self.pitch, flat_pixels)

    def gather(self, frames: numpy.ndarray, out: numpy.ndarray) -> None:
        """Copy the rectangles of ``frames`` (n, Ny, Nx) or (n, Ny·Nx) into ``out`` (n, packed
        pixels; the padding is left as it is)."""
        _gather_boxes(self.boxes, self.offsets, self.pitch,
                      frames.reshape(frames.shape[0], *self.shape), out)


def _box_positions(shape, boxes, offsets, pitch, flat_pixels) -> numpy.ndarray:
    """Packed place of each flat pixel in rectangles ``boxes`` packed from ``offsets``, their
    rows ``pitch`` apart (None: each rectangle's own width)."""
    flat = numpy.asarray(flat_pixels, dtype=numpy.int64)
    y, x = numpy.divmod(flat, shape[1])
    out = numpy.full(flat.shape, -1, numpy.int64)
    for (y0, y1, x0, x1), off in zip(boxes, offsets[:-1].tolist()):
        inside = (y >= y0) & (y < y1) & (x >= x0) & (x < x1) & (out < 0)
        out[inside] = off + (y[inside] - y0) * (pitch or x1 - x0) + (x[inside] - x0)
    if (out < 0).any():
        raise ValueError("pixels outside the frame's rectangles")
    return out


def _gather_boxes(boxes, offsets, pitch, frames, out) -> None:
    """Copy rectangles ``boxes`` of ``frames`` (n, Ny, Nx) into ``out`` (n, packed pixels),
    packed from ``offsets``, their rows ``pitch`` apart (None: each rectangle's own width)."""
    n = frames.shape[0]
    for (y0, y1, x0, x1), off in zip(boxes, offsets[:-1].tolist()):
        h, w = y1 - y0, x1 - x0
        rows = out[:, off: off + h * (pitch or w)].reshape(n, h, pitch or w)
        rows[:, :, :w] = frames[:, y0:y1, x0:x1]


@dataclass(frozen=True)
class BoxCosts:
    """What moving a frame's rectangles costs, per frame, in bytes of a plain copy: each
    rectangle ``box``, each of its rows ``row`` plus its bytes, a row at least ``min_row``
    bytes (:func:`frame_boxes` chooses its bands of rows by this)."""

    box: float
    row: float = 0.0
    min_row: float = 0.0

    def of(self, heights, widths_bytes) -> float:
        """Cost of rectangles of ``heights`` rows, rows of ``widths_bytes`` (arrays)."""
        h = numpy.asarray(heights, dtype=float)
        w = numpy.asarray(widths_bytes, dtype=float)
        return float(h.size * self.box + (h * (self.row + numpy.maximum(self.min_row, w))).sum())

    def of_boxes(self, boxes, itemsize: int = 1) -> float:
        """Cost of rectangles ``boxes`` ((y0, y1, x0, x1), ...) of ``itemsize``-byte pixels."""
        b = numpy.asarray(boxes, dtype=numpy.int64).reshape(-1, 4)
        return self.of(b[:, 1] - b[:, 0], (b[:, 3] - b[:, 2]) * itemsize)


#: The copy engine's three-dimensional rectangular copies from page-locked frames (H200,
#: session 12, one ring x 30 000 frames, h200_rect_copy_probe_session12.txt): a rectangle of a
#: frame ~100-250 ns; a row at least ~2.7 ns (32- to 128-byte rows cost the same), wider rows
#: their bytes at ~50 GB/s. In bytes at 50 GB/s. For that ring: 8 rectangles, 4.6-4.8 us a
#: frame, against 5.6-6.0 us for session 9's 16 equal bands; models of 2 500-20 000 bytes a
#: rectangle and 32 or 64 steps gave 4 to 8 rectangles, none faster in the correlator
#: (0.56 s against 0.59-0.61 s per 100 000 frames, h200_twotime1bin_costmodel_session12.txt).
RECT_COPY_COSTS = BoxCosts(box=5_000, min_row=135)


def gather_costs(chunk_frames: int = 1000) -> BoxCosts:
    """Host gathers (:class:`GatheredBoxes`): :data:`RUN_COST_BYTES` per row piece and
    :data:`CALL_COST_BYTES` per NumPy call, one per rectangle and chunk of ``chunk_frames``."""
    return BoxCosts(box=CALL_COST_BYTES / max(1, int(chunk_frames)), row=RUN_COST_BYTES)


#: Finest bands of :func:`frame_boxes` when it chooses them by cost: the frame's rows cut into
#: this many equal steps, bands made of whole steps.
BAND_STEPS = 32


def frame_boxes(flat_pixels, shape, bands: int = BANDS,
                max_fraction: Optional[float] = None, costs: Optional[BoxCosts] = None,
                itemsize: int = 1) -> FrameBoxes:
    """Rectangles that hold the pixels ``flat_pixels`` (flat indices in a frame of ``shape``):
    the rows are cut into bands; in each, the rows it needs make one rectangle per run of the
    columns needed by any of them.

    Bands: ``bands`` of equal height; or, with ``costs`` (:class:`BoxCosts`, pixels of
    ``itemsize`` bytes), those of least cost among the bands made of :data:`BAND_STEPS` equal
    steps of rows (dynamic programming: a ring's top and bottom want short bands, its sides
    tall ones).

    ``max_fraction``: when the rectangles hold more than this fraction of the frame, the whole
    frame instead (one copy is cheaper than many for little gain).
    """
    ny, nx = (int(n) for n in shape)
    whole = FrameBoxes((ny, nx), ((0, ny, 0, nx),))
    # no numpy.unique: duplicates mark the same pixel (and NumPy 2's hashed unique takes
    # ~20 ms for a ring of 70 000 pixels, 0.35 s for 500 000, on the 2-core EPYC)
    flat = numpy.asarray(flat_pixels, dtype=numpy.int64).ravel()
    if flat.size == 0:
        return FrameBoxes((ny, nx), ((0, 1, 0, 1),))
    needed = numpy.zeros(ny * nx, bool)
    needed[flat] = True
    needed = needed.reshape(ny, nx)
    if costs is None:
        edges = _equal_edges(ny, bands)
    else:
        edges = _cheapest_bands(needed, costs, int(itemsize))
    packed = FrameBoxes((ny, nx), _boxes_in_bands(needed, edges.tolist()))
    if max_fraction is not None and packed.moved_pixels > max_fraction * ny * nx:
        return whole
    return packed


def _equal_edges(ny: int, n: int) -> numpy.ndarray:
    """Edges of ``n`` bands of rows of (nearly) equal height over ``ny`` rows (fewer when
    ``n`` > ``ny``)."""
    return numpy.unique(numpy.linspace(0, ny, max(1, int(n)) + 1).astype(int))


def _column_runs(cols: numpy.ndarray):
    """(first, stop) columns of each run of True in each row of ``cols`` (m, nx): arrays of
    the runs' rows, first and stop columns."""
    m = cols.shape[0]
    pad = numpy.zeros((m, 1), numpy.int8)
    step = numpy.diff(numpy.concatenate([pad, cols.view(numpy.int8), pad], axis=1), axis=1)
    row, first = numpy.nonzero(step == 1)
    _, stop = numpy.nonzero(step == -1)
    return row, first, stop


def _boxes_in_bands(needed: numpy.ndarray, edges) -> tuple:
    """The rectangles of the needed pixels (Ny, Nx bool) in the bands of rows between
    consecutive ``edges``; a rectangle continuing one above with the same columns merges."""
    boxes, last = [], {}  # last: (x0, x1) -> the latest rectangle of those columns
    for a, b in zip(edges[:-1], edges[1:]):
        rows = numpy.flatnonzero(needed[a:b].any(axis=1))
        if not rows.size:
            continue
        y0, y1 = a + int(rows[0]), a + int(rows[-1]) + 1
        _, x0s, x1s = _column_runs(needed[y0:y1].any(axis=0)[None, :])
        for x0, x1 in zip(x0s.tolist(), x1s.tolist()):
            above = last.get((x0, x1))
            if above is not None and boxes[above][1] == y0:  # the same columns continue
                boxes[above] = (boxes[above][0], y1, x0, x1)
            else:
                last[(x0, x1)] = len(boxes)
                boxes.append((y0, y1, x0, x1))
    return tuple(boxes)


def _cheapest_bands(needed: numpy.ndarray, costs: BoxCosts, itemsize: int) -> numpy.ndarray:
    """Edges of the bands of least total cost (``costs``) among those made of whole steps of
    :data:`BAND_STEPS` equal steps of rows (merges across bands, which only help, ignored)."""
    ny = needed.shape[0]
    steps = _equal_edges(ny, BAND_STEPS)
    g = steps.size - 1
    # needed pixels of each column above each step; the rows that hold needed pixels
    cols_above = numpy.zeros((g + 1, needed.shape[1]), numpy.int64)
    numpy.cumsum(numpy.add.reduceat(needed, steps[:-1], axis=0, dtype=numpy.int64), axis=0,
                 out=cols_above[1:])
    row_needed = numpy.flatnonzero(needed.any(axis=1))
    best = numpy.full(g + 1, numpy.inf)
    best[0] = 0.0
    choice = numpy.zeros(g + 1, numpy.int64)
    for j in range(1, g + 1):  # the last band ends at step j; it begins at step i < j
        cols = (cols_above[j] - cols_above[:j]) > 0  # (j, nx): columns needed by band i..j
        run_band, first, stop = _column_runs(cols)
        # the band's needed rows: from its first needed row to its last
        lo = numpy.searchsorted(row_needed, steps[:j])
        hi = numpy.searchsorted(row_needed, steps[j]) - 1
        ok = lo <= hi
        top = row_needed[numpy.minimum(lo, row_needed.size - 1)]
        height = numpy.where(ok, row_needed[max(hi, 0)] - top + 1, 0).astype(float)
        width = (stop - first) * float(itemsize)
        per_row = numpy.bincount(run_band, numpy.maximum(costs.min_row, width) + costs.row,
                                 minlength=j)
        n_runs = numpy.bincount(run_band, minlength=j)
        total = best[:j] + n_runs * costs.box + height * per_row
        i = int(numpy.argmin(total))
        best[j], choice[j] = total[i], i
    cuts = [g]
    while cuts[-1] > 0:
        cuts.append(int(choice[cuts[-1]]))
    return steps[cuts[::-1]]


class GatheredBoxes:
    """The rectangles of a :class:`FrameBoxes`, packed one after another without padding
    (each rectangle's rows its own width apart), for frames the host gathers: one NumPy copy
    per rectangle (:meth:`gather`) for all the frames a thread holds, instead of one per run
    of :class:`PixelRuns`.

    Parameters
    ----------
    boxes : FrameBoxes
        The rectangles (their frame shape and bounds; not its padded packing).
    """

    whole = False  # never the whole frame: frame_layout takes whole frames instead

    def __init__(self, boxes: FrameBoxes):
        self.shape = boxes.shape
        self.boxes = boxes.boxes
        sizes = [(y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in self.boxes]
        self.offsets = numpy.concatenate([[0], numpy.cumsum(sizes, dtype=numpy.int64)])

    @property
    def packed_pixels(self) -> int:
        """Pixels of a packed frame: the rectangles' own."""
        return int(self.offsets[-1])

    moved_pixels = packed_pixels

    def positions(self, flat_pixels) -> numpy.ndarray:
        """Packed place (int64) of each flat pixel index (Ny·Nx order); ValueError for a pixel
        in none of the rectangles."""
        return _box_positions(self.shape, self.boxes, self.offsets, None, flat_pixels)

    def gather(self, frames: numpy.ndarray, out: numpy.ndarray) -> None:
        """Copy the rectangles of ``frames`` (n, Ny, Nx) or (n, Ny·Nx) into ``out`` (n,
        :attr:`packed_pixels`)."""
        _gather_boxes(self.boxes, self.offsets, None,
                      frames.reshape(frames.shape[0], *self.shape), out)

class PixelRuns:
    """The selected pixels of a frame, packed one after another in ascending flat order.

    A frame (n, Ny·Nx) is gathered as (n, :attr:`packed_pixels`) by one copy per run of
    consecutive pixels (:meth:`gather`), for all the frames of a chunk at once: no padding, no
    pixel that is not selected.

    Parameters
    ----------
    pixels : array of int
        Flat indices (Ny·Nx order) of the selected pixels; duplicates are dropped.
    shape : (int, int)
        The frame (Ny, Nx).
    """

    whole = False  # never the whole frame: frame_layout takes whole frames instead

    def __init__(self, pixels, shape):
        self.shape = (int(shape[0]), int(shape[1]))
        flat = numpy.asarray(pixels, dtype=numpy.int64).ravel()
        n = self.shape[0] * self.shape[1]
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            raise ValueError("pixels outside the frame")
        needed = numpy.zeros(n, bool)  # sorted and without duplicates, in O(frame) (a mask:
        needed[flat] = True  # numpy.unique hashes, ~20 ms for a ring of 70 000 pixels)
        self.pixels = numpy.flatnonzero(needed).astype(numpy.int64)
        first = numpy.flatnonzero(numpy.diff(self.pixels) != 1) + 1
        self.run_packed = numpy.concatenate([[0], first]).astype(numpy.int64)  # (n_runs,)
        if not self.pixels.size:
            self.run_packed = self.run_packed[:0]
        self.run_frame = self.pixels[self.run_packed]
        self.run_length = numpy.diff(numpy.append(self.run_packed, self.pixels.size))

    @property
    def n_runs(self) -> int:
        return int(self.run_packed.size)

    @property
    def packed_pixels(self) -> int:
        """Pixels of a packed frame: the selected ones."""
        return int(self.pixels.size)

    moved_pixels = packed_pixels

    def positions(self, flat_pixels) -> numpy.ndarray:
        """Packed place (int64) of each flat pixel index; ValueError for a pixel not selected."""
        flat = numpy.asarray(flat_pixels, dtype=numpy.int64)
        out = numpy.searchsorted(self.pixels, flat)
        bad = out >= self.pixels.size
        bad[~bad] = self.pixels[out[~bad]] != flat[~bad]
        if bad.any():
            raise ValueError("pixels outside the frame's selected pixels")
        return out

    def gather(self, frames: numpy.ndarray, out: numpy.ndarray, first: int = 0,
               stop: Optional[int] = None) -> None:
        """Copy runs ``first`` … ``stop``-1 of ``frames`` (n, Ny·Nx) into ``out`` (n,
        :attr:`packed_pixels`): threads given disjoint runs fill disjoint columns."""
        stop = self.n_runs if stop is None else stop
        for a, f, n in zip(self.run_packed[first:stop].tolist(),
                           self.run_frame[first:stop].tolist(),
                           self.run_length[first:stop].tolist()):
            out[:, a: a + n] = frames[:, f: f + n]


def frame_layout(flat_pixels, shape, pinned: bool, itemsize: int = 1,
                 max_fraction: Optional[float] = None, how: Optional[str] = None,
                 cpu_device: bool = False, boxes: Optional[FrameBoxes] = None,
                 chunk_frames: int = 1000, gather: Optional[str] = None,
                 ) -> Union[FrameBoxes, GatheredBoxes, PixelRuns]:
    """How the frames cross the bus when only ``flat_pixels`` of each are read.

    Page-locked frames (``pinned``) go as the rectangles of :func:`frame_boxes` whose bands
    cost least to the copy engine (:data:`RECT_COPY_COSTS`; at most ``max_fraction`` of the
    frame, else whole) by rectangular copies, read where they lie with no host work, when
    ``how`` is "rect" (default: ``EWOKSXPCS_BOX_UPLOAD``, else :data:`BOX_UPLOAD`, or
    :data:`CPU_BOX_UPLOAD` for a ``cpu_device``). Otherwise (frames in pageable memory, or
    "gather") the host copies them into a staging buffer anyway: then the cheapest of the
    rectangles of :data:`BANDS` equal bands without padding (:class:`GatheredBoxes`), the
    pixels themselves (:class:`PixelRuns`) and whole frames, by :func:`gather_costs`: each
    costing its bytes (``itemsize`` per pixel), :data:`RUN_COST_BYTES` per row piece of a
    frame and :data:`CALL_COST_BYTES` per NumPy call of a chunk of ``chunk_frames`` frames
    (one per rectangle or per run). ``gather``: "boxes" or "runs" instead of the cheapest
    (for measurements). ``boxes``: the rectangles for page-locked frames when the caller has
    them already.
    """
    how = how or os.environ.get("EWOKSXPCS_BOX_UPLOAD") or (
        CPU_BOX_UPLOAD if cpu_device else BOX_UPLOAD)
    if how not in ("rect", "gather"):
        raise ValueError(f"frame upload {how!r} (EWOKSXPCS_BOX_UPLOAD): 'rect' or 'gather'")
    if gather not in (None, "boxes", "runs"):
        raise ValueError(f"gather {gather!r}: 'boxes' or 'runs'")
    if pinned and how == "rect":
        return boxes or frame_boxes(flat_pixels, shape, max_fraction=max_fraction,
                                    costs=RECT_COPY_COSTS, itemsize=itemsize)
    whole = FrameBoxes(tuple(int(n) for n in shape), ((0, int(shape[0]), 0, int(shape[1])),))
    runs = PixelRuns(flat_pixels, shape)
    if not runs.packed_pixels:
        return whole
    costs = gather_costs(chunk_frames)  # a whole frame: one piece; a run: a box of one row
    options = [(costs.of([1], [whole.packed_pixels * itemsize]), whole)]
    # equal bands: bands chosen by these costs (32 smaller rectangles) gathered the one-bin
    # case's ring in 3.2-3.6 s against 2.4-3.3 s per 100 000 frames (H200, session 12)
    boxes = frame_boxes(flat_pixels, shape, max_fraction=max_fraction)
    if not boxes.whole:
        options.append((costs.of_boxes(boxes.boxes, itemsize), GatheredBoxes(boxes)))
    options.append((costs.of(numpy.ones(runs.n_runs), runs.run_length * itemsize), runs))
    if gather is not None:
        kind = GatheredBoxes if gather == "boxes" else PixelRuns
        return next((layout for _, layout in options if isinstance(layout, kind)), whole)
    return min(options, key=lambda option: option[0])[1]
