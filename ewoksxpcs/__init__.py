"""ewoksxpcs: XPCS correlation (g2, error bars, multi-tau, two-time) for Ewoks workflows.

The library works without Ewoks::

    import ewoksxpcs
    result = ewoksxpcs.correlate(frames, qmask, method="auto")
    result.g2, result.g2_err, result.lags, result.labels
"""

__version__ = "0.1.0"

from .correlators import available_methods, correlate, create_correlator  # noqa: E402
from .engine.events import EventStack, compact, load_events  # noqa: E402
from .engine.frames import as_frame_source  # noqa: E402
from .engine.qmask import Binning  # noqa: E402
from .engine.result import CorrelationResult, CorrelationSums  # noqa: E402
from .engine.multitau import MultiTauResult  # noqa: E402
from .engine.twotime import TwoTimeResult  # noqa: E402
from .correlators import multitau, twotime  # noqa: E402

__all__ = [
    "__version__",
    "correlate",
    "create_correlator",
    "available_methods",
    "EventStack",
    "compact",
    "load_events",
    "as_frame_source",
    "Binning",
    "CorrelationResult",
    "CorrelationSums",
    "multitau",
    "MultiTauResult",
    "twotime",
    "TwoTimeResult",
]
