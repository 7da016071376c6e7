"""Registry of correlation backends, keyed by (mode, backend) (as pyFAI's method registry).

``mode`` is "linear" (every lag), "multitau" (log-spaced lags) or "twotime" (two-time maps);
``backend`` is the name of the implementation ("reference", "matmul", "fft", "opencl-dense",
"opencl-events" for linear; "numpy", "opencl" for multi-tau and two-time). Every entry is a class
built from the q-mask (``cls(qmask, ..., **options)``) whose ``correlate(data, **info)`` returns
the mode's result. :data:`METHODS` is the linear-mode view, by backend name.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Type

from ..engine.correlation_modes import MODES as CORRELATION_MODES

__all__ = ["register", "get_correlator_class", "get_backend", "available_methods",
           "available_backends", "METHODS", "BACKENDS", "MODES"]

#: Values of ``correlate(mode=...)`` (:mod:`ewoksxpcs.engine.correlation_modes`).
MODES = CORRELATION_MODES

#: (mode, backend name) -> correlator class, in registration order.
BACKENDS: Dict[Tuple[str, str], type] = {}

#: backend name -> Correlator subclass of the linear mode, in registration order.
METHODS: Dict[str, type] = {}


def register(cls: Optional[Type] = None, *, mode: str = "linear"):
    """Class decorator (or call): add a correlator class under (``mode``, ``cls.name``)."""

    def add(cls: Type) -> Type:
        if not cls.name:
            raise ValueError(f"{cls.__name__} has no registry name")
        if mode not in MODES:
            raise ValueError(f"unknown correlation mode {mode!r}; valid: {', '.join(MODES)}")
        BACKENDS[(mode, cls.name)] = cls
        if mode == "linear":
            METHODS[cls.name] = cls
        return cls

    return add if cls is None else add(cls)


def get_backend(mode: str, name: str) -> Type:
    """Return the class registered as (``mode``, ``name``); ValueError naming the valid ones."""
    try:
        return BACKENDS[(mode, name)]
    except KeyError:
        valid = ", ".join(["auto"] + available_backends(mode))
        raise ValueError(f"unknown {mode} correlation method {name!r}; valid methods: {valid}") from None


def get_correlator_class(name: str) -> Type:
    """Return the Correlator class registered as ``name``; ValueError naming the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        valid = ", ".join(["auto"] + list(METHODS))
        raise ValueError(f"unknown correlation method {name!r}; valid methods: {valid}") from None


def available_methods() -> List[str]:
    """Registered method names of the linear mode (``auto`` excluded)."""
    return list(METHODS)


def available_backends(mode: str) -> List[str]:
    """Registered backend names of ``mode`` (``auto`` excluded)."""
    return [name for (m, name) in BACKENDS if m == mode]
