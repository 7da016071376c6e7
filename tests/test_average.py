"""Repeats: a damaged repeat is rejected, the error-weighted average of the others matches the
truth (known g2)."""

import h5py
import numpy
import pytest

from ewoksxpcs import correlate
from ewoksxpcs.workflow.average import average_files, average_g2, reject_repeats
from ewoksxpcs.app.cli import main
from ewoksxpcs.engine.fit import fit_g2
from ewoksxpcs.io.save import save_results
from ewoksxpcs.tools.synthetic import SyntheticXPCS


@pytest.fixture(scope="module")
def repeats(tmp_path_factory):
    """Four repeats (seeds) of one sample; repeat 2 damaged: a uniform background of 0.5 count per
    pixel per frame (a beam-damaged, scattering sample) lowers its contrast."""
    d = tmp_path_factory.mktemp("repeats")
    files, sims = [], []
    for k in range(4):
        sim = SyntheticXPCS(shape=(32, 32), n_frames=400, mean_counts=1.0, contrast=0.3,
                            diffusion=6e6, n_bins=3, q_per_pixel=2e-4, seed=20 + k, q_range=(0.0015, 0.0045),
                            dtype="uint16")
        frames = sim.frames()
        if k == 2:
            frames = frames + numpy.random.default_rng(k).poisson(0.5, frames.shape).astype(numpy.uint16)
        r = correlate(frames, sim.labels, method="fft")
        name = str(d / f"r{k}.h5")
        save_results(name, r, sim.q, r.lags * 1e-3, qmask=sim.labels, frame_period=1e-3)
        files.append(name)
        sims.append(sim)
    return files, sims[0], r.lags


def test_damaged_repeat_rejected_and_average_matches_truth(repeats, tmp_path):
    files, sim, lags = repeats
    out = str(tmp_path / "avg.h5")
    res = average_files(files, out)
    assert res["rejected"] == [files[2]] and res["kept"] == [files[0], files[1], files[3]]
    with h5py.File(out, "r") as f:
        g2 = f["entry/xpcs/g2/g2"][()]
        err = f["entry/xpcs/g2/g2_errors"][()]
        assert f["entry/xpcs/average/kept"][()].tolist() == [True, True, False, True]
        assert "sums" not in f["entry/xpcs"] and "qmask" in f["entry/xpcs"]
    # The kept repeats' weighted mean, point by point.
    data = []
    for name in (files[0], files[1], files[3]):
        with h5py.File(name, "r") as f:
            data.append((f["entry/xpcs/g2/g2"][()], f["entry/xpcs/g2/g2_errors"][()]))
    w = numpy.stack([1 / e**2 for _, e in data])
    numpy.testing.assert_allclose(g2, (w * numpy.stack([g for g, _ in data])).sum(0) / w.sum(0))
    numpy.testing.assert_allclose(err, w.sum(0) ** -0.5)
    # Against the known g2: the fitted contrast and rate of the average (the g2 points of
    # neighbouring lags share frames, so a point-wise χ² would not be a fair test).
    tau = lags * 1e-3
    fit = fit_g2(tau, g2, err)
    assert fit.ok.all()
    numpy.testing.assert_allclose(fit.beta, 0.3, rtol=0.03)
    numpy.testing.assert_allclose(fit.gamma, sim.gamma, rtol=0.15)  # 1200 frames in all
    # Without the rejection the damaged repeat pulls the contrast down.
    every = [(h5py.File(n, "r")["entry/xpcs/g2/g2"][()], h5py.File(n, "r")["entry/xpcs/g2/g2_errors"][()])
             for n in files]
    allw = average_g2(numpy.stack([g for g, _ in every]), numpy.stack([e for _, e in every]),
                      tau, threshold=1e9)
    assert allw.kept.all()
    assert (fit_g2(tau, allw.g2, allw.g2_err).beta < 0.3 * 0.93).all()


def test_rule_and_cli(repeats, tmp_path, capsys):
    files, _, _ = repeats
    assert reject_repeats([1.0, 1.01, 0.99, 1.5], [0.01] * 4).tolist() == [True, True, True, False]
    assert reject_repeats([1.0, 5.0], [0.01, 0.01]).all()  # fewer than 3: nothing rejected
    out = str(tmp_path / "a.h5")
    assert main(["average", *files, "-o", out]) == 0
    assert "averaged 3 of 4 repeats" in capsys.readouterr().out
    assert main(["average", *files, "-o", out]) == 1  # exists
    assert "exists" in capsys.readouterr().err
    assert main(["average", files[0], str(tmp_path / "nope.h5"), "-o", str(tmp_path / "b.h5")]) == 1
    assert not (tmp_path / "b.h5").exists()


def test_task(repeats, tmp_path):
    from ewokscore import execute_graph

    files, _, _ = repeats
    graph = {"graph": {"id": "avg"}, "nodes": [{
        "id": "avg", "task_type": "class",
        "task_identifier": "ewoksxpcs.tasks.average_results.AverageResults"}]}
    out = str(tmp_path / "t.h5")
    result = execute_graph(graph, inputs=[
        {"id": "avg", "name": "filenames", "value": files},
        {"id": "avg", "name": "output", "value": out}])
    assert result["rejected"] == [files[2]] and result["output"] == out
