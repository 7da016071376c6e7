"""Data in and out: readers of frame files (HDF5/NeXus, Bliss scans, EDF/TIFF via fabio, event
files), HDF5 chunk access and the bitshuffle-LZ4 chunk format, and the writers of results.

Imports only :mod:`ewoksxpcs.engine` (the frame sources and event stacks the readers return).
"""
