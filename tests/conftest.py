"""Shared test set-up: the method matrix, and the OpenCL check for CI.

Every test that takes the ``method_case`` fixture runs once per registered correlation method
(``ewoksxpcs.correlators.METHODS``), so backends added later join the matrix without editing the
tests. OpenCL methods run on an OpenCL CPU device (PoCL in CI) and, under ``-m gpu``, on a GPU.

In CI (environment variable ``CI`` set to a true value) OpenCL tests must not be skipped: the
session fails at start-up if no OpenCL platform with a CPU device is found.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy
import pytest

# One Qt binding for the whole session: PyQt5 (Orange's AnyQt, silx view). The viewers extra
# brings PySide6, which silx would otherwise prefer, and two bindings cannot share a process.
os.environ.setdefault("QT_API", "pyqt5")

from ewoksxpcs.correlators import METHODS  # noqa: E402
from ewoksxpcs.opencl.pocl_cpu import prepare_pocl  # noqa: E402

prepare_pocl()  # before any test queries OpenCL platforms (PoCL on CPUs newer than its LLVM)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


@lru_cache(maxsize=None)
def opencl_device_types() -> frozenset:
    """Kinds of OpenCL devices present ("cpu", "gpu", ...); empty without a platform."""
    try:
        import pyopencl

        kinds = set()
        for platform in pyopencl.get_platforms():
            for device in platform.get_devices():
                if device.type & pyopencl.device_type.CPU:
                    kinds.add("cpu")
                if device.type & pyopencl.device_type.GPU:
                    kinds.add("gpu")
        return frozenset(kinds)
    except Exception:  # no ICD loader, no platform
        return frozenset()


def pytest_sessionstart(session):
    # A GPU-less CI must run the OpenCL tests on PoCL, never skip them silently.
    if in_ci() and "cpu" not in opencl_device_types():
        raise pytest.UsageError(
            "CI=true but no OpenCL platform with a CPU device was found: the OpenCL tests "
            "would be skipped. Install the test extra (it brings pocl-binary-distribution)."
        )


@dataclass(frozen=True)
class MethodCase:
    """One cell of the method matrix."""

    name: str
    device: Optional[str]
    cls: type

    @property
    def events(self) -> bool:
        """Whether the method correlates events (then it needs non-negative data)."""
        return self.cls.input_kind == "events"

    @property
    def uses_opencl(self) -> bool:
        return bool(self.cls.uses_opencl)

    def kwargs(self) -> dict:
        return {"method": self.name, "device": self.device}

    def __str__(self) -> str:
        return self.name if self.device is None else f"{self.name}[{self.device}]"


def method_params():
    params = []
    for name, cls in METHODS.items():
        if cls.uses_opencl:
            params.append(pytest.param((name, "cpu"), id=f"{name}-cpu"))
            params.append(pytest.param((name, "gpu"), id=f"{name}-gpu", marks=pytest.mark.gpu))
        else:
            params.append(pytest.param((name, None), id=name))
    return params


def pytest_generate_tests(metafunc):
    if "method_case" in metafunc.fixturenames:
        metafunc.parametrize("method_case", method_params(), indirect=True)


def require_opencl(kind: str) -> None:
    """Skip (fail in CI for CPU devices) when no OpenCL device of ``kind`` is present."""
    if kind in opencl_device_types():
        return
    if in_ci() and kind == "cpu":
        pytest.fail("CI: no OpenCL CPU device, the OpenCL tests cannot run")
    pytest.skip(f"no OpenCL {kind} device")


@pytest.fixture
def method_case(request) -> MethodCase:
    name, device = request.param
    cls = METHODS[name]
    if cls.uses_opencl:
        require_opencl(device)
    return MethodCase(name, device, cls)


@pytest.fixture
def rng():
    return numpy.random.default_rng(20240611)


@pytest.fixture
def stack_spills(monkeypatch, tmp_path):
    """Spill directory (EWOKSXPCS_TMPDIR) set to ``tmp_path``; returns the list of
    ``GatheredStack.spilled`` after each append, filled as the test runs."""
    from ewoksxpcs.engine.pixel_series import GatheredStack

    monkeypatch.setenv("EWOKSXPCS_TMPDIR", str(tmp_path))
    spilled = []
    real = GatheredStack.append

    def spy(self, block):
        real(self, block)
        spilled.append(self.spilled)

    monkeypatch.setattr(GatheredStack, "append", spy)
    return spilled
