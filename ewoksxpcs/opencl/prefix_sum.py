"""Exclusive prefix sums on an OpenCL device (``kernels/scan.cl``).

Used where per-item counts computed on the device become offsets on the device (compaction of
frames into events): two launches and one small host step on the group totals, whose sum the
caller gets back (it needs the total to size the next buffers anyway); or, with
:meth:`DeviceScan.on_device`, three launches and no host step (the event correlator's task plan,
whose host copies would queue behind the events' upload).
"""

from __future__ import annotations

import numpy

from .device import OpenCLDevice, get_kernel, power_of_two_work_group

__all__ = ["DeviceScan"]


class DeviceScan:
    """Exclusive scan of int32 (or int64) counts into int64 offsets, on one device.

    Parameters
    ----------
    dev : OpenCLDevice
    count_type : {"int", "long"}
        OpenCL type of the counts: int32 or int64.
    """

    def __init__(self, dev: OpenCLDevice, count_type: str = "int"):
        if count_type not in ("int", "long"):
            raise ValueError(f"count_type must be 'int' or 'long', got {count_type!r}")
        self.dev = dev
        ((_, defines),) = self.programs(dev, count_type)
        self.wg, self.items = defines["WG"], defines["ITEMS"]
        self._partials = get_kernel(dev, "scan.cl", "scan_partials", defines)
        self._apply = get_kernel(dev, "scan.cl", "scan_apply", defines)
        self._groups = get_kernel(dev, "scan.cl", "scan_groups", defines)
        self._cap = 0
        self._d_partial = self._d_prefix = None

    @staticmethod
    def programs(dev: OpenCLDevice, count_type: str = "int") -> list:
        """[(file, defines)] of the scan's program (:func:`~.device.build_in_background`)."""
        defines = {"WG": power_of_two_work_group(dev, gpu=256, cpu=16), "ITEMS": 16}
        if count_type == "long":
            defines["COUNT_T"] = "long"
        return [("scan.cl", defines)]

    def _buffers(self, n_groups: int) -> None:
        import pyopencl

        if n_groups > self._cap:
            mf = pyopencl.mem_flags
            self._cap = n_groups
            self._d_partial = pyopencl.Buffer(self.dev.context, mf.READ_WRITE, 8 * n_groups)
            self._d_prefix = pyopencl.Buffer(self.dev.context, mf.READ_WRITE, 8 * n_groups)

    def on_device(self, queue, d_counts, n: int, d_offsets) -> None:
        """As calling the scan, without a host step: nothing is read or written by the host, so
        no copy waits behind other copies in flight (the total stays in offsets[n]).

        Parameters
        ----------
        queue : pyopencl.CommandQueue
            In-order queue; the scan's buffers are reused by the next call on this queue.
        d_counts : pyopencl.Buffer
            (n,) int32 (int64 for ``count_type="long"``), non-negative.
        n : int
        d_offsets : pyopencl.Buffer
            (n + 1,) int64, written.
        """
        span = self.wg * self.items
        n_groups = max(1, -(-int(n) // span))
        self._buffers(n_groups)
        g = (n_groups * self.wg,), (self.wg,)
        self._partials(queue, *g, d_counts, numpy.int64(n), self._d_partial)
        self._groups(queue, (self.wg,), (self.wg,), self._d_partial, numpy.int32(n_groups),
                     self._d_prefix, d_offsets, numpy.int64(n))
        if n:
            self._apply(queue, *g, d_counts, numpy.int64(n), self._d_prefix, d_offsets)

    def __call__(self, queue, d_counts, n: int, d_offsets) -> int:
        """Write offsets[0 … n] (offsets[n] = total) of counts[0 … n-1]; return the total.

        Parameters
        ----------
        queue : pyopencl.CommandQueue
            In-order queue; the call waits for the group totals (one small read).
        d_counts : pyopencl.Buffer
            (n,) int32 (int64 for ``count_type="long"``), non-negative.
        n : int
        d_offsets : pyopencl.Buffer
            (n + 1,) int64, written.

        Returns
        -------
        int
            Sum of the counts.
        """
        import pyopencl

        span = self.wg * self.items
        n_groups = max(1, -(-int(n) // span))
        self._buffers(n_groups)
        partial = numpy.empty(n_groups, dtype=numpy.int64)
        if n:
            self._partials(queue, (n_groups * self.wg,), (self.wg,), d_counts, numpy.int64(n),
                           self._d_partial)
            pyopencl.enqueue_copy(queue, partial, self._d_partial)
        else:
            partial[:] = 0
        prefix = numpy.zeros(n_groups + 1, dtype=numpy.int64)
        numpy.cumsum(partial, out=prefix[1:])
        total = int(prefix[-1])
        pyopencl.enqueue_copy(queue, self._d_prefix, prefix[:-1], is_blocking=False)
        if n:
            self._apply(queue, (n_groups * self.wg,), (self.wg,), d_counts, numpy.int64(n),
                        self._d_prefix, d_offsets)
        pyopencl.enqueue_copy(queue, d_offsets, prefix[-1:], dst_offset=8 * int(n),
                              is_blocking=True)  # prefix must outlive the copies
        return total
