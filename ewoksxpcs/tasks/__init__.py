"""Ewoks tasks of ewoksxpcs, one module per task (thin wrappers over the library).

=====================  ===================================================================
``LoadFrames``         frames from HDF5/Bliss/NeXus, EDF/CBF, an events file or an array
``BuildQMask``         q-bin label image from a label image or geometry, masks
``CompactEvents``      frames → sparse events (optionally an events file)
``Correlate``          correlation sums by any registered method (``auto`` by default)
``Normalise``          g2 and its errors, τ in seconds, q per bin
``SaveResults``        NeXus result file and PNG of the g2 curves
``AverageResults``     error-weighted g2 average over repeats (damaged repeats rejected)
``LiveCorrelate``      g2 while the scan runs (Bliss/Redis, growing HDF5), final result at its end
=====================  ===================================================================

Task identifiers are ``ewoksxpcs.tasks.<module>.<Class>``, e.g.
``ewoksxpcs.tasks.correlate.Correlate``.
"""

from .average_results import AverageResults  # noqa: F401
from .build_qmask import BuildQMask  # noqa: F401
from .compact_events import CompactEvents  # noqa: F401
from .correlate import Correlate  # noqa: F401
from .live_correlate import LiveCorrelate  # noqa: F401
from .load_frames import LoadFrames  # noqa: F401
from .normalise import Normalise  # noqa: F401
from .save_results import SaveResults  # noqa: F401

__all__ = ["LoadFrames", "BuildQMask", "CompactEvents", "Correlate", "Normalise", "SaveResults",
           "AverageResults", "LiveCorrelate"]
