"""Multi-tau and two-time modes: choose a backend of the (mode, backend) registry and run it.

The NumPy implementations live in :mod:`ewoksxpcs.engine.multitau` and
:mod:`ewoksxpcs.engine.twotime`, the OpenCL ones in :mod:`.opencl_multitau` and
:mod:`.opencl_twotime`; each registers here under ("multitau" | "twotime", "numpy" | "opencl").
OpenCL backends: ``opencl`` streams frames to the device (dense path), ``opencl-events``
compacts them on the device and correlates the device-resident events (events path; the same
data path as the linear ``opencl-events``). ``auto`` with the data decides by the cost model
(:func:`ewoksxpcs.correlators.auto.choose`); without data, OpenCL on a GPU (or on the device
named), NumPy otherwise.
"""

from __future__ import annotations

from typing import Optional

from ..engine.multitau import DEFAULT_LAGS_PER_LEVEL, MultiTauResult, NumpyMultiTau
from ..engine.twotime import NumpyTwoTime, TwoTimeResult
from ..engine.qmask import DEFAULT_GROUPS, as_binning
from .opencl_multitau import OpenCLEventsMultiTau, OpenCLMultiTau
from .opencl_twotime import OpenCLEventsTwoTime, OpenCLTwoTime
from .registry import available_backends, get_backend, register

__all__ = ["resolve_method", "create_multitau", "multitau", "create_twotime", "twotime"]

for _cls in (NumpyMultiTau, OpenCLMultiTau, OpenCLEventsMultiTau):
    register(_cls, mode="multitau")
for _cls in (NumpyTwoTime, OpenCLTwoTime, OpenCLEventsTwoTime):
    register(_cls, mode="twotime")


def _opencl_gpu_available(device) -> bool:
    """Whether ``device`` resolves to an OpenCL device that is not a CPU.

    ``auto`` never runs multi-tau or two-time on an OpenCL CPU device (PoCL): on the 2-core
    machine NumPy took 43–49 s where OpenCL took 52–66 s for multi-tau (256×256×20 000), and
    two-time on OpenCL-on-CPU was 26–51× slower than NumPy (README, "CPU benchmarks").
    """
    if device == "cpu":
        return False
    try:
        from ..opencl.device import get_device

        dev = get_device(device)
    except Exception:
        return False
    return dev.kind != "cpu"


def create_multitau(qmask, method: str = "auto", device=None, data=None, **options):
    """Build a multi-tau correlator: ``method`` "numpy", "opencl", "opencl-events" or "auto".

    ``auto`` decides by the cost model from ``data`` when given, else OpenCL on a GPU (or on the
    device named by ``device``), NumPy otherwise. Names of the linear-lag registry are accepted
    too: ``opencl-events`` → "opencl-events", other ``opencl-*`` → "opencl", others → "numpy".
    The correlator's ``auto_reason`` says why ``auto`` chose it.
    """
    return _create("multitau", qmask, method, device, data, options)


def _create(mode, qmask, method, device, data, options):
    """Shared by :func:`create_multitau` and :func:`create_twotime`."""
    reason = ""
    if method == "auto" and data is not None:
        from .auto import choose

        binning = as_binning(qmask, n_groups=options.get("n_groups", DEFAULT_GROUPS),
                             bad_pixels=options.get("bad_pixels"))
        options.pop("n_groups", None)
        options.pop("bad_pixels", None)
        choice = choose(mode, data, binning, device)
        method, reason, qmask = choice.method, choice.reason, binning
        if method == "numpy":
            device = None
    method = resolve_method(method, device, {"multitau": "multi-tau", "twotime": "two-time"}[mode])
    cls = get_backend(mode, method)
    if method == "numpy":
        options.pop("max_device_memory", None)
        correlator = cls(qmask, **options)
    else:
        correlator = cls(qmask, device=device, **options)
    correlator.auto_reason = reason
    return correlator


def resolve_method(method: str, device, what: str) -> str:
    """Map a multi-tau/two-time ``method`` to "numpy", "opencl" or "opencl-events".

    ``auto`` (without data) uses OpenCL on a GPU (or another non-CPU device named by
    ``device``), never an OpenCL CPU device: NumPy there (see :func:`_opencl_gpu_available`).
    Names of the linear-lag registry are accepted: ``opencl-events`` stays, ``opencl-dense`` →
    "opencl", others → "numpy".
    """
    if method == "auto":
        method = "opencl" if _opencl_gpu_available(device) else "numpy"
        if method == "numpy" and device not in (None, "cpu", "auto"):
            device = None  # an OpenCL CPU device named: NumPy runs on that CPU
    elif method == "opencl-dense":
        method = "opencl"
    elif method in ("reference", "matmul", "fft", "cpu"):
        method = "numpy"
    valid = available_backends("multitau")
    if method not in valid:
        raise ValueError(f"unknown {what} method {method!r}; valid: auto, {', '.join(valid)}")
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
    method : {"auto", "numpy", "opencl", "opencl-events"}
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
    correlator = create_multitau(qmask, method=method, device=device, data=frames,
                                 lags_per_level=lags_per_level, normalisation=normalisation,
                                 **options)
    info = {"auto_reason": correlator.auto_reason} if correlator.auto_reason else {}
    return correlator.correlate(frames, frame_period=frame_period, **info)


def create_twotime(qmask, method: str = "auto", device=None, data=None, **options):
    """Build a two-time correlator: ``method`` "numpy", "opencl", "opencl-events" or "auto" (as
    :func:`create_multitau`; ``auto`` never picks an OpenCL CPU device)."""
    return _create("twotime", qmask, method, device, data, options)


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
    method : {"auto", "numpy", "opencl", "opencl-events"}
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
    correlator = create_twotime(qmask, method=method, device=device, data=frames, bins=bins,
                                time_bin=time_bin, **options)
    info = {"auto_reason": correlator.auto_reason} if correlator.auto_reason else {}
    return correlator.correlate(frames, frame_period=frame_period, **info)
