"""Frame sources from files: Bliss scans, NeXus, plain HDF5, EDF series, events files."""

from __future__ import annotations

import os
import pickle

import h5py
import hdf5plugin
import numpy
import pytest

from ewoksxpcs import correlate
from ewoksxpcs.engine.events import EventStack, compact
from ewoksxpcs.engine.frames import ArrayFrameSource
from ewoksxpcs.io.load import (
    EventFrameSource,
    FabioFrameSource,
    HDF5FrameSource,
    find_frames_dataset,
    load_frames,
    parse_url,
    read_image,
)
from ewoksxpcs.workflow.pipeline import save_events
from ewoksxpcs.tools.synthetic import SyntheticXPCS


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A small Bliss-like scan (bitshuffle-LZ4, 1 frame per HDF5 chunk) and its frames."""
    sim = SyntheticXPCS(
        shape=(24, 20),
        n_frames=50,
        mean_counts=0.5,
        contrast=0.3,
        n_bins=3,
        q_per_pixel=1e-3,
        diffusion=1e3,
        frame_period=2e-3,
        seed=3,
        n_threads=1,
    )
    filename = str(tmp_path_factory.mktemp("load") / "scan.h5")
    sim.write_bliss_h5(filename, detector="eiger")
    return filename, sim.frames(), sim


def collect(source, chunk_frames=None):
    return numpy.concatenate(list(source.iter_chunks(chunk_frames)))


def test_bliss_scan_entry(scan):
    filename, frames, sim = scan
    for url in (
        f"{filename}::/1.1",
        f"{filename}::/1.1/measurement/eiger",
        f"{filename}::/1.1/instrument/eiger/data",
        f"{filename}::/1.1/instrument/eiger",
        f"silx://{filename}?path=/1.1",
    ):
        source = load_frames(url)
        assert isinstance(source, HDF5FrameSource)
        assert source.shape == frames.shape and source.dtype == frames.dtype
        # Frame period from the detector's acquisition metadata.
        assert source.frame_period == pytest.approx(sim.frame_period)
        assert "frame_period" in source.frame_period_source
        numpy.testing.assert_array_equal(collect(source, 7), frames)


def test_frame_range_stride_and_period(scan):
    filename, frames, sim = scan
    source = load_frames(f"{filename}::/1.1", start=5, stop=45, step=3)
    assert source.n_frames == len(range(5, 45, 3))
    assert source.frame_period == pytest.approx(3 * sim.frame_period)
    numpy.testing.assert_array_equal(collect(source, 4), frames[5:45:3])
    # The same range given as a URL slice.
    url = f"silx://{filename}?path=/1.1/measurement/eiger&slice=5:45:3"
    numpy.testing.assert_array_equal(collect(load_frames(url)), frames[5:45:3])
    # Explicit frame period wins over the file's.
    assert load_frames(f"{filename}::/1.1", frame_period=0.5).frame_period == 0.5


def test_chunks_follow_hdf5_chunking(tmp_path):
    data = numpy.arange(30 * 4 * 5, dtype=numpy.uint16).reshape(30, 4, 5)
    filename = str(tmp_path / "chunked.h5")
    with h5py.File(filename, "w") as f:
        f.create_dataset(
            "frames", data=data, chunks=(4, 4, 5), **hdf5plugin.Bitshuffle(cname="lz4")
        )
    source = HDF5FrameSource(filename, "/frames", start=2, stop=27)
    chunks = list(source.iter_chunks(8))  # 8 = two HDF5 chunks
    # Reads end on HDF5 chunk edges: frames 2-7, 8-15, 16-23, 24-26.
    assert [c.shape[0] for c in chunks] == [6, 8, 8, 3]
    numpy.testing.assert_array_equal(numpy.concatenate(chunks), data[2:27])
    # The default chunk is a whole number of HDF5 chunks.
    assert source.default_chunk_frames() % 4 == 0
    # Never more frames at once than asked.
    assert max(c.shape[0] for c in source.iter_chunks(3)) == 3


def test_nexus_and_plain_hdf5(tmp_path):
    data = numpy.random.default_rng(0).poisson(1.0, (12, 6, 7)).astype(numpy.uint32)
    nexus = str(tmp_path / "nexus.h5")
    with h5py.File(nexus, "w") as f:
        f.attrs["default"] = "entry"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "plot"
        det = entry.create_group("instrument/detector")
        det.attrs["NX_class"] = "NXdetector"
        det["data"] = data
        det["frame_time"] = 5.0
        det["frame_time"].attrs["units"] = "ms"
        plot = entry.create_group("plot")
        plot.attrs["NX_class"] = "NXdata"
        plot.attrs["signal"] = "frames"
        plot["frames"] = h5py.SoftLink("/entry/instrument/detector/data")
    source = load_frames(nexus)  # root → entry → NXdata → signal
    numpy.testing.assert_array_equal(collect(source), data)
    assert load_frames(f"{nexus}::/entry/instrument/detector").frame_period == pytest.approx(5e-3)

    plain = str(tmp_path / "plain.h5")
    with h5py.File(plain, "w") as f:
        f["stack"] = data.astype(numpy.int16)
        f["other"] = numpy.zeros((3, 3))
    source = load_frames(plain)  # the only 3-D dataset
    assert source.path == "/stack" and source.frame_period is None
    numpy.testing.assert_array_equal(collect(source), data)


def test_lima_acquisition_parameters(tmp_path):
    filename = str(tmp_path / "lima.h5")
    with h5py.File(filename, "w") as f:
        det = f.create_group("1.1/instrument/pilatus")
        det["data"] = numpy.zeros((4, 3, 3), dtype=numpy.int32)
        det["acq_parameters/acq_expo_time"] = 0.01
        det["acq_parameters/acq_latency_time"] = 0.002
        f["1.1/measurement/pilatus"] = det["data"]
    source = load_frames(f"{filename}::/1.1", step=2)
    assert source.frame_period == pytest.approx(2 * 0.012)


def test_detector_choice(tmp_path):
    filename = str(tmp_path / "two.h5")
    with h5py.File(filename, "w") as f:
        f["1.1/measurement/eiger"] = numpy.ones((3, 4, 4), dtype=numpy.uint16)
        f["1.1/measurement/maxipix"] = numpy.zeros((3, 2, 2), dtype=numpy.uint16)
        f["1.1/measurement/diode"] = numpy.zeros(3)
    with pytest.raises(ValueError, match=r"several 3-D detector datasets \['eiger', 'maxipix'\]"):
        load_frames(f"{filename}::/1.1")
    assert load_frames(f"{filename}::/1.1", detector="maxipix").frame_shape == (2, 2)
    with pytest.raises(ValueError, match="no detector 'pco'"):
        load_frames(f"{filename}::/1.1", detector="pco")


def test_bad_inputs(scan, tmp_path):
    filename, frames, _ = scan
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        load_frames(str(tmp_path / "missing.h5") + "::/1.1")
    with pytest.raises(ValueError, match="has no dataset or group '/2.1'"):
        load_frames(f"{filename}::/2.1")
    with pytest.raises(ValueError, match="2-D dataset"):
        load_frames(f"{filename}::/1.1/simulation/labels")
    with pytest.raises(ValueError, match="beyond the data: it has 50 frames"):
        load_frames(f"{filename}::/1.1", start=10, stop=60)
    with pytest.raises(ValueError, match="beyond the data"):
        load_frames(f"{filename}::/1.1", start=50)
    with pytest.raises(ValueError, match="selects no frame"):
        load_frames(f"{filename}::/1.1", start=10, stop=10)
    with pytest.raises(ValueError, match="step must be >= 1"):
        load_frames(f"{filename}::/1.1", step=0)
    text = tmp_path / "not.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match="cannot read .* as HDF5"):
        load_frames(str(text))
    with pytest.raises(TypeError, match="unsupported frame dtype float64"):
        load_frames(numpy.zeros((3, 2, 2)))


def test_arrays_and_pickling(scan):
    filename, frames, _ = scan
    source = load_frames(frames, start=2, stop=10)
    assert isinstance(source, ArrayFrameSource)
    numpy.testing.assert_array_equal(collect(source), frames[2:10])
    h5source = load_frames(f"{filename}::/1.1", start=1, step=2)
    clone = pickle.loads(pickle.dumps(h5source))  # by file name and path, no open handle
    numpy.testing.assert_array_equal(collect(clone), frames[1::2])
    # Indexing (used to sample frames) follows the selected range.
    numpy.testing.assert_array_equal(h5source[3], frames[7])
    numpy.testing.assert_array_equal(h5source.read_frames([0, 2]), frames[[1, 5]])


def test_plugs_into_correlate(scan):
    filename, frames, sim = scan
    source = load_frames(f"{filename}::/1.1")
    expected = correlate(frames, sim.labels, method="reference")
    result = correlate(source, sim.labels, method="reference")
    numpy.testing.assert_array_equal(result.n2, expected.n2)
    numpy.testing.assert_array_equal(result.g2, expected.g2)


def test_edf_series(tmp_path):
    fabio = pytest.importorskip("fabio")
    from fabio.edfimage import EdfImage

    rng = numpy.random.default_rng(1)
    data = rng.poisson(2.0, (6, 5, 4)).astype(numpy.uint16)
    for i in range(3):
        EdfImage(data=data[2 * i], header={"frame_period": "0.25"}).write(
            str(tmp_path / f"img_{i:02d}.edf")
        )
    # Files of one and of two frames: append the second frame to each.
    for i in range(3):
        img = fabio.open(str(tmp_path / f"img_{i:02d}.edf"))
        img.append_frame(data=data[2 * i + 1], header={"frame_period": "0.25"})
        img.write(str(tmp_path / f"img_{i:02d}.edf"))
    source = load_frames(str(tmp_path / "img_*.edf"), start=1, step=2)
    assert isinstance(source, FabioFrameSource)
    assert source.frame_period == pytest.approx(0.5)
    numpy.testing.assert_array_equal(collect(source, 2), data[1::2])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        load_frames(str(tmp_path / "none_*.edf"))


def test_events_file_and_event_frames(scan, tmp_path):
    filename, frames, sim = scan
    events = compact(frames)
    name = save_events(events, str(tmp_path / "events.h5"), frame_period=sim.frame_period)
    loaded = load_frames(name)
    assert isinstance(loaded, EventStack) and loaded == events
    assert loaded.frame_period == pytest.approx(sim.frame_period)
    with pytest.raises(ValueError, match="events file: a frame range cannot be applied"):
        load_frames(name, start=3)
    dense = EventFrameSource(events)
    numpy.testing.assert_array_equal(collect(dense, 7), frames)
    numpy.testing.assert_array_equal(dense[13], frames[13])


def test_read_image_and_url(scan, tmp_path):
    filename, _, sim = scan
    numpy.testing.assert_array_equal(read_image(f"{filename}::/1.1/simulation/labels"), sim.labels)
    numpy.save(tmp_path / "labels.npy", sim.labels)
    numpy.testing.assert_array_equal(read_image(str(tmp_path / "labels.npy")), sim.labels)
    with pytest.raises(ValueError, match="give the dataset path"):
        read_image(filename)
    with pytest.raises(ValueError, match="must be a 2-D image"):
        read_image(f"{filename}::/1.1/measurement/eiger")
    assert parse_url("a.h5::/x/y") == ("a.h5", "/x/y", None)
    assert parse_url("plain.h5") == ("plain.h5", None, None)
    with h5py.File(filename, "r") as f:
        assert find_frames_dataset(f["/1.1"]).name == "/1.1/measurement/eiger"
    assert os.path.exists(filename)
