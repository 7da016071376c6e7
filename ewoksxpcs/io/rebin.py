"""Re-binning after the fact: a new q/φ partition without re-reading the raw frames.

What is exact, and from what
----------------------------
g2 of a bin B is N_B·n2_B(τ)/s2_B(τ), with n2_B = Σ_{p∈B} Σ_t I(t,p)·I(t+τ,p) and
s2_B = Σ_t S_B(t)·S_B(t+τ), S_B(t) = Σ_{p∈B} I(t,p); the error bars come from the same sums over
pixel groups of each bin (contiguous runs of the bin's pixels in raster order).

- Per-pixel n2 (n_pix, n_τ) would give n2_B exactly for any B, but not s2_B: S_B(t) needs the
  pixels' time series, unless B is a union of cells whose S(t) was stored, and the error bars'
  groups of a new bin are not unions of stored cells. Per-pixel n2 and frame sums therefore do
  not give a direct run's g2 and errors on a new partition; they are not stored.
- The per-pixel time series do: they are the events (pixel-major non-zero values and their
  frames, :class:`~ewoksxpcs.engine.events.EventStack`), the size of the compressed data at XPCS count
  rates. They come from an events file (``ewoksxpcs run --events-file``) or from a result saved
  with them (``--keep-events``: ``entry/xpcs/events``). Correlating them on a new partition is
  the direct run on that partition (events correlate exactly like the frames), in every mode
  (linear, multi-tau, two-time), g2 and errors identical.

Pixels masked as bad when the events were made are not in them and stay masked: the new
partition's bins lose them, exactly as a direct run with the same mask.
"""

from __future__ import annotations

import os
from typing import Dict, Tuple

__all__ = ["RESULT_EVENTS_PATH", "pixel_series", "recorded_settings"]

#: Where a result file keeps its per-pixel time series.
RESULT_EVENTS_PATH = "entry/xpcs/events"


def pixel_series(source: str) -> Tuple[str, str]:
    """The URL of the per-pixel time series of ``source`` and what it is.

    Parameters
    ----------
    source : str
        An ewoksxpcs events file, or a result file saved with its events (``--keep-events``)
        or made with ``--events-file`` (the events file recorded in it, if it still exists).

    Returns
    -------
    (url, kind)
        ``file.h5::/group`` of the events, and "events file", "result" or "recorded events
        file".

    Raises
    ------
    FileNotFoundError, ValueError
        No such file; a file holding no per-pixel time series (one line saying how to get them).
    """
    import h5py

    from .load import _check_file, is_events_file, parse_url

    filename, path, _ = parse_url(source)
    _check_file(filename)
    if is_events_file(filename, path or "events"):
        return f"{os.path.abspath(filename)}::/{path or 'events'}", "events file"
    try:
        f = h5py.File(filename, "r")
    except OSError as e:
        raise ValueError(f"cannot read {filename!r} as HDF5: {e}") from None
    with f:
        if is_events_file(filename, RESULT_EVENTS_PATH):
            return f"{os.path.abspath(filename)}::/{RESULT_EVENTS_PATH}", "result"
        recorded = f.get("entry/xpcs/parameters/compact/events_file")
        if recorded is not None:
            name = recorded[()]
            name = name.decode() if isinstance(name, bytes) else str(name)
            if os.path.isfile(name) and is_events_file(name):
                return f"{name}::/events", "recorded events file"
    raise ValueError(
        f"{filename!r} holds no per-pixel time series: re-binning needs an events file or a "
        "result saved with them (ewoksxpcs run --keep-events, or --events-file)")


def recorded_settings(filename: str) -> Dict[str, object]:
    """Correlation settings recorded in a result file, as ``run`` options.

    ``--mode``, ``--lags-per-level`` and ``--normalisation`` (multi-tau), ``--time-bin``
    (two-time), ``--groups``, ``--frame-period``; empty for an events file. Two-time bin
    selections refer to the old partition and are not carried over.
    """
    import h5py

    out: Dict[str, object] = {}
    with h5py.File(filename, "r") as f:
        x = f.get("entry/xpcs")
        if x is None or "mode" not in x:
            return out

        def text(node):
            v = node[()]
            return v.decode() if isinstance(v, bytes) else v

        mode = text(x["mode"])
        out["--mode"] = mode
        if mode == "multitau":
            out["--lags-per-level"] = int(x["g2/lags_per_level"][()])
            out["--normalisation"] = text(x["g2/normalisation"])
        if mode == "twotime":
            out["--time-bin"] = int(x["twotime/time_bin"][()])
        groups = x.get("parameters/correlate/n_groups")
        if groups is not None and groups.dtype.kind in "iu":
            out["--groups"] = int(groups[()])
        if "frame_period" in x:
            out["--frame-period"] = float(x["frame_period"][()])
    return out
