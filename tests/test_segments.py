"""Stability segments: each segment's g2 is the correlation of its own frames, in every mode."""

import h5py
import numpy
import pytest

from ewoksxpcs import correlate
from ewoksxpcs.app.cli import main
from ewoksxpcs.engine.events import compact
from ewoksxpcs.engine.frames import ArrayFrameSource, IterableFrameSource
from ewoksxpcs.workflow.pipeline import correlate_sums, normalise_sums
from ewoksxpcs.workflow.segments import RangeFrameSource, correlate_segments, segment_edges
from ewoksxpcs.tools.synthetic import SyntheticXPCS


@pytest.fixture(scope="module")
def sim():
    s = SyntheticXPCS(shape=(24, 24), n_frames=301, mean_counts=1.0, contrast=0.3,
                      diffusion=2e6, n_bins=3, q_per_pixel=2e-4, seed=7, dtype="uint16")
    return s, s.frames()


def test_edges_and_range_source(sim):
    _, frames = sim
    numpy.testing.assert_array_equal(segment_edges(301, 3), [0, 100, 200, 301])
    with pytest.raises(ValueError, match="segments must be between 1 and"):
        segment_edges(10, 6)
    src = RangeFrameSource(ArrayFrameSource(frames), 37, 150)
    numpy.testing.assert_array_equal(numpy.concatenate(list(src.iter_chunks(16))), frames[37:150])
    numpy.testing.assert_array_equal(src[3:5], frames[40:42])
    with pytest.raises(ValueError, match="read again"):
        RangeFrameSource(IterableFrameSource(iter([frames])), 0, 10)


@pytest.mark.parametrize("mode", ["linear", "multitau", "twotime"])
def test_segments_equal_their_own_correlation(sim, mode):
    s, frames = sim
    opts = {"linear": {}, "multitau": {"lags_per_level": 4}, "twotime": {"time_bin": 2}}[mode]
    out = correlate_sums(frames, s.labels, method="fft" if mode == "linear" else "numpy",
                         mode=mode, mode_options=opts, segments=3, bad_frames="150")
    seg = out["segments"]
    assert seg.g2.shape[:2] == (3, 3) and seg.intensity.shape == (3, 3)
    good = numpy.ones(301, bool)
    good[150] = False
    for k, (a, b) in enumerate(zip(seg.edges[:-1], seg.edges[1:])):
        part = numpy.where(good[a:b, None, None], frames[a:b], 0)
        direct = correlate(part, s.labels, method="reference" if mode == "linear" else "numpy",
                           mode=mode, **opts)
        n = seg.lags.size
        numpy.testing.assert_allclose(seg.g2[k], direct.g2[:, :n], rtol=1e-12, equal_nan=True)
        kept = good[a:b].sum() if mode != "twotime" else good[a: a + (b - a) // 2 * 2].sum()
        used = part if mode != "twotime" else part[: (b - a) // 2 * 2]
        for i, lab in enumerate(seg.labels):
            mean = used[:, s.labels == lab].sum() / ((s.labels == lab).sum() * kept)
            assert seg.intensity[k, i] == pytest.approx(mean, rel=1e-12)


def test_events_segments(sim):
    s, frames = sim
    from ewoksxpcs.engine.qmask import Binning

    b = Binning(s.labels)
    steps = (correlate_sums, normalise_sums)
    dense = correlate_segments(ArrayFrameSource(frames), b, 2, *steps, method="fft")
    ev = correlate_segments(compact(frames), b, 2, *steps, method="fft")
    numpy.testing.assert_array_equal(ev.g2, dense.g2)
    numpy.testing.assert_array_equal(ev.intensity, dense.intensity)


def test_cli_segments(sim, tmp_path):
    s, frames = sim
    scan = str(tmp_path / "scan.h5")
    with h5py.File(scan, "w") as f:
        f["1.1/measurement/eiger"] = frames
        f["1.1/labels"] = s.labels
    out = str(tmp_path / "r.h5")
    assert main(["run", f"{scan}::/1.1/measurement/eiger", "--qmask", f"{scan}::/1.1/labels",
                 "-o", out, "--segments", "4", "--frame-period", "1e-3", "-q"]) == 0
    with h5py.File(out, "r") as f:
        g = f["entry/xpcs/segments"]
        assert g["intensity"].shape == (4, 3) and g["partial_g2/g2"].shape[:2] == (4, 3)
        assert g.attrs["signal"] == "intensity"
    assert (tmp_path / "r_stability.png").exists()
    assert main(["run", f"{scan}::/1.1/measurement/eiger", "--qmask", f"{scan}::/1.1/labels",
                 "-o", str(tmp_path / "x.h5"), "--segments", "0", "-q"]) == 1
