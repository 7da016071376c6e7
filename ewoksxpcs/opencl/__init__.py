"""OpenCL devices: context, buffers and kernels (:mod:`.device`; PoCL set-up in :mod:`.pocl_cpu`),
and the host side of the kernel families that are not correlators: bitshuffle-LZ4 decoding,
prefix sums, event compaction.

The OpenCL correlation backends live with the other backends in :mod:`ewoksxpcs.correlators`.
Imports :mod:`ewoksxpcs.engine` and :mod:`ewoksxpcs.io`.
"""
