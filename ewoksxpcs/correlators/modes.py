"""Multi-tau and two-time modes: choose a backend of the (mode, backend) registry and run it.

The NumPy implementations live in :mod:`ewoksxpcs.engine.multitau` and
:mod:`ewoksxpcs.engine.twotime`, the OpenCL ones in :mod:`.opencl_multitau` and
:mod:`.opencl_twotime`; each registers here under ("multitau" | "twotime", "numpy" | "opencl").
``auto`` picks OpenCL on a GPU (or on the device named), NumPy otherwise.
"""

from __future__ import annotations

from typing import Optional

from ..engine.multitau import DEFAULT_LAGS_PER_LEVEL, MultiTauResult, NumpyMultiTau
from ..engine.twotime import NumpyTwoTime, TwoTimeResult
from .opencl_multitau import OpenCLMultiTau
from .opencl_twotime import OpenCLTwoTime
from .registry import get_backend, register

__all__ = ["resolve_method", "create_multitau", "multitau", "create_twotime", "twotime"]

for _cls in (NumpyMultiTau, OpenCLMultiTau):
    register(_cls, mode="multitau")
for _cls in (NumpyTwoTime, OpenCLTwoTime):
    register(_cls, mode="twotime")


def _opencl_gpu_available(device) -> bool:
    try:
        from ..opencl.device import get_device

        dev = get_device(device)
    except Exception:
        return False
    return dev.kind == "gpu" or device not in (None, "auto")


def create_multitau(qmask, method: str = "auto", device=None, **options):
    """Build a multi-tau correlator: ``method`` "numpy", "opencl" or "auto".

    ``auto`` uses OpenCL on a GPU (or on the device named by ``device``), NumPy otherwise. Names of
    the linear-lag registry are accepted too: ``opencl-*`` → "opencl", others → "numpy".
    """
    method = resolve_method(method, device, "multi-tau")
    cls = get_backend("multitau", method)
    if method == "numpy":
        options.pop("max_device_memory", None)
        return cls(qmask, **options)
    return cls(qmask, device=device, **options)


def resolve_method(method: str, device, what: str) -> str:
    """Map a multi-tau/two-time ``method`` to "numpy" or "opencl".

    ``auto`` uses OpenCL on a GPU (or on the device named by ``device``), NumPy otherwise.
    Names of the linear-lag registry are accepted: ``opencl-*`` → "opencl", others → "numpy".
    """
    if method == "auto":
        method = "opencl" if _opencl_gpu_available(device) else "numpy"
    elif isinstance(method, str) and method.startswith("opencl"):
        method = "opencl"
    elif method in ("reference", "matmul", "fft", "cpu"):
        method = "numpy"
    if method not in ("numpy", "opencl"):
        raise ValueError(f"unknown {what} method {method!r}; valid: auto, numpy, opencl")
    if method == "numpy" and device not in (None, "cpu", "auto"):
        raise ValueError(f"{what} method 'numpy' runs on the CPU; device {device!r} is not allowed")
    return method


def multitau(frames, qmask, lags_per_level: int = DEFAULT_LAGS_PER_LEVEL,
             normalisation: str = "standard", method: str = "auto", device=None,
             frame_period: Optional[float] = None, **options) -> MultiTauResult:
    """Multi-tau g2(q, τ) of a frame stack or an EventStack.

    Parameters
    ----------
    frames : ndarray (Nt, Ny, Nx), iterable of chunks, FrameSource or EventStack
        Counts; int8 … uint32 or float32.
    qmask : ndarray (Ny, Nx) of int, or Binning
    lags_per_level : int
        m, even >= 2 (default 8).
    normalisation : {"standard", "symmetric"}
        See :mod:`ewoksxpcs.engine.multitau`.
    method : {"auto", "numpy", "opencl"}
    device : str, optional
        OpenCL device ("gpu", "cpu", "P:D").
    frame_period : float, optional
        Seconds between frames.
    **options
        ``max_levels``, ``n_groups``, ``bad_pixels``, ``chunk_frames``; OpenCL:
        ``max_device_memory`` (bytes).

    Returns
    -------
    MultiTauResult
    """
    correlator = create_multitau(qmask, method=method, device=device,
                                 lags_per_level=lags_per_level, normalisation=normalisation,
                                 **options)
    return correlator.correlate(frames, frame_period=frame_period)


def create_twotime(qmask, method: str = "auto", device=None, **options):
    """Build a two-time correlator: ``method`` "numpy", "opencl" or "auto" (as multi-tau)."""
    method = resolve_method(method, device, "two-time")
    cls = get_backend("twotime", method)
    if method == "numpy":
        options.pop("max_device_memory", None)
        return cls(qmask, **options)
    return cls(qmask, device=device, **options)


def twotime(frames, qmask, bins=None, time_bin: Optional[int] = None, method: str = "auto",
            device=None, frame_period: Optional[float] = None, **options) -> TwoTimeResult:
    """Two-time correlation maps of selected bins, with g2 and partial g2 derived from them.

    Parameters
    ----------
    frames : ndarray (Nt, Ny, Nx), iterable of chunks, FrameSource or EventStack
    qmask : ndarray (Ny, Nx) of int, or Binning
    bins : sequence of int, optional
        qmask labels to map (default: all bins; each costs nT² float32).
    time_bin : int, optional
        Frames per time bin; default: the smallest with nT <= ``max_frames``.
    method : {"auto", "numpy", "opencl"}
    device : str, optional
        OpenCL device.
    frame_period : float, optional
        Seconds between frames.
    **options
        ``max_frames`` (default 10 000), ``n_segments`` (default 4), ``n_groups``,
        ``bad_pixels``, ``chunk_frames``; OpenCL: ``max_device_memory`` (bytes).

    Returns
    -------
    TwoTimeResult
    """
    correlator = create_twotime(qmask, method=method, device=device, bins=bins,
                                time_bin=time_bin, **options)
    return correlator.correlate(frames, frame_period=frame_period)
