"""Raw chunk layout, parallel reads and CPU bitshuffle+LZ4 decoding, against h5py."""

import os
import pickle

import h5py
import hdf5plugin
import numpy
import pytest

from ewoksxpcs.io.bslz4 import default_block_elems
from ewoksxpcs.io.hdf5chunks import (
    ChunkLayout,
    _bshuf,
    chunk_layout,
    decode_chunks_cpu,
    read_chunks,
)
from ewoksxpcs.io.load import HDF5FrameSource

BSLZ4 = hdf5plugin.Bitshuffle(cname="lz4")


def frames(n, shape=(70, 130), dtype="uint16", seed=0, lam=3.0):
    rng = numpy.random.default_rng(seed)
    return rng.poisson(lam, (n,) + shape).astype(dtype)


def write(filename, data, path="data", chunks=None, **filters):
    with h5py.File(filename, "a") as f:
        f.create_dataset(path, data=data, chunks=chunks or (1,) + data.shape[1:], **filters)
    return str(filename)


def read_raw(filename, path, start=0, stop=None, step=1, threads=2):
    """All selected frames through chunk_layout + read_chunks + decode_chunks_cpu."""
    layout, reason = chunk_layout(filename, path, start, stop, step)
    assert layout is not None, reason
    buf, offsets = read_chunks(layout, 0, layout.n_chunks, threads=threads)
    out = decode_chunks_cpu(layout, buf, offsets, threads=threads)
    ff = layout.first_frame
    k = layout.frames_per_chunk
    sel = numpy.empty((layout.n_frames,) + layout.frame_shape, layout.dtype)
    for i in range(layout.n_chunks):
        for j in range(k):
            t = ff[i] + j
            if 0 <= t < layout.n_frames:
                sel[t] = out[i * k + j]
    return layout, sel


def h5read(filename, path, sel=slice(None)):
    with h5py.File(filename, "r") as f:
        return f[path][sel]


@pytest.mark.parametrize(
    "shape, dtype",
    [((70, 130), "uint16"), ((37, 53), "uint8"), ((33, 41), "uint32"), ((16, 16), "int32")],
)
def test_plain_bslz4_bit_identical(tmp_path, shape, dtype):
    # 70x130 uint16: 2 full blocks + a shorter block + a raw tail (9100 % 8 == 4)
    data = frames(7, shape, dtype, lam=4.0)
    if dtype == "uint32":
        data[3] = numpy.random.default_rng(1).integers(0, 2**32, shape, dtype=numpy.uint32)
    name = write(tmp_path / "plain.h5", data, **BSLZ4)
    layout, got = read_raw(name, "data")
    assert layout.codec == "bslz4" and layout.frames_per_chunk == 1
    assert layout.files == (os.path.abspath(name),)
    assert layout.block_size == default_block_elems(numpy.dtype(dtype).itemsize)
    assert numpy.array_equal(layout.first_frame, numpy.arange(7))
    assert got.dtype == data.dtype and numpy.array_equal(got, h5read(name, "data"))


def test_default_block_size_matches_library():
    fn = _bshuf().bshuf_default_block_size
    fn.restype = fn.argtypes = None
    import ctypes

    fn.restype, fn.argtypes = ctypes.c_size_t, [ctypes.c_size_t]
    for itemsize in (1, 2, 4, 8):
        assert default_block_elems(itemsize) == fn(itemsize)


def test_unfiltered_chunked_and_step(tmp_path):
    data = frames(12, (20, 24), "uint16")
    name = write(tmp_path / "raw.h5", data)
    layout, got = read_raw(name, "data", 1, 11, 3)
    assert layout.codec == "none" and layout.block_size == 0 and layout.n_frames == 4
    assert numpy.array_equal(got, data[1:11:3])
    assert numpy.array_equal(got, h5read(name, "data", numpy.s_[1:11:3]))


def test_external_link(tmp_path):
    data = frames(5)
    target = write(tmp_path / "eiger_data.h5", data, "entry/data/data", **BSLZ4)
    master = tmp_path / "master.h5"
    with h5py.File(master, "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink("eiger_data.h5", "/entry/data/data")
    layout, got = read_raw(master, "/entry/data/data_000001")
    assert layout.files == (os.path.abspath(target),)
    assert numpy.array_equal(got, data)


def make_vds(tmp_path, k=1, dtype="uint16"):
    """scan.h5::/1.1/measurement/det: frames 0-5 <- sub/a.h5 (all), 6-8 <- sub/b.h5 [2:5],
    9-10 <- scan.h5::/local (source '.')."""
    sub = tmp_path / "sub"
    sub.mkdir()
    a = frames(6, (24, 30), dtype, seed=1)
    b = frames(7, (24, 30), dtype, seed=2)
    c = frames(2, (24, 30), dtype, seed=3)
    chunks = (k, 24, 30)
    write(sub / "a.h5", a, "entry/data", chunks=chunks, **BSLZ4)
    write(sub / "b.h5", b, "entry/data", chunks=chunks, **BSLZ4)
    scan = tmp_path / "scan.h5"
    write(scan, c, "local", chunks=chunks, **BSLZ4)
    lay = h5py.VirtualLayout((11, 24, 30), dtype)
    lay[0:6] = h5py.VirtualSource("sub/a.h5", "entry/data", shape=a.shape)
    lay[6:9] = h5py.VirtualSource("sub/b.h5", "entry/data", shape=b.shape)[2:5]
    lay[9:11] = h5py.VirtualSource(".", "local", shape=c.shape)
    with h5py.File(scan, "a") as f:
        f.create_virtual_dataset("1.1/measurement/det", lay, fillvalue=0)
    return str(scan), numpy.concatenate([a, b[2:5], c])


def test_virtual_dataset_relative_sources(tmp_path, monkeypatch):
    scan, expected = make_vds(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # sources resolve against the VDS file's directory
    layout, got = read_raw(scan, "/1.1/measurement/det")
    assert {os.path.basename(f) for f in layout.files} == {"a.h5", "b.h5", "scan.h5"}
    assert numpy.array_equal(got, expected)
    assert numpy.array_equal(got, h5read(scan, "/1.1/measurement/det"))
    # a selection crossing the source boundaries, with a step
    layout, got = read_raw(scan, "/1.1/measurement/det", 4, 11, 2)
    assert numpy.array_equal(got, expected[4:11:2])
    assert layout.n_chunks == 4


def test_two_frames_per_chunk_mid_chunk_selection(tmp_path):
    data = frames(11, (20, 24), "uint16")  # last chunk is partial
    name = write(tmp_path / "k2.h5", data, chunks=(2, 20, 24), **BSLZ4)
    layout, got = read_raw(name, "data", 3, 11)
    assert layout.frames_per_chunk == 2
    assert layout.first_frame.tolist() == [-1, 1, 3, 5, 7]
    assert numpy.array_equal(got, data[3:11])
    assert layout.chunk_range(0, 1) == (0, 1) and layout.chunk_range(1, 5) == (1, 3)
    reason = chunk_layout(name, "data", 0, None, 2)[1]
    assert "step 2 with 2 frames per chunk" in reason


def test_vds_two_frames_per_chunk(tmp_path):
    # b.h5 is mapped from its frame 2 (aligned to its 2-frame chunks) for 3 frames (not)
    scan, expected = make_vds(tmp_path, k=2)
    layout, got = read_raw(scan, "/1.1/measurement/det", 1, 8)
    assert numpy.array_equal(got, expected[1:8])
    assert layout.first_frame.tolist() == [-1, 1, 3, 5]
    reason = chunk_layout(scan, "/1.1/measurement/det", 1, 10)[1]
    assert "mapping of frames 6 to 8 not aligned to 2-frame chunks" in reason


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        (dict(chunks=None), "contiguous"),
        (dict(compression="gzip"), "filter gzip not supported"),
        (dict(chunks=(1, 10, 24)), "chunks split frames"),
        (dict(**hdf5plugin.Bitshuffle(cname="none")), "without LZ4"),
        (dict(**hdf5plugin.Zstd()), "not supported"),
    ],
)
def test_unsupported_layouts(tmp_path, kwargs, reason):
    data = frames(4, (20, 24))
    name = str(tmp_path / "x.h5")
    with h5py.File(name, "w") as f:
        f.create_dataset("data", data=data, **kwargs)
    layout, why = chunk_layout(name, "data")
    assert layout is None and reason in why
    # the frame source still reads it, through h5py
    src = HDF5FrameSource(name, "/data")
    assert numpy.array_equal(numpy.concatenate(list(src.iter_chunks())), data)


def test_missing_chunks_and_sources(tmp_path):
    name = str(tmp_path / "holes.h5")
    with h5py.File(name, "w") as f:
        d = f.create_dataset("data", shape=(6, 8, 8), dtype="uint16", chunks=(1, 8, 8), **BSLZ4)
        d[0:3] = 1
        d[4:6] = 2
    assert "chunk of frame 3 missing" in chunk_layout(name, "data")[1]
    assert chunk_layout(name, "data", 0, 3)[0] is not None  # hole not selected
    assert chunk_layout(name, "data", 4, 6)[0].n_chunks == 2
    scan, _ = make_vds(tmp_path)
    os.rename(tmp_path / "sub" / "b.h5", tmp_path / "sub" / "gone.h5")
    with pytest.raises(FileNotFoundError, match=r"source file 'sub/b.h5' .* does not exist"):
        chunk_layout(scan, "/1.1/measurement/det")
    with pytest.raises(FileNotFoundError, match=r"source file 'sub/b.h5'"):
        HDF5FrameSource(scan, "/1.1/measurement/det")
    assert chunk_layout(scan, "/1.1/measurement/det", 0, 6)[0] is not None  # b.h5 not selected
    assert HDF5FrameSource(scan, "/1.1/measurement/det", 0, 6).n_frames == 6
    unmapped = str(tmp_path / "unmapped.h5")
    with h5py.File(unmapped, "w") as f:
        lay = h5py.VirtualLayout((8, 24, 30), "uint16")
        lay[0:6] = h5py.VirtualSource("sub/a.h5", "entry/data", shape=(6, 24, 30))
        f.create_virtual_dataset("v", lay)
    with pytest.raises(ValueError, match="frames 6 to 7 are not mapped"):  # not zeros
        chunk_layout(unmapped, "v")
    assert chunk_layout(unmapped, "v", 0, 6)[0] is not None


def test_read_chunks_buffers(tmp_path):
    data = frames(6)
    name = write(tmp_path / "p.h5", data, **BSLZ4)
    layout, _ = chunk_layout(name, "data")
    buf, offsets = read_chunks(layout, 2, 3, threads=1)
    assert offsets.tolist() == [0] + numpy.cumsum(layout.sizes[2:5]).tolist()
    big = numpy.zeros(int(offsets[-1]) + 100, numpy.uint8)
    buf2, offsets2 = read_chunks(layout, 2, 3, out=big, threads=3)
    assert numpy.shares_memory(buf2, big) and numpy.array_equal(offsets, offsets2)
    assert numpy.array_equal(buf2[: offsets[-1]], buf[: offsets[-1]])
    small = numpy.zeros(10, numpy.uint8)
    buf3, _ = read_chunks(layout, 2, 3, out=small)
    assert not numpy.shares_memory(buf3, small)
    with h5py.File(name, "r") as f:
        for i in range(3):
            raw = f["data"].id.read_direct_chunk((2 + i, 0, 0))[1]
            assert bytes(buf[offsets[i] : offsets[i + 1]]) == raw
    out = decode_chunks_cpu(layout, buf, offsets, first=2)
    assert numpy.array_equal(out, data[2:5])
    with pytest.raises(ValueError, match="out of range"):
        read_chunks(layout, 4, 3)
    with pytest.raises(ValueError, match="shape"):
        decode_chunks_cpu(layout, buf, offsets, out=numpy.empty((2, 70, 130), "uint16"))


def corrupt(buf, offsets, i, how):
    a, b = int(offsets[i]), int(offsets[i + 1])
    chunk = buf[a:b]
    if how == "block size":  # first block's compressed size -> huge
        chunk[12:16] = numpy.frombuffer((2**31 - 7).to_bytes(4, "big"), numpy.uint8)
    elif how == "payload":  # garbage LZ4 data, block sizes intact
        chunk[17 : b - a - 8] = numpy.random.default_rng(0).integers(0, 256, b - a - 25)
    elif how == "lz4":  # garbage inside the first block only: the block chain is intact
        c = int.from_bytes(bytes(chunk[12:16]), "big")
        chunk[16 : 16 + c] = 0xFF
    elif how == "header":
        chunk[0:8] = 0
    elif how == "short":
        offsets[i + 1 :] -= 20
        buf[a + (b - a - 20) :] = buf[b:].copy().tolist() + [0] * 20


@pytest.mark.parametrize("how", ["block size", "payload", "lz4", "header", "short"])
def test_corrupted_chunk_names_the_frame(tmp_path, how):
    data = frames(5)
    name = write(tmp_path / "p.h5", data, **BSLZ4)
    layout, _ = chunk_layout(name, "data", 1)
    buf, offsets = read_chunks(layout, 0, layout.n_chunks)
    corrupt(buf, offsets, 2, how)
    with pytest.raises(ValueError, match=r"corrupted chunk: .*p\.h5.*frame 2 of the selection"):
        decode_chunks_cpu(layout, buf, offsets, threads=2)
    # the other chunks still decode
    out = decode_chunks_cpu(layout, buf, offsets[:3].copy())
    assert numpy.array_equal(out, data[1:3])


def test_corrupted_and_truncated_file_through_frame_source(tmp_path):
    data = frames(6)
    name = write(tmp_path / "p.h5", data, **BSLZ4)
    layout, _ = chunk_layout(name, "data")
    with open(name, "r+b") as fh:  # frame 4: garbage over its block sizes
        fh.seek(int(layout.offsets[4]) + 12)
        fh.write(b"\xff" * 64)
    src = HDF5FrameSource(name, "/data", decode_threads=2)
    with pytest.raises(ValueError, match="frame 4"):
        list(src.iter_chunks(2))
    with pytest.raises(ValueError, match="frame 4"):  # the frames sampled, too
        src.read_frames([1, 4])
    # truncated file: the last chunk ends beyond the end of the file
    end = int(layout.offsets.max() + layout.sizes[numpy.argmax(layout.offsets)])
    last = int(layout.first_frame[numpy.argmax(layout.offsets)])
    os.truncate(name, end - 10)
    with pytest.raises(ValueError, match=f"frame {last} .*truncated"):
        read_chunks(layout, 0, layout.n_chunks)


@pytest.mark.parametrize("k, start, stop, step", [(1, 0, None, 1), (1, 1, 10, 2), (3, 2, 11, 1)])
def test_frame_source_threads_identical(tmp_path, k, start, stop, step):
    data = frames(12, (20, 24), "uint16", lam=2.0)
    name = write(tmp_path / "s.h5", data, chunks=(k, 20, 24), **BSLZ4)
    fast = HDF5FrameSource(name, "/data", start, stop, step)
    slow = HDF5FrameSource(name, "/data", start, stop, step, decode_threads=1)
    layout, reason = fast.chunk_layout()
    assert isinstance(layout, ChunkLayout), reason
    assert fast.chunk_layout()[0] is layout  # cached
    os.utime(name, ns=(0, 12345))  # a changed file: the layout is rebuilt
    assert fast.chunk_layout()[0] is not layout
    for chunk_frames in (None, 1, 4, 5):
        a = list(fast.iter_chunks(chunk_frames))
        b = list(slow.iter_chunks(chunk_frames))
        assert [c.shape for c in a] == [c.shape for c in b]
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and numpy.array_equal(x, y)
    assert numpy.array_equal(numpy.concatenate(a), data[start:stop:step])
    clone = pickle.loads(pickle.dumps(fast))
    assert clone._chunk_layout is None and clone.decode_threads == 0
    assert numpy.array_equal(numpy.concatenate(list(clone.iter_chunks())), data[start:stop:step])


@pytest.mark.parametrize("k, start, stop, step", [(1, 0, None, 1), (1, 1, 10, 2), (3, 2, 11, 1)])
def test_read_frames_through_stored_chunks_identical(tmp_path, k, start, stop, step):
    """read_frames (the auto mask's sample) reads the stored chunks at once and decodes them
    by threads: the frames h5py gives, in the order asked, repeated and unsorted indices
    included; a bad index is refused."""
    data = frames(12, (20, 24), "uint16", lam=2.0)
    name = write(tmp_path / "s.h5", data, chunks=(k, 20, 24), **BSLZ4)
    fast = HDF5FrameSource(name, "/data", start, stop, step)
    slow = HDF5FrameSource(name, "/data", start, stop, step, decode_threads=1)
    assert fast.chunk_layout()[0] is not None
    n = fast.n_frames
    for idx in ([0, n - 1], list(range(n)), [n - 1, 0, 2, 2], [1]):
        got = fast.read_frames(idx)
        assert got.dtype == data.dtype
        numpy.testing.assert_array_equal(got, data[start:stop:step][idx])
        numpy.testing.assert_array_equal(got, slow.read_frames(idx))
    assert fast.read_frames([]).shape == (0, 20, 24)
    with pytest.raises(IndexError, match="out of range"):
        fast.read_frames([n])


def test_read_frames_of_a_vds(tmp_path):
    scan, expected = make_vds(tmp_path)
    src = HDF5FrameSource(scan, "/1.1/measurement/det", 1)
    numpy.testing.assert_array_equal(src.read_frames([0, 5, 6, 9]), expected[1:][[0, 5, 6, 9]])


def test_frame_source_on_vds(tmp_path):
    scan, expected = make_vds(tmp_path)
    src = HDF5FrameSource(scan, "/1.1/measurement/det", 2)
    assert src.chunk_layout()[0] is not None
    got = numpy.concatenate(list(src.iter_chunks(3)))
    assert numpy.array_equal(got, expected[2:])
    with pytest.raises(ValueError, match="decode_threads"):
        HDF5FrameSource(scan, "/1.1/measurement/det", decode_threads=-1)


def test_stored_frame_chunks_of_a_growing_dataset(tmp_path):
    """The leading run of stored chunks: up to a chunk not written yet, or one stored without
    its filter (the caller reads that one decoded); bytes decode to h5py's frames."""
    from ewoksxpcs.io.hdf5chunks import frame_chunks_codec, stored_frame_chunks

    data = frames(6, shape=(20, 30))
    filename = str(tmp_path / "grow.h5")
    with h5py.File(filename, "w") as f:
        dset = f.create_dataset("data", shape=(8, 20, 30), maxshape=(None, 20, 30),
                                dtype=data.dtype, chunks=(1, 20, 30), **BSLZ4)
        dset[:6] = data  # frames 6 and 7: not written yet
        dset.id.write_direct_chunk((2, 0, 0), data[2].tobytes(), filter_mask=1)
        f.create_dataset("gz", data=data, chunks=(1, 20, 30), compression="gzip")
        f.create_dataset("plain", data=data, chunks=(1, 20, 30))
    with h5py.File(filename, "r") as f:
        dset = f["data"]
        assert frame_chunks_codec(dset) == ("bslz4", "")
        layout, unfiltered = stored_frame_chunks(dset, 0, 8)
        assert layout.n_chunks == 2 and unfiltered  # frames 0, 1; frame 2 unfiltered
        layout, unfiltered = stored_frame_chunks(dset, 3, 8)
        assert layout.n_chunks == 3 and not unfiltered  # frames 3-5; 6 not stored
        assert layout.block_size == default_block_elems(2)
        buf, offsets = read_chunks(layout, 0, layout.n_chunks)
        numpy.testing.assert_array_equal(decode_chunks_cpu(layout, buf, offsets), data[3:6])
        assert stored_frame_chunks(dset, 6, 8) == (None, False)
        codec, why = frame_chunks_codec(f["gz"])
        assert codec is None and "gzip" in why
        with pytest.raises(ValueError, match="gzip"):
            stored_frame_chunks(f["gz"], 0, 2)
        layout, _ = stored_frame_chunks(f["plain"], 1, 4)
        assert layout.codec == "none" and layout.n_chunks == 3


def test_frame_chunk_index_gives_the_lookups_answers(tmp_path):
    """One pass over the chunk index finds the chunks that lookups find: the same layouts
    from it; chunks it did not see (written after the pass) are looked up."""
    from ewoksxpcs.io.hdf5chunks import frame_chunk_index, stored_frame_chunks

    data = frames(9, shape=(20, 30))
    filename = str(tmp_path / "grow.h5")
    with h5py.File(filename, "w") as f:
        dset = f.create_dataset("data", shape=(9, 20, 30), maxshape=(None, 20, 30),
                                dtype=data.dtype, chunks=(1, 20, 30), **BSLZ4)
        dset[:5] = data[:5]
        dset.id.write_direct_chunk((2, 0, 0), data[2].tobytes(), filter_mask=1)
    with h5py.File(filename, "r") as g:  # indexed before frames 5-8 come
        index = frame_chunk_index(g["data"])
    with h5py.File(filename, "a") as f:
        f["data"][5:] = data[5:]
    if index is None:
        pytest.skip("this HDF5 has no chunk iteration (H5Dchunk_iter, HDF5 >= 1.12.3)")
    assert index.shape == (9, 3) and (index[5:, 0] == -1).all() and index[2, 2] == 1
    with h5py.File(filename, "r") as f:
        dset = f["data"]
        for start, stop in ((0, 9), (3, 9), (5, 9), (6, 8)):
            with_index = stored_frame_chunks(dset, start, stop, index)
            looked_up = stored_frame_chunks(dset, start, stop)
            assert with_index[1] == looked_up[1]
            for a, b in ((with_index[0], looked_up[0]),):
                assert (a is None) == (b is None)
                if a is not None:
                    numpy.testing.assert_array_equal(a.offsets, b.offsets)
                    numpy.testing.assert_array_equal(a.sizes, b.sizes)
        layout, _ = stored_frame_chunks(dset, 3, 9, index)
        buf, offsets = read_chunks(layout, 0, layout.n_chunks)
        numpy.testing.assert_array_equal(decode_chunks_cpu(layout, buf, offsets), data[3:])
