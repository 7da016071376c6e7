"""g2 and its jackknife error on the device (``opencl.normalise``): the host's bits."""

from __future__ import annotations

import numpy
import pytest
from conftest import require_opencl

from ewoksxpcs import Binning
from ewoksxpcs.engine.normalise import bin_sums, normalise
from ewoksxpcs.engine.result import CorrelationSums


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def dev(request):
    require_opencl(request.param)
    from ewoksxpcs.opencl.device import get_device

    d = get_device(request.param)
    if not d.has_fp64:
        pytest.fail(f"{d.name} has no double precision: g2_on_device is never used there")
    return d


def test_g2_on_device_equals_host_normalise(dev):
    """Random int64 sums (zeros in s2: inf and NaN as the host gets them; zero n2 and few
    expected pairs: the few-pairs rule; errors under the counting floor), bins of 1, 16 and
    several groups: every g2, error and expected-pairs bit equal to normalise()'s own."""
    import pyopencl

    from ewoksxpcs.opencl.normalise import g2_on_device

    rng = numpy.random.default_rng(7)
    labels = numpy.zeros((20, 30), int)
    labels[0, 0], labels[2:8, :], labels[10:12, 3:9], labels[14:, :] = 1, 2, 3, 5
    b = Binning(labels)
    n_lags = 300
    n2 = rng.integers(0, 10**9, (b.n_sub, n_lags)).astype(numpy.int64)
    n2[:, 5::41] = 0  # no pair counted: undefined
    n2[:, 7::23] = rng.integers(0, 3, (b.n_sub, len(range(7, n_lags, 23))))  # σ under the floor
    spans, rows, at = [], [], 0
    for i in range(b.n_bins):
        g = int(b.n_groups_per_bin[i])
        r = rng.integers(0, 10**12, (1 + (g if g > 1 else 0), n_lags)).astype(numpy.int64)
        r[0, 3::29] = rng.integers(0, 10 * b.n_pixels[i] + 2, len(range(3, n_lags, 29)))  # E ~ 10
        r[:, ::37] = 0  # x / 0
        spans.append((at, r.shape[0]))
        at += r.shape[0]
        rows.append(r)
    sums = CorrelationSums(n2=n2, frame_sums=numpy.ones((n_lags, b.n_sub), numpy.int64),
                           lags=numpy.arange(n_lags))
    mf = pyopencl.mem_flags
    x = rng.integers(0, 10**6, (sum(r.shape[0] for r in rows), n_lags)).astype(numpy.int64)
    d_n2, d_c, d_x = (pyopencl.Buffer(dev.context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a)
                      for a in (n2, numpy.concatenate(rows), x))
    g2, err, n2_bins, s2_own, x_own, pairs = g2_on_device(dev, dev.queue, d_n2, d_c, b, spans,
                                                          n_lags, d_x=d_x)()
    # Each bin's own s2 row and series (the first of its span), zeros for empty bins.
    empty = b.n_groups_per_bin == 0
    assert not s2_own[empty].any() and not x_own[empty].any()
    for i, (at, _) in enumerate(spans):
        if not empty[i]:
            assert numpy.array_equal(s2_own[i], rows[i][0]) and numpy.array_equal(x_own[i], x[at])
    assert g2_on_device(dev, dev.queue, d_n2, d_c, b, spans, n_lags)()[4] is None
    # x / 0: no pair expected, undefined (the host would divide by zero, then apply the rule)
    assert numpy.isnan(err[0]).all() and numpy.isfinite(err[1]).any()
    assert numpy.isnan(g2[:, ::37]).all() and (pairs[b.n_groups_per_bin > 0, ::37] == 0).all()
    host = normalise(sums, b, s2=rows)
    host_n2, host_fs = bin_sums(sums, b)
    assert n2_bins.dtype == numpy.int64 and numpy.array_equal(n2_bins, host_n2)
    assert not n2_bins[b.n_groups_per_bin == 0].any() and n2_bins.any()
    device = normalise(sums, b, s2=rows, g2_rows=(g2, err), bin_totals=(n2_bins, host_fs),
                       pairs=pairs)
    for name in ("g2", "g2_err", "n2", "frame_sums", "expected_pairs"):
        assert numpy.array_equal(getattr(device, name), getattr(host, name), equal_nan=True), name
    assert numpy.isfinite(host.g2_err).sum() > 800  # the comparison compared numbers
    # The rule was exercised: undefined lags of defined s2, errors raised to the floor.
    defined = b.n_groups_per_bin > 0
    few = (host.n2 == 0) | (host.expected_pairs < 10)
    assert numpy.isnan(host.g2[defined][few[defined] & (host.s2[defined] > 0)]).all()
    assert (few[defined] & (host.s2[defined] > 0)).sum() > 20
    with numpy.errstate(divide="ignore", invalid="ignore"):  # E = 0 where s2 = 0
        floor = numpy.sqrt(numpy.maximum(host.n2, host.expected_pairs)) / host.expected_pairs
    assert (host.g2_err == floor)[b.n_groups_per_bin > 1].sum() > 10
