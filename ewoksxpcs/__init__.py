"""ewoksxpcs: XPCS correlation (g2, error bars, multi-tau, two-time) for Ewoks workflows.

The library works without Ewoks::

    import ewoksxpcs
    result = ewoksxpcs.correlate(frames, qmask, method="auto")
    result.g2, result.g2_err, result.lags, result.labels

The names below are imported on first use (PEP 562), so that ``import ewoksxpcs`` and the
command line (``ewoksxpcs --version``) do not pay for NumPy, SciPy, pyFFTW or OpenCL.
"""

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "correlate": ".correlators",
    "create_correlator": ".correlators",
    "available_methods": ".correlators",
    "EventStack": ".engine.events",
    "compact": ".engine.events",
    "load_events": ".engine.events",
    "as_frame_source": ".engine.frames",
    "Binning": ".engine.qmask",
    "CorrelationResult": ".engine.result",
    "CorrelationSums": ".engine.result",
    "multitau": ".correlators",
    "MultiTauResult": ".engine.multitau",
    "twotime": ".correlators",
    "TwoTimeResult": ".engine.twotime",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ewoksxpcs' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
