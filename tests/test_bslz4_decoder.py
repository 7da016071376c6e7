"""``ewoksxpcs.opencl.bslz4_decoder``: bitshuffle-LZ4 chunks decoded on OpenCL, bit-identical to h5py with
hdf5plugin; malformed chunks raise ValueError naming the chunk and write nothing out of bounds."""

import numpy
import pytest
from conftest import require_opencl

from ewoksxpcs.opencl import bslz4_decoder as bslz4_opencl
from ewoksxpcs.opencl.bslz4_decoder import (
    BSLZ4Decoder,
    decode_chunks,
    default_block_elems,
    parse_header,
)

h5py = pytest.importorskip("h5py")
hdf5plugin = pytest.importorskip("hdf5plugin")

GUARD = 0xAB


@pytest.fixture(scope="module", params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def dev(request):
    """PoCL in CI; with ``-m gpu`` on a GPU machine, the GPU."""
    require_opencl(request.param)
    from ewoksxpcs.opencl import device as opencl

    return opencl.get_device(request.param)


@pytest.fixture(scope="module", autouse=True, params=["local", "global"])
def kernels(request):
    """Both decoding kernels: a work-group per block in local memory, a work-item per block."""
    from ewoksxpcs.opencl import bslz4_decoder

    saved = bslz4_decoder.DEFAULT_KERNELS
    bslz4_decoder.DEFAULT_KERNELS = request.param
    yield request.param
    bslz4_decoder.DEFAULT_KERNELS = saved


def write_read(tmp_path, data, chunks, nelems=0):
    """(raw chunks of ``data`` written by hdf5plugin, h5py's read of it)."""
    path = tmp_path / "bslz4.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("d", data=data, chunks=chunks,
                         **hdf5plugin.Bitshuffle(nelems=nelems, cname="lz4"))
    with h5py.File(path, "r") as f:
        d = f["d"]
        ref = d[()]
        raw = []
        for t in range(0, data.shape[0], chunks[0]):
            mask, b = d.id.read_direct_chunk((t,) + (0,) * (data.ndim - 1))
            assert mask == 0
            raw.append(b)
    return raw, ref


def decoded_frames(dev, raw, ref, chunks, **kw):
    out = decode_chunks(raw, ref.dtype, chunks, device=dev, **kw)
    assert out.shape == (len(raw),) + tuple(chunks)
    return out.reshape((-1,) + ref.shape[1:])[: ref.shape[0]]


def poisson(rng, shape, lam, dtype=numpy.uint16):
    return rng.poisson(lam, shape).astype(dtype)


# ------------------------------------------------------------------ bit-identical to h5py
@pytest.mark.parametrize("lam", [0.01, 0.5])
def test_sparse_poisson_uint16(dev, tmp_path, rng, lam):
    data = poisson(rng, (4, 217, 203), lam)  # 44051 px: not a multiple of 8 nor of 4096
    raw, ref = write_read(tmp_path, data, (1, 217, 203))
    numpy.testing.assert_array_equal(decoded_frames(dev, raw, ref, (1, 217, 203)), ref)


def test_all_zero_frames(dev, tmp_path):
    data = numpy.zeros((3, 64, 130), numpy.uint16)
    raw, ref = write_read(tmp_path, data, (1, 64, 130))
    out = decoded_frames(dev, raw, ref, (1, 64, 130))
    assert out.dtype == numpy.uint16 and not out.any()


def test_dense_full_range_literal_only(dev, tmp_path, rng):
    data = rng.integers(0, 2**16, (2, 96, 91), dtype=numpy.uint16)
    raw, ref = write_read(tmp_path, data, (1, 96, 91))
    assert len(raw[0]) > data[0].nbytes  # incompressible: LZ4 stores literals only
    numpy.testing.assert_array_equal(decoded_frames(dev, raw, ref, (1, 96, 91)), ref)


@pytest.mark.parametrize("dtype,lam", [(numpy.uint8, 3.0), (numpy.uint32, 50.0),
                                       (numpy.int64, 5.0), (numpy.float32, 2.0)])
def test_other_dtypes(dev, tmp_path, rng, dtype, lam):
    data = poisson(rng, (3, 75, 101), lam, dtype)
    raw, ref = write_read(tmp_path, data, (1, 75, 101))
    numpy.testing.assert_array_equal(decoded_frames(dev, raw, ref, (1, 75, 101)), ref)


def test_int32_negative_and_full_range(dev, tmp_path, rng):
    data = poisson(rng, (3, 60, 77), 0.2, numpy.int32)
    data[0, :5] = -1
    data[1] = rng.integers(-2**31, 2**31, (60, 77), dtype=numpy.int32)
    raw, ref = write_read(tmp_path, data, (1, 60, 77))
    numpy.testing.assert_array_equal(decoded_frames(dev, raw, ref, (1, 60, 77)), ref)


@pytest.mark.parametrize("shape", [(1, 5), (3, 3), (2, 4), (1, 13), (64, 64), (33, 127)])
def test_small_and_odd_sizes(dev, tmp_path, rng, shape):
    """Fewer than 8 elements (no block at all), a partial last block, trailing raw elements."""
    data = poisson(rng, (2,) + shape, 2.0)
    raw, ref = write_read(tmp_path, data, (1,) + shape)
    numpy.testing.assert_array_equal(decoded_frames(dev, raw, ref, (1,) + shape), ref)


@pytest.mark.parametrize("nelems", [8, 256, 8192, 20000])
def test_explicit_block_sizes(dev, tmp_path, rng, nelems, kernels):
    data = poisson(rng, (2, 101, 211), 0.3)
    raw, ref = write_read(tmp_path, data, (1, 101, 211), nelems=nelems)
    assert parse_header(raw[0]) == (data[0].nbytes, nelems * 2)
    probe = BSLZ4Decoder(dev, numpy.uint16, 101 * 211, block_elems=nelems, kernels="global")
    if kernels == "local" and not probe.local_fits:  # 40 kB blocks on a GPU's 48 kB
        with pytest.raises(ValueError, match="do not fit the local memory"):
            decode_chunks(raw, ref.dtype, (1, 101, 211), device=dev)
        return
    numpy.testing.assert_array_equal(decoded_frames(dev, raw, ref, (1, 101, 211)), ref)
    # Explicit block size: same result; a wrong one is reported with the right one.
    out = decode_chunks(raw, ref.dtype, (1, 101, 211), device=dev, block_elems=nelems)
    numpy.testing.assert_array_equal(out.reshape(ref.shape), ref)
    wrong = 4096 if nelems != 4096 else 2048
    with pytest.raises(ValueError, match=rf"chunk 0: .*block size.*block_elems={nelems}"):
        decode_chunks(raw, ref.dtype, (1, 101, 211), device=dev, block_elems=wrong)


def test_large_blocks_global_fallback(dev, tmp_path, rng, monkeypatch):
    """Blocks too large for local memory are unshuffled from a copy in global memory."""
    monkeypatch.setattr(bslz4_opencl, "LOCAL_BYTES_MAX", 0)
    data = poisson(rng, (3, 50, 123), 0.5)
    raw, ref = write_read(tmp_path, data, (1, 50, 123))
    decoder = BSLZ4Decoder(dev, numpy.uint16, 50 * 123, block_elems=0, kernels="auto")
    assert decoder.global_src and not decoder.local_decode
    with pytest.raises(ValueError, match="do not fit the local memory"):
        BSLZ4Decoder(dev, numpy.uint16, 50 * 123, block_elems=0, kernels="local")
    out = decode_chunks(raw, ref.dtype, (1, 50, 123), device=dev, kernels="auto")
    numpy.testing.assert_array_equal(out.reshape(ref.shape), ref)


def test_two_frames_per_chunk_with_partial_edge_chunk(dev, tmp_path, rng):
    data = poisson(rng, (5, 70, 90), 0.1)
    raw, ref = write_read(tmp_path, data, (2, 70, 90))
    assert len(raw) == 3
    numpy.testing.assert_array_equal(decoded_frames(dev, raw, ref, (2, 70, 90)), ref)


def test_many_chunks_of_different_sizes(dev, tmp_path, rng):
    lam = numpy.geomspace(0.001, 5.0, 40)[:, None, None]
    data = rng.poisson(lam, (40, 48, 50)).astype(numpy.uint16)
    data[7] = 0
    raw, ref = write_read(tmp_path, data, (1, 48, 50))
    assert len({len(b) for b in raw}) > 30
    numpy.testing.assert_array_equal(decoded_frames(dev, raw, ref, (1, 48, 50)), ref)


def test_default_block_elems_matches_hdf5plugin():
    for itemsize, expected in [(1, 8192), (2, 4096), (4, 2048), (8, 1024)]:
        assert default_block_elems(itemsize) == expected


# ------------------------------------------------------------------ device API
def upload(dev, raw):
    import pyopencl

    data = numpy.frombuffer(b"".join(raw), numpy.uint8)
    offsets = numpy.concatenate([[0], numpy.cumsum([len(b) for b in raw])])
    mf = pyopencl.mem_flags
    return pyopencl.Buffer(dev.context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=data), offsets


def guarded_out(dev, nbytes, out_offset, tail=64):
    import pyopencl

    size = out_offset + nbytes + tail
    buf = pyopencl.Buffer(dev.context, pyopencl.mem_flags.READ_WRITE, size)
    pyopencl.enqueue_copy(dev.queue, buf, numpy.full(size, GUARD, numpy.uint8))
    return buf, size


def read_back(dev, buf, size):
    import pyopencl

    host = numpy.empty(size, numpy.uint8)
    pyopencl.enqueue_copy(dev.queue, host, buf, is_blocking=True)
    return host


@pytest.mark.parametrize("out_offset", [64, 6])  # vector-aligned and unaligned paths
def test_out_offset_and_guards(dev, tmp_path, rng, out_offset):
    data = poisson(rng, (3, 41, 57), 0.7)
    raw, ref = write_read(tmp_path, data, (1, 41, 57))
    d_comp, offsets = upload(dev, raw)
    buf, size = guarded_out(dev, data.nbytes, out_offset)
    BSLZ4Decoder(dev, numpy.uint16, 41 * 57).decode(d_comp, offsets, buf, out_offset=out_offset)
    host = read_back(dev, buf, size)
    assert (host[:out_offset] == GUARD).all() and (host[out_offset + data.nbytes:] == GUARD).all()
    numpy.testing.assert_array_equal(
        host[out_offset: out_offset + data.nbytes].view(numpy.uint16).reshape(ref.shape), ref)


def test_batches_reuse_scratch_and_pending(dev, tmp_path, rng):
    """One decoder, batches of several sizes (scratch grows), waited for later."""
    data = poisson(rng, (9, 30, 40), 0.2)
    raw, ref = write_read(tmp_path, data, (1, 30, 40))
    decoder = BSLZ4Decoder(dev, numpy.uint16, 1200)
    assert decoder.block_elems is None  # known from the first chunk decoded
    fb = data[0].nbytes
    buf, size = guarded_out(dev, data.nbytes, 0, tail=8)
    for a, b in [(0, 2), (2, 7), (7, 9)]:
        d_comp, offsets = upload(dev, raw[a:b])
        pending = decoder.decode(d_comp, offsets, buf, out_offset=a * fb, first_chunk=a,
                                 wait=False)
        pending.wait()
    assert decoder.block_elems == 4096
    host = read_back(dev, buf, size)
    numpy.testing.assert_array_equal(host[: data.nbytes].view(numpy.uint16).reshape(ref.shape),
                                     ref)
    decoder.decode(d_comp, [0], buf)  # an empty batch is a no-op


def test_raw_chunks(dev, tmp_path, rng):
    """Chunks stored unfiltered (filter mask bit 0) are copied as they are."""
    data = poisson(rng, (3, 20, 25), 1.0)
    raw, ref = write_read(tmp_path, data, (1, 20, 25))
    raw[1] = data[1].tobytes()
    out = decode_chunks(raw, numpy.uint16, (1, 20, 25), device=dev, raw=[False, True, False])
    numpy.testing.assert_array_equal(out.reshape(ref.shape), ref)
    with pytest.raises(ValueError, match="chunk 1: stored unfiltered with 999 bytes"):
        decode_chunks([raw[0], b"\0" * 999], numpy.uint16, (1, 20, 25), device=dev,
                      raw=[False, True])


def test_bad_arguments(dev, tmp_path, rng):
    data = poisson(rng, (2, 10, 10), 1.0)
    raw, _ = write_read(tmp_path, data, (1, 10, 10))
    d_comp, offsets = upload(dev, raw)
    buf, _ = guarded_out(dev, data.nbytes, 0, tail=0)
    decoder = BSLZ4Decoder(dev, numpy.uint16, 100)
    with pytest.raises(ValueError, match="out_offset"):
        decoder.decode(d_comp, offsets, buf, out_offset=1)
    with pytest.raises(ValueError, match="cannot hold"):
        decoder.decode(d_comp, offsets, buf, out_offset=2)
    with pytest.raises(ValueError, match="non-decreasing"):
        decoder.decode(d_comp, offsets[::-1], buf)
    with pytest.raises(ValueError, match="past"):
        decoder.decode(d_comp, offsets + 1, buf)
    with pytest.raises(ValueError, match="dtypes"):
        BSLZ4Decoder(dev, numpy.complex128, 100)
    with pytest.raises(ValueError, match="multiple of 8"):
        BSLZ4Decoder(dev, numpy.uint16, 100, block_elems=12)


# ------------------------------------------------------------------ malformed chunks
def corrupt_cases(chunk: bytes, chunk_bytes: int):
    """(name, corrupted chunk, message pattern) for a chunk of >= 2 blocks."""
    first = int.from_bytes(chunk[12:16], "big")
    b = bytearray(chunk)
    cases = [("truncated", chunk[:-5], "truncated"),
             ("header only", chunk[:12], "truncated"),
             ("short header", chunk[:7], "truncated"),
             ("trailing", chunk + b"\0\0\0", "bytes left after")]
    c = bytearray(b)
    c[:8] = (chunk_bytes + 2).to_bytes(8, "big")
    cases.append(("header size", bytes(c), f"uncompressed size is {chunk_bytes + 2} bytes"))
    c = bytearray(b)
    c[8:12] = (123457).to_bytes(4, "big")
    cases.append(("header block size", bytes(c), "block size is 123457 bytes"))
    c = bytearray(b)
    c[12:16] = (0xFFFFFFF0).to_bytes(4, "big")
    cases.append(("negative block size", bytes(c), "negative"))
    c = bytearray(b)
    c[12:16] = (2**30).to_bytes(4, "big")
    cases.append(("huge block size", bytes(c), "truncated"))
    c = bytearray(b)
    c[12:16] = (first - 1).to_bytes(4, "big")  # the next size field is read from garbage
    cases.append(("block size off by one", bytes(c), "chunk 1: "))
    c = bytearray(b)
    c[16: 16 + first] = b"\xff" * first
    cases.append(("lz4 garbage", bytes(c), "corrupted LZ4"))
    c = bytearray(b)
    c[16: 16 + first] = bytes(first)  # zero tokens: 0 literals, offset 0
    cases.append(("lz4 zero offset", bytes(c), "corrupted LZ4"))
    return cases


@pytest.mark.parametrize("out_offset", [16, 2])
def test_malformed_chunks_raise_and_stay_in_bounds(dev, tmp_path, rng, out_offset):
    data = poisson(rng, (3, 90, 100), 0.3)  # 9000 px: 2 full blocks, a partial one
    raw, ref = write_read(tmp_path, data, (1, 90, 100))
    fb = data[0].nbytes
    decoder = BSLZ4Decoder(dev, numpy.uint16, 9000, block_elems=0)
    for name, bad, pattern in corrupt_cases(raw[1], fb):
        chunks = [raw[0], bad, raw[2]]
        d_comp, offsets = upload(dev, chunks)
        buf, size = guarded_out(dev, data.nbytes, out_offset)
        with pytest.raises(ValueError, match=pattern) as info:
            decoder.decode(d_comp, offsets, buf, out_offset=out_offset, first_chunk=0)
        assert "chunk 1" in str(info.value), name
        host = read_back(dev, buf, size)
        assert (host[:out_offset] == GUARD).all(), name
        assert (host[out_offset + data.nbytes:] == GUARD).all(), name
        frames = host[out_offset: out_offset + data.nbytes].view(numpy.uint16).reshape(ref.shape)
        numpy.testing.assert_array_equal(frames[[0, 2]], ref[[0, 2]], err_msg=name)
        assert not frames[1].any(), name  # the bad chunk is left zero, not half decoded
    with pytest.raises(ValueError, match="chunk 12: truncated"):  # first_chunk offsets the index
        decoder.decode(*upload(dev, [raw[0][:-1]]), buf, first_chunk=12)


def test_random_corruption_never_writes_out_of_bounds(dev, tmp_path, rng):
    data = poisson(rng, (1, 64, 70), 0.5)
    raw, _ = write_read(tmp_path, data, (1, 64, 70))
    chunk = numpy.frombuffer(raw[0], numpy.uint8)
    bads = []
    for _ in range(40):
        c = chunk.copy()
        pos = rng.integers(16, c.size, 3)
        c[pos] = rng.integers(0, 256, 3)
        bads.append(c.tobytes())
    d_comp, offsets = upload(dev, bads)
    buf, size = guarded_out(dev, len(bads) * data.nbytes, 8)
    try:
        BSLZ4Decoder(dev, numpy.uint16, 64 * 70).decode(d_comp, offsets, buf, out_offset=8)
    except ValueError as e:
        assert "bitshuffle-LZ4 chunk" in str(e)
    host = read_back(dev, buf, size)
    assert (host[:8] == GUARD).all() and (host[8 + len(bads) * data.nbytes:] == GUARD).all()


# ------------------------------------------------------------------ hand-made LZ4 streams
def lz4_block(sequences, tail):
    """Raw LZ4 block of (literals, offset, match length) sequences and final literals."""
    def length(n):
        out = bytearray()
        while n >= 255:
            out.append(255)
            n -= 255
        out.append(n)
        return out

    out = bytearray()
    for lit, offset, ml in list(sequences) + [(tail, None, None)]:
        lit_n = len(lit)
        m = None if ml is None else ml - 4
        token = (min(lit_n, 15) << 4) | (0 if m is None else min(m, 15))
        out.append(token)
        if lit_n >= 15:
            out += length(lit_n - 15)
        out += bytes(lit)
        if m is not None:
            out += offset.to_bytes(2, "little")
            if m >= 15:
                out += length(m - 15)
    return bytes(out)


def lz4_reference(sequences, tail):
    out = bytearray()
    for lit, offset, ml in sequences:
        out += bytes(lit)
        for _ in range(ml):
            out.append(out[-offset])
    return bytes(out + bytes(tail))


def unshuffle_reference(shuffled: bytes, dtype, n: int):
    """bitshuffle's bit unshuffle of one block of n elements (bit p of element i is bit i % 8
    of byte i // 8 of plane p)."""
    es = numpy.dtype(dtype).itemsize
    planes = numpy.frombuffer(shuffled, numpy.uint8).reshape(8 * es, n // 8)
    bits = numpy.unpackbits(planes, axis=1, bitorder="little").astype(numpy.uint64)
    values = (bits << numpy.arange(8 * es, dtype=numpy.uint64)[:, None]).sum(axis=0)
    return values.astype(numpy.dtype(f"u{es}")).view(dtype)


def random_sequences(rng, nbytes):
    """Sparse-looking sequences: zero runs, short non-zero literals, overlapping repeats."""
    seqs, size = [], 0
    while True:
        lit = rng.choice([0, 0, 0, 1, 2, 7], size=int(rng.choice([0, 1, 3, 16, 300])))
        if size + lit.size + 4 > nbytes - 5:
            break
        size += lit.size
        if size == 0:
            lit, size = numpy.array([3]), 1
        offset = int(rng.integers(1, min(size, 70) + 1)) if rng.random() < 0.7 \
            else int(rng.integers(1, size + 1))
        ml = int(min(rng.choice([4, 5, 19, 40, 300, 600]), nbytes - 5 - size))
        if ml < 4:
            break
        seqs.append((lit.astype(numpy.uint8).tobytes(), offset, ml))
        size += ml
    tail = rng.integers(0, 3, nbytes - size).astype(numpy.uint8).tobytes()
    return seqs, tail


@pytest.mark.parametrize("dtype", [numpy.uint8, numpy.uint16, numpy.uint32])
def test_hand_made_lz4_streams(dev, rng, dtype):
    """Overlapping matches of non-zero periods, matches reaching back over zeros, length
    extensions: decoded exactly like LZ4 (reference decoder), then unshuffled."""
    es = numpy.dtype(dtype).itemsize
    block_elems, nblocks = 512, 3
    n = block_elems * nblocks + 3  # and 3 raw trailing elements
    chunks, expected = [], []
    for _ in range(6):
        body, values = bytearray(), []
        for _ in range(nblocks):
            seqs, tail = random_sequences(rng, block_elems * es)
            shuffled = lz4_reference(seqs, tail)
            assert len(shuffled) == block_elems * es
            stream = lz4_block(seqs, tail)
            body += len(stream).to_bytes(4, "big") + stream
            values.append(unshuffle_reference(shuffled, dtype, block_elems))
        trailing = rng.integers(0, 200, 3).astype(dtype)
        values.append(trailing)
        chunks.append((n * es).to_bytes(8, "big") + (block_elems * es).to_bytes(4, "big")
                      + bytes(body) + trailing.tobytes())
        expected.append(numpy.concatenate(values))
    out = decode_chunks(chunks, dtype, (n,), device=dev)
    numpy.testing.assert_array_equal(out, numpy.array(expected))


def test_eiger_gap_rows_and_columns(dev, tmp_path, rng):
    """Frames with an Eiger's gaps at 65535 (whole rows and short column runs: one-byte runs
    and short periods in the bit planes, the decoder's word-store and periodic paths) over
    sparse counts: bit-identical to h5py."""
    frames = poisson(rng, (5, 70, 61), 0.02)
    frames[:, 20:27] = 65535          # gap rows: blocks of 0xFF planes
    frames[:, :, 30:33] = 65535       # gap columns: short runs in every row
    frames[:, 50, ::3] = 65535        # a period of 3 elements
    frames[2, 60, 5] = 65534          # not all bit planes
    raw, ref = write_read(tmp_path, frames, (1, 70, 61))
    numpy.testing.assert_array_equal(decoded_frames(dev, raw, ref, (1, 70, 61)), ref)


@pytest.mark.parametrize("offset", [1, 2, 3, 5, 8, 13])
def test_overlapping_matches_of_short_periods(dev, rng, offset):
    """Matches longer than their offset (periodic copies), non-zero periods, starting at every
    alignment and of lengths around the word size: decoded like LZ4 byte by byte."""
    dtype = numpy.uint8
    block_elems, nblocks = 512, 1
    n = block_elems * nblocks
    chunks, expected = [], []
    for shift in range(8):
        seqs, size = [], 0
        for ml in (4, 5, 6, 7, 9, 31, 64, 100):
            lit = rng.integers(1, 256, shift + offset).astype(numpy.uint8).tobytes()
            if size + len(lit) + ml + 5 > n:
                break
            seqs.append((lit, offset, ml))
            size += len(lit) + ml
        tail = bytes(n - size)
        shuffled = lz4_reference(seqs, tail)
        stream = lz4_block(seqs, tail)
        body = len(stream).to_bytes(4, "big") + stream
        chunks.append(n.to_bytes(8, "big") + n.to_bytes(4, "big") + body)
        expected.append(unshuffle_reference(shuffled, dtype, block_elems))
    out = decode_chunks(chunks, dtype, (n,), device=dev)
    numpy.testing.assert_array_equal(out, numpy.array(expected))
