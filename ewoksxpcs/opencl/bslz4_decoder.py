"""Bitshuffle-LZ4 decompression of HDF5 chunks on an OpenCL device (``kernels/bslz4.cl``).

HDF5 datasets written with the bitshuffle filter (id 32008) and LZ4 compression -- Eiger and Lima
files, ``hdf5plugin.Bitshuffle(cname="lz4")`` -- store chunks in the format of
:mod:`ewoksxpcs.io.bslz4`. :class:`BSLZ4Decoder` decodes a batch of such chunks, read
raw from the file (bypassing HDF5) and uploaded back to back into one device buffer, straight into
a dense device buffer of chunks: a block table (one work-item per chunk), then on GPUs one
work-group per block decoding it in local memory and writing its unshuffled elements once
(``bslz4_decode_local``), elsewhere LZ4 decoding with one work-item per block, in place in the
zero-filled output, skipping zeros, and the bit unshuffle (one work-group per block, through
local memory); see :data:`KERNELS`. The result is bit-identical to h5py with
hdf5plugin. Malformed chunks raise ValueError naming the chunk; nothing is written outside the
batch's bytes of the output, and bad chunks' bytes are zeroed.

Errors cost nothing while there are none: the kernels atomically keep the first bad chunk in one
device word, read back at the end of the batch (with ``wait=False``, by :class:`PendingDecode`).
"""

from __future__ import annotations

import contextlib

import numpy

from ..io.bslz4 import HEADER_BYTES, default_block_elems, parse_header
from .device import OpenCLDevice, get_device, get_kernel, zero_buffer

__all__ = ["BSLZ4Decoder", "PendingDecode", "chunk_errors", "decode_chunks",
           "default_block_elems", "parse_header"]

#: Bytes of a block that the in-place unshuffle keeps in local memory at most; larger blocks are
#: unshuffled from a copy of the batch in global memory (one more buffer of the batch's size).
LOCAL_BYTES_MAX = 48 * 1024
#: Work-items per work-group of the unshuffle (each turns 8 elements at a time).
UNSHUFFLE_WG = 128
#: Work-items per work-group of the per-chunk and per-block kernels.
_WG = 64
#: Kernels of the LZ4 decoding: ``"local"`` decodes and unshuffles each block in local memory
#: with a work-group per block (``bslz4_decode_local``); ``"global"`` decodes with a work-item per
#: block in place in the zero-filled output, then unshuffles (``bslz4_decode`` and
#: ``bslz4_unshuffle``: blocks too big for local memory, and CPU devices, where it is faster);
#: ``"auto"``: local on GPUs and accelerators where the block fits local memory, else global.
KERNELS = ("auto", "local", "global")
#: Kernels of a decoder made without ``kernels=``.
DEFAULT_KERNELS = "auto"
#: Work-items per work-group of ``bslz4_decode_local`` (32 was faster than 64 and 128 on an
#: H200: 0.25-0.27 / 0.32-0.34 / 0.32 s per 10 000 Eiger 4M frames at 0.01 counts).
LOCAL_WG = 32
#: Sequences walked per round of ``bslz4_decode_local`` (its record arrays in local memory).
LOCAL_SEQ_CAP = 64

_NO_ERROR = 0xFFFFFFFF
_MESSAGES = {
    1: "truncated: the stream ends inside the header, a block size or a block",
    2: "the header's uncompressed size is {nbytes} bytes, not the chunk's {chunk_bytes}",
    3: "the header's block size is {block_bytes} bytes, the decoder expects {expected} "
       "({hint})",
    4: "negative (garbage) compressed block size",
    5: "corrupted LZ4 block (bad match offset, overrun or wrong decoded size)",
    6: "{extra} bytes left after the last block and the trailing elements",
}


def _check_dtype(dtype) -> numpy.dtype:
    dtype = numpy.dtype(dtype)
    if dtype.itemsize not in (1, 2, 4, 8) or dtype.kind not in "biufc":
        raise ValueError(f"bitshuffle-LZ4 decoding supports numeric dtypes of 1, 2, 4 or 8 bytes, "
                         f"not {dtype}")
    return dtype


@contextlib.contextmanager
def chunk_errors(layout, fallback: str = ""):
    """A decoding error (ValueError naming a chunk) re-raised naming the chunk's file and
    frame (``layout.where``; ``fallback`` when the error names no chunk)."""
    try:
        yield
    except ValueError as e:
        chunk = getattr(e, "chunk", None)
        where = layout.where(chunk) if chunk is not None else fallback
        raise ValueError(f"{where}: {e}") from None


class PendingDecode:
    """A decode enqueued with ``wait=False``: :meth:`wait` blocks and raises its errors.

    Attributes
    ----------
    event : pyopencl.Event
        Completes when the batch is decoded (and its error word read back).

    Notes
    -----
    After an error, :meth:`wait` reads the bad chunk's header from the compressed buffer for its
    message and zeroes the bad chunks in the output: keep both until then.
    """

    def __init__(self, decoder, event, err, first_chunk, header_of, zero_bad):
        self.event = event
        self._args = (decoder, err, first_chunk, header_of, zero_bad)

    def wait(self) -> None:
        """Block until the batch is decoded; ValueError naming the first bad chunk, if any
        (the bad chunks' bytes of the output are zeroed first)."""
        self.event.wait()
        decoder, err, first_chunk, header_of, zero_bad = self._args
        decoder._raise_for(int(err[0]), first_chunk, header_of, zero_bad)


class BSLZ4Decoder:
    """Decodes batches of bitshuffle-LZ4 HDF5 chunks on an OpenCL device.

    Parameters
    ----------
    device : OpenCLDevice or str or None
        Device (spec as for :func:`ewoksxpcs.opencl.device.get_device`).
    dtype : numpy.dtype
        Element type (1, 2, 4 or 8 bytes; only its size matters to the decoding).
    chunk_elements : int
        Elements per chunk (frames per chunk * pixels per frame).
    block_elems : int, optional
        Elements per bitshuffle block (the filter's ``nelems``; 0 means bitshuffle's automatic
        size, :func:`default_block_elems`). Default: taken from the first chunk decoded (one
        12-byte read from the device, once). Every chunk must use it.
    kernels : {"auto", "local", "global"}, optional
        Decoding kernels (:data:`KERNELS`; default :data:`DEFAULT_KERNELS`).

    Notes
    -----
    The per-batch scratch (block table, error word) is kept and reused between calls: the calls of
    one decoder must be serialised, on one in-order queue (or waited for in turn).
    """

    def __init__(self, device, dtype, chunk_elements: int, block_elems: int | None = None,
                 kernels: str | None = None):
        kernels = DEFAULT_KERNELS if kernels is None else kernels
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
        self.kernels = kernels
        self.dev = device if isinstance(device, OpenCLDevice) else get_device(device)
        self.dtype = _check_dtype(dtype)
        self.chunk_elements = int(chunk_elements)
        if self.chunk_elements <= 0:
            raise ValueError(f"chunk_elements must be > 0, got {chunk_elements}")
        self.itemsize = self.dtype.itemsize
        self.chunk_bytes = self.chunk_elements * self.itemsize
        self.block_elems = None
        if block_elems is not None:
            self._set_block_elems(block_elems)
        self._cap = 0          # chunks the scratch holds
        self._bufs = {}
        self._copy_cap = 0     # bytes of the unshuffle's global copy (large blocks only)

    # ------------------------------------------------------------------ layout
    def _set_block_elems(self, block_elems) -> None:
        b = int(block_elems)
        if b == 0:
            b = default_block_elems(self.itemsize)
        if b < 8 or b % 8:
            raise ValueError(f"bitshuffle block size must be a positive multiple of 8 elements, "
                             f"got {block_elems}")
        n, es = self.chunk_elements, self.itemsize
        self.block_elems = b
        self.block_bytes = b * es
        self.n_full = n // b
        self.last_bytes = (n % b) // 8 * 8 * es
        self.n_blocks = self.n_full + (1 if self.last_bytes else 0)
        self.rem_bytes = (n % 8) * es
        self.global_src = self.block_bytes > min(LOCAL_BYTES_MAX, self.dev.local_mem - 1024)
        self._wg = min(UNSHUFFLE_WG, self.dev.max_work_group_size)
        self._lwg = min(LOCAL_WG, self.dev.max_work_group_size)
        fits = self._local_decode_bytes() <= min(LOCAL_BYTES_MAX, self.dev.local_mem - 1024)
        if self.kernels == "local" and not fits:
            raise ValueError(f"bitshuffle blocks of {self.block_bytes} bytes do not fit the "
                             f"local memory of {self.dev.name} for kernels='local'")
        # PoCL runs the work-item per block 1.6-2.2x faster (Eiger 4M frames, 2-core Xeon)
        self.local_fits = fits
        self.local_decode = fits and (self.kernels == "local" or (
            self.kernels == "auto" and self.dev.kind != "cpu"))

    def _local_decode_bytes(self) -> int:
        """Local memory of a work-group of ``bslz4_decode_local`` (bytes)."""
        out = -(-self.block_bytes // 4) * 4
        bitmap = -(-self.block_bytes // 32) * 4
        return out + bitmap + 7 * 4 * LOCAL_SEQ_CAP + 32

    def programs(self) -> list:
        """[(file, defines)] of the programs that :meth:`decode` into a buffer's start will use
        (:func:`~.device.build_in_background`); known once the block size is (given, or read
        from the first chunk by the first decode), else none."""
        if self.block_elems is None:
            return []
        return [("bslz4.cl", self._defines(self._aligned(0)))]

    def _aligned(self, out_offset: int) -> bool:
        vec = 8 * self.itemsize
        return out_offset % vec == 0 and self.chunk_bytes % vec == 0

    def _kernels(self, aligned: bool):
        defines = self._defines(aligned)
        names = (("bslz4_blocks", "bslz4_decode_local") if self.local_decode else
                 ("bslz4_blocks", "bslz4_decode", "bslz4_unshuffle"))
        return tuple(get_kernel(self.dev, "bslz4.cl", name, defines) for name in names)

    def _defines(self, aligned: bool) -> dict:
        """Compile-time constants of the kernels (``kernels/bslz4.cl``)."""
        defines = {
            "ES": self.itemsize, "CHUNK_BYTES": f"{self.chunk_bytes}UL",
            "BLOCK_BYTES": f"{self.block_bytes}u", "NB_FULL": f"{self.n_full}u",
            "LAST_BYTES": f"{self.last_bytes}u", "NB": f"{self.n_blocks}u",
            "REM_BYTES": f"{self.rem_bytes}u", "WG": self._wg,
        }
        if aligned:
            defines["VEC_ALIGNED"] = None
        if self.local_decode:
            defines.update(LOCAL_DECODE=None, LWG=self._lwg, SEQ_CAP=f"{LOCAL_SEQ_CAP}u")
        elif self.global_src:
            defines["GLOBAL_SRC"] = None
        return defines

    def _scratch(self, n: int):
        """Block table, per-block ends of non-zero bytes, offsets, raw flags, error word."""
        import pyopencl

        if n > self._cap:
            ctx, mf = self.dev.context, pyopencl.mem_flags
            rw = mf.READ_WRITE
            nb = max(1, n * self.n_blocks)
            self._bufs = {
                "table": pyopencl.Buffer(ctx, rw, 4 * nb),
                "lnz": pyopencl.Buffer(ctx, rw, 4 * nb),
                "offsets": pyopencl.Buffer(ctx, mf.READ_ONLY, 8 * (n + 1)),
                "raw": pyopencl.Buffer(ctx, mf.READ_ONLY, max(8, n)),
                "status": pyopencl.Buffer(ctx, rw, 4 * n),
                "err": self._bufs["err"] if "err" in self._bufs else pyopencl.Buffer(ctx, rw, 4),
            }
            self._cap = n
        return self._bufs

    def _planes_copy(self, nbytes: int):
        import pyopencl

        if nbytes > self._copy_cap:
            self._copy = pyopencl.Buffer(self.dev.context, pyopencl.mem_flags.READ_WRITE, nbytes)
            self._copy_cap = nbytes
        return self._copy

    # ------------------------------------------------------------------ decoding
    def decode(self, d_compressed, chunk_offsets, d_out, out_offset: int = 0, queue=None,
               raw=None, first_chunk: int = 0, wait: bool = True):
        """Decode ``n_chunks`` chunks, stored back to back in ``d_compressed``, into ``d_out``.

        Parameters
        ----------
        d_compressed : pyopencl.Buffer
            The compressed chunks (bytes ``chunk_offsets[i]`` … ``chunk_offsets[i + 1] - 1``
            for chunk ``i``).
        chunk_offsets : array_like of int (n_chunks + 1,)
            Host byte offsets of the chunks in ``d_compressed``, non-decreasing.
        d_out : pyopencl.Buffer
            Receives ``n_chunks * chunk_elements`` elements of ``dtype`` from byte
            ``out_offset`` on (a multiple of the element size); no other byte is written.
        out_offset : int
            First byte written in ``d_out``.
        queue : pyopencl.CommandQueue, optional
            In-order queue of the work (default: the device's). Uploads on another queue must
            be waited for on it (e.g. ``pyopencl.enqueue_barrier(queue, wait_for=[upload])``).
        raw : array_like of bool (n_chunks,), optional
            Chunks stored unfiltered (bit 0 of the HDF5 filter mask set): copied as they are;
            each must hold exactly ``chunk_elements`` elements.
        first_chunk : int
            Index of the batch's first chunk, for error messages only.
        wait : bool
            Block until done and raise errors here (default). False: return a
            :class:`PendingDecode` at once; its ``wait()`` raises them.

        Returns
        -------
        None or PendingDecode

        Raises
        ------
        ValueError
            Bad arguments, or a malformed chunk: the message names its index
            (``first_chunk`` + index in the batch). Bad chunks' bytes of ``d_out`` are zero.
        """
        import pyopencl

        queue = self.dev.queue if queue is None else queue
        offsets = numpy.array(chunk_offsets, dtype=numpy.int64).reshape(-1)
        n = offsets.size - 1
        out_offset = int(out_offset)
        first_chunk = int(first_chunk)
        if n < 0:
            raise ValueError("chunk_offsets must hold n_chunks + 1 offsets, got none")
        sizes = numpy.diff(offsets)
        if n and (offsets[0] < 0 or (sizes < 0).any()):
            raise ValueError("chunk_offsets must be non-negative and non-decreasing")
        if n and offsets[-1] > d_compressed.size:
            raise ValueError(f"chunk_offsets end at byte {offsets[-1]}, past the "
                             f"{d_compressed.size} bytes of the compressed buffer")
        if n and sizes.max() >= 2**32 - 1:
            raise ValueError("compressed chunks of 4 GiB or more are not supported")
        if n >= 2**27:
            raise ValueError(f"at most {2**27 - 1} chunks per batch, got {n}")
        if out_offset < 0 or out_offset % self.itemsize:
            raise ValueError(f"out_offset must be a non-negative multiple of the element size "
                             f"{self.itemsize}, got {out_offset}")
        total = n * self.chunk_bytes
        if out_offset + total > d_out.size:
            raise ValueError(f"the output buffer of {d_out.size} bytes cannot hold {n} chunks of "
                             f"{self.chunk_bytes} bytes from byte {out_offset}")
        is_raw = None
        if raw is not None:
            is_raw = numpy.asarray(raw, dtype=bool).reshape(-1)
            if is_raw.size != n:
                raise ValueError(f"raw holds {is_raw.size} flags for {n} chunks")
            bad = numpy.flatnonzero(is_raw & (sizes != self.chunk_bytes))
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"bitshuffle-LZ4 chunk {first_chunk + i}: stored unfiltered "
                                 f"with {sizes[i]} bytes, not {self.chunk_bytes}")
            if not is_raw.any():
                is_raw = None
        if n == 0:
            return None if wait else _DonePending()

        def header_of(i):
            """12 header bytes of chunk i of this batch (error messages only)."""
            head = numpy.zeros(HEADER_BYTES, numpy.uint8)
            k = int(min(HEADER_BYTES, sizes[i]))
            if k:
                pyopencl.enqueue_copy(queue, head[:k], d_compressed, src_offset=int(offsets[i]),
                                      is_blocking=True)
            return bytes(head[:k])

        def zero_bad():
            """After an error: zero every bad chunk's bytes of d_out; their count."""
            status = numpy.empty(n, numpy.uint32)
            pyopencl.enqueue_copy(queue, status, bufs["status"], is_blocking=True)
            bad = numpy.flatnonzero(status)
            for i in bad:
                zero_buffer(self.dev, queue, d_out, out_offset + int(i) * self.chunk_bytes,
                            self.chunk_bytes)
            queue.finish()
            return bad.size

        if self.block_elems is None:
            self._detect_block_elems(queue, offsets, sizes, is_raw, header_of)
        bufs = self._scratch(n)
        kernels = self._kernels(self._aligned(out_offset))
        k_blocks = kernels[0]

        pyopencl.enqueue_copy(queue, bufs["offsets"], offsets.astype(numpy.uint64),
                              is_blocking=False)
        if is_raw is not None:
            pyopencl.enqueue_copy(queue, bufs["raw"], is_raw.astype(numpy.uint8),
                                  is_blocking=False)
        pyopencl.enqueue_copy(queue, bufs["err"], numpy.full(1, _NO_ERROR, numpy.uint32),
                              is_blocking=False)
        if not self.local_decode:
            # bslz4_decode writes non-zero bytes only; bslz4_decode_local writes every byte of
            # every decoded block, the block table the trailing elements, the host raw chunks
            # (and zeros over bad chunks, after an error)
            zero_buffer(self.dev, queue, d_out, out_offset, total)
        ooff = numpy.uint64(out_offset)
        k_blocks.set_args(d_compressed, bufs["offsets"], bufs["raw"],
                          numpy.int32(is_raw is not None), numpy.uint32(n), bufs["table"],
                          bufs["lnz"], d_out, ooff, bufs["status"], bufs["err"])
        pyopencl.enqueue_nd_range_kernel(queue, k_blocks, (-(-n // _WG) * _WG,), (_WG,))
        if is_raw is not None:
            for i in numpy.flatnonzero(is_raw):
                pyopencl.enqueue_copy(queue, d_out, d_compressed, byte_count=self.chunk_bytes,
                                      src_offset=int(offsets[i]),
                                      dst_offset=out_offset + int(i) * self.chunk_bytes)
        n_blocks = n * self.n_blocks
        if n_blocks and self.local_decode:
            k_local = kernels[1]
            k_local.set_args(d_compressed, bufs["offsets"], bufs["table"], d_out, ooff,
                             bufs["status"], bufs["err"])
            pyopencl.enqueue_nd_range_kernel(queue, k_local, (n_blocks * self._lwg,),
                                             (self._lwg,))
        elif n_blocks:
            k_decode, k_unshuffle = kernels[1:]
            k_decode.set_args(d_compressed, bufs["offsets"], numpy.uint32(n), bufs["table"],
                              bufs["lnz"], d_out, ooff, bufs["status"], bufs["err"])
            pyopencl.enqueue_nd_range_kernel(queue, k_decode, (-(-n_blocks // _WG) * _WG,),
                                             (_WG,))
            planes = bufs["table"]  # unused without GLOBAL_SRC
            if self.global_src:
                planes = self._planes_copy(total)
                pyopencl.enqueue_copy(queue, planes, d_out, byte_count=total,
                                      src_offset=out_offset, dst_offset=0)
            k_unshuffle.set_args(d_out, ooff, bufs["lnz"], planes)
            pyopencl.enqueue_nd_range_kernel(queue, k_unshuffle, (n_blocks * self._wg,),
                                             (self._wg,))
        err = numpy.empty(1, numpy.uint32)
        event = pyopencl.enqueue_copy(queue, err, bufs["err"], is_blocking=wait)
        if wait:
            self._raise_for(int(err[0]), first_chunk, header_of, zero_bad)
            return None
        queue.flush()
        return PendingDecode(self, event, err, first_chunk, header_of, zero_bad)

    def _detect_block_elems(self, queue, offsets, sizes, is_raw, header_of) -> None:
        """Block size from the header of the batch's first filtered chunk (default if none or
        unreadable: the kernels then report that chunk)."""
        es = self.itemsize
        for i in range(sizes.size):
            if is_raw is not None and is_raw[i]:
                continue
            head = header_of(i)
            if len(head) == HEADER_BYTES:
                block_bytes = parse_header(head)[1]
                if block_bytes and block_bytes % (8 * es) == 0:
                    self._set_block_elems(block_bytes // es)
                    return
            break
        self._set_block_elems(0)

    def _raise_for(self, word: int, first_chunk: int, header_of, zero_bad) -> None:
        if word == _NO_ERROR:
            return
        n_bad = zero_bad()
        i, code = word >> 4, word & 15
        what = _MESSAGES.get(code, f"error code {code}")
        info = {"chunk_bytes": self.chunk_bytes, "expected": self.block_bytes,
                "nbytes": "?", "block_bytes": "?", "hint": "", "extra": "some"}
        if code in (2, 3):
            head = header_of(i)
            if len(head) == HEADER_BYTES:
                info["nbytes"], info["block_bytes"] = parse_header(head)
            bb = info["block_bytes"]
            info["hint"] = (f"every chunk must use one block size; pass "
                            f"block_elems={bb // self.itemsize}" if isinstance(bb, int)
                            and bb and bb % (8 * self.itemsize) == 0 else "garbage")
        more = f" (and {n_bad - 1} more bad chunks)" if n_bad > 1 else ""
        error = ValueError(f"bitshuffle-LZ4 chunk {first_chunk + i}: {what.format(**info)}{more}")
        error.chunk = first_chunk + i  # for callers that know where the chunk comes from
        raise error


class _DonePending(PendingDecode):
    """An empty batch: nothing to wait for."""

    def __init__(self):
        self.event = None

    def wait(self) -> None:
        return None


def decode_chunks(chunks, dtype, chunk_shape, device=None, raw=None,
                  block_elems: int | None = None, kernels: str | None = None) -> numpy.ndarray:
    """Decode bitshuffle-LZ4 chunks held on the host, on an OpenCL device.

    Parameters
    ----------
    chunks : sequence of bytes-like
        Compressed chunks, as ``h5py``'s ``dataset.id.read_direct_chunk`` returns them.
    dtype : numpy.dtype
        Element type of the dataset.
    chunk_shape : tuple of int
        Shape of one chunk (e.g. ``(1, Ny, Nx)``).
    device : OpenCLDevice or str, optional
        Device spec (default: the best device, see :func:`ewoksxpcs.opencl.device.get_device`).
    raw : array_like of bool (n_chunks,), optional
        Chunks stored unfiltered (HDF5 filter mask bit 0 set).
    block_elems : int, optional
        Elements per bitshuffle block (default: from the first filtered chunk's header).
    kernels : {"auto", "local", "global"}, optional
        Decoding kernels (:data:`KERNELS`; default :data:`DEFAULT_KERNELS`).

    Returns
    -------
    numpy.ndarray (n_chunks, *chunk_shape) of dtype
    """
    import pyopencl

    dev = device if isinstance(device, OpenCLDevice) else get_device(device)
    dtype = _check_dtype(dtype)
    chunk_shape = tuple(int(s) for s in chunk_shape)
    n_el = int(numpy.prod(chunk_shape))
    views = [numpy.frombuffer(memoryview(c).cast("B"), numpy.uint8) for c in chunks]
    n = len(views)
    out = numpy.empty((n,) + chunk_shape, dtype)
    if n == 0:
        return out
    if block_elems is None:
        flags = numpy.zeros(n, bool) if raw is None else numpy.asarray(raw, bool).reshape(-1)
        first = next((v for v, r in zip(views, flags) if not r), None)
        if first is not None and first.size >= HEADER_BYTES:
            block_bytes = parse_header(first)[1]
            if block_bytes and block_bytes % (8 * dtype.itemsize) == 0:
                block_elems = block_bytes // dtype.itemsize
    offsets = numpy.zeros(n + 1, numpy.int64)
    offsets[1:] = numpy.cumsum([v.size for v in views])
    data = numpy.concatenate(views) if offsets[-1] else numpy.zeros(8, numpy.uint8)
    mf = pyopencl.mem_flags
    d_comp = pyopencl.Buffer(dev.context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=data)
    d_out = pyopencl.Buffer(dev.context, mf.READ_WRITE, max(8, out.nbytes))
    decoder = BSLZ4Decoder(dev, dtype, n_el, block_elems=block_elems, kernels=kernels)
    decoder.decode(d_comp, offsets, d_out, raw=raw)
    if out.nbytes:
        pyopencl.enqueue_copy(dev.queue, out, d_out, is_blocking=True)
    return out
