"""Each Ewoks task alone: inputs, outputs, progress, cancellation, errors."""

from __future__ import annotations

import os

import h5py
import numpy
import pytest
from ewokscore.progress import BasePercentageProgress

from ewoksxpcs import correlate
from ewoksxpcs.workflow.cancellation import Cancelled
from ewoksxpcs.engine.events import compact
from ewoksxpcs.io.load import HDF5FrameSource
from ewoksxpcs.tools.synthetic import SyntheticXPCS
from ewoksxpcs.tasks import BuildQMask, CompactEvents, Correlate, LoadFrames, Normalise, SaveResults
from ewoksxpcs.engine.twotime import TwoTimeResult


class Recorder(BasePercentageProgress):
    """Progress object that records every value (and can call back)."""

    def __init__(self, callback=None):
        super().__init__()
        self.values = []
        self.callback = callback

    def _update(self):
        self.values.append(self.progress)
        if self.callback is not None:
            self.callback(self.progress)


def run(task_class, progress=None, **inputs):
    task = task_class(inputs=inputs, progress=progress)
    task.execute()
    return task.get_output_values()


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    sim = SyntheticXPCS(
        shape=(32, 32),
        n_frames=120,
        mean_counts=0.3,
        contrast=0.3,
        n_bins=4,
        q_per_pixel=1e-3,
        diffusion=5e4,
        frame_period=1e-3,
        seed=7,
        n_threads=1,
    )
    filename = str(tmp_path_factory.mktemp("tasks") / "scan.h5")
    sim.write_bliss_h5(filename, detector="eiger")
    return filename, sim.frames(), sim


def test_load_frames(scan):
    filename, frames, sim = scan
    rec = Recorder()
    out = run(LoadFrames, progress=rec, url=f"{filename}::/1.1", start=10, stop=100, step=2)
    source = out["frames"]
    assert isinstance(source, HDF5FrameSource)
    assert out["n_frames"] == 45 and out["frame_shape"] == [32, 32] and out["dtype"] == "uint8"
    assert out["frame_period"] == pytest.approx(2e-3)
    assert out["parameters"]["load"]["frame_period_source"].endswith("acquisition/frame_period")
    assert rec.values[-1] == 100
    numpy.testing.assert_array_equal(
        numpy.concatenate(list(source.iter_chunks(8))), frames[10:100:2]
    )
    out = run(LoadFrames, url=frames, frame_period=0.5)  # a NumPy array
    assert out["n_frames"] == 120 and out["frame_period"] == 0.5


def test_load_frames_errors(scan, tmp_path):
    filename, _, _ = scan
    with pytest.raises(Exception, match="does not exist") as info:
        run(LoadFrames, url=str(tmp_path / "nope.h5"))
    assert isinstance(info.value.__cause__, FileNotFoundError)
    with pytest.raises(Exception, match="beyond the data"):
        run(LoadFrames, url=f"{filename}::/1.1", stop=500)
    with pytest.raises(Exception, match="2-D dataset"):
        run(LoadFrames, url=f"{filename}::/1.1/simulation/labels")
    with pytest.raises(Exception, match="greater than or equal to 0"):  # pydantic validation
        run(LoadFrames, url=f"{filename}::/1.1", start=-1)


def test_build_qmask(scan, tmp_path):
    filename, frames, sim = scan
    out = run(
        BuildQMask,
        frames=frames,
        qmask=f"{filename}::/1.1/simulation/labels",
        q_values=f"{filename}::/1.1/simulation/q",
        parameters={"load": {"url": "x"}},
    )
    numpy.testing.assert_array_equal(out["qmask"], sim.labels)
    numpy.testing.assert_array_equal(out["q"], sim.q)
    numpy.testing.assert_array_equal(out["n_pixels"], sim.n_pixels)
    assert out["q_unit"] == "nm^-1" and set(out["parameters"]) == {"load", "qmask"}
    # Geometry with sectors and a detector mask file.
    mask = numpy.zeros((32, 32), dtype=numpy.uint8)
    mask[0] = 1
    numpy.save(tmp_path / "mask.npy", mask)
    out = run(
        BuildQMask,
        frames=frames,
        beam_center=[15.5, 15.5],
        distance=5.0,
        pixel_size=75e-6,
        energy=12.4,
        n_bins=3,
        n_sectors=2,
        mask=str(tmp_path / "mask.npy"),
    )
    assert (
        out["labels"].tolist() == [1, 2, 3, 4, 5, 6]
        and out["chi"].tolist() == [-90.0] * 3 + [90.0] * 3
    )
    assert not out["qmask"][0].any() and out["bad_pixels"][0].all()
    with pytest.raises(Exception, match="qmask shape .* differs from the frame shape"):
        run(BuildQMask, frames=frames, qmask=numpy.ones((8, 8), dtype=int))
    with pytest.raises(Exception, match="missing.poni"):
        run(BuildQMask, frames=frames, poni=str(tmp_path / "missing.poni"), n_bins=4)


def test_compact_events_and_cancel(scan, tmp_path):
    filename, frames, sim = scan
    source = HDF5FrameSource(filename, "/1.1/measurement/eiger")
    rec = Recorder()
    out = run(
        CompactEvents,
        progress=rec,
        frames=source,
        chunk_frames=16,
        events_file=str(tmp_path / "events.h5"),
    )
    assert out["events"] == compact(frames)
    assert out["events_file"] == str(tmp_path / "events.h5")
    assert out["n_events"] == numpy.count_nonzero(frames)
    assert rec.values[-1] == 100 and len(rec.values) > 5  # one report per chunk
    with h5py.File(tmp_path / "events.h5", "r") as f:
        assert f["events"].attrs["frame_period"] == pytest.approx(1e-3)
    # An existing events file is not replaced.
    with pytest.raises(Exception, match="exists"):
        run(CompactEvents, frames=source, events_file=str(tmp_path / "events.h5"))

    # Cancelled during the compaction: the task fails, no file is left behind.
    state = {"after_cancel": 0}

    def cancel_once(value):
        if state.get("cancelled"):
            state["after_cancel"] += 1
        elif 0 < value < 50:
            state["cancelled"] = True
            task.cancel()

    target = tmp_path / "cancelled"
    target.mkdir()
    task = CompactEvents(
        inputs={"frames": source, "chunk_frames": 8, "events_file": str(target / "events.h5")},
        progress=Recorder(cancel_once),
    )
    task.execute(raise_on_error=False)
    assert task.failed and isinstance(task.exception, Cancelled)
    assert "compaction cancelled" in str(task.exception)
    assert state["after_cancel"] == 0  # stopped at the next chunk
    assert os.listdir(target) == []


def test_compact_events_opencl(scan):
    from conftest import require_opencl

    require_opencl("cpu")
    filename, frames, sim = scan
    out = run(
        CompactEvents,
        frames=HDF5FrameSource(filename, "/1.1/measurement/eiger"),
        device="cpu",
        chunk_frames=32,
    )
    assert out["events"] == compact(frames)
    assert out["parameters"]["compact"]["device"] == "cpu"


def test_correlate_and_normalise(scan):
    filename, frames, sim = scan
    source = HDF5FrameSource(filename, "/1.1/measurement/eiger")
    expected = correlate(frames, sim.labels, method="reference")
    rec = Recorder()
    out = run(
        Correlate,
        progress=rec,
        frames=source,
        qmask=sim.labels,
        method="reference",
        options={"chunk_frames": 32},
    )
    assert out["method"] == "reference" and out["device"] == "cpu" and out["mode"] == "linear"
    numpy.testing.assert_array_equal(out["sums"].n2, expected.sums.n2)
    numpy.testing.assert_allclose(out["mean_image"], frames.mean(axis=0))
    assert out["parameters"]["correlate"]["method_requested"] == "reference"
    assert rec.values[-1] == 100 and 0 < rec.values[1] < 100
    norm = run(
        Normalise,
        sums=out["sums"],
        binning=out["binning"],
        frame_period=1e-3,
        q=sim.q[::-1],
        labels=[4, 3, 2, 1],
        method=out["method"],
    )
    numpy.testing.assert_array_equal(norm["g2"], expected.g2)
    numpy.testing.assert_array_equal(norm["g2_err"], expected.g2_err)
    numpy.testing.assert_allclose(norm["tau"], numpy.arange(120) * 1e-3)
    numpy.testing.assert_array_equal(norm["q"], sim.q)  # mapped through the labels
    assert norm["tau_unit"] == "s"
    norm = run(Normalise, sums=out["sums"], binning=out["binning"])
    assert (
        norm["tau_unit"] == "frame" and norm["q_unit"] == "" and norm["q"].tolist() == [1, 2, 3, 4]
    )


def test_correlate_events_auto_and_errors(scan):
    filename, frames, sim = scan
    expected = correlate(frames, sim.labels, method="reference")
    out = run(Correlate, frames=compact(frames), qmask=sim.labels)  # auto on events
    numpy.testing.assert_array_equal(out["sums"].n2, expected.sums.n2)
    assert out["method"] in ("opencl-events", "cpu-events", "fft", "reference")
    numpy.testing.assert_allclose(out["mean_image"], frames.mean(axis=0))
    out = run(Correlate, frames=compact(frames), qmask=sim.labels, method="reference")
    numpy.testing.assert_array_equal(out["sums"].n2, expected.sums.n2)  # dense method on events
    with pytest.raises(
        Exception, match="unknown correlation mode 'circular'; available modes: linear"
    ):
        run(Correlate, frames=frames, qmask=sim.labels, mode="circular")
    with pytest.raises(Exception, match="unknown correlation method 'magic'"):
        run(Correlate, frames=frames, qmask=sim.labels, method="magic")
    with pytest.raises(Exception, match="qmask shape"):
        run(Correlate, frames=frames, qmask=numpy.ones((4, 4), dtype=int))


def test_correlate_cancel(scan):
    filename, frames, sim = scan
    state = {}

    def cancel_once(value):
        if 0 < value < 90 and not state:
            state["cancelled"] = True
            task.cancel()

    task = Correlate(
        inputs={
            "frames": HDF5FrameSource(filename, "/1.1/measurement/eiger"),
            "qmask": sim.labels,
            "method": "reference",
            "options": {"chunk_frames": 10},
        },
        progress=Recorder(cancel_once),
    )
    task.execute(raise_on_error=False)
    assert task.failed and isinstance(task.exception, Cancelled)


def test_save_results(scan, tmp_path):
    filename, frames, sim = scan
    res = correlate(frames, sim.labels, method="reference")
    inputs = dict(
        output=str(tmp_path / "r.h5"),
        result=res,
        tau=res.lags * 1e-3,
        q=sim.q,
        qmask=sim.labels,
        mean_image=frames.mean(axis=0),
        frame_period=1e-3,
        parameters={"load": {"url": filename}},
        plot="curves.png",
    )
    out = run(SaveResults, **inputs)
    assert out["output"] == str(tmp_path / "r.h5") and out["png"] == str(tmp_path / "curves.png")
    assert len(out["fit"]["gamma"]) == 4
    with h5py.File(tmp_path / "r.h5", "r") as f:
        numpy.testing.assert_array_equal(f["entry/xpcs/g2/g2"][()], res.g2)
        assert f["entry/xpcs/parameters/load/url"][()].decode() == filename
        assert f["entry/xpcs/parameters/save/overwrite"][()] == False  # noqa: E712
        numpy.testing.assert_allclose(f["entry/xpcs/fit/gamma"][()], out["fit"]["gamma"])
    before = os.path.getmtime(tmp_path / "r.h5")
    with pytest.raises(Exception, match="exists"):
        run(SaveResults, **inputs)
    assert os.path.getmtime(tmp_path / "r.h5") == before
    out = run(SaveResults, **{**inputs, "overwrite": True, "plot": False, "fit": False})
    assert out["png"] is None and out["fit"] is None


def _correlate_normalise(frames, sim, **correlate_inputs):
    """Correlate → Normalise as the workflow links them (mode and mode options passed on)."""
    out = run(Correlate, frames=frames, qmask=sim.labels, **correlate_inputs)
    norm = run(
        Normalise,
        sums=out["sums"],
        binning=out["binning"],
        frame_period=1e-3,
        q=sim.q,
        method=out["method"],
        device=out["device"],
        mode=out["mode"],
        mode_options=out["mode_options"],
        parameters=out["parameters"],
    )
    return out, norm


def test_multitau_through_the_tasks(scan, tmp_path):
    from silx.io.nxdata import get_default

    from ewoksxpcs.correlators import multitau

    filename, frames, sim = scan
    source = HDF5FrameSource(filename, "/1.1/measurement/eiger")
    out, norm = _correlate_normalise(
        source, sim, mode="multitau", lags_per_level=8, method="numpy", options={"chunk_frames": 25}
    )
    assert out["mode"] == "multitau" and out["mode_options"] == {"lags_per_level": 8}
    assert out["parameters"]["correlate"]["mode_options"] == {"lags_per_level": 8}
    numpy.testing.assert_allclose(out["mean_image"], frames.mean(axis=0))
    # Level 0 (lags 0..7) is exactly the linear g2 of the same frames.
    linear = correlate(frames, sim.labels, method="reference")
    lags = numpy.round(norm["tau"] / 1e-3).astype(int)
    assert lags[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14]
    numpy.testing.assert_array_equal(norm["g2"][:, :8], linear.g2[:, :8])
    numpy.testing.assert_allclose(norm["g2_err"][:, :8], linear.g2_err[:, :8], rtol=1e-12)
    numpy.testing.assert_array_equal(norm["result"].n2[:, :8], linear.n2[:, :8])
    lib = multitau(frames, sim.labels, lags_per_level=8, method="numpy")
    numpy.testing.assert_array_equal(norm["g2"], lib.g2)
    assert norm["result"].frame_period == 1e-3

    saved = run(
        SaveResults,
        output=str(tmp_path / "mt.h5"),
        result=norm["result"],
        tau=norm["tau"],
        q=norm["q"],
        qmask=sim.labels,
        mean_image=out["mean_image"],
        frame_period=1e-3,
        parameters=norm["parameters"],
    )
    assert os.path.exists(saved["png"]) and len(saved["fit"]["gamma"]) == 4
    with h5py.File(saved["output"], "r") as f:
        nxdata = get_default(f)  # the multi-tau g2, with errors, against q and tau
        assert nxdata.group.name == "/entry/xpcs/g2" and "multi-tau" in nxdata.title
        assert nxdata.axes_dataset_names == ["q", "tau"]
        numpy.testing.assert_array_equal(nxdata.signal[()], norm["g2"])
        numpy.testing.assert_array_equal(nxdata.errors[()], norm["g2_err"])
        numpy.testing.assert_allclose(nxdata.axes[0][()], sim.q)
        numpy.testing.assert_allclose(nxdata.axes[1][()], lib.lags * 1e-3)
        proc = f["entry/xpcs"]
        assert proc["mode"][()] == b"multitau"
        assert proc["g2/normalisation"][()] == b"standard"
        numpy.testing.assert_array_equal(proc["g2/level"][()], lib.level)
        numpy.testing.assert_array_equal(proc["sums/n2"][()], lib.n2)
        assert proc["sums/n2"].dtype == numpy.int64
        numpy.testing.assert_array_equal(proc["sums/d2"][()], lib.d2)
        assert proc["parameters/normalise/mode_options/lags_per_level"][()] == 8


def test_twotime_through_the_tasks(scan, tmp_path):
    from silx.io.nxdata import NXdata, get_default

    from ewoksxpcs.correlators import twotime

    filename, frames, sim = scan
    source = HDF5FrameSource(filename, "/1.1/measurement/eiger")
    out, norm = _correlate_normalise(
        source, sim, mode="twotime", twotime_bins=[3, 1], time_bin=2, method="numpy"
    )
    assert out["mode_options"] == {"twotime_bins": [3, 1], "time_bin": 2}
    assert out["parameters"]["correlate"]["time_bin_used"] == 2
    expected = twotime(frames, sim.labels, bins=[1, 3], time_bin=2, method="numpy")
    result = norm["result"]
    assert result.C.shape == (2, 60, 60) and result.labels.tolist() == [1, 3]
    numpy.testing.assert_array_equal(result.C, expected.C)
    numpy.testing.assert_array_equal(norm["g2"], expected.g2)
    numpy.testing.assert_allclose(norm["tau"], numpy.arange(60) * 2e-3)
    numpy.testing.assert_array_equal(norm["q"], sim.q[[0, 2]])  # rows of the mapped bins

    saved = run(
        SaveResults,
        output=str(tmp_path / "tt.h5"),
        result=result,
        tau=norm["tau"],
        q=norm["q"],
        qmask=sim.labels,
        frame_period=1e-3,
        parameters=norm["parameters"],
    )
    with h5py.File(saved["output"], "r") as f:
        default = get_default(f)  # the g2 derived from the maps stays the default plot
        assert default.group.name == "/entry/xpcs/g2" and default.signal.shape == (2, 60)
        numpy.testing.assert_array_equal(default.signal[()], expected.g2)
        maps = NXdata(f["entry/xpcs/twotime/maps"])
        assert maps.is_valid and maps.signal.ndim == 3 and maps.interpretation == "image"
        assert maps.signal_is_3d and maps.axes_dataset_names == ["labels", "t1", "t2"]
        numpy.testing.assert_array_equal(TwoTimeResult.read_maps(maps.group), expected.C)
        numpy.testing.assert_allclose(maps.axes[1][()], (numpy.arange(60) * 2 + 0.5) * 1e-3)
        numpy.testing.assert_allclose(f["entry/xpcs/twotime/maps/q"][()], sim.q[[0, 2]])
        # Intensity per time bin: counts per pixel per frame.
        intensity = f["entry/xpcs/intensity/intensity"][()]
        assert intensity.shape == (2, 60)
        numpy.testing.assert_allclose(
            intensity[0], frames[:, sim.labels == 1].reshape(60, 2, -1).mean(axis=(1, 2))
        )
        assert f["entry/xpcs/mode"][()] == b"twotime"


def test_mode_option_errors(scan):
    filename, frames, sim = scan
    with pytest.raises(Exception, match="option 'time_bin' does not apply to mode 'multitau'"):
        run(Correlate, frames=frames, qmask=sim.labels, mode="multitau", time_bin=2)
    with pytest.raises(Exception, match="option 'lags_per_level' does not apply to mode 'linear'"):
        run(Correlate, frames=frames, qmask=sim.labels, lags_per_level=4)
    with pytest.raises(Exception, match="lags_per_level must be an even integer >= 2, got 3"):
        run(Correlate, frames=frames, qmask=sim.labels, mode="multitau", lags_per_level=3)
    with pytest.raises(Exception, match="unknown multi-tau normalisation 'odd'"):
        run(Correlate, frames=frames, qmask=sim.labels, mode="multitau", normalisation="odd")
    with pytest.raises(Exception, match=r"twotime bins \[9\] are not qmask labels"):
        run(Correlate, frames=frames, qmask=sim.labels, mode="twotime", twotime_bins=[9])
    linear = run(Correlate, frames=frames, qmask=sim.labels, method="reference")
    with pytest.raises(Exception, match="mode 'twotime' normalises a TwoTimeResult"):
        run(Normalise, sums=linear["sums"], binning=linear["binning"], mode="twotime")
