"""Raw access to the stored chunks of an HDF5 frame stack, and parallel CPU decompression.

h5py reads chunks one after the other under its global lock. A frame stack stored a whole number
of frames per chunk (Eiger, Lima, Bliss: one frame per chunk, bitshuffle+LZ4) can instead be read
around HDF5:

1. :func:`chunk_layout` finds, once, in which file and at which byte offset every chunk of a
   frame selection lies (plain dataset, external link, virtual dataset over other files);
2. :func:`read_chunks` reads a run of chunks back to back into one byte buffer with ``os.preadv``
   from a thread pool (the GIL is released during the reads);
3. :func:`decode_chunks_cpu` decompresses them in threads with the bitshuffle library that
   hdf5plugin ships (``libh5bshuf``, called through ctypes, which releases the GIL), or the GPU
   decoder does (:mod:`ewoksxpcs.opencl.bslz4_decoder`).

The decoded frames are bit-identical to what h5py + hdf5plugin return.

Stored bitshuffle+LZ4 chunk (HDF5 filter 32008, ``cd_values[4] == 2``)::

    uint64 BE   uncompressed bytes of the chunk
    uint32 BE   block size in bytes (the filter uses this one, not cd_values[3])
    blocks      n // B blocks of B elements, then one of (n % B) rounded down to 8 elements:
                uint32 BE compressed size c, then c bytes of LZ4 (bitshuffled block)
    tail        (n % 8) elements copied raw

The bitshuffle decoder trusts the block sizes (a corrupted one sends it reading anywhere), so
every chunk's block chain is checked against its stored size before it is decoded: a corrupted
chunk raises ValueError instead of crashing.
"""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import os
import struct
import sys
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy

from .bslz4 import FILTER_ID, HEADER_BYTES, default_block_elems, parse_header

__all__ = [
    "ChunkLayout",
    "chunk_layout",
    "frame_chunks_codec",
    "stored_frame_chunks",
    "frame_chunk_index",
    "read_chunks",
    "decode_chunks_cpu",
    "default_threads",
    "BSHUF_FILTER_ID",
]

#: HDF5 filter id of bitshuffle.
BSHUF_FILTER_ID = FILTER_ID
#: bitshuffle ``cd_values[4]`` meaning LZ4 compression.
_BSHUF_LZ4 = 2
#: Bytes of the header of a bitshuffle+LZ4 chunk.
_MAX_THREADS = 32

_BE32 = struct.Struct(">I")


@dataclass(frozen=True, eq=False)
class ChunkLayout:
    """Where the stored chunks of a frame selection lie on disk.

    ``n`` is the number of chunks. Chunk ``i`` holds ``frames_per_chunk`` consecutive frames;
    its first frame is frame ``first_frame[i]`` of the selection. With several frames per
    chunk, the first chunk may start before the selection (``first_frame[0] < 0``) and the last
    one end after it: those frames are decoded and must be ignored.

    Attributes
    ----------
    codec : str
        ``"bslz4"`` (HDF5 filter 32008 with LZ4) or ``"none"`` (chunked, unfiltered).
    dtype : numpy.dtype
        Pixel type (native byte order).
    frame_shape : (int, int)
        (Ny, Nx).
    frames_per_chunk : int
        k: the chunk shape is (k, Ny, Nx).
    files : tuple of str
        Absolute file names.
    file_index : numpy.ndarray
        (n,) int32, index into ``files``.
    offsets : numpy.ndarray
        (n,) int64, byte offset of the chunk in its file.
    sizes : numpy.ndarray
        (n,) int64, stored bytes.
    first_frame : numpy.ndarray
        (n,) int64, index in the selection of the chunk's first frame.
    n_frames : int
        Number of frames selected.
    block_size : int
        Bitshuffle block size in elements (from the first chunk's header); 0 for ``"none"``.
    """

    codec: str
    dtype: numpy.dtype
    frame_shape: Tuple[int, int]
    frames_per_chunk: int
    files: Tuple[str, ...]
    file_index: numpy.ndarray
    offsets: numpy.ndarray
    sizes: numpy.ndarray
    first_frame: numpy.ndarray
    n_frames: int
    block_size: int

    @property
    def n_chunks(self) -> int:
        return int(self.offsets.size)

    @property
    def chunk_nbytes(self) -> int:
        """Bytes of one decoded chunk (k * Ny * Nx * itemsize)."""
        ny, nx = self.frame_shape
        return self.frames_per_chunk * ny * nx * self.dtype.itemsize

    def chunk_range(self, frame_start: int, frame_stop: int) -> Tuple[int, int]:
        """Chunks ``[c0, c1)`` that hold the selected frames ``[frame_start, frame_stop)``."""
        k = self.frames_per_chunk
        if k == 1:
            return int(frame_start), int(frame_stop)
        c0 = int(numpy.searchsorted(self.first_frame, frame_start, side="right")) - 1
        c1 = int(numpy.searchsorted(self.first_frame, frame_stop, side="left"))
        return max(c0, 0), c1

    def take(self, chunks) -> "ChunkLayout":
        """The layout of chunks ``chunks`` (indices, in the order given) of this one: their
        frames keep their selection indices (``first_frame``), for the error messages."""
        chunks = numpy.asarray(chunks, dtype=numpy.int64).reshape(-1)
        return dataclasses.replace(
            self, file_index=self.file_index[chunks], offsets=self.offsets[chunks],
            sizes=self.sizes[chunks], first_frame=self.first_frame[chunks])

    def where(self, chunk: int) -> str:
        """Human description of chunk ``chunk`` for error messages."""
        f = int(self.first_frame[chunk])
        k = self.frames_per_chunk
        frames = f"frame {f}" if k == 1 else f"frames {f} to {f + k - 1}"
        return (
            f"{self.files[int(self.file_index[chunk])]}: chunk at byte {int(self.offsets[chunk])} "
            f"({int(self.sizes[chunk])} bytes), {frames} of the selection"
        )


def default_threads(threads: int = 0) -> int:
    """Number of threads for ``threads`` (0: ``os.cpu_count()``, capped at 32)."""
    threads = int(threads)
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if threads == 0:
        threads = min(os.cpu_count() or 1, _MAX_THREADS)
    return threads


# ---------------------------------------------------------------------------------- discovery
class _Unsupported(Exception):
    """The selection cannot be read raw; the message says why."""


@dataclass
class _Stored:
    """Allocated chunks of one non-virtual dataset overlapping a frame range."""

    filename: str
    codec: str
    k: int
    dtype: numpy.dtype
    frame_shape: Tuple[int, int]
    start: numpy.ndarray  # (m,) int64 first frame (dataset coordinates)
    offsets: numpy.ndarray
    sizes: numpy.ndarray


def _codec(dset, where: str) -> str:
    plist = dset.id.get_create_plist()
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    if not filters:
        return "none"
    codes = [int(f[0]) for f in filters]
    if codes != [BSHUF_FILTER_ID]:
        names = []
        for code, _flags, _cd, name in filters:
            name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
            short = {1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit",
                     6: "scaleoffset", 32001: "blosc", 32004: "lz4", 32015: "zstd"}.get(code)
            names.append(short or (name.split(";")[0].strip() or str(code)))
        raise _Unsupported(f"{where}: filter {'+'.join(names)} not supported")
    cd = tuple(int(v) for v in filters[0][2])
    if len(cd) < 5 or cd[4] != _BSHUF_LZ4:
        comp = cd[4] if len(cd) >= 5 else 0
        raise _Unsupported(
            f"{where}: bitshuffle without LZ4 (compression {comp}) not supported"
        )
    if len(cd) > 2 and cd[2] != dset.dtype.itemsize:
        raise _Unsupported(
            f"{where}: bitshuffle element size {cd[2]} != dtype size {dset.dtype.itemsize}"
        )
    return "bslz4"


def _check_dtype(dtype: numpy.dtype, where: str) -> None:
    if dtype.kind not in "uif" or dtype.fields is not None:
        raise _Unsupported(f"{where}: dtype {dtype} not supported")
    native = "<" if sys.byteorder == "little" else ">"
    if dtype.byteorder not in ("=", "|", native):
        raise _Unsupported(f"{where}: non-native byte order ({dtype})")


def frame_chunks_codec(dset) -> Tuple[Optional[str], str]:
    """Whether a (non-virtual) 3-D dataset's chunks can be read raw: ``(codec, "")`` with codec
    ``"bslz4"`` or ``"none"`` when it is chunked by whole frames, else ``(None, reason)``."""
    import h5py

    try:
        return _frame_chunks(dset, h5py)[0], ""
    except _Unsupported as e:
        return None, str(e)


def _frame_chunks(dset, h5py) -> Tuple[str, int]:
    """(codec, frames per chunk) of a dataset chunked by whole frames; _Unsupported if not."""
    filename = os.path.abspath(dset.file.filename)
    where = f"{filename}::{dset.name}"
    layout = dset.id.get_create_plist().get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise _Unsupported(f"{where}: nested virtual dataset")
    if layout != h5py.h5d.CHUNKED:
        kind = {h5py.h5d.CONTIGUOUS: "contiguous", h5py.h5d.COMPACT: "compact"}.get(
            layout, str(layout)
        )
        raise _Unsupported(f"{where}: {kind} storage (not chunked)")
    if dset.ndim != 3:
        raise _Unsupported(f"{where}: {dset.ndim}-D dataset")
    _check_dtype(dset.dtype, where)
    chunks = tuple(int(c) for c in dset.chunks)
    frame_shape = tuple(int(n) for n in dset.shape[1:])
    if chunks[1:] != frame_shape:
        raise _Unsupported(
            f"{where}: chunks split frames (chunk shape {chunks}, frame shape {frame_shape})"
        )
    return _codec(dset, where), chunks[0]


#: A lookup of one chunk by its coordinates in a dataset being written (SWMR) costs about as
#: much as visiting this many chunks of the whole index with :func:`frame_chunk_index` (about
#: 450 µs against 1.5 µs on the 2-core development machine, the writer running).
LOOKUP_OVER_VISIT = 300


def frame_chunk_index(dset) -> Optional[numpy.ndarray]:
    """Where every stored chunk of a dataset chunked one frame per chunk lies, by one pass over
    its chunk index (``H5Dchunk_iter``); None when this HDF5 has no chunk iteration.

    Returns
    -------
    numpy.ndarray or None
        (n_frames, 3) int64: byte offset, stored size and filter mask of frame ``t``'s chunk;
        offset -1 where the chunk was not stored at the time of the pass.
    """
    if not hasattr(dset.id, "chunk_iter"):
        return None
    n = int(dset.shape[0])
    index = numpy.full((n, 3), -1, numpy.int64)

    def visit(info):
        t = info.chunk_offset[0]
        if t < n:
            index[t] = (info.byte_offset, info.size, info.filter_mask)

    dset.id.chunk_iter(visit)
    return index


def stored_frame_chunks(dset, start: int, stop: int, index: Optional[numpy.ndarray] = None
                        ) -> Tuple[Optional[ChunkLayout], bool]:
    """Layout of the stored chunks of frames ``[start, stop)`` of a dataset chunked one frame
    per chunk (a dataset still being written: looked up chunk by chunk, or found in ``index``).

    Parameters
    ----------
    dset : h5py.Dataset
        Non-virtual, 3-D, chunked (1, Ny, Nx), bitshuffle-LZ4 or unfiltered
        (:func:`frame_chunks_codec`).
    start, stop : int
        Frames (dataset coordinates), ``stop`` at most the dataset's length.
    index : numpy.ndarray, optional
        :func:`frame_chunk_index` of the dataset taken earlier: its stored chunks are not
        looked up again (chunks it did not see are).

    Returns
    -------
    (ChunkLayout or None, unfiltered)
        The leading run of stored chunks (``first_frame`` counts from ``start``; None when it is
        empty); it ends before the first chunk not allocated yet or, ``unfiltered`` True, before
        a chunk stored without its filter (filter mask set), which the caller reads decoded.

    Raises
    ------
    ValueError
        The dataset is not chunked one frame per chunk with a supported codec.
    """
    import h5py

    try:
        codec, k = _frame_chunks(dset, h5py)
    except _Unsupported as e:
        raise ValueError(str(e)) from None
    if k != 1:
        raise ValueError(f"{dset.file.filename}::{dset.name}: {k} frames per chunk, not one")
    found, unfiltered = [], False
    known = 0 if index is None else index.shape[0]
    for t in range(int(start), int(stop)):
        if t < known and index[t, 0] >= 0:
            offset, size, mask = (int(v) for v in index[t])
        else:
            info = dset.id.get_chunk_info_by_coord((t, 0, 0))
            if info.byte_offset is None:
                break  # not written yet
            offset, size, mask = info.byte_offset, info.size, info.filter_mask
        if mask and codec != "none":
            unfiltered = True
            break
        found.append((offset, size))
    if not found:
        return None, unfiltered
    arr = numpy.array(found, dtype=numpy.int64)
    filename = os.path.abspath(dset.file.filename)
    dtype = numpy.dtype(dset.dtype)
    block_size = _block_size(filename, int(arr[0, 0]), dtype) if codec == "bslz4" else 0
    n = arr.shape[0]
    shape = tuple(int(m) for m in dset.shape[1:])
    layout = ChunkLayout(codec=codec, dtype=dtype, frame_shape=shape, frames_per_chunk=1,
                         files=(filename,), file_index=numpy.zeros(n, numpy.int32),
                         offsets=arr[:, 0].copy(),
                         sizes=arr[:, 1].copy(), first_frame=numpy.arange(n, dtype=numpy.int64),
                         n_frames=n, block_size=int(block_size))
    return layout, unfiltered


def _plain_chunks(dset, lo: int, hi: int, h5py) -> _Stored:
    """Allocated chunks of a chunked (non-virtual) dataset that overlap frames [lo, hi)."""
    filename = os.path.abspath(dset.file.filename)
    where = f"{filename}::{dset.name}"
    codec, k = _frame_chunks(dset, h5py)
    frame_shape = tuple(int(n) for n in dset.shape[1:])
    found = []
    bad_mask = []

    def visit(info):
        t = info.chunk_offset[0]
        if t + k > lo and t < hi:
            if info.filter_mask:
                bad_mask.append(t)
            found.append((t, info.byte_offset, info.size))

    if hasattr(dset.id, "chunk_iter"):
        dset.id.chunk_iter(visit)
    else:  # older HDF5: one lookup per chunk
        for i in range(dset.id.get_num_chunks()):
            visit(dset.id.get_chunk_info(i))
    if bad_mask and codec != "none":
        raise _Unsupported(
            f"{where}: chunk of frame {min(bad_mask)} stored without its filter (filter mask)"
        )
    arr = numpy.array(found, dtype=numpy.int64).reshape(-1, 3)
    arr = arr[numpy.argsort(arr[:, 0], kind="stable")]
    return _Stored(filename, codec, k, dset.dtype, frame_shape, arr[:, 0], arr[:, 1], arr[:, 2])


def _box(space, rank_shape, where: str, h5py) -> Optional[Tuple[int, int]]:
    """Frame range [a, b) of a selection that covers whole frames; None for 'all'."""
    stype = space.get_select_type()
    if stype == h5py.h5s.SEL_ALL:
        return None
    if stype != h5py.h5s.SEL_HYPERSLABS or not space.is_regular_hyperslab():
        raise _Unsupported(f"{where}: irregular virtual dataset mapping")
    start, stride, count, block = space.get_regular_hyperslab()
    lo, ext = [], []
    for s, st, c, b in zip(start, stride, count, block):
        if c >= h5py.h5s.UNLIMITED or b >= h5py.h5s.UNLIMITED:
            raise _Unsupported(f"{where}: unlimited virtual dataset mapping")
        if c > 1 and b > 1 and st != b:
            raise _Unsupported(f"{where}: strided virtual dataset mapping")
        if c > 1 and b == 1 and st != 1:
            raise _Unsupported(f"{where}: strided virtual dataset mapping")
        lo.append(int(s))
        ext.append(int(c) * int(b))
    if len(lo) != 3 or lo[1:] != [0, 0] or tuple(ext[1:]) != tuple(rank_shape):
        raise _Unsupported(f"{where}: virtual dataset mapping does not cover whole frames")
    return lo[0], lo[0] + ext[0]


def _resolve_source(name: str, vds_file: str) -> Optional[str]:
    """Source file of a VDS mapping, searched like HDF5 does (env prefix, VDS directory, cwd)."""
    if name == ".":
        return vds_file
    if os.path.isabs(name):
        return name if os.path.exists(name) else None
    here = os.path.dirname(vds_file)
    candidates = []
    prefix = os.environ.get("HDF5_VDS_PREFIX")
    if prefix:
        candidates.append(os.path.join(prefix.replace("${ORIGIN}", here), name))
    candidates += [os.path.join(here, name), os.path.abspath(name)]
    for c in candidates:
        if os.path.exists(c):
            return os.path.abspath(c)
    return None


def check_virtual_sources(dset, lo: int = 0, hi: Optional[int] = None) -> None:
    """Refuse a virtual dataset whose source file or dataset is missing.

    HDF5 reads the frames of a missing source as the fill value (zeros) without an error: a
    Bliss scan with a lost data file would be correlated as if its detector saw nothing.

    Parameters
    ----------
    dset : h5py.Dataset
        Any dataset (nothing is checked unless it is virtual).
    lo, hi : int
        Frames [lo, hi) to be read (default all): mappings of other frames are not checked.

    Raises
    ------
    FileNotFoundError
        A source file that does not exist (searched as HDF5 does), named with the dataset.
    ValueError
        A source file without the mapped dataset, or frames in [lo, hi) mapped to no source.
    """
    import h5py

    plist = dset.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.VIRTUAL:
        return
    vds_file = os.path.abspath(dset.file.filename)
    where = f"{vds_file}::{dset.name}"
    checked = set()
    hi = int(dset.shape[0]) if hi is None else min(int(hi), int(dset.shape[0]))
    frame_shape = tuple(int(n) for n in dset.shape[1:])
    boxes = []  # frame ranges of the mappings read; None: irregular, coverage not checked
    for j in range(plist.get_virtual_count()):
        try:
            vbox = _box(plist.get_virtual_vspace(j), frame_shape, where, h5py)
            if vbox is None:
                vbox = (0, int(dset.shape[0]))
        except _Unsupported:
            vbox = None  # irregular mapping: check its source in any case
        if vbox is not None and (vbox[1] <= lo or vbox[0] >= hi):
            continue
        boxes.append(vbox)
        fname, dname = plist.get_virtual_filename(j), plist.get_virtual_dsetname(j)
        sfile = _resolve_source(fname, vds_file)
        if sfile is None:
            raise FileNotFoundError(
                f"{where}: source file {fname!r} of the virtual dataset does not exist "
                "(its frames would read as zeros)")
        if (sfile, dname) in checked:
            continue
        checked.add((sfile, dname))
        if sfile == vds_file:
            present = dname in dset.file
        else:
            try:
                with h5py.File(sfile, "r") as sf:
                    present = dname in sf
            except OSError as e:  # truncated or not HDF5: h5py's message names no file
                raise OSError(f"{where}: source file {sfile!r} cannot be read as HDF5 ({e})") \
                    from None
        if not present:
            raise ValueError(f"{where}: source dataset {dname!r} is missing from {sfile!r} "
                             "(its frames would read as zeros)")
    if None in boxes:
        return
    pos = lo
    for v0, v1 in sorted(boxes):
        if v0 > pos:
            break
        pos = max(pos, v1)
    if pos < hi:
        gap_end = min([v0 for v0, _ in boxes if v0 > pos] + [hi])
        raise ValueError(f"{where}: frames {pos} to {gap_end - 1} are not mapped to any source "
                         "file (they would read as zeros)")


def _virtual_chunks(dset, lo: int, hi: int, h5py) -> List[Tuple[_Stored, int, int, int]]:
    """(source chunks, v0, v1, s0) for every mapping of a VDS overlapping frames [lo, hi)."""
    vds_file = os.path.abspath(dset.file.filename)
    where = f"{vds_file}::{dset.name}"
    frame_shape = tuple(int(n) for n in dset.shape[1:])
    plist = dset.id.get_create_plist()
    maps = []
    for j in range(plist.get_virtual_count()):
        vbox = _box(plist.get_virtual_vspace(j), frame_shape, where, h5py)
        if vbox is None:
            vbox = (0, int(dset.shape[0]))
        if vbox[1] <= lo or vbox[0] >= hi:
            continue
        fname = plist.get_virtual_filename(j)
        dname = plist.get_virtual_dsetname(j)
        maps.append((vbox, fname, dname, plist.get_virtual_srcspace(j)))
    maps.sort(key=lambda m: m[0][0])
    # The mapped ranges must tile [lo, hi): HDF5 returns the fill value elsewhere.
    pos, prev = lo, None
    for (v0, v1), fname, dname, _ in maps:
        if prev is not None and v0 < prev:
            raise _Unsupported(f"{where}: overlapping virtual dataset mappings at frame {v0}")
        if v0 > pos:
            raise _Unsupported(f"{where}: frames {pos} to {v0 - 1} are not mapped (fill value)")
        pos = prev = v1
    if pos < hi:
        raise _Unsupported(f"{where}: frames {pos} to {hi - 1} are not mapped (fill value)")
    out = []
    for (v0, v1), fname, dname, srcspace in maps:
        sfile = _resolve_source(fname, vds_file)
        swhere = f"{where} -> {fname}::{dname}"
        if sfile is None:
            raise _Unsupported(
                f"{swhere}: source file missing (frames {v0} to {v1 - 1} read as fill value)"
            )
        with h5py.File(sfile, "r") as sf:
            if dname not in sf:
                raise _Unsupported(f"{swhere}: source dataset missing")
            sdset = sf[dname]
            if not isinstance(sdset, h5py.Dataset) or sdset.ndim != 3:
                raise _Unsupported(f"{swhere}: source is not a 3-D dataset")
            if tuple(sdset.shape[1:]) != frame_shape:
                raise _Unsupported(
                    f"{swhere}: source frame shape {sdset.shape[1:]} != {frame_shape}"
                )
            if sdset.dtype != dset.dtype:
                raise _Unsupported(f"{swhere}: source dtype {sdset.dtype} != {dset.dtype}")
            sbox = _box(srcspace, frame_shape, swhere, h5py)
            if sbox is None:
                sbox = (0, int(sdset.shape[0]))
            if sbox[1] - sbox[0] != v1 - v0:
                raise _Unsupported(f"{swhere}: source and virtual frame counts differ")
            if sbox[1] > sdset.shape[0]:
                raise _Unsupported(f"{swhere}: mapping beyond the source's {sdset.shape[0]} frames")
            s0 = sbox[0]
            a, b = max(v0, lo), min(v1, hi)
            stored = _plain_chunks(sdset, s0 + a - v0, s0 + b - v0, h5py)
        out.append((stored, v0, v1, s0))
    return out


def chunk_layout(
    filename, path: str, start: int = 0, stop: Optional[int] = None, step: int = 1
) -> Tuple[Optional[ChunkLayout], str]:
    """Where the chunks of frames ``start:stop:step`` of a 3-D HDF5 dataset lie on disk.

    Parameters
    ----------
    filename : str or os.PathLike
        HDF5 file.
    path : str
        Path of the 3-D dataset (Nt, Ny, Nx) in the file (links are followed).
    start, stop, step : int
        Frame selection (slice semantics, non-negative; ``stop`` None: to the end).

    Returns
    -------
    (ChunkLayout, "") or (None, reason)
        None when the selection cannot be read raw, with a reason such as "chunks split
        frames", "filter gzip not supported", "chunk of frame 12 missing (fill value)", "step 2
        with 4 frames per chunk". Only the selection's chunks are listed.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, no 3-D dataset at ``path``, empty or out-of-range selection.
    """
    import h5py
    import hdf5plugin  # noqa: F401  (bitshuffle registered for the h5py fallbacks)

    filename = os.path.abspath(os.fspath(filename))
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"HDF5 file {filename!r} does not exist")
    start, step = int(start), int(step)
    with h5py.File(filename, "r") as f:
        if path not in f or not isinstance(f[path], h5py.Dataset):
            raise ValueError(f"{filename!r} has no dataset {path!r}")
        dset = f[path]
        if dset.ndim != 3:
            raise ValueError(f"{filename}::{path} is {dset.ndim}-D, frames must be 3-D")
        total = int(dset.shape[0])
        stop = total if stop is None else min(int(stop), total)
        if start < 0 or step < 1 or stop <= start:
            raise ValueError(f"{filename}::{path}: empty frame selection {start}:{stop}:{step}")
        sel = range(start, stop, step)
        lo, hi = sel[0], sel[-1] + 1
        check_virtual_sources(dset, lo, hi)  # an error, not frames of zeros
        try:
            if dset.id.get_create_plist().get_layout() == h5py.h5d.VIRTUAL:
                parts = _virtual_chunks(dset, lo, hi, h5py)
            else:
                parts = [(_plain_chunks(dset, lo, hi, h5py), 0, total, 0)]
            layout = _assemble(parts, sel, dset.dtype, f"{filename}::{dset.name}")
        except _Unsupported as e:
            return None, str(e)
    return layout, ""


def _assemble(parts, sel: range, dtype, where: str) -> ChunkLayout:
    """Merge the chunks of the parts into the selection's layout."""
    first = parts[0][0]
    for stored, *_ in parts[1:]:
        for attr in ("codec", "k"):
            if getattr(stored, attr) != getattr(first, attr):
                raise _Unsupported(
                    f"{where}: sources differ in {attr} ({getattr(first, attr)} in "
                    f"{first.filename}, {getattr(stored, attr)} in {stored.filename})"
                )
    k, step = first.k, sel.step
    if k > 1 and step > 1:
        raise _Unsupported(f"{where}: step {step} with {k} frames per chunk")
    files: List[str] = []
    cols = []
    for stored, v0, v1, s0 in parts:
        if stored.filename not in files:
            files.append(stored.filename)
        fi = files.index(stored.filename)
        g0 = stored.start - s0 + v0  # chunk's first frame in the (virtual) dataset
        if k > 1 and (s0 % k or ((v1 - v0) % k and v1 < sel.stop)):
            raise _Unsupported(
                f"{where}: virtual mapping of frames {v0} to {v1 - 1} not aligned to "
                f"{k}-frame chunks"
            )
        # keep the chunks whose frames are in this mapping's part of the selection
        keep = (g0 + k > max(v0, sel.start)) & (g0 < min(v1, sel.stop))
        n_keep = int(keep.sum())
        cols.append(
            numpy.stack(
                [g0[keep], numpy.full(n_keep, fi), stored.offsets[keep], stored.sizes[keep]],
                axis=1,
            )
        )
    arr = numpy.concatenate(cols) if cols else numpy.zeros((0, 4), numpy.int64)
    arr = arr[numpy.argsort(arr[:, 0], kind="stable")]
    g0 = arr[:, 0]
    if k == 1:
        want = numpy.arange(sel.start, sel.stop, step, dtype=numpy.int64)
        idx = numpy.searchsorted(g0, want)
        ok = idx < g0.size
        ok[ok] = g0[idx[ok]] == want[ok]
        if not ok.all():
            missing = int(want[numpy.argmin(ok)])
            raise _Unsupported(f"{where}: chunk of frame {missing} missing (fill value)")
        arr = arr[idx]
        first_frame = numpy.arange(len(sel), dtype=numpy.int64)
    else:
        expect = g0[0] + k * numpy.arange(g0.size) if g0.size else g0
        if g0.size == 0 or g0[0] > sel.start or not numpy.array_equal(g0, expect) or (
            g0[-1] + k < sel.stop
        ):
            pos = sel.start
            for t in g0:
                if t > pos:
                    break
                pos = max(pos, int(t) + k)
            raise _Unsupported(f"{where}: chunk of frame {pos} missing (fill value)")
        first_frame = g0 - sel.start
    block_size = 0
    if first.codec == "bslz4":
        block_size = _block_size(files[int(arr[0, 1])] if arr.shape[0] else None,
                                 int(arr[0, 2]) if arr.shape[0] else 0, dtype)
    return ChunkLayout(
        codec=first.codec,
        dtype=numpy.dtype(dtype),
        frame_shape=first.frame_shape,
        frames_per_chunk=k,
        files=tuple(files),
        file_index=arr[:, 1].astype(numpy.int32),
        offsets=arr[:, 2].copy(),
        sizes=arr[:, 3].copy(),
        first_frame=first_frame.astype(numpy.int64),
        n_frames=len(sel),
        block_size=int(block_size),
    )


def _block_size(filename: Optional[str], offset: int, dtype) -> int:
    """Bitshuffle block size (elements) from the header of the chunk at ``offset`` of
    ``filename`` (bitshuffle's default when there is none or it is unreadable)."""
    itemsize = numpy.dtype(dtype).itemsize
    if filename is not None:
        header = _pread_exact(filename, offset, HEADER_BYTES)
        if len(header) == HEADER_BYTES:
            bs = parse_header(header)[1] // itemsize
            if bs > 0 and bs % 8 == 0:
                return bs
    return default_block_elems(itemsize)


def _pread_exact(filename: str, offset: int, size: int) -> bytes:
    with open(filename, "rb") as fh:
        return os.pread(fh.fileno(), size, offset)


# ---------------------------------------------------------------------------------- reading
class _FileCache:
    """Read-only file descriptors kept open between reads (LRU), re-opened when a file changes."""

    def __init__(self, capacity: int = 128):
        self.capacity = capacity
        self._fds: "OrderedDict[str, Tuple[int, tuple]]" = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(st) -> tuple:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def get(self, path: str) -> int:
        """An open descriptor of ``path``, checked against the file now at that path."""
        key = self._key(os.stat(path))
        with self._lock:
            entry = self._fds.get(path)
            if entry is not None and entry[1] == key:
                self._fds.move_to_end(path)
                return entry[0]
            if entry is not None:
                del self._fds[path]
                os.close(entry[0])
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._fds[path] = (fd, self._key(os.fstat(fd)))
            while len(self._fds) > self.capacity:
                _, (old, _) = self._fds.popitem(last=False)
                os.close(old)
            return fd

    def close(self) -> None:
        with self._lock:
            for fd, _ in self._fds.values():
                os.close(fd)
            self._fds.clear()


_files = _FileCache()
_pools: dict = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    # One pool per size and process: a pool copied by fork has no threads and would hang.
    key = (os.getpid(), threads)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="ewoksxpcs-io")
        return pool


def _run(threads: int, fn, items) -> list:
    """``[fn(x) for x in items]`` on ``threads`` threads; the first error is raised."""
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    return list(_pool(threads).map(fn, items))


def _check_chunk_range(layout: ChunkLayout, first: int, count: int) -> Tuple[int, int]:
    first, count = int(first), int(count)
    if first < 0 or count < 0 or first + count > layout.n_chunks:
        raise ValueError(
            f"chunks {first} to {first + count - 1} out of range: the layout has "
            f"{layout.n_chunks} chunks"
        )
    return first, count


def read_chunks(
    layout: ChunkLayout,
    first: int,
    count: int,
    out: Optional[numpy.ndarray] = None,
    threads: int = 0,
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Read the stored bytes of chunks ``first .. first+count-1``, back to back.

    Parameters
    ----------
    layout : ChunkLayout
    first, count : int
        Chunk range (indices into the layout).
    out : numpy.ndarray, optional
        C-contiguous buffer (e.g. pinned host memory), used as bytes; a new uint8 buffer is
        allocated when None or too small.
    threads : int
        Reader threads; 0: ``os.cpu_count()`` capped at 32.

    Returns
    -------
    (buffer, offsets)
        ``buffer``: 1-D uint8 (a view of ``out`` when it was used); chunk ``first + i`` is
        ``buffer[offsets[i]:offsets[i + 1]]``. ``offsets``: (count + 1,) int64.

    Raises
    ------
    ValueError
        A file is shorter than the layout says (truncated), naming the file and frames.
    """
    first, count = _check_chunk_range(layout, first, count)
    sizes = layout.sizes[first : first + count]
    offsets = numpy.zeros(count + 1, dtype=numpy.int64)
    numpy.cumsum(sizes, out=offsets[1:])
    total = int(offsets[-1])
    buf = None
    if out is not None:
        if not (
            isinstance(out, numpy.ndarray) and out.flags.c_contiguous and out.flags.writeable
        ):
            raise ValueError("read_chunks: out must be a writeable C-contiguous numpy array")
        if out.nbytes >= total:
            buf = out.reshape(-1).view(numpy.uint8)
    if buf is None:
        buf = numpy.empty(max(total, 1), dtype=numpy.uint8)
    if count == 0:
        return buf, offsets
    threads = default_threads(threads)
    # Runs of chunks adjacent in one file are read with one call; runs are cut into pieces so
    # that every thread gets work.
    fidx = layout.file_index[first : first + count]
    foff = layout.offsets[first : first + count]
    brk = numpy.flatnonzero((fidx[1:] != fidx[:-1]) | (foff[1:] != foff[:-1] + sizes[:-1])) + 1
    starts = numpy.concatenate([[0], brk])
    ends = numpy.concatenate([brk, [count]])
    piece = max(256 * 1024, -(-total // (threads * 4)))
    tasks = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        pos, end = int(offsets[a]), int(offsets[b])
        file_pos = int(foff[a])
        while pos < end:
            n = min(piece, end - pos)
            tasks.append((int(fidx[a]), file_pos, pos, n))
            pos += n
            file_pos += n
    paths = {int(i): layout.files[int(i)] for i in numpy.unique(fidx)}
    fds = {i: _files.get(p) for i, p in paths.items()}
    mv = memoryview(buf)

    def read(task):
        fi, file_pos, pos, n = task
        view = mv[pos : pos + n]
        done = 0
        while done < n:
            got = os.preadv(fds[fi], [view[done:]], file_pos + done)
            if got <= 0:
                # find the chunk the missing byte belongs to, for the message
                c = first + int(numpy.searchsorted(offsets, pos + done, side="right")) - 1
                raise ValueError(
                    f"unexpected end of file reading {layout.where(c)}: file truncated?"
                )
            done += got

    _run(threads, read, tasks)
    return buf, offsets


# ---------------------------------------------------------------------------------- decoding
_lib = None
_lib_lock = threading.Lock()


def _bshuf():
    """ctypes handle on hdf5plugin's bitshuffle library (bshuf_decompress_lz4)."""
    global _lib
    with _lib_lock:
        if _lib is None:
            import hdf5plugin

            names = sorted(glob.glob(os.path.join(hdf5plugin.PLUGIN_PATH, "*h5bshuf*")))
            if not names:
                raise RuntimeError(f"no bitshuffle library in {hdf5plugin.PLUGIN_PATH}")
            lib = ctypes.CDLL(names[0])
            fn = lib.bshuf_decompress_lz4
            fn.restype = ctypes.c_int64
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                           ctypes.c_size_t]
            _lib = lib
        return _lib


def _check_bslz4(mv: memoryview, n_elem: int, itemsize: int) -> Tuple[int, str]:
    """Block size (elements) of a bitshuffle+LZ4 chunk after checking its whole block chain.

    Returns (block_size, "") or (0, what is wrong).
    """
    end = len(mv)
    if end < HEADER_BYTES:
        return 0, f"{end} bytes, shorter than the 12-byte header"
    nbytes, block_bytes = parse_header(mv)
    if nbytes != n_elem * itemsize:
        return 0, f"header says {nbytes} uncompressed bytes, expected {n_elem * itemsize}"
    bs = block_bytes // itemsize
    if block_bytes % itemsize or bs <= 0 or bs % 8:
        return 0, f"invalid block size {block_bytes} bytes in the header"
    unpack = _BE32.unpack_from
    pos = HEADER_BYTES
    sizes = [(n_elem // bs, bs)]
    last = (n_elem % bs) // 8 * 8
    if last:
        sizes.append((1, last))
    for nblocks, elems in sizes:
        # LZ4 worst case for a block of elems * itemsize bytes
        raw = elems * itemsize
        bound = raw + raw // 255 + 16
        for _ in range(nblocks):
            if pos + 4 > end:
                return 0, "block chain runs past the end of the chunk"
            c = unpack(mv, pos)[0]
            if c == 0 or c > bound:
                return 0, f"invalid compressed block size {c} at byte {pos}"
            pos += 4 + c
            if pos > end:
                return 0, "block chain runs past the end of the chunk"
    if pos + (n_elem % 8) * itemsize != end:
        return 0, f"block chain ends at byte {pos}, the chunk has {end} bytes"
    return bs, ""


def decode_chunks_cpu(
    layout: ChunkLayout,
    buffer: numpy.ndarray,
    offsets: numpy.ndarray,
    out: Optional[numpy.ndarray] = None,
    threads: int = 0,
    first: int = 0,
) -> numpy.ndarray:
    """Decompress chunks read by :func:`read_chunks` into frames, in parallel threads.

    Parameters
    ----------
    layout : ChunkLayout
    buffer : numpy.ndarray
        Stored chunk bytes (uint8), chunk ``i`` at ``buffer[offsets[i]:offsets[i + 1]]``.
    offsets : numpy.ndarray
        (count + 1,) int64.
    out : numpy.ndarray, optional
        (count * k, Ny, Nx) of ``layout.dtype``, C-contiguous; allocated when None.
    threads : int
        Decoder threads; 0: ``os.cpu_count()`` capped at 32.
    first : int
        Layout index of the buffer's first chunk (names the file and frames in errors).

    Returns
    -------
    numpy.ndarray
        ``out``: chunk ``i`` decoded into frames ``i*k .. i*k+k-1``.

    Raises
    ------
    ValueError
        A chunk is corrupted (named by file, byte offset and frame), or ``out`` has the wrong
        shape or dtype.
    """
    offsets = numpy.asarray(offsets, dtype=numpy.int64)
    count = offsets.size - 1
    first, count = _check_chunk_range(layout, first, count)
    k = layout.frames_per_chunk
    ny, nx = layout.frame_shape
    shape = (count * k, ny, nx)
    if out is None:
        out = numpy.empty(shape, dtype=layout.dtype)
    if (
        not isinstance(out, numpy.ndarray)
        or out.shape != shape
        or out.dtype != layout.dtype
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise ValueError(
            f"decode_chunks_cpu: out must be a writeable C-contiguous {layout.dtype} array of "
            f"shape {shape}, got {getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}"
        )
    buf = numpy.asarray(buffer)
    if buf.dtype != numpy.uint8 or buf.ndim != 1 or not buf.flags.c_contiguous:
        raise ValueError("decode_chunks_cpu: buffer must be a 1-D C-contiguous uint8 array")
    if count and (numpy.any(numpy.diff(offsets) < 0) or offsets[0] < 0 or offsets[-1] > buf.size):
        raise ValueError("decode_chunks_cpu: offsets do not fit the buffer")
    if count == 0:
        return out
    chunk_bytes = layout.chunk_nbytes
    out_bytes = out.reshape(-1).view(numpy.uint8)
    itemsize = layout.dtype.itemsize
    n_elem = k * ny * nx
    mv = memoryview(buf)

    if layout.codec == "none":

        def work(i):
            a, b = int(offsets[i]), int(offsets[i + 1])
            if b - a != chunk_bytes:
                raise ValueError(
                    f"corrupted chunk: {layout.where(first + i)}: {b - a} bytes, expected "
                    f"{chunk_bytes}"
                )
            out_bytes[i * chunk_bytes : (i + 1) * chunk_bytes] = buf[a:b]

    elif layout.codec == "bslz4":
        fn = _bshuf().bshuf_decompress_lz4
        base_in = buf.ctypes.data
        base_out = out.ctypes.data

        def work(i):
            a, b = int(offsets[i]), int(offsets[i + 1])
            bs, why = _check_bslz4(mv[a:b], n_elem, itemsize)
            if why:
                raise ValueError(f"corrupted chunk: {layout.where(first + i)}: {why}")
            got = fn(base_in + a + HEADER_BYTES, base_out + i * chunk_bytes, n_elem,
                     itemsize, bs)
            if got != b - a - HEADER_BYTES:
                raise ValueError(
                    f"corrupted chunk: {layout.where(first + i)}: bitshuffle/LZ4 decoding "
                    f"failed (code {got})"
                )

    else:
        raise ValueError(f"unknown codec {layout.codec!r}")
    _run(default_threads(threads), work, range(count))
    return out
