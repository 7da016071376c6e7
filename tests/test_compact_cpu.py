"""Compaction on the CPU threads (numba): the binned pixels' events, as the NumPy compaction."""

from __future__ import annotations

import numpy
import pytest

from ewoksxpcs import Binning
from ewoksxpcs.engine.compact_cpu import compact_cpu
from ewoksxpcs.engine.events import compact


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint32", "float32"])
def test_equals_numpy_compaction_on_binned_pixels(dtype, rng):
    frames = (rng.poisson(0.2, (70, 9, 11)) * rng.integers(1, 5, (70, 9, 11))).astype(dtype)
    bad = numpy.zeros((9, 11), bool)
    bad[2, 3] = True
    qmask = rng.integers(0, 3, (9, 11))
    binning = Binning(qmask, bad_pixels=bad)
    ours = compact_cpu(iter([frames[:13], frames[13:40], frames[40:]]), binning)  # 3 chunks
    ref = compact(frames, bad_pixels=bad)
    keep = numpy.isin(ref.pixel_index, binning.pixel_index)
    assert ours.pixel_index.tolist() == sorted(binning.pixel_index.tolist())
    assert numpy.array_equal(ours.pixel_index, ref.pixel_index[keep])
    rows = numpy.flatnonzero(keep)
    sel = numpy.concatenate([numpy.arange(ref.offsets[r], ref.offsets[r + 1]) for r in rows])
    assert numpy.array_equal(ours.values, ref.values[sel]) and ours.values.dtype == numpy.dtype(dtype)
    assert numpy.array_equal(ours.times, ref.times[sel])
    assert numpy.array_equal(numpy.diff(ours.offsets), numpy.diff(ref.offsets)[keep])
    assert ours.n_frames == 70 and ours.frame_shape == (9, 11)
    one = compact_cpu(frames, binning, chunk_frames=1000)  # one chunk
    assert one == ours


def test_negative_value_named(rng):
    frames = rng.poisson(0.5, (20, 4, 5)).astype(numpy.int16)
    frames[11, 3, 1] = -2
    with pytest.raises(ValueError, match=r"frame 11 has a negative value at pixel \(y=3, x=1\)"):
        compact_cpu(frames, Binning(numpy.ones((4, 5), int)), chunk_frames=4)


def _file_backed(a) -> bool:
    while a is not None:
        if isinstance(a, numpy.memmap):
            return True
        a = a.base
    return False


@pytest.mark.parametrize("max_memory, spilled", [(0, True), (2**30, False)])
def test_events_beyond_the_cap_live_in_a_file(rng, max_memory, spilled):
    """Host memory bounded (issue 10): the events of every chunk and the merged arrays are
    file-backed past ``max_memory``, with the same events as in RAM."""
    frames = rng.poisson(0.3, (90, 6, 7)).astype(numpy.uint16)
    binning = Binning(1 + rng.integers(0, 2, (6, 7)))
    ours = compact_cpu(frames, binning, chunk_frames=20, max_memory=max_memory)
    assert ours == compact_cpu(frames, binning, chunk_frames=90)
    assert _file_backed(ours.values) is spilled and _file_backed(ours.times) is spilled
