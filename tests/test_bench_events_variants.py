"""The opencl-events variants benchmark: its NumPy pair sums, and a tiny run on PoCL."""

from __future__ import annotations

import io

import numpy
import pytest
from conftest import require_opencl

from ewoksxpcs import Binning, compact, correlate
from ewoksxpcs.tools import bench_events_variants as bench


def test_numpy_event_n2_equals_reference(rng):
    """The benchmark's exact pair sums equal the reference correlator, pixels outside the
    bins and heavy pixels included."""
    frames = (rng.poisson(0.4, (90, 6, 9)) * (rng.random((90, 6, 9)) < 0.7)).astype(numpy.uint16)
    frames[:, 2, 3] = rng.integers(1, 9, 90)  # an event in every frame
    q = numpy.zeros((6, 9), dtype=numpy.int32)
    q[:, :4], q[1:, 5:] = 2, 5
    b = Binning(q, n_groups=3)
    ref = correlate(frames, b, method="reference")
    assert numpy.array_equal(bench.numpy_event_n2(compact(frames), b), ref.sums.n2)


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def test_tiny_run_every_variant_exact(tmp_path, device):
    """--scale 0.002: every variant and feed runs, equals the NumPy sums and the first variant,
    and dynamix's integer sums; the report is written."""
    require_opencl(device)
    out = tmp_path / "ev.txt"
    assert bench.main(["--scale", "0.002", "--device", device, "--repeat", "1", "--counts",
                       "0.3", "--out", str(out)]) == 0
    text = out.read_text()
    assert "exact vs NumPy" in text and "NO" not in text
    assert "host steps (no kernel; seconds)" in text
    assert "pinned feed: values and times page-locked: yes" in text
    for label, _ in bench.VARIANTS:
        for feed in ("host", "pinned", "device"):
            assert f"{label:<12} {feed:<7}" in text
    assert "dynamix EventCorrelator:" in text and "!= dynamix" not in text
    rows = bench.run(0.002, (0.3,), bench.VARIANTS[:2], device, repeat=1, dynamix=True,
                     file=io.StringIO())
    assert len(rows) == 6
    for row in rows:
        assert "error" not in row
        assert row["exact_ref"] and row["same_as_first"] and row["same_as_dynamix"]
        assert row["steps"]["plan_kernels_s"] > 0 and row["best_s"] > 0


def test_host_steps_only(capsys):
    """--host-steps: the data's host steps, every one timed, and no kernel variant or peer."""
    require_opencl("cpu")
    assert bench.main(["--host-steps", "--scale", "0.002", "--device", "cpu", "--repeat", "2",
                       "--counts", "0.3"]) == 0
    text = capsys.readouterr().out
    assert "host steps (no kernel; seconds, best of 2)" in text
    for key in ("budget_s", "sub_bins_s", "total_pairs_s", "staging_s", "pin_s",
                "check_range_s", "normalise_s", "normalise_dev_s"):
        assert f"{key}=" in text
    assert "exact vs NumPy" not in text and "dynamix" not in text


def test_bad_arguments_exit_with_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--scale", "2"])
    assert e.value.code != 0
    assert "--scale must be in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--variants", "nope"])
    assert "unknown variant(s) nope" in capsys.readouterr().err
