"""Pixel-level G2, IP, IF from events equal the dense per-pixel means, at every delay."""

from __future__ import annotations

import numpy
import pytest

from ewoksxpcs import compact
from ewoksxpcs.engine.pixelcorr import pixel_G2


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_equals_dense(dtype):
    rng = numpy.random.default_rng(3)
    frames = rng.poisson(0.4, (37, 5, 6)).astype(dtype)
    frames[:, 0, 0] = 0  # a pixel without events
    frames[-1, 1, 1] = 7  # an event in the last frame only
    bad = numpy.zeros((5, 6), dtype=bool)
    bad[4, 5] = True
    events = compact(frames, bad_pixels=bad)
    lags = numpy.arange(37)
    got = pixel_G2(events, lags)
    flat = frames.reshape(37, -1).astype(numpy.float64)[:, events.pixel_index]
    for i, tau in enumerate(lags):
        a, b = flat[: 37 - tau], flat[tau:]
        numpy.testing.assert_allclose(got[i, 0], (a * b).mean(axis=0), rtol=1e-12)
        numpy.testing.assert_allclose(got[i, 1], a.mean(axis=0), rtol=1e-12)
        numpy.testing.assert_allclose(got[i, 2], b.mean(axis=0), rtol=1e-12)


def test_bad_delays():
    events = compact(numpy.ones((4, 2, 2), dtype=numpy.uint8))
    for lags in ([4], [-1], [1.5]):
        with pytest.raises(ValueError, match="integer delays"):
            pixel_G2(events, lags)
