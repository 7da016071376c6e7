"""Sparse frames (ESRF Lima/pyFAI ``frame_ptr``/``index``/``intensity``) read straight into
events: identical to compacting the dense frames, g2 identical to correlating them (CPU and
OpenCL), the generator's files read back by fabio's own SparseImage."""

from __future__ import annotations

import h5py
import numpy
import pytest
from conftest import require_opencl
from fabio.sparseimage import SparseImage

from ewoksxpcs import compact, correlate
from ewoksxpcs.app.cli import main
from ewoksxpcs.io.load import load_frames
from ewoksxpcs.io.sparse import read_sparse_events
from ewoksxpcs.tools.synthetic_sparse import write_sparse_frames


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("sparse")
    rng = numpy.random.default_rng(5)
    frames = rng.poisson(0.25, (80, 16, 18)).astype(numpy.uint16)
    frames[:, 2, 3] += 40  # a hot pixel, masked in the file
    mask = numpy.zeros((16, 18), dtype=bool)
    mask[2, 3] = True
    labels = numpy.zeros((16, 18), dtype=numpy.int32)
    labels[1:8, 1:16] = 1
    labels[8:15, 2:17] = 2
    labels[2, 5:9] = 3
    labels[mask] = 0  # as BuildQMask does for masked pixels
    pyfai = str(d / "sparse.h5")
    write_sparse_frames(pyfai, frames, mask=mask, frame_period=1e-3)
    bliss = str(d / "bliss.h5")
    write_sparse_frames(bliss, frames, layout="bliss", frame_period=2e-3)
    return frames, mask, labels, pyfai, bliss


def test_fabio_reads_the_generated_file(data):
    frames, mask, _, pyfai, _ = data
    img = SparseImage().read(pyfai)
    assert img.nframes == frames.shape[0]
    dense = numpy.stack([img.getframe(i).data for i in range(img.nframes)])
    numpy.testing.assert_array_equal(dense[:, ~mask], frames[:, ~mask])


@pytest.mark.parametrize("chunk_frames", [1, 7, 1000])
def test_events_equal_compaction_of_dense_frames(data, chunk_frames):
    frames, mask, _, pyfai, _ = data
    events = read_sparse_events(pyfai, chunk_frames=chunk_frames)
    assert events == compact(frames, bad_pixels=mask)  # the file's mask drops the hot pixel
    assert events.frame_period == 1e-3


def test_bliss_scan_through_load_frames(data):
    frames, _, _, _, bliss = data
    events = load_frames(bliss + "::/1.1", start=10, stop=70)
    assert events == compact(frames[10:70])
    assert events.frame_period == 2e-3
    with pytest.raises(ValueError, match="frame step"):
        load_frames(bliss + "::/1.1", step=2)


@pytest.mark.parametrize("mode", ["linear", "multitau"])
@pytest.mark.parametrize("method", ["fft", "opencl-events",
                                    pytest.param("opencl-events-gpu", marks=pytest.mark.gpu)])
def test_g2_equals_dense_correlation(data, mode, method):
    frames, mask, labels, pyfai, _ = data
    device = None
    if method.startswith("opencl"):
        device = "gpu" if method.endswith("gpu") else "cpu"
        require_opencl(device)
        method = "opencl-events"
    events = load_frames(pyfai)
    dense_frames = numpy.where(mask, 0, frames)  # the masked pixel is in no bin anyway
    ref = correlate(dense_frames, labels, method="reference" if mode == "linear" else "numpy",
                    mode=mode)
    got = correlate(events, labels, method=method if mode == "linear" else
                    ("opencl" if method.startswith("opencl") else "numpy"),
                    device=device, mode=mode)
    numpy.testing.assert_array_equal(got.n2, ref.n2)
    numpy.testing.assert_array_equal(got.frame_sums, ref.frame_sums)
    numpy.testing.assert_array_equal(got.g2, ref.g2)


def test_cli_run_on_sparse_equals_dense(data, tmp_path):
    frames, mask, labels, pyfai, _ = data
    numpy.save(tmp_path / "labels.npy", labels)
    dense = tmp_path / "dense.h5"
    with h5py.File(dense, "w") as f:
        f["data"] = numpy.where(mask, 0, frames)
    common = ["--qmask", str(tmp_path / "labels.npy"), "-q", "--no-plot", "--no-fit",
              "--frame-period", "1e-3", "--method", "fft"]
    assert main(["run", pyfai, "-o", str(tmp_path / "s.h5")] + common) == 0
    assert main(["run", str(dense) + "::/data", "-o", str(tmp_path / "d.h5")] + common) == 0
    with h5py.File(tmp_path / "s.h5", "r") as s, h5py.File(tmp_path / "d.h5", "r") as d:
        numpy.testing.assert_array_equal(s["entry/xpcs/g2/g2"][()], d["entry/xpcs/g2/g2"][()])


def _bad_file(path, index, intensity, ptr):
    with h5py.File(path, "w") as f:
        g = f.create_group("s")
        g.attrs["frame_shape"] = [4, 4]
        g["index"], g["intensity"], g["frame_ptr"] = index, intensity, ptr


@pytest.mark.parametrize("index,intensity,ptr,message", [
    ([1, 1], [1, 2], [0, 2], "appears twice in frame 0"),
    ([1, 16], [1, 2], [0, 2], "outside the"),
    ([1, 2], [1, -2], [0, 2], "negative value"),
    ([1, 2], [1, 2], [0, 3], "frame_ptr"),
])
def test_bad_sparse_files(tmp_path, index, intensity, ptr, message):
    path = tmp_path / "bad.h5"
    _bad_file(path, numpy.asarray(index), numpy.asarray(intensity, dtype=numpy.int32),
              numpy.asarray(ptr))
    with pytest.raises(ValueError, match=message):
        read_sparse_events(str(path))
