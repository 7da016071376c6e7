"""The ``auto`` method: pick a backend from the data and the devices present.

Rule (measurements behind it: README, "Benchmarks"):

1. An EventStack, or sparse data (occupancy below ``SPARSE_OCCUPANCY``) → ``opencl-events`` when an
   OpenCL device is there; otherwise ``fft`` (a CPU method that reads events pixel block by block).
2. Dense data → ``opencl-dense`` on a GPU; on CPUs ``matmul`` while Nt ≤ ``MATMUL_MAX_FRAMES``
   (BLAS is fastest on short series) and ``fft`` beyond (O(Nt log Nt) per pixel).

The occupancy of frames given as an array is estimated from a sample of frames; iterables are
not sampled (their first chunk would be consumed) and count as dense.
"""

from __future__ import annotations

import logging
import warnings
from typing import Optional, Tuple

import numpy

from .registry import METHODS

__all__ = ["choose_method", "estimate_occupancy"]

logger = logging.getLogger(__name__)

SPARSE_OCCUPANCY = 0.05
MATMUL_MAX_FRAMES = 500


def estimate_occupancy(data, n_sample: int = 16) -> Optional[float]:
    """Fraction of non-zero pixel-frames, from up to ``n_sample`` frames; None if unknown."""
    from ..engine.events import EventStack
    from ..engine.frames import ArrayFrameSource

    if isinstance(data, EventStack):
        return data.occupancy
    array = data.array if isinstance(data, ArrayFrameSource) else data
    if hasattr(array, "shape") and hasattr(array, "dtype") and len(array.shape) == 3 and array.shape[0]:
        idx = numpy.unique(numpy.linspace(0, array.shape[0] - 1, n_sample).astype(int))
        sample = numpy.stack([numpy.asarray(array[int(i)]) for i in idx])
        return float(numpy.count_nonzero(sample)) / sample.size
    return None


def _n_frames(data) -> Optional[int]:
    n = getattr(data, "n_frames", None)
    if n is None and hasattr(data, "shape") and len(getattr(data, "shape", ())) == 3:
        n = data.shape[0]
    return n


def choose_method(data, binning, device: Optional[str] = None) -> Tuple[str, Optional[str], str]:
    """Return (method name, device, reason) for ``data``."""
    from ..engine.events import EventStack

    opencl_ok, device_kind, why_not = False, None, ""
    if "opencl-dense" in METHODS or "opencl-events" in METHODS:
        try:
            from ..opencl.device import get_device

            dev = get_device(device)
            opencl_ok, device_kind = True, dev.kind
        except Exception as e:  # no platform, or the device asked for is absent
            why_not = str(e)
    if device not in (None, "cpu", "auto") and not opencl_ok:
        warnings.warn(f"auto: OpenCL device {device!r} unavailable ({why_not}); using the CPU",
                      RuntimeWarning, stacklevel=3)
    occupancy = estimate_occupancy(data)
    n_frames = _n_frames(data)
    sparse = isinstance(data, EventStack) or (occupancy is not None and occupancy < SPARSE_OCCUPANCY)
    occ = "unknown" if occupancy is None else f"{occupancy:.3g}"
    if sparse:
        if opencl_ok and "opencl-events" in METHODS:
            return "opencl-events", device, f"sparse data (occupancy {occ}) and an OpenCL {device_kind} device"
        cpu = "fft" if "fft" in METHODS else "reference"
        reason = f"sparse data (occupancy {occ}), no OpenCL device ({why_not or 'not built'}): CPU {cpu}"
        if why_not:
            warnings.warn(f"auto: {reason}", RuntimeWarning, stacklevel=3)
        return cpu, None, reason
    if opencl_ok and device_kind == "gpu" and "opencl-dense" in METHODS:
        return "opencl-dense", device, f"dense data (occupancy {occ}) and an OpenCL GPU"
    if n_frames is not None and n_frames <= MATMUL_MAX_FRAMES and "matmul" in METHODS:
        return "matmul", None, f"dense data (occupancy {occ}), Nt = {n_frames} <= {MATMUL_MAX_FRAMES}: BLAS"
    return ("fft" if "fft" in METHODS else "reference"), None, (
        f"dense data (occupancy {occ}), Nt = {n_frames}: FFT is O(Nt log Nt) per pixel")
