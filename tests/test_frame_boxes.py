"""ewoksxpcs.opencl.frame_boxes: the part of each frame that crosses the bus (rectangles bounding
a bin's pixels, or the pixels themselves), packed per frame."""

import numpy
import pytest

from ewoksxpcs.opencl.frame_boxes import (RECT_COPY_COSTS, BoxCosts, FrameBoxes, GatheredBoxes,
                                          PixelRuns, frame_boxes, frame_layout, gather_costs)


def _ring(shape, r0, r1):
    y, x = numpy.indices(shape)
    r = numpy.hypot(y - shape[0] / 2, x - shape[1] / 2)
    return numpy.flatnonzero(((r >= r0) & (r < r1)).ravel())


def test_boxes_hold_every_pixel_and_few_others():
    shape = (512, 1024)
    ring = _ring(shape, 229, 286)  # touches every row, 60 % of the columns
    boxes = frame_boxes(ring, shape)
    assert not boxes.whole
    pos = boxes.positions(ring)
    assert numpy.unique(pos).size == ring.size and pos.min() >= 0
    assert pos.max() < boxes.packed_pixels
    # a ring's bands need one or two runs: 16 bands, at most 32 rectangles, < 25 % of the frame
    assert len(boxes.boxes) <= 32
    assert ring.size <= boxes.moved_pixels < 0.25 * shape[0] * shape[1]
    assert boxes.moved_pixels <= boxes.packed_pixels  # rows padded to the widest rectangle


def test_gather_puts_each_pixel_at_its_position(rng=numpy.random.default_rng(3)):
    shape = (40, 56)
    pixels = _ring(shape, 8, 14)
    boxes = frame_boxes(pixels, shape, bands=5)
    frames = rng.integers(0, 200, (7,) + shape).astype(numpy.uint8)
    out = numpy.zeros((7, boxes.packed_pixels), numpy.uint8)
    boxes.gather(frames, out)
    numpy.testing.assert_array_equal(out[:, boxes.positions(pixels)],
                                     frames.reshape(7, -1)[:, pixels])


def test_whole_frame_when_the_boxes_hold_most_of_it():
    shape = (30, 40)
    everything = numpy.arange(30 * 40)
    assert frame_boxes(everything, shape, max_fraction=0.8).whole
    corner = numpy.flatnonzero((numpy.indices(shape)[0] < 5).ravel())
    boxes = frame_boxes(corner, shape, max_fraction=0.8)
    assert boxes.boxes == ((0, 5, 0, 40),) and boxes.packed_pixels == boxes.moved_pixels == 200
    with pytest.raises(ValueError, match="outside"):
        boxes.positions([6 * 40])
    assert FrameBoxes(shape, ((0, 30, 0, 40),)).whole


def test_packed_layout_suits_rectangular_copies():
    """Every rectangle's rows are the widest rectangle's width apart and a packed frame is a
    whole number of such rows (OpenCL's slice pitch rule); a single rectangle keeps its width."""
    shape = (512, 1024)
    boxes = frame_boxes(_ring(shape, 229, 286), shape)
    widths = numpy.array([x1 - x0 for _, _, x0, x1 in boxes.boxes])
    assert boxes.pitch == widths.max()
    assert (boxes.offsets % boxes.pitch == 0).all()
    one = frame_boxes(numpy.arange(3 * 1024, 7 * 1024), shape)
    assert one.boxes == ((3, 7, 0, 1024),) and one.pitch == 1024


def test_pixel_runs_gather_each_pixel_at_its_position(rng=numpy.random.default_rng(4)):
    """Runs of consecutive pixels (across rows too), packed in ascending order; any share of
    the runs fills only its own columns."""
    shape = (40, 56)
    pixels = numpy.concatenate([_ring(shape, 8, 14), [55, 56, 57]])  # 55-57 cross a row end
    runs = PixelRuns(numpy.concatenate([pixels[::-1], pixels[:7]]), shape)  # duplicates too
    assert runs.packed_pixels == numpy.unique(pixels).size
    assert (runs.positions(pixels) == numpy.searchsorted(numpy.unique(pixels), pixels)).all()
    frames = rng.integers(0, 60000, (5,) + shape).astype(numpy.uint16)
    flat = frames.reshape(5, -1)
    out = numpy.zeros((5, runs.packed_pixels), numpy.uint16)
    half = runs.n_runs // 2
    runs.gather(flat, out, 0, half)
    assert not out[:, runs.run_packed[half]:].any()  # the other share's columns untouched
    runs.gather(flat, out, half)
    numpy.testing.assert_array_equal(out[:, runs.positions(pixels)], flat[:, pixels])
    assert numpy.diff(runs.run_frame).min() > 1  # runs are maximal
    with pytest.raises(ValueError, match="outside"):
        runs.positions([0])
    for bad in ([shape[0] * shape[1]], [3, -1]):
        with pytest.raises(ValueError, match="outside"):
            PixelRuns(bad, shape)


def test_gathered_boxes_pack_rectangles_without_padding(rng=numpy.random.default_rng(5)):
    """Each rectangle packed with its own width: the pixels moved are the packed ones, and
    every selected pixel lands at its position; any block of frames fills only its rows."""
    shape = (40, 56)
    pixels = _ring(shape, 8, 14)
    boxes = frame_boxes(pixels, shape, bands=4)
    tight = GatheredBoxes(boxes)
    assert tight.packed_pixels == tight.moved_pixels == boxes.moved_pixels < boxes.packed_pixels
    frames = rng.integers(0, 60000, (6,) + shape).astype(numpy.uint16)
    out = numpy.zeros((6, tight.packed_pixels), numpy.uint16)
    tight.gather(frames[:3], out[:3])
    assert not out[3:].any()
    tight.gather(frames.reshape(6, -1)[3:], out[3:])  # flat frames too
    numpy.testing.assert_array_equal(out[:, tight.positions(pixels)],
                                     frames.reshape(6, -1)[:, pixels])
    assert numpy.unique(tight.positions(pixels)).size == pixels.size
    with pytest.raises(ValueError, match="outside"):
        tight.positions([0])


def _unmerged_cost(needed, edges, costs, itemsize):
    """Cost of the rectangles of each band between ``edges``, brute force (no merging)."""
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        rows = numpy.flatnonzero(needed[a:b].any(axis=1))
        if not rows.size:
            continue
        cols = numpy.concatenate([[False], needed[a:b].any(axis=0), [False]])
        first = numpy.flatnonzero(~cols[:-1] & cols[1:])
        stop = numpy.flatnonzero(cols[:-1] & ~cols[1:])
        total += costs.of(numpy.full(first.size, rows[-1] - rows[0] + 1),
                          (stop - first) * itemsize)
    return total


@pytest.mark.parametrize("costs,itemsize", [(RECT_COPY_COSTS, 1), (RECT_COPY_COSTS, 2),
                                            (gather_costs(50), 2), (BoxCosts(box=40.0), 1)])
def test_cost_chosen_bands_are_the_cheapest(costs, itemsize, monkeypatch):
    """The bands chosen by cost cost no more than any other cut of the same steps (all 2^7
    cuts of 8 steps tried), and their rectangles hold every pixel."""
    import itertools

    from ewoksxpcs.opencl import frame_boxes as module

    monkeypatch.setattr(module, "BAND_STEPS", 8)
    shape = (48, 300)
    pixels = numpy.union1d(_ring(shape, 14, 19), numpy.arange(40 * 300 + 3, 40 * 300 + 290))
    needed = numpy.zeros(shape[0] * shape[1], bool)
    needed[pixels] = True
    needed = needed.reshape(shape)
    steps = numpy.linspace(0, shape[0], 9).astype(int).tolist()
    chosen = module._cheapest_bands(needed, costs, itemsize).tolist()
    assert chosen[0] == 0 and chosen[-1] == shape[0] and set(chosen) <= set(steps)
    best = min(_unmerged_cost(needed, [0, *cut, shape[0]], costs, itemsize)
               for k in range(8) for cut in itertools.combinations(steps[1:-1], k))
    assert _unmerged_cost(needed, chosen, costs, itemsize) == pytest.approx(best)
    boxes = frame_boxes(pixels, shape, costs=costs, itemsize=itemsize)
    assert numpy.unique(boxes.positions(pixels)).size == pixels.size


def test_copy_engine_bands_of_a_ring():
    """A ring of a 512x1024 frame: bands fitted to the copy engine cost less (by its model)
    than the 16 equal bands, which cost less than the one band of whole rows; page-locked
    frames cross as those rectangles."""
    shape = (512, 1024)
    ring = _ring(shape, 229, 286)
    fitted = frame_boxes(ring, shape, costs=RECT_COPY_COSTS)
    cost = [RECT_COPY_COSTS.of_boxes(b.boxes) for b in
            (fitted, frame_boxes(ring, shape), frame_boxes(ring, shape, bands=1))]
    assert cost[0] < cost[1] < cost[2]
    assert frame_layout(ring, shape, pinned=True) == fitted
    assert numpy.unique(fitted.positions(ring)).size == ring.size


def test_frame_layout_by_memory_and_cost(monkeypatch):
    """Pinned frames: rectangles (read in place; not on CPU devices). Pageable ones: the
    cheapest host gather: the rectangles without padding (few calls), the pixels' runs (one
    call each: cheaper only over long chunks) or whole frames. "gather" treats pinned frames
    as pageable."""
    from ewoksxpcs.opencl import frame_boxes

    monkeypatch.delenv("EWOKSXPCS_BOX_UPLOAD", raising=False)
    shape = (512, 1024)
    ring = _ring(shape, 229, 286)
    assert isinstance(frame_layout(ring, shape, pinned=True), FrameBoxes)
    tight = frame_layout(ring, shape, pinned=False)
    assert isinstance(tight, GatheredBoxes) and tight.packed_pixels < 0.25 * shape[0] * shape[1]
    # over very long chunks the calls cost nothing: the runs' fewer bytes win
    runs = frame_layout(ring, shape, pinned=False, chunk_frames=10**9)
    assert isinstance(runs, PixelRuns) and runs.packed_pixels == ring.size
    assert isinstance(frame_layout(ring, shape, pinned=False, gather="runs"), PixelRuns)
    assert isinstance(frame_layout(ring, shape, pinned=False, chunk_frames=10**9,
                                   gather="boxes"), GatheredBoxes)
    with pytest.raises(ValueError, match="'boxes' or 'runs'"):
        frame_layout(ring, shape, pinned=False, gather="pixels")
    assert isinstance(frame_layout(ring, shape, pinned=True, how="gather"), GatheredBoxes)
    # a CPU device's copies are the host's loops: pinned frames are gathered there too
    assert isinstance(frame_layout(ring, shape, pinned=True, cpu_device=True), GatheredBoxes)
    monkeypatch.setenv("EWOKSXPCS_BOX_UPLOAD", "gather")
    assert isinstance(frame_layout(ring, shape, pinned=True), GatheredBoxes)
    monkeypatch.setenv("EWOKSXPCS_BOX_UPLOAD", "tiles")
    with pytest.raises(ValueError, match="'rect' or 'gather'"):
        frame_layout(ring, shape, pinned=True)
    monkeypatch.delenv("EWOKSXPCS_BOX_UPLOAD")
    # every other pixel: runs of one pixel cost more than whole frames
    sparse = numpy.arange(0, shape[0] * shape[1], 2)
    assert frame_layout(sparse, shape, pinned=False).whole
    # the costs of a run decide: made free, the same pixels are gathered
    monkeypatch.setattr(frame_boxes, "RUN_COST_BYTES", 0)
    monkeypatch.setattr(frame_boxes, "CALL_COST_BYTES", 0)
    gathered = frame_layout(sparse, shape, pinned=False)
    assert not gathered.whole and gathered.packed_pixels == sparse.size
    assert frame_layout([], shape, pinned=False).whole
