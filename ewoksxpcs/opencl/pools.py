"""Memory kept from run to run: device buffers, and page-locked host memory for results.

Measured on the H200 machine (NVIDIA's OpenCL, 16-core Xeon host; session 17,
``doc/benchmarks/h200_events001_session17.txt``), for a run of the event correlator at 0.01
counts (1024×1024×10 000, 11-14 ms a call before, 9.0-9.6 ms after):

- freeing used device buffers waits for the device: 14 took 0.70-0.82 ms; a
  :class:`pyopencl.tools.MemoryPool` takes them back in 2-7 µs and hands them out again to the
  next run;
- the host copies 16-23 GB/s at best (a VM's memory; 2-8 threads), so results read into the
  pinned staging ring and copied out (30 MB: ~2 ms) cost more than their transfer (~0.6 ms at
  50 GB/s). Reads straight into host memory registered with the driver run at 52-58 GB/s, but
  registering costs ~1.6 ms per 12.8 MB and unregistering waits for the device: so result
  arrays are handed out from blocks registered once and taken back when the last array on a
  block is garbage (as PyTorch's caching host allocator does for ``pin_memory``).

Both pools are per device and bounded (:data:`BUFFER_POOL_HOLD_BYTES`,
:data:`HOST_POOL_BYTES`); beyond the bounds memory is allocated and freed as before.
"""

from __future__ import annotations

import mmap
import threading
import warnings

import numpy

from .device import DOWNLOAD_PINNED_BYTES, PAGE_BYTES, OpenCLDevice, device_buffer

__all__ = ["pooled_buffer", "trim_buffer_pool", "host_result", "HOST_POOL_BYTES",
           "BUFFER_POOL_HOLD_BYTES"]

#: Device memory a device's buffer pool keeps free for reuse, at most (and at most a tenth of
#: the device's memory): beyond it, the held buffers are freed at the next
#: :func:`trim_buffer_pool`.
BUFFER_POOL_HOLD_BYTES = 4 * 1024**3
#: Page-locked host memory of a device's result pool (blocks handed out or free), at most.
HOST_POOL_BYTES = 1024**3

_LOCK = threading.Lock()

#: Callables ``hook(dev, buffer)`` called after each allocation of :func:`pooled_buffer` (the
#: GPU benchmark's memory tracker: the pool's buffers are made by PyOpenCL's allocator, not
#: through ``pyopencl.Buffer``).
ALLOCATION_HOOKS: list = []


def _buffer_pool(dev: OpenCLDevice):
    """The device's :class:`pyopencl.tools.MemoryPool` (made once).

    Its allocator is the deferred one, a plain ``clCreateBuffer`` as every other buffer of
    ewoksxpcs: the immediate one enqueues a migration on a queue at each allocation, which the
    copies a run enqueues on its other queues would not wait for. PyOpenCL warns that a pool
    then cannot free its held buffers and retry when memory runs out; the held buffers count as
    used in the free memory that the budgets read (:func:`~.device.default_device_memory`), so
    a run plans within what is really free, and they are bounded
    (:data:`BUFFER_POOL_HOLD_BYTES`)."""
    import pyopencl
    import pyopencl.tools

    with _LOCK:
        pool = dev.__dict__.get("buffer_pool")
        if pool is None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Memory pools expect non-deferred",
                                        UserWarning)
                pool = dev.buffer_pool = pyopencl.tools.MemoryPool(
                    pyopencl.tools.DeferredAllocator(dev.context, pyopencl.mem_flags.READ_WRITE))
        return pool


def pooled_buffer(dev: OpenCLDevice, queue, nbytes: int, zero: bool = False):
    """A device buffer of at least ``nbytes`` bytes (at least 8) from the device's pool, given
    back to the pool when it is garbage (a :class:`pyopencl.PooledBuffer`, usable as a buffer).

    Its user must leave no work on it in flight when dropping it unless that work is on the
    device's in-order queue (``dev.queue``, which every later user of a pooled buffer zeroes or
    writes it on first): a run drops its buffers once its reads are done, or after finishing its
    queues when it fails (:meth:`~ewoksxpcs.correlators.opencl_events.OpenCLEventCorrelator.
    compute_sums`).

    Parameters
    ----------
    dev : OpenCLDevice
    queue : pyopencl.CommandQueue
        Queue of the zeroing, if any.
    nbytes : int
    zero : bool
        Zero the whole buffer (its size may exceed ``nbytes``: the pool's size classes).
    """
    buf = device_buffer(dev, queue, nbytes, zero, pool=_buffer_pool(dev))
    for hook in ALLOCATION_HOOKS:
        hook(dev, buf)
    return buf


def held_bytes(dev: OpenCLDevice) -> int:
    """Device memory that the device's buffer pool holds free for reuse, bytes."""
    pool = dev.__dict__.get("buffer_pool")
    return 0 if pool is None else int(pool.managed_bytes - pool.active_bytes)


def trim_buffer_pool(dev: OpenCLDevice, keep: int | None = None) -> None:
    """Free the buffers the device's pool holds for reuse when they exceed ``keep`` bytes
    (default :data:`BUFFER_POOL_HOLD_BYTES` or a tenth of the device's memory, the smaller;
    0: free them all). Frees wait for the device."""
    if keep is None:
        keep = min(BUFFER_POOL_HOLD_BYTES, dev.global_mem // 10)
    keep = int(keep)
    pool = dev.__dict__.get("buffer_pool")
    if pool is not None and held_bytes(dev) > keep:
        pool.free_held()


class _HostBlock:
    """Page-aligned host memory registered with the driver (a ``USE_HOST_PTR`` buffer over it,
    never used by a kernel: its creation page-locks the memory on NVIDIA's OpenCL)."""

    def __init__(self, dev: OpenCLDevice, nbytes: int):
        import pyopencl

        self.nbytes = int(nbytes)
        self.memory = mmap.mmap(-1, self.nbytes)
        self.bytes = numpy.frombuffer(self.memory, numpy.uint8)
        self.registration = pyopencl.Buffer(
            dev.context, pyopencl.mem_flags.READ_WRITE | pyopencl.mem_flags.USE_HOST_PTR,
            hostbuf=self.bytes)

    def close(self) -> None:
        """Unregister (waits for the device); the memory is unmapped with its last reference."""
        self.registration.release()
        self.registration = self.bytes = self.memory = None


class _Lease:
    """The NumPy base of an array on a pooled block: when the last array (or view) on it is
    garbage, the block goes back to its pool."""

    #: :func:`~ewoksxpcs.opencl.device.is_pinned` looks for this along an array's bases.
    page_locked = True

    def __init__(self, pool: "_HostPool", block: _HostBlock, shape, dtype: numpy.dtype):
        self._pool, self._block = pool, block
        self.__array_interface__ = {
            "shape": tuple(int(s) for s in shape), "typestr": dtype.str, "version": 3,
            "data": (int(block.bytes.ctypes.data), False)}

    def __del__(self):
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.give_back(self._block)


class _HostPool:
    """A device's page-locked blocks for results: handed out by :meth:`empty`, free ones kept."""

    def __init__(self, dev: OpenCLDevice):
        self.dev = dev
        self._free: list[_HostBlock] = []
        self._total = 0  # bytes of every block, handed out or free
        # Reentrant: a lease collected by the garbage collector while this thread holds the
        # lock gives its block back.
        self._lock = threading.RLock()

    def empty(self, shape, dtype) -> numpy.ndarray | None:
        """An uninitialised array on a block, or None when the pool is full (or the driver
        refused to register more memory)."""
        dtype = numpy.dtype(dtype)
        nbytes = int(numpy.prod(shape)) * dtype.itemsize
        size = -(-nbytes // PAGE_BYTES) * PAGE_BYTES
        with self._lock:
            fits = [b for b in self._free if size <= b.nbytes <= 2 * size]
            block = min(fits, key=lambda b: b.nbytes) if fits else None
            if block is not None:
                self._free.remove(block)
            else:
                while self._free and self._total + size > HOST_POOL_BYTES:
                    # The oldest free block makes room (unregistering waits for the device:
                    # only a full pool does it).
                    old = self._free.pop(0)
                    self._total -= old.nbytes
                    old.close()
                if self._total + size > HOST_POOL_BYTES:
                    return None
                self._total += size  # counted before registering (outside the lock)
        if block is None:
            try:
                block = _HostBlock(self.dev, size)
            except Exception:  # e.g. page-locked memory exhausted: pageable memory works
                with self._lock:
                    self._total -= size
                return None
        return numpy.asarray(_Lease(self, block, shape, dtype))

    def give_back(self, block: _HostBlock) -> None:
        with self._lock:
            self._free.append(block)


def host_result(dev: OpenCLDevice, shape, dtype) -> numpy.ndarray:
    """An uninitialised host array for a result read from ``dev``: in page-locked memory reused
    from run to run when ``dev`` is not a CPU and the array is at least
    :data:`~ewoksxpcs.opencl.device.DOWNLOAD_PINNED_BYTES`, so that reads reach it at bus
    speed (:func:`~ewoksxpcs.opencl.device.is_pinned` is then true); else ``numpy.empty``.

    An ordinary NumPy array for its user; its block returns to the pool once no array refers to
    it any more.
    """
    dtype = numpy.dtype(dtype)
    nbytes = int(numpy.prod(shape)) * dtype.itemsize
    if dev.kind != "cpu" and nbytes >= DOWNLOAD_PINNED_BYTES:
        with _LOCK:
            pool = dev.__dict__.get("host_pool")
            if pool is None:
                pool = dev.host_pool = _HostPool(dev)
        array = pool.empty(shape, dtype)
        if array is not None:
            return array
    return numpy.empty(shape, dtype)
