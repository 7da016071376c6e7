"""Correlation backends behind one registry keyed by (mode, backend), and the public :func:`correlate`.

Linear mode: ``reference`` (NumPy oracle), ``matmul`` (BLAS), ``fft`` (numpy / pyFFTW),
``opencl-dense`` and ``opencl-events`` (OpenCL), chosen by name or by ``auto``
(:mod:`ewoksxpcs.correlators.auto`). Multi-tau and two-time modes: ``numpy`` and ``opencl``
(:mod:`ewoksxpcs.correlators.modes`).
"""

from __future__ import annotations

import logging
from typing import Optional

from ..engine.options import check_options
from ..engine.qmask import DEFAULT_GROUPS, as_binning
from ..engine.result import CorrelationResult
from .registry import (BACKENDS, METHODS, MODES, available_backends, available_methods,
                       get_backend, get_correlator_class, register)

__all__ = [
    "correlate",
    "create_correlator",
    "available_methods",
    "available_backends",
    "get_correlator_class",
    "get_backend",
    "register",
    "METHODS",
    "BACKENDS",
    "MODES",
    "multitau",
    "create_multitau",
    "twotime",
    "create_twotime",
]

logger = logging.getLogger(__name__)

# Importing a backend module registers it; the order is the listing order.
from . import reference, matmul, fft, opencl_dense, opencl_events, cpu_events  # noqa: E402,F401
from .modes import create_multitau, create_twotime, multitau, twotime  # noqa: E402


def create_correlator(qmask, method: str = "auto", device: Optional[str] = None, data=None,
                      **options):
    """Build a correlator object by registry name (``auto`` needs ``data`` to decide).

    Returns
    -------
    Correlator
        Call ``.correlate(data)`` on it, as often as needed.
    """
    from .auto import choose_method

    check_options(options)
    n_groups = options.pop("n_groups", DEFAULT_GROUPS)
    bad_pixels = options.pop("bad_pixels", None)
    binning = as_binning(qmask, n_groups=n_groups, bad_pixels=bad_pixels)
    reason = ""
    if method == "auto":
        method, device, reason = choose_method(data, binning, device)
        logger.info("auto chose %r: %s", method, reason)
    cls = get_correlator_class(method)
    correlator = cls(binning, device=device, **options)
    correlator.auto_reason = reason
    return correlator


def correlate(frames, qmask, method: str = "auto", device: Optional[str] = None,
              mode: str = "linear", **options) -> CorrelationResult:
    """Correlate a frame stack (or an EventStack): g2(q, τ) for every bin of ``qmask``.

    Parameters
    ----------
    frames : ndarray (Nt, Ny, Nx), iterable of chunks (n, Ny, Nx), FrameSource or EventStack
        Pixel values (counts); int8/uint8/int16/uint16/int32/uint32/float32.
    qmask : ndarray (Ny, Nx) of int, or Binning
        Label image: 0 = unused, positive values = bins (result rows follow the sorted values).
    method : str
        A registry name (see :func:`available_methods`) or ``"auto"``.
    device : str, optional
        OpenCL device for OpenCL methods: "cpu", "gpu" or "platform:device" (indices).
    mode : {"linear", "multitau", "twotime"}
        ``linear``: every lag 0 … Nt−1 (a :class:`CorrelationResult`). ``multitau``: log-spaced
        lags (:func:`ewoksxpcs.correlators.modes.multitau`, a MultiTauResult; options
        ``lags_per_level``, ``normalisation`` "standard"|"symmetric", ``max_levels``).
        ``twotime``: two-time maps (:func:`ewoksxpcs.correlators.modes.twotime`, a TwoTimeResult;
        options ``twotime_bins`` (labels), ``time_bin`` (frames), ``max_frames``,
        ``n_segments``). For these two modes ``method`` is "auto", "numpy" or "opencl"
        (linear-lag names map to them), and OpenCL takes ``max_device_memory`` (bytes).
    **options
        ``n_groups`` (pixel groups per bin for the error bars), ``bad_pixels`` (bool image),
        ``bad_frames`` (frame indices, "10,200-250" or a bool mask: excluded from every pair,
        see :mod:`ewoksxpcs.engine.badframes`), ``auto_bad_frames`` (True or the threshold k: detect
        more) and backend options (e.g. ``chunk_frames``).

    Returns
    -------
    CorrelationResult
        ``.g2`` and ``.g2_err`` (n_bins, Nt) float64, ``.lags`` (Nt,) frames, ``.labels``,
        ``.n2``, ``.s2``, ``.n_pixels``, ``.method``, ``.device``.
    """
    bad_frames, auto = options.pop("bad_frames", None), options.pop("auto_bad_frames", None)
    check_options(options)  # before any mode: chunk_frames=-5 must not read nothing
    if bad_frames is not None or auto:
        from ..engine.badframes import apply_bad_frames

        qmask = as_binning(qmask, n_groups=options.pop("n_groups", DEFAULT_GROUPS),
                           bad_pixels=options.pop("bad_pixels", None))
        frames, excluded = apply_bad_frames(frames, bad_frames, auto, qmask)
        result = correlate(frames, qmask, method, device, mode, **options)
        result.info["excluded_frames"] = excluded["mask"]
        return result
    if mode == "multitau":
        return multitau(frames, qmask, method=method, device=device, **options)
    if mode == "twotime":
        bins = options.pop("twotime_bins", None)
        return twotime(frames, qmask, bins=bins, method=method, device=device, **options)
    if mode != "linear":
        raise ValueError(f"unknown correlation mode {mode!r}; valid: {', '.join(MODES)}")
    correlator = create_correlator(qmask, method=method, device=device, data=frames, **options)
    info = {"auto_reason": correlator.auto_reason} if correlator.auto_reason else {}
    return correlator.correlate(frames, **info)
