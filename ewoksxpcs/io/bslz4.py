"""The bitshuffle-LZ4 chunk format of HDF5 filter 32008 (Eiger, Lima, ``hdf5plugin.Bitshuffle``).

One stored chunk::

    uint64 BE   uncompressed bytes        uint32 BE   block size in bytes
    per block:  int32 BE compressed size, raw LZ4 block of the bit-shuffled elements
    the last (n % 8) elements, uncompressed

Blocks hold ``block_elems`` elements (bitshuffle's default: 8192 bytes' worth), the last one the
rest rounded down to a multiple of 8. Read by :mod:`ewoksxpcs.io.hdf5chunks` (CPU threads) and
:mod:`ewoksxpcs.opencl.bslz4_decoder` (an OpenCL device).
"""

from __future__ import annotations

__all__ = ["FILTER_ID", "HEADER_BYTES", "default_block_elems", "parse_header"]

#: HDF5 filter id of bitshuffle.
FILTER_ID = 32008
#: Bytes of the chunk header.
HEADER_BYTES = 12


def default_block_elems(itemsize: int) -> int:
    """Bitshuffle's automatic block size (``nelems=0``): elements of 8192 bytes, a multiple of 8,
    at least 128 (``bshuf_default_block_size``)."""
    itemsize = int(itemsize)
    return max(128, (8192 // itemsize) // 8 * 8)


def parse_header(chunk) -> tuple[int, int]:
    """(uncompressed bytes, block size in bytes) of a bitshuffle-LZ4 chunk's 12-byte header.

    Parameters
    ----------
    chunk : bytes-like
        At least the first 12 bytes of the chunk.
    """
    head = bytes(memoryview(chunk)[:HEADER_BYTES])
    if len(head) < HEADER_BYTES:
        raise ValueError(f"bitshuffle-LZ4 chunk of {len(head)} bytes: shorter than its header")
    return int.from_bytes(head[:8], "big"), int.from_bytes(head[8:12], "big")
