"""ewoksxpcs.io.readahead: a scan's stored chunks read into the page cache in the background."""

import ctypes
import mmap
import os
import sys
import threading
import time

import numpy
import pytest

from ewoksxpcs.io.readahead import readahead_budget, readahead_runs, start_readahead
from ewoksxpcs.tools.synthetic_eiger import write_eiger_scan
from ewoksxpcs.workflow.pipeline import open_source

linux = pytest.mark.skipif(not sys.platform.startswith("linux"),
                           reason="posix_fadvise and mincore: Linux")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    master = write_eiger_scan(str(tmp_path_factory.mktemp("scan") / "scan"), n_frames=400,
                              shape=(128, 96), counts=0.3, processes=1, frames_per_file=100)
    source = open_source(master)
    layout, reason = source.chunk_layout()
    assert layout is not None, reason
    return master, layout


def _resident(path: str, ranges) -> float:
    """Fraction of the pages of ``ranges`` [(offset, length)] of ``path`` in the page cache."""
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    try:
        anchor = ctypes.c_char.from_buffer(m)
        vec = (ctypes.c_ubyte * (-(-size // page)))()
        rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size), vec)
        del anchor
        assert rc == 0, os.strerror(ctypes.get_errno())
    finally:
        m.close()
    pages = set()
    for offset, length in ranges:
        pages.update(range(offset // page, -(-(offset + length) // page)))
    return sum(vec[p] & 1 for p in pages) / max(1, len(pages))


def _settled(path, ranges, timeout=10.0) -> float:
    """:func:`_resident` once the reads asked for are done (posix_fadvise only starts them)."""
    end = time.monotonic() + timeout
    while True:
        fraction = _resident(path, ranges)
        if fraction > 0.9 or time.monotonic() > end:
            return fraction
        time.sleep(0.02)


def _evict(files) -> None:
    for name in files:
        fd = os.open(name, os.O_RDONLY)
        try:
            os.fsync(fd)  # clean pages only are dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _chunk_ranges(layout, name):
    i = layout.files.index(name)
    sel = numpy.flatnonzero(layout.file_index == i)
    return [(int(layout.offsets[c]), int(layout.sizes[c])) for c in sel]


def test_runs_cover_the_chunks_in_frame_order(scan):
    _, layout = scan
    total = int(layout.sizes.sum())
    runs = readahead_runs(layout, total)
    assert sum(r[2] for r in runs) == total
    assert len(runs) < layout.n_chunks  # neighbouring chunks are merged
    # Every chunk lies in one run, and the runs follow the chunks' order.
    order = [layout.files.index(r[0]) for r in runs]
    assert order == sorted(order)
    for c in range(layout.n_chunks):
        name = layout.files[int(layout.file_index[c])]
        a, n = int(layout.offsets[c]), int(layout.sizes[c])
        assert any(r[0] == name and r[1] <= a and a + n <= r[1] + r[2] for r in runs)


def test_runs_stop_at_the_budget(scan):
    _, layout = scan
    budget = int(layout.sizes[:3].sum()) + 5
    runs = readahead_runs(layout, budget)
    assert sum(r[2] for r in runs) == budget
    assert runs[0][1] == int(layout.offsets[0])
    assert readahead_runs(layout, 0) == []


def test_budget_is_a_fraction_of_the_available_memory():
    budget = readahead_budget()
    if sys.platform.startswith("linux"):
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f
                             if line.startswith("MemAvailable:"))
        assert 0 < budget <= 0.25 * available


@linux
def test_readahead_brings_the_chunks_into_the_page_cache(scan):
    master, layout = scan
    first = layout.files[0]
    _evict(layout.files)
    ranges = _chunk_ranges(layout, first)
    before = _resident(first, ranges)
    thread = start_readahead(open_source(master))
    thread.join(30)
    assert not thread.is_alive()
    assert thread.advised == int(layout.sizes.sum())
    after = _settled(first, ranges)
    assert before < 0.5 and after > 0.9, (before, after)


@linux
def test_readahead_reads_no_more_than_asked(scan):
    master, layout = scan
    _evict(layout.files)
    budget = int(layout.sizes[: layout.n_chunks // 4].sum())
    thread = start_readahead(open_source(master), max_bytes=budget)
    thread.join(30)
    assert thread.advised == budget
    first, last = layout.files[0], layout.files[-1]
    assert _settled(first, _chunk_ranges(layout, first)[: layout.n_chunks // 8]) > 0.9
    # The last file's chunks (beyond the budget) were not asked for: the kernel's own
    # readahead of a few pages aside, they stay out of the cache.
    assert _resident(last, _chunk_ranges(layout, last)) < 0.5


def test_nothing_to_read_ahead_for_arrays():
    from ewoksxpcs.engine.frames import as_frame_source

    assert start_readahead(as_frame_source(numpy.zeros((4, 8, 8), numpy.uint16))) is None


@linux
def test_load_frames_task_starts_the_readahead(scan):
    from ewoksxpcs.tasks.load_frames import LoadFrames

    master, layout = scan
    _evict(layout.files)
    LoadFrames(inputs={"url": master}).execute()
    for thread in threading.enumerate():
        if thread.name == "ewoksxpcs-readahead":
            thread.join(30)
    first = layout.files[0]
    assert _settled(first, _chunk_ranges(layout, first)) > 0.9


@linux
def test_one_readahead_per_source(scan):
    """The run opens the scan ahead and starts its readahead; the LoadFrames step given that
    source starts none of its own."""
    master, _ = scan
    source = open_source(master)
    first = start_readahead(source)
    assert first is not None
    assert start_readahead(source) is first
    assert start_readahead(open_source(master)) is not first
