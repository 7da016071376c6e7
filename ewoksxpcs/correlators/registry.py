"""Registry of correlation backends, by name (as pyFAI's method registry)."""

from __future__ import annotations

from typing import Dict, List, Type

__all__ = ["register", "get_correlator_class", "available_methods", "METHODS"]

#: name -> Correlator subclass, in registration order.
METHODS: Dict[str, type] = {}


def register(cls: Type) -> Type:
    """Class decorator: add a Correlator subclass to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no registry name")
    METHODS[cls.name] = cls
    return cls


def get_correlator_class(name: str) -> Type:
    """Return the Correlator class registered as ``name``; ValueError naming the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        valid = ", ".join(["auto"] + list(METHODS))
        raise ValueError(f"unknown correlation method {name!r}; valid methods: {valid}") from None


def available_methods() -> List[str]:
    """Registered method names (``auto`` excluded)."""
    return list(METHODS)
