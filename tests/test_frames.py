"""Frame sources: arrays, HDF5 datasets, iterables of chunks, validation."""

from __future__ import annotations

import numpy
import pytest

from ewoksxpcs.engine.frames import (
    SUPPORTED_DTYPES,
    ArrayFrameSource,
    FrameSource,
    IterableFrameSource,
    as_frame_source,
    check_dtype,
    validate_chunk,
)


def stack(n=20, shape=(3, 4), dtype=numpy.uint16):
    return numpy.arange(n * shape[0] * shape[1], dtype=dtype).reshape((n,) + shape)


def collect(source, chunk_frames=None):
    chunks = list(source.iter_chunks(chunk_frames))
    return chunks, numpy.concatenate(chunks) if chunks else None


def test_supported_dtypes():
    names = {str(d) for d in SUPPORTED_DTYPES}
    assert names == {"int8", "uint8", "int16", "uint16", "int32", "uint32", "float32"}
    for d in SUPPORTED_DTYPES:
        assert check_dtype(d) == d
    assert check_dtype("uint16") == numpy.dtype(numpy.uint16)
    for bad in ("float64", "int64", "uint64", "bool", "complex64", "float16"):
        with pytest.raises(TypeError, match=f"unsupported frame dtype {bad}: supported dtypes are int8, uint8"):
            check_dtype(bad)


@pytest.mark.parametrize("chunk_frames", [None, 1, 3, 20, 64])
def test_array_source_chunks(chunk_frames):
    a = stack()
    source = as_frame_source(a, frame_period=0.01)
    assert isinstance(source, ArrayFrameSource)
    assert source.shape == (20, 3, 4) and source.frame_shape == (3, 4)
    assert source.dtype == numpy.uint16 and source.frame_period == 0.01 and source.reiterable
    chunks, whole = collect(source, chunk_frames)
    assert numpy.array_equal(whole, a)
    if chunk_frames:
        assert [c.shape[0] for c in chunks[:-1]] == [chunk_frames] * (len(chunks) - 1)
    assert all(c.flags.c_contiguous for c in chunks)
    # Re-iterable: a second pass gives the same frames.
    assert numpy.array_equal(collect(source, 7)[1], a)


@pytest.mark.parametrize("start,stop,step", [(0, None, 1), (3, 17, 1), (2, 20, 3), (5, 5, 1), (19, None, 4)])
def test_array_source_range(start, stop, step):
    a = stack()
    source = ArrayFrameSource(a, start=start, stop=stop, step=step)
    expected = a[start:stop:step]
    assert source.n_frames == expected.shape[0]
    _, whole = collect(source, 4)
    if expected.shape[0]:
        assert numpy.array_equal(whole, expected)
    else:
        assert whole is None


@pytest.mark.parametrize("kw,match", [
    (dict(step=0), "frame step must be >= 1"),
    (dict(start=21), r"frame range \[21:None\] is outside the data's 20 frames"),
    (dict(start=5, stop=3), r"frame range \[5:3\] is outside"),
    (dict(stop=25), "outside the data's 20 frames"),
    (dict(start=-1), "outside"),
])
def test_array_source_bad_range(kw, match):
    with pytest.raises(ValueError, match=match):
        ArrayFrameSource(stack(), **kw)


def test_hdf5_dataset_source(tmp_path):
    h5py = pytest.importorskip("h5py")
    a = stack(30, (5, 6), numpy.int32)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["data"] = a
    with h5py.File(tmp_path / "f.h5", "r") as f:
        source = as_frame_source(f["data"])
        assert source.shape == (30, 5, 6) and source.dtype == numpy.int32
        assert numpy.array_equal(collect(source, 8)[1], a)
        assert numpy.array_equal(collect(ArrayFrameSource(f["data"], 4, 28, 5), 2)[1], a[4:28:5])


def test_iterable_source():
    a = stack(25)
    sizes = [4, 1, 9, 11]
    bounds = numpy.cumsum([0] + sizes)
    source = as_frame_source((a[i:j] for i, j in zip(bounds[:-1], bounds[1:])), n_frames=25)
    assert isinstance(source, IterableFrameSource) and not source.reiterable
    assert source.frame_shape == (3, 4) and source.dtype == numpy.uint16
    chunks, whole = collect(source, chunk_frames=100)  # chunks pass through unchanged
    assert [c.shape[0] for c in chunks] == sizes
    assert numpy.array_equal(whole, a)
    assert source.n_frames == 25
    with pytest.raises(RuntimeError, match="already consumed"):
        list(source.iter_chunks())


def test_iterable_n_frames_learnt_and_checked():
    a = stack(12)
    source = as_frame_source(iter([a[:5], a[5:]]))
    assert source.n_frames is None
    collect(source)
    assert source.n_frames == 12
    source = as_frame_source(iter([a[:5], a[5:]]), n_frames=13)
    with pytest.raises(ValueError, match="expected 13 frames, the chunks held 12"):
        collect(source)


def test_list_of_2d_frames():
    a = stack(6)
    source = as_frame_source([f for f in a])
    assert source.shape == (6, 3, 4)
    assert numpy.array_equal(collect(source)[1], a)


def test_frame_source_passthrough():
    source = ArrayFrameSource(stack())
    assert as_frame_source(source) is source
    assert isinstance(source, FrameSource)
    assert "shape=(20, 3, 4)" in repr(source)


def test_empty_iterable():
    with pytest.raises(ValueError, match="the iterable of chunks is empty"):
        as_frame_source(iter([]))


@pytest.mark.parametrize("bad", [None, 3, 2.5, "frames.h5", b"x"])
def test_not_frames(bad):
    with pytest.raises(TypeError, match="frames must be a 3-D array, an iterable of 3-D chunks or a FrameSource"):
        as_frame_source(bad)


def test_validate_chunk():
    a = stack(4)
    out = validate_chunk(a[:, :, ::2], (3, 2), numpy.uint16, 0)
    assert out.flags.c_contiguous and numpy.array_equal(out, a[:, :, ::2])
    with pytest.raises(ValueError, match=r"frames must be 3-D .* chunk at frame 7 with 2 dimension"):
        validate_chunk(a[0], None, None, 7)
    with pytest.raises(ValueError, match=r"inconsistent chunk shapes: chunk at frame 9 has frame shape \(3, 4\), expected \(4, 3\)"):
        validate_chunk(a, (4, 3), None, 9)
    with pytest.raises(TypeError, match="inconsistent chunk dtypes: chunk at frame 2 is uint16, expected int32"):
        validate_chunk(a, (3, 4), numpy.dtype(numpy.int32), 2)
    f = a.astype(numpy.float32)
    f[1, 2, 3] = numpy.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values \(first at frame 11, pixel \(y=2, x=3\)\)"):
        validate_chunk(f, None, None, 10)
    f[1, 2, 3] = -numpy.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        validate_chunk(f, None, None, 0)


def test_default_chunk_frames():
    source = ArrayFrameSource(numpy.zeros((3, 1024, 1024), numpy.uint32))
    # 64 MiB chunks by default: 16 frames of 4 MiB.
    assert source.default_chunk_frames() == 16
    assert ArrayFrameSource(numpy.zeros((3, 1, 1), numpy.uint8)).default_chunk_frames() >= 3


def test_read_ahead_order_errors_and_early_stop():
    """read_ahead: the items in order from a producer thread; its error raised at its place;
    the consumer stopping early stops the producer."""
    import threading

    from ewoksxpcs.engine.frames import read_ahead

    assert list(read_ahead(iter(range(10)), depth=2)) == list(range(10))

    def failing():
        yield 1
        yield 2
        raise KeyError("bad chunk")

    got = []
    with pytest.raises(KeyError, match="bad chunk"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == [1, 2]

    produced = []

    def endless():
        for i in range(10**6):
            produced.append(i)
            yield i

    gen = read_ahead(endless(), depth=3)
    assert next(gen) == 0
    gen.close()
    for t in threading.enumerate():  # its thread ends (waited for: a busy machine is slow)
        if t.name == "ewoksxpcs-read-ahead":
            t.join(timeout=30)
    assert not any(t.name == "ewoksxpcs-read-ahead" and t.is_alive()
                   for t in threading.enumerate())
    assert len(produced) < 10  # stopped, a few items ahead at most
