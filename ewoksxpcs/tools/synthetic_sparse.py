"""Write frames as ESRF sparse frames (``frame_ptr``/``index``/``intensity``), for tests.

Two layouts of the same group (see :mod:`ewoksxpcs.io.sparse`):

- ``"pyfai"``: a file fabio's ``SparseImage`` opens (root ``default`` → ``entry_0000``, whose
  ``pyFAI_sparse_frames``/``default`` attribute names the NXdata ``sparse_frames`` holding a
  float32 ``mask`` (0 = valid, NaN = masked), ``dummy`` and the three arrays);
- ``"bliss"``: a Bliss-like scan ``/1.1`` (:func:`ewoksxpcs.tools.synthetic.write_bliss_scan_header`)
  with the group at ``/1.1/instrument/<det>/sparse`` and the frame period in the detector's
  acquisition metadata and as the group's ``frame_period`` attribute.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy

from ..engine.frames import as_frame_source

__all__ = ["write_sparse_frames"]


def write_sparse_frames(filename, frames, layout: str = "pyfai", mask=None,
                        frame_period: Optional[float] = None, detector: str = "eiger",
                        chunk_frames: int = 256) -> str:
    """Write ``frames`` (array (Nt, Ny, Nx) or frame source) as sparse frames; return the
    path of the sparse group.

    Parameters
    ----------
    mask : ndarray (Ny, Nx) of bool, optional
        Pixels masked in the file (True = masked); their values are still written.
    """
    import h5py

    from .synthetic import write_bliss_scan_header

    if layout not in ("pyfai", "bliss"):
        raise ValueError(f"layout must be 'pyfai' or 'bliss', got {layout!r}")
    source = as_frame_source(frames)
    shape = tuple(source.frame_shape)
    with h5py.File(os.fspath(filename), "w") as f:
        if layout == "pyfai":
            f.attrs["default"] = "entry_0000"
            entry = f.create_group("entry_0000")
            entry.attrs.update(NX_class="NXentry", default="sparse_frames",
                               pyFAI_sparse_frames="sparse_frames")
            g = entry.create_group("sparse_frames")
            g.attrs["NX_class"] = "NXdata"
            entry["sparsify/configuration/data"] = json.dumps({"sparsify": {}})
        else:
            _, det = write_bliss_scan_header(f, "1.1", detector, "sparse timescan",
                                             source.n_frames, frame_period or 1.0,
                                             frame_period or 1.0, "ewoksxpcs synthetic_sparse")
            g = det.create_group("sparse")
        m = numpy.zeros(shape, dtype=numpy.float32)
        if mask is not None:
            m[numpy.asarray(mask, dtype=bool)] = numpy.nan
        g["mask"] = m
        g["dummy"] = 0
        g.attrs["frame_shape"] = numpy.asarray(shape, dtype=numpy.int64)
        if frame_period is not None:
            g.attrs["frame_period"] = float(frame_period)
        index = g.create_dataset("index", shape=(0,), maxshape=(None,), dtype=numpy.uint32,
                                 chunks=(65536,))
        values = g.create_dataset("intensity", shape=(0,), maxshape=(None,), dtype=source.dtype,
                                  chunks=(65536,))
        ptr = [0]
        for chunk in source.iter_chunks(chunk_frames):
            flat = chunk.reshape(chunk.shape[0], -1)
            t, pix = numpy.nonzero(flat)  # frame-major, pixels increasing within a frame
            n = ptr[-1]
            index.resize((n + pix.size,))
            values.resize((n + pix.size,))
            index[n:] = pix
            values[n:] = flat[t, pix]
            ptr.extend((n + numpy.cumsum(numpy.bincount(t, minlength=flat.shape[0]))).tolist())
        g["frame_ptr"] = numpy.asarray(ptr, dtype=numpy.int64)
        return g.name
