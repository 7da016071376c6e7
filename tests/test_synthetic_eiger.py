"""Synthetic Eiger scans: layout, determinism, gaps, field statistics, counts and g2."""

import os

import h5py
import numpy
import pytest

from ewoksxpcs.correlators import correlate
from ewoksxpcs.tools.synthetic_eiger import (
    _field_frames,
    _Geometry,
    eiger_g2,
    eiger_gap_mask,
    eiger_module_layout,
    read_eiger_truth,
    write_eiger_scan,
)
from ewoksxpcs.io.load import load_frames

SMALL = dict(n_frames=200, shape=(64, 80), frames_per_file=100, speckle_px=2, beta=0.3, rho=0.9)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """The same small scan written by 2 processes and by 1, plus its frames."""
    base = tmp_path_factory.mktemp("eiger")
    two = write_eiger_scan(base / "two", counts=0.5, processes=2, seed=3, **SMALL)
    one = write_eiger_scan(base / "one", counts=0.5, processes=1, seed=3, **SMALL)
    frames = numpy.concatenate(list(load_frames(two).iter_chunks()))
    return two, one, frames


def test_eiger2_4m_geometry():
    rows, cols = eiger_module_layout((2162, 2068))
    assert rows == [(0, 512), (550, 1062), (1100, 1612), (1650, 2162)]
    assert cols == [(0, 1028), (1040, 2068)]
    gap = eiger_gap_mask((2162, 2068))
    assert gap.sum() == 2162 * 2068 - 8 * 512 * 1028
    assert gap[512:550].all() and gap[:, 1028:1040].all() and not gap[:512, :1028].any()
    rows, cols = eiger_module_layout((2167, 2070))  # Eiger (1) 4M: 514 x 1030, gaps 37, 10
    assert rows[-1] == (3 * 551, 2167) and cols == [(0, 1030), (1040, 2070)]
    rows, cols = eiger_module_layout((64, 80))  # scaled layout: 4 x 2 modules, 1-px gaps
    assert len(rows) == 4 and len(cols) == 2 and rows[-1][1] == 64 and cols[-1][1] == 80
    assert eiger_gap_mask((64, 80)).sum() == 64 * 80 - (64 - 3) * (80 - 1)
    with pytest.raises(ValueError):
        eiger_gap_mask((5, 80))


def test_scan_layout_and_metadata(scans):
    two = scans[0]
    src = load_frames(two)
    assert src.n_frames == 200 and src.frame_shape == (64, 80) and src.dtype == numpy.uint16
    assert src.frame_period == pytest.approx(1e-3)
    directory = os.path.dirname(two)
    assert sorted(n for n in os.listdir(directory) if n.endswith(".h5")) == [
        "data_000000.h5",
        "data_000001.h5",
        "scan.h5",
    ]
    with h5py.File(two, "r") as f:
        dset = f["/1.1/instrument/eiger/data"]
        assert dset.is_virtual
        assert {m.file_name for m in dset.virtual_sources()} == {
            "data_000000.h5",
            "data_000001.h5",
        }
    with h5py.File(os.path.join(directory, "data_000001.h5"), "r") as f:
        d = f["/entry/data/data"]
        assert d.shape == (100, 64, 80) and d.chunks == (1, 64, 80)
        code, _, cd_values, _ = d.id.get_create_plist().get_filter(0)
        assert code == 32008 and cd_values[4] == 2  # bitshuffle + LZ4
    # raw chunk access works on the master's VDS
    layout, reason = src.chunk_layout()
    assert layout is not None and layout.codec == "bslz4" and len(layout.files) == 2, reason


def test_independent_of_processes(scans):
    two, one, frames = scans
    assert numpy.array_equal(numpy.concatenate(list(load_frames(one).iter_chunks())), frames)
    for name in ("data_000000.h5", "data_000001.h5"):
        with h5py.File(os.path.join(os.path.dirname(one), name)) as a, h5py.File(
            os.path.join(os.path.dirname(two), name)
        ) as b:
            assert a["/entry/data/data"].id.read_direct_chunk((57, 0, 0)) == b[
                "/entry/data/data"
            ].id.read_direct_chunk((57, 0, 0))


def test_gaps_and_mean_counts(scans):
    two, _, frames = scans
    truth = read_eiger_truth(two)
    gap = truth["gap_mask"]
    assert numpy.array_equal(gap, eiger_gap_mask((64, 80)))
    assert truth["gap_value"] == 65535 and (frames[:, gap] == 65535).all()
    assert (truth["labels"][gap] == 0).all() and (truth["labels"][~gap] == 1).all()
    counts = frames[:, ~gap].astype(numpy.float64)
    assert counts.max() < 65535
    mu, beta, rho, n = 0.5, 0.3, 0.9, counts.size
    # variance of the mean: Poisson + speckle, correlated over a cell (4 px) and in time
    var = (mu + mu**2 * beta * 4 * (1 + rho**2) / (1 - rho**2)) / n
    assert abs(counts.mean() - mu) < 5 * var**0.5


def test_low_counts_sparse(tmp_path):
    master = write_eiger_scan(
        tmp_path, n_frames=20, shape=(128, 96), counts=0.01, frames_per_file=8, processes=1
    )
    truth = read_eiger_truth(master)
    frames = numpy.concatenate(list(load_frames(master).iter_chunks()))
    c = frames[:, ~truth["gap_mask"]].astype(numpy.float64)
    assert set(numpy.unique(c)) <= {0.0, 1.0, 2.0, 3.0}
    assert abs(c.mean() - 0.01) < 5 * (1.5 * 0.01 / c.size) ** 0.5  # 1.5: speckle excess
    assert truth["rho"].size == 8 and truth["labels"].max() == 8


def test_field_statistics_across_files():
    """The AR(1) bridge: <|E|^2> = 1 and <E(t) E*(t+tau)> = rho^tau, also across files."""
    geo = _Geometry((300, 400), 1, 2, False)
    rho = [0.5, 0.9]
    ks = [5, 5, 5]
    fields = []
    for i in range(3):
        task = dict(index=i, n_files=3, frames_per_file=ks, rho=rho, seed=11)
        fields += [e.copy() for e in _field_frames(task, geo)]
    fields = numpy.array(fields)
    for r in range(2):
        x = fields[:, geo.ring == r]
        tol = 6 / x.shape[1] ** 0.5 * (1 + 4 * rho[r])  # time-correlated frames
        assert numpy.allclose((abs(x) ** 2).mean(1), 1, atol=tol)
        for lag in (1, 3, 6):
            corr = (x[:-lag] * x[lag:].conj()).mean(1)
            assert numpy.allclose(corr.real, rho[r] ** lag, atol=tol)
            assert numpy.allclose(corr.imag, 0, atol=tol)


def test_g2_matches_model(scans):
    two, _, _ = scans
    truth = read_eiger_truth(two)
    result = correlate(load_frames(two), truth["labels"], method="fft")
    lags = numpy.arange(15)
    expected = eiger_g2(0.3, 0.9, lags, counts=0.5)[0]
    got, err = result.g2[0, :15], result.g2_err[0, :15]
    z = (got - expected) / numpy.maximum(err, 1e-3)
    assert numpy.all(abs(z) < 6), z
    assert abs(z[1:].mean()) < 3, z
    assert got[0] == pytest.approx(1 + 0.3 + 1 / 0.5, abs=0.05)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="rho"):
        write_eiger_scan(tmp_path, n_frames=2, shape=(32, 32), rho=1.0, processes=1)
    with pytest.raises(ValueError, match="dtype"):
        write_eiger_scan(tmp_path, n_frames=2, shape=(32, 32), dtype="float32", processes=1)
    write_eiger_scan(tmp_path, n_frames=2, shape=(32, 32), processes=1)
    with pytest.raises(FileExistsError):
        write_eiger_scan(tmp_path, n_frames=2, shape=(32, 32), processes=1)


def test_detector_pixel_mask_is_used_by_default(tmp_path):
    """The master file carries the gaps as the NXdetector pixel_mask: the q-mask leaves them
    out without --mask (and keeps them with file_mask=False)."""
    from ewoksxpcs.tools.synthetic_eiger import eiger_gap_mask, read_eiger_truth, write_eiger_scan
    from ewoksxpcs.io.load import load_frames
    from ewoksxpcs.workflow.maskbin import build_qmask

    master = write_eiger_scan(tmp_path / "scan", n_frames=12, shape=(64, 80), frames_per_file=6,
                              processes=1)
    frames = load_frames(master)
    mask, where = frames.pixel_mask()
    gaps = eiger_gap_mask((64, 80))
    assert gaps.any() and numpy.array_equal(mask, gaps) and where.endswith("pixel_mask")
    labels = numpy.ones((64, 80), dtype=numpy.int32)
    qb = build_qmask((64, 80), qmask=labels, frames=frames)
    assert numpy.array_equal(qb.bad_pixels, gaps) and not qb.qmask[gaps].any()
    assert qb.info["file_mask"]["n_masked"] == int(gaps.sum())
    qb = build_qmask((64, 80), qmask=labels, frames=frames, file_mask=False)
    assert not qb.bad_pixels.any()
    assert read_eiger_truth(master)["gap_mask"].sum() == gaps.sum()
