"""Mask and bin: geometry (PONI, beam centre), q bins, sectors, masks, hot/dead pixel rule."""

from __future__ import annotations

import math

import numpy
import pytest

from ewoksxpcs.engine.events import compact
from ewoksxpcs.workflow.maskbin import (
    HC_KEV_M,
    Geometry,
    auto_bad_pixels,
    build_qmask,
    label_image,
    make_q_edges,
    make_sectors,
    q_chi_maps,
    read_poni,
)
from ewoksxpcs.tools.synthetic import SyntheticXPCS

PONI = """# Nota: C-Order, 1 refers to the Y axis, 2 to the X axis
poni_version: 2.1
Detector: Detector
Detector_config: {"pixel1": 7.5e-05, "pixel2": 5e-05, "max_shape": [40, 50], "orientation": 3}
Distance: 0.5
Poni1: 0.001
Poni2: 0.0012
Rot1: 0.05
Rot2: -0.03
Rot3: 0.3
Wavelength: 1e-10
"""


@pytest.fixture
def poni_file(tmp_path):
    path = tmp_path / "det.poni"
    path.write_text(PONI)
    return str(path)


def test_poni_parser_matches_pyfai(poni_file):
    pyFAI = pytest.importorskip("pyFAI")
    ai = pyFAI.load(poni_file)
    q_ref = ai.qArray((40, 50))  # nm^-1
    chi_ref = numpy.degrees(ai.center_array((40, 50), unit="chi_rad"))
    for use_pyfai in (True, False):
        geometry = read_poni(poni_file, use_pyfai=use_pyfai)
        assert geometry.rot3 == 0.3 and geometry.pixel2 == 5e-5
        q, chi = q_chi_maps((40, 50), geometry)
        numpy.testing.assert_allclose(q, q_ref, rtol=1e-6)
        dchi = (chi - chi_ref + 180.0) % 360.0 - 180.0
        assert numpy.abs(dchi).max() < 1e-4


def test_poni_own_parser(poni_file, tmp_path):
    g = read_poni(poni_file, use_pyfai=False)
    assert (g.distance, g.poni1, g.poni2, g.rot1, g.rot2, g.wavelength) == (
        0.5,
        0.001,
        0.0012,
        0.05,
        -0.03,
        1e-10,
    )
    old = tmp_path / "v1.poni"
    old.write_text(
        "PixelSize1: 1e-4\nPixelSize2: 1e-4\nDistance: 1\nPoni1: 0.01\nPoni2: 0.02\n"
        "Rot1: 0\nRot2: 0\nRot3: 0\nWavelength: 1.5e-10\n"
    )
    g = read_poni(str(old), use_pyfai=False)
    assert g.pixel1 == 1e-4 and g.beam_center == pytest.approx((99.5, 199.5))
    named = tmp_path / "named.poni"
    named.write_text(
        "Detector: Eiger2_4M\nDistance: 1\nPoni1: 0.01\nPoni2: 0.02\nWavelength: 1e-10\n"
    )
    with pytest.raises(ValueError, match="gives no pixel size; install pyFAI"):
        read_poni(str(named), use_pyfai=False)
    with pytest.raises(FileNotFoundError, match="PONI file .*missing.poni.* does not exist"):
        read_poni(str(tmp_path / "missing.poni"))
    bad = tmp_path / "bad.poni"
    bad.write_text("hello: world\n")
    with pytest.raises(ValueError, match="not a PONI file: missing distance"):
        read_poni(str(bad))


def test_beam_centre_geometry():
    # Detector normal to the beam: q = 4π/λ·sin(atan(r·p/d)/2); χ = 0 along +x, 90° along +y.
    g = Geometry.from_beam_center((10.0, 20.0), distance=2.0, pixel_size=1e-4, energy=12.0)
    assert g.wavelength == pytest.approx(HC_KEV_M / 12.0)
    q, chi = q_chi_maps((30, 40), g)
    lam_nm = g.wavelength * 1e9
    r = math.hypot(3 * 1e-4, 4 * 1e-4)
    assert q[13, 24] == pytest.approx(4 * math.pi / lam_nm * math.sin(math.atan(r / 2.0) / 2))
    assert q[10, 20] == 0.0
    assert chi[10, 30] == pytest.approx(0.0) and chi[20, 20] == pytest.approx(90.0)
    assert abs(chi[10, 5]) == pytest.approx(180.0)
    with pytest.raises(ValueError, match="wavelength .* or the energy"):
        Geometry.from_beam_center((1, 1), 1.0, 1e-4)
    with pytest.raises(ValueError, match="implausible for X-rays: give it in metres"):
        Geometry.from_beam_center((1, 1), 1.0, 1e-4, wavelength=1.0)


def test_labels_edges_and_sectors():
    q = numpy.array([[0.0, 0.5, 1.0, 1.5, 2.0, 2.5]])
    edges = make_q_edges(n_bins=2, q_range=(0.5, 2.0))
    numpy.testing.assert_array_equal(edges, [0.5, 1.25, 2.0])
    # The last edge belongs to the last bin; below or above the range: 0.
    numpy.testing.assert_array_equal(label_image(q, edges), [[0, 1, 1, 2, 2, 0]])
    chi = numpy.array([[-170.0, -90.0, 0.0, 90.0, 175.0, 0.0]])
    sectors = numpy.array([[170.0, -150.0], [-100.0, 100.0]])  # the first wraps around ±180°
    labels = label_image(q, edges, chi, sectors)
    # label = 1 + i_q + n_q·i_sector
    numpy.testing.assert_array_equal(labels, [[0, 1 + 0 + 2, 1 + 0 + 2, 1 + 1 + 2, 1 + 1 + 0, 0]])
    numpy.testing.assert_array_equal(
        make_sectors(n_sectors=4), [[-180, -90], [-90, 0], [0, 90], [90, 180]]
    )
    with pytest.raises(ValueError, match="q_edges must be at least 2 increasing"):
        make_q_edges(q_edges=[1.0, 0.5])
    with pytest.raises(ValueError, match="either q_edges or n_bins"):
        make_q_edges(q_edges=[0.1, 0.2], n_bins=3)


def test_build_qmask_geometry_sectors_and_masks():
    shape = (40, 40)
    mask = numpy.zeros(shape, dtype=bool)
    mask[20, :] = True
    qb = build_qmask(
        shape,
        beam_center=(19.5, 19.5),
        distance=5.0,
        pixel_size=75e-6,
        wavelength=1e-10,
        n_bins=4,
        q_range=(0.002, 0.018),
        n_sectors=2,
        mask=mask,
    )
    assert qb.labels.tolist() == list(range(1, 9))
    assert qb.q_unit == "nm^-1" and qb.q_edges.size == 5
    assert not qb.qmask[20].any() and qb.bad_pixels[20].all()
    # q per bin: the mean q of its pixels, inside the bin's edges; both sectors alike.
    q_map, _ = q_chi_maps(shape, Geometry.from_beam_center((19.5, 19.5), 5.0, 75e-6, 1e-10))
    for k, label in enumerate(qb.labels):
        sel = qb.qmask == label
        assert qb.n_pixels[k] == sel.sum() > 0
        assert qb.q[k] == pytest.approx(q_map[sel].mean())
        iq = (label - 1) % 4
        assert qb.q_edges[iq] <= qb.q[k] <= qb.q_edges[iq + 1]
    numpy.testing.assert_allclose(qb.chi, [-90.0] * 4 + [90.0] * 4)


def test_build_qmask_from_label_image(tmp_path):
    labels = numpy.zeros((10, 12), dtype=numpy.int32)
    labels[2:5, 2:8] = 3
    labels[6:9, 1:10] = 7
    numpy.save(tmp_path / "labels.npy", labels)
    qb = build_qmask((10, 12), qmask=str(tmp_path / "labels.npy"), q_values=[0.1, 0.2])
    assert qb.labels.tolist() == [3, 7] and qb.q.tolist() == [0.1, 0.2]
    assert qb.n_pixels.tolist() == [18, 27]
    qb = build_qmask((10, 12), qmask=labels)
    assert qb.q_unit == "" and qb.q.tolist() == [3.0, 7.0]
    with pytest.raises(
        ValueError, match=r"qmask shape \(10, 12\) differs from the frame shape \(10, 13\)"
    ):
        build_qmask((10, 13), qmask=labels)
    with pytest.raises(ValueError, match="q_values has 3 values for 2 labels"):
        build_qmask((10, 12), qmask=labels, q_values=[1, 2, 3])
    with pytest.raises(ValueError, match="no q-mask"):
        build_qmask((10, 12))
    with pytest.raises(ValueError, match="give a PONI file or beam_center"):
        build_qmask((10, 12), poni="x.poni", beam_center=(1, 1))
    with pytest.raises(FileNotFoundError, match="missing.poni"):
        build_qmask((10, 12), poni=str(tmp_path / "missing.poni"), n_bins=3)
    with pytest.raises(ValueError, match="mask shape"):
        build_qmask((10, 12), qmask=labels, mask=numpy.zeros((3, 3)))
    with pytest.raises(ValueError, match="every pixel of the q-mask is masked"):
        build_qmask((10, 12), qmask=labels, mask=numpy.ones((10, 12)))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int8", "int16", "int32",
                                   "float32"])
def test_pixel_totals_exact_for_every_type(dtype):
    """The sample's totals per pixel (flagged values left out: the type's maximum for 2- and
    4-byte integers, negative values) and the flags: equal to float64 sums of the sample,
    whichever accumulator each type takes (32-bit, int64, float64)."""
    from ewoksxpcs.engine.frames import ArrayFrameSource
    from ewoksxpcs.workflow.maskbin import _sample_indices, pixel_totals

    rng = numpy.random.default_rng(3)
    dt = numpy.dtype(dtype)
    lo, hi = (numpy.iinfo(dt).min, numpy.iinfo(dt).max) if dt.kind in "iu" else (-5, 100)
    x = rng.integers(lo, hi, size=(40, 9, 11), endpoint=True).astype(dt)
    if dt.kind in "iu" and dt.itemsize >= 2:
        x[::3, 2, 3] = hi  # flagged in some frames
    totals, flagged, n = pixel_totals(ArrayFrameSource(x), 25)
    sample = x[_sample_indices(40, 25)]
    bad = numpy.zeros(sample.shape, dtype=bool)
    if dt.kind in "iu" and dt.itemsize >= 2:
        bad |= sample == numpy.iinfo(dt).max
    if dt.kind in "if":
        bad |= sample < 0
    assert n == 25 and totals.dtype == numpy.float64
    numpy.testing.assert_array_equal(totals, numpy.where(bad, 0, sample).sum(
        axis=0, dtype=numpy.float64))
    numpy.testing.assert_array_equal(flagged, bad.any(axis=0))
    if dt.kind in "iu" and dt.itemsize >= 2:
        assert flagged[2, 3]


def test_auto_bad_pixels_dense():
    rng = numpy.random.default_rng(5)
    frames = rng.poisson(2.0, (60, 32, 32)).astype(numpy.uint16)
    frames[:, 3, 4] = 200  # hot
    frames[:, 10, 11] = 0  # dead
    frames[7, 20, 21] = 65535  # detector-flagged value
    labels = numpy.ones((32, 32), dtype=numpy.int32)
    labels[16:] = 2
    from ewoksxpcs.io.load import load_frames

    bad, stats = auto_bad_pixels(load_frames(frames), labels=labels, n_sample=60)
    assert sorted(map(tuple, numpy.argwhere(bad))) == [(3, 4), (10, 11), (20, 21)]
    assert (stats["n_hot"], stats["n_dead"], stats["n_flagged"]) == (1, 1, 1)
    # The same from events.
    bad_ev, _ = auto_bad_pixels(compact(frames), labels=labels)
    assert sorted(map(tuple, numpy.argwhere(bad_ev))) == [(3, 4), (10, 11), (20, 21)]
    # Pixels outside the bins are not judged; already masked ones neither.
    labels[3, 4] = 0
    bad, _ = auto_bad_pixels(load_frames(frames), labels=labels, n_sample=60)
    assert not bad[3, 4]


def test_auto_bad_pixels_sparse_flags_no_dead():
    # 0.02 counts per pixel per frame: silent pixels are normal, none may be called dead.
    rng = numpy.random.default_rng(6)
    frames = rng.poisson(0.02, (100, 40, 40)).astype(numpy.uint8)
    from ewoksxpcs.io.load import load_frames

    bad, stats = auto_bad_pixels(load_frames(frames))
    assert stats["n_dead"] == 0 and stats["n_hot"] == 0 and not bad.any()
    qb = build_qmask(
        (40, 40), qmask=numpy.ones((40, 40), dtype=int), frames=load_frames(frames), auto_mask=True
    )
    assert qb.n_pixels.tolist() == [1600] and qb.info["auto_mask"]["n_sample"] == 100


def test_auto_bad_pixels_ring_outliers():
    """Pixels hot only relative to their ring (6× its mean: below the 20× rule) are caught by the
    per-bin MAD test; moving speckle and bright rings next to dim ones flag nothing."""
    from ewoksxpcs.io.load import load_frames

    sim = SyntheticXPCS(shape=(48, 48), n_frames=100, mean_counts=[0.2, 3.0, 0.5], contrast=0.3,
                        diffusion=5e6, n_bins=3, q_per_pixel=2e-4, seed=8, dtype="uint16")
    frames = sim.frames()
    clean, stats = auto_bad_pixels(load_frames(frames), labels=sim.labels)
    assert not clean.any() and stats["n_outliers"] == 0
    ring = numpy.argwhere(sim.labels == 3)[::97][:4]  # bin 3: 0.5 counts per frame
    rng = numpy.random.default_rng(1)
    for y, x in ring:
        frames[:, y, x] = rng.poisson(3.0, frames.shape[0])  # 6× the ring, as bright as bin 2
    bad, stats = auto_bad_pixels(load_frames(frames), labels=sim.labels)
    assert sorted(map(tuple, numpy.argwhere(bad))) == sorted(map(tuple, ring))
    assert stats["n_outliers"] == 4 and stats["n_hot"] == 0
    # Without the test (e.g. a static speckle), only the 20× rule.
    bad, stats = auto_bad_pixels(load_frames(frames), labels=sim.labels, mad_threshold=None)
    assert not bad.any() and stats["n_outliers"] == 0
