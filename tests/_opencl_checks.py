"""Checks shared by the OpenCL backend tests: the label image and the comparison with reference."""

from __future__ import annotations

import numpy


def qmask_of(shape):
    """Non-contiguous labels 1, 4, 9 and a one-pixel bin 9."""
    q = numpy.zeros(shape, dtype=numpy.int32)
    q[:, : shape[1] // 2] = 1
    q[1:, shape[1] // 2 :] = 4
    q[0, 0] = 9
    return q


def check_equal(result, ref, dtype, method):
    """``result`` of ``method`` equals ``ref`` (the reference): exactly for integer dtypes."""
    assert result.method == method
    numpy.testing.assert_array_equal(result.labels, ref.labels)
    if numpy.dtype(dtype).kind == "f":
        assert result.n2.dtype == numpy.float64
        numpy.testing.assert_allclose(result.sums.n2, ref.sums.n2, rtol=1e-12, atol=1e-9)
        numpy.testing.assert_allclose(result.sums.frame_sums, ref.sums.frame_sums, rtol=1e-12)
        # g2 where s2 is clearly non-zero: the normaliser may take float s2 by FFT, whose
        # +-1e-13 in place of an exact 0 turns the reference's NaN into -0.0 or inf.
        scale = numpy.abs(ref.s2).max(axis=1, keepdims=True)
        ok = numpy.abs(ref.s2) > 1e-9 * scale
        numpy.testing.assert_allclose(result.g2[ok], ref.g2[ok], rtol=1e-6)
        return
    assert result.n2.dtype == numpy.int64
    assert numpy.array_equal(result.n2, ref.n2)
    assert numpy.array_equal(result.s2, ref.s2)
    assert numpy.array_equal(result.frame_sums, ref.frame_sums)
    numpy.testing.assert_allclose(result.g2, ref.g2, rtol=1e-6, equal_nan=True)
    numpy.testing.assert_allclose(result.g2_err, ref.g2_err, rtol=1e-6, atol=1e-12, equal_nan=True)


def recording_compiles(monkeypatch, dev):
    """Fresh program caches on ``dev``; every compile recorded as (thread name, file, defines)."""
    import threading

    from ewoksxpcs.opencl import device as opencl

    monkeypatch.setattr(dev, "_programs", {})
    monkeypatch.setattr(dev, "_kernels", {})
    monkeypatch.setattr(dev, "_building", {})
    compiled = []
    real = opencl._compile

    def compile_(d, key):
        compiled.append((threading.current_thread().name, key[0], dict(key[1])))
        return real(d, key)

    monkeypatch.setattr(opencl, "_compile", compile_)
    return compiled
