"""Results in the ESRF ID02 ``XPCSResultFile_v2.0`` layout, as ``xpcsutilities`` reads them.

Paths and shapes follow the reader's source (``xpcsutilities.tools.result_file.
XPCSResultFileNew`` and its graphs); one analysis key per result (``linear``, ``multitau`` or
``twotime``), ``n_q`` bins, τ > 0 only, q in nm⁻¹, times in s (frames when the frame period is
unknown, ``units`` says which)::

    /  @MagicString = "XPCSResultFile_v2.0"
    /entry_0000/parameters/       title, program, frame_period, q_unit, geometry (unknown
                                  when the q-mask was given directly), qmap (Ny, Nx) q per
                                  pixel of its bin (nm⁻¹, 0 outside)
    /entry_0000/acquisition/      timestamp (s since the epoch), n_frames
    /entry_0000/time_averaged/    frame_average_norm (Ny, Nx) mean counts per pixel per frame;
        azimuthal_average/q, Intensity   (n_q,) mean counts per pixel per frame of each bin
    /entry_0000/correlations/<key>/
        g2/lag (n_τ,), g2/cf (n_q, n_τ), g2/err (n_q, n_τ)
        parameters/q (n_q,) nm⁻¹ (mean q of the bin), q_nominal, labels, n_pixels
        roi_masks (n_q, Ny, Nx) bool
        twotime/lag (n_l,), age (n_a,), ttcf (n_q, n_a, n_l)       (two-time only)

The two-time maps C(t1, t2) are stored by lag k = t2 − t1 and age: ``ttcf[q, a, k] =
C[q, t, t + k]`` with a = t + k // 2 (age = (t1 + t2)/2, rounded down by half a time bin for odd
k); NaN outside the measured triangle.
"""

from __future__ import annotations

import json
import time

import numpy

from ..engine.twotime import GZIP_MAPS_MAX_BYTES
from .formats import ResultView

__all__ = ["write_id02", "MAGIC", "lag_age"]

MAGIC = "XPCSResultFile_v2.0"


def lag_age(C: numpy.ndarray) -> numpy.ndarray:
    """Two-time maps (n, nT, nT) → (n, nT, nT) indexed [q, age, lag] (see the module doc)."""
    C = numpy.asarray(C)
    n, nT = C.shape[0], C.shape[-1]
    out = numpy.full((n, nT, nT), numpy.nan, dtype=numpy.float32)
    for k in range(nT):
        t = numpy.arange(nT - k)
        out[:, t + k // 2, k] = C[:, t, t + k]
    return out


def write_id02(filename: str, view: ResultView, title: str = "XPCS g2") -> None:
    """Write ``view`` to ``filename`` (a new or temporary file) in the ID02 layout."""
    import h5py

    if view.qmask is None:
        raise ValueError("the ID02 layout needs the q-mask (label image)")
    key = view.mode
    scale = view.frame_period or 1.0
    unit = "s" if view.frame_period else "frame"
    labels = view.labels
    with h5py.File(filename, "w") as f:
        f.attrs["MagicString"] = MAGIC
        f.attrs["creator"] = "ewoksxpcs (ESRF ID02 layout for xpcsutilities)"
        e = f.create_group("entry_0000")
        p = e.create_group("parameters")
        p["title"] = title
        p["program"] = "ewoksxpcs"
        p["frame_period"] = view.frame_period if view.frame_period else numpy.nan
        p["q_unit"] = "nm^-1" if view.q_known else "unknown (bin labels)"
        p["geometry"] = json.dumps(view.geometry) if view.geometry else (
            "unknown (q-mask given directly)")
        lut = numpy.zeros(int(max(view.qmask.max(), labels.max())) + 1)
        lut[labels] = view.q if view.q_known else 0.0
        p.create_dataset("qmap", data=lut[numpy.clip(view.qmask, 0, None)],
                         compression="gzip").attrs["units"] = "nm^-1"
        a = e.create_group("acquisition")
        a["timestamp"] = int(time.time())
        a["n_frames"] = view.n_frames
        ta = e.create_group("time_averaged")
        if view.mean_image is not None:
            ta.create_dataset("frame_average_norm", data=view.mean_image, compression="gzip")
        az = ta.create_group("azimuthal_average")
        az["q"] = view.q
        az["Intensity"] = view.mean_intensity

        c = e.create_group(f"correlations/{key}")
        g = c.create_group("g2")
        g.create_dataset("lag", data=view.lags * scale).attrs["units"] = unit
        g["cf"] = view.g2
        g["err"] = view.g2_err
        cp = c.create_group("parameters")
        cp.create_dataset("q", data=view.q).attrs["units"] = "nm^-1" if view.q_known else ""
        if view.q_nominal is not None:
            cp.create_dataset("q_nominal", data=view.q_nominal).attrs["units"] = "nm^-1"
        if view.chi is not None:
            cp.create_dataset("chi", data=view.chi).attrs["units"] = "deg"
        cp["labels"] = labels
        cp["n_pixels"] = view.n_pixels
        roi = c.create_dataset("roi_masks", shape=(labels.size,) + view.qmask.shape, dtype=bool,
                               chunks=(1,) + view.qmask.shape, compression="gzip")
        for i, label in enumerate(labels):
            roi[i] = view.qmask == label
        if key == "twotime":
            r = view.result
            tt = c.create_group("twotime")
            nT = r.C.shape[-1]
            step = r.time_bin * scale
            tt.create_dataset("lag", data=numpy.arange(nT) * step).attrs["units"] = unit
            tt.create_dataset("age", data=numpy.asarray(r.times) * scale).attrs["units"] = unit
            tt.create_dataset("ttcf", data=lag_age(r.C), chunks=(1, nT, nT),
                              compression="gzip" if r.C.nbytes <= GZIP_MAPS_MAX_BYTES else None)
