"""The (mode, backend) registry of :mod:`ewoksxpcs.correlators.registry` and the mode dispatch."""

import numpy
import pytest

import ewoksxpcs
from ewoksxpcs.correlators import (
    BACKENDS,
    METHODS,
    MODES,
    available_backends,
    available_methods,
    create_multitau,
    create_twotime,
    get_backend,
)
from ewoksxpcs.correlators.registry import register
from ewoksxpcs.engine.multitau import NumpyMultiTau
from ewoksxpcs.engine.twotime import NumpyTwoTime


def test_every_mode_has_its_backends():
    assert MODES == ("linear", "multitau", "twotime")
    assert available_backends("linear") == available_methods() == list(METHODS)
    # opencl: frames streamed (dense path); opencl-events: device-resident events
    assert available_backends("multitau") == ["numpy", "opencl", "opencl-events"]
    assert available_backends("twotime") == ["numpy", "opencl", "opencl-events"]
    assert {mode for mode, _ in BACKENDS} == set(MODES)
    assert get_backend("multitau", "numpy") is NumpyMultiTau
    assert get_backend("twotime", "numpy") is NumpyTwoTime
    for (mode, name), cls in BACKENDS.items():
        assert cls.name == name
        assert callable(getattr(cls, "correlate"))


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown twotime correlation method 'fft'.*auto, numpy, opencl"):
        get_backend("twotime", "fft")

    class Nameless:
        name = ""

    class Named:
        name = "x"

    with pytest.raises(ValueError, match="no registry name"):
        register(Nameless)
    with pytest.raises(ValueError, match="unknown correlation mode 'sideways'"):
        register(Named, mode="sideways")
    assert ("sideways", "x") not in BACKENDS


def test_create_picks_the_registered_class():
    qmask = numpy.ones((4, 5), dtype=int)
    assert type(create_multitau(qmask, method="numpy")) is NumpyMultiTau
    assert type(create_twotime(qmask, method="numpy")) is NumpyTwoTime
    # Linear names map to the NumPy backend of the other modes, as before.
    assert type(create_multitau(qmask, method="matmul")) is NumpyMultiTau


def test_public_names_reach_the_same_functions():
    rng = numpy.random.default_rng(3)
    frames = rng.poisson(1.0, (64, 4, 5)).astype(numpy.uint16)
    qmask = numpy.ones((4, 5), dtype=int)
    a = ewoksxpcs.multitau(frames, qmask, method="numpy")
    b = ewoksxpcs.correlate(frames, qmask, method="numpy", mode="multitau")
    numpy.testing.assert_array_equal(a.g2, b.g2)
    assert a.g2.shape[0] == 1 and numpy.isfinite(a.g2[0, 1:]).all()
    c = ewoksxpcs.twotime(frames, qmask, method="numpy")
    d = ewoksxpcs.correlate(frames, qmask, method="numpy", mode="twotime")
    numpy.testing.assert_array_equal(c.g2, d.g2)
