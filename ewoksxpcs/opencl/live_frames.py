"""Frames of a live scan landing in device memory: uploaded, or decoded there from the stored
chunks of the file being written, with the sum image of every pixel kept on the device.

The live correlators on a device (:class:`~ewoksxpcs.opencl.live_pairs.LiveDevicePairs`, the
live multi-tau of :mod:`ewoksxpcs.correlators.opencl_multitau`) take each chunk through
:meth:`DeviceFrames.land`: decoded frames (an ndarray) are uploaded; stored chunks
(:class:`~ewoksxpcs.io.live.RawChunks`: bitshuffle-LZ4 or unfiltered, one frame per chunk) are
uploaded as they are and decoded on the device by the offline decoder
(:class:`~ewoksxpcs.opencl.bslz4_decoder.BSLZ4Decoder`): the host never decodes them. Each
chunk's frames are added to the sum image (int64, ``kernels/live_frames.cl``), from which a
snapshot's mean image comes.
"""

from __future__ import annotations

import numpy

from .device import CTYPES, OpenCLDevice, device_buffer, get_kernel

__all__ = ["DeviceFrames"]


class DeviceFrames:
    """One chunk of frames at a time in device memory, and the sum image of all of them.

    Parameters
    ----------
    dev : OpenCLDevice
    frame_shape : (int, int)
    dtype : numpy.dtype
        Pixel type (1, 2 or 4 bytes: what the device decoder writes).

    Attributes
    ----------
    paths : set of str
        How the chunks reached the device so far: "raw chunks decoded on the device",
        "frames uploaded".

    Notes
    -----
    The work runs on the device's queue, and :meth:`land` returns once the frames are in place
    (work on another queue may read them at once); the caller must be done reading them before
    the next call (which overwrites the buffer).
    """

    def __init__(self, dev: OpenCLDevice, frame_shape, dtype):
        dtype = numpy.dtype(dtype)
        if dtype.kind not in "iuf" or dtype.itemsize not in (1, 2, 4):
            raise ValueError(f"frames of {dtype} cannot land on the device")
        self.dev, self.queue = dev, dev.queue
        self.frame_shape = tuple(int(n) for n in frame_shape)
        self.dtype = dtype
        self.npix = self.frame_shape[0] * self.frame_shape[1]
        self.frame_bytes = self.npix * dtype.itemsize
        self._k_sum = None
        if dtype.kind in "iu":
            self._k_sum = get_kernel(dev, "live_frames.cl", "sum_frames",
                                     {"VAL_T": CTYPES[dtype.name]})
            self._d_sum_image = device_buffer(dev, self.queue, 8 * self.npix, zero=True)
        self._decoder = None
        self._d_frames = self._d_raw = None
        self.paths = set()

    def _buffer(self, name: str, nbytes: int):
        """A device buffer kept between chunks, grown (doubled) when too small."""
        buf = getattr(self, name)
        if buf is None or buf.size < nbytes:
            size = max(int(nbytes), 2 * (0 if buf is None else buf.size))
            buf = device_buffer(self.dev, self.queue, size)
            setattr(self, name, buf)
        return buf

    def land(self, chunk):
        """Put the next frames in device memory: ``chunk`` is (n, Ny, Nx) of the dtype, or their
        stored chunks (:class:`~ewoksxpcs.io.live.RawChunks`). Returns ``(d_frames, n)``: the
        frames from the buffer's first byte, C order.

        Raises
        ------
        ValueError
            Frames of another shape or type, another codec, a corrupted chunk (named).
        """
        import pyopencl

        from ..io.live import RawChunks

        if isinstance(chunk, RawChunks):
            return self._land_raw(chunk)
        chunk = numpy.asarray(chunk)
        if chunk.shape[1:] != self.frame_shape or chunk.dtype != self.dtype:
            raise ValueError(f"frames of shape {chunk.shape[1:]} {chunk.dtype}, expected "
                             f"{self.frame_shape} {self.dtype}")
        n = int(chunk.shape[0])
        d_frames = self._buffer("_d_frames", max(8, n * self.frame_bytes))
        if n:
            pyopencl.enqueue_copy(self.queue, d_frames, numpy.ascontiguousarray(chunk))
            self.paths.add("frames uploaded")
            self._sum(d_frames, n)
        return d_frames, n

    def _land_raw(self, raw):
        import pyopencl

        from .bslz4_decoder import BSLZ4Decoder, chunk_errors

        layout, n = raw.layout, raw.n_frames
        if tuple(layout.frame_shape) != self.frame_shape or layout.dtype != self.dtype:
            raise ValueError(f"chunks of {tuple(layout.frame_shape)} {layout.dtype} frames, "
                             f"expected {self.frame_shape} {self.dtype}")
        nbytes = int(raw.offsets[-1] - raw.offsets[0])
        d_frames = self._buffer("_d_frames", max(8, n * self.frame_bytes))
        data = raw.data[int(raw.offsets[0]): int(raw.offsets[-1])]
        if n == 0:
            return d_frames, 0
        if layout.codec == "none":
            if nbytes != n * self.frame_bytes:
                raise ValueError(f"{nbytes} bytes of unfiltered chunks for {n} frames of "
                                 f"{self.frame_bytes} bytes")
            pyopencl.enqueue_copy(self.queue, d_frames, data)
        elif layout.codec == "bslz4":
            if self._decoder is None:
                self._decoder = BSLZ4Decoder(self.dev, self.dtype, self.npix,
                                             block_elems=layout.block_size or None)
            d_raw = self._buffer("_d_raw", max(8, nbytes))
            pyopencl.enqueue_copy(self.queue, d_raw, data)
            with chunk_errors(layout, "live chunks"):  # waits for the decoding (its error word)
                self._decoder.decode(d_raw, raw.offsets - raw.offsets[0], d_frames,
                                     queue=self.queue)
        else:
            raise ValueError(f"chunks of codec {layout.codec!r} are not decoded on the device")
        self.paths.add("raw chunks decoded on the device")
        self._sum(d_frames, n)
        return d_frames, n

    def _sum(self, d_frames, n: int) -> None:
        if self._k_sum is not None:
            self._k_sum(self.queue, (self.npix,), None, d_frames, numpy.int32(n),
                        numpy.int64(self.npix), self._d_sum_image)

    def sum_image(self) -> numpy.ndarray:
        """Sum of every pixel over the frames landed so far, (Ny, Nx) int64 (integer frames)."""
        import pyopencl

        if self._k_sum is None:
            raise ValueError(f"the sum image of {self.dtype} frames is not kept on the device")
        out = numpy.empty(self.npix, dtype=numpy.int64)
        pyopencl.enqueue_copy(self.queue, out, self._d_sum_image)
        return out.reshape(self.frame_shape)
