"""A live source's stored chunks read in a process of its own, handed over through a pipe.

Following a growing HDF5 file means chunk lookups (h5py holds the GIL in each) and the file
opened again at every poll. In the process that correlates, at an Eiger 4M's 1 kHz, that
Python work competed for the GIL with the thread feeding the device: on the H200 the lookups
took 0.87 ms each and feeding the device 8.4 s per 10 000 frames instead of about 1.5 s, so
the live run fell behind its detector (``doc/benchmarks/h200_live_profile_session8.txt``).
Here the source (pickled: its file names and parameters) is read by a child process
(``python -m ewoksxpcs.io.reader_process``: a new interpreter, so the caller's ``__main__`` is
not imported again, as ``multiprocessing``'s spawn would), with its own GIL. Each item crosses
the child's standard output as a length-prefixed pickled header and then its bytes, read
straight into a fresh array; the pipe's buffer keeps the child a few items ahead of the
consumer. The end-of-scan bookkeeping of the source (``frames_read``, ``n_frames``,
``ended_early``) is copied back to the caller's source when the child reports the end; an
error in the child is raised in the caller.
"""

from __future__ import annotations

import logging
import pickle
import struct
import subprocess
import sys
from typing import Iterator

import numpy

__all__ = ["raw_chunks", "iter_in_process"]

logger = logging.getLogger(__name__)

#: Attributes of a live source copied back from the reading process at the end of the scan.
END_STATE = ("frames_read", "n_frames", "ended_early", "expected_frames")

_LENGTH = struct.Struct("<Q")


def _send(out, header, data=None) -> None:
    blob = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LENGTH.pack(len(blob)))
    out.write(blob)
    if data is not None:
        out.write(memoryview(data).cast("B"))
    out.flush()


def _serve() -> None:  # pragma: no cover - runs in the child (tested through it)
    """The child: read ``(source, method, chunk_frames)`` from standard input, iterate
    ``getattr(source, method)(chunk_frames)`` and write each item: ("raw",
    layout, offsets, nbytes) or ("frames", shape, dtype, nbytes), then its bytes; at the end
    ("end", state) or ("error", exception)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent to handle
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the pipe
    from .live import RawChunks

    try:
        source, method, chunk_frames = pickle.load(sys.stdin.buffer)
        for item in getattr(source, method)(chunk_frames):
            if isinstance(item, RawChunks):
                data = numpy.ascontiguousarray(item.data)
                _send(out, ("raw", item.layout, item.offsets, data.nbytes), data)
            else:
                data = numpy.ascontiguousarray(item)
                _send(out, ("frames", data.shape, data.dtype.str, data.nbytes), data)
        _send(out, ("end", {name: getattr(source, name, None) for name in END_STATE}))
    except BrokenPipeError:  # the consumer stopped reading
        return
    except BaseException as e:
        try:
            _send(out, ("error", e))
        except BrokenPipeError:
            return
        except Exception:  # unpicklable: its text
            _send(out, ("error", RuntimeError(f"{type(e).__name__}: {e}")))


def _read_into(stream, buf) -> bool:
    """Fill ``buf`` (a writable buffer) from ``stream``; False at end of input."""
    view = memoryview(buf).cast("B")
    got = 0
    while got < view.nbytes:
        n = stream.readinto(view[got:])
        if not n:
            return False
        got += n
    return True


def raw_chunks(source, chunk_frames=None) -> Iterator:
    """``source.iter_raw_chunks(chunk_frames)``, read by a process of its own when the source
    asks for it (``read_in_process``: :class:`~ewoksxpcs.io.live.GrowingHDF5Source` by
    default), else in this one."""
    if getattr(source, "read_in_process", False):
        return iter_in_process(source, "iter_raw_chunks", chunk_frames)
    return source.iter_raw_chunks(chunk_frames)


def iter_in_process(source, method: str, chunk_frames=None) -> Iterator:
    """The items of ``getattr(source, method)(chunk_frames)`` (frames as ndarrays, or
    :class:`~ewoksxpcs.io.live.RawChunks`), read by a child process.

    ``source`` must pickle (a :class:`~ewoksxpcs.io.live.GrowingHDF5Source` does: file names
    and parameters) and is marked read (a live source is read once). Closing the generator
    stops the child.
    """
    from .live import RawChunks

    source._start()  # a live source is read once (raises if it was)
    source._consumed = False  # pickled unread: the child's copy is the one that reads
    try:
        request = pickle.dumps((source, method, chunk_frames), protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        source._consumed = True
    proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, close_fds=True)
    try:
        proc.stdin.write(request)
        proc.stdin.close()
        length = bytearray(_LENGTH.size)
        while True:
            if not _read_into(proc.stdout, length):
                raise RuntimeError(f"the process reading {source!r} ended without a word "
                                   f"(exit code {proc.wait()})")
            blob = bytearray(_LENGTH.unpack(length)[0])
            if not _read_into(proc.stdout, blob):
                raise RuntimeError(f"the process reading {source!r} ended mid-message")
            header = pickle.loads(blob)
            kind = header[0]
            if kind == "end":
                for name, value in header[1].items():
                    setattr(source, name, value)
                return
            if kind == "error":
                raise header[1]
            data = numpy.empty(header[-1], numpy.uint8)
            if not _read_into(proc.stdout, data):
                raise RuntimeError(f"the process reading {source!r} ended mid-item")
            if kind == "raw":
                item = RawChunks(header[1], data, header[2])
                source.frames_read += item.n_frames
            else:
                item = data.view(numpy.dtype(header[2])).reshape(header[1])
                source.frames_read += item.shape[0]
            yield item
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck child
            proc.kill()
            proc.wait()


if __name__ == "__main__":  # pragma: no cover
    _serve()
