"""One data path for every mode (ewoksxpcs.pipeline.correlate_sums): a bitshuffle-LZ4 Bliss
scan read as raw chunks, decompressed and compacted on the OpenCL device, and the
device-resident events consumed there by linear, multi-tau and two-time; equal to the CPU
reference (exact int64 sums; two-time maps to float32 rounding)."""

import numpy
import pytest

from conftest import require_opencl
from ewoksxpcs.opencl.compact import compact_opencl
from ewoksxpcs.tools.synthetic_eiger import read_eiger_truth, write_eiger_scan
from ewoksxpcs.io.load import load_frames
from ewoksxpcs.workflow.pipeline import correlate_sums
from ewoksxpcs.engine.qmask import Binning

MODES = ("linear", "multitau", "twotime")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A small Eiger-like scan: master + 3 data files, uint16 bitshuffle-LZ4, pixel mask."""
    d = tmp_path_factory.mktemp("bslz4")
    master = write_eiger_scan(d / "scan", n_frames=150, shape=(48, 40), counts=0.05,
                              frames_per_file=50, processes=1)
    truth = read_eiger_truth(master)
    frames = numpy.concatenate(list(load_frames(master).iter_chunks()))
    return master, truth["labels"].astype(numpy.int32), truth["gap_mask"], frames


def _cpu_reference(mode, frames, binning):
    method = {"linear": "reference", "multitau": "numpy", "twotime": "numpy"}[mode]
    return correlate_sums(frames, binning, method=method, mode=mode)["sums"]


def _assert_same(mode, sums, ref):
    if mode == "twotime":
        numpy.testing.assert_array_equal(sums.frame_sums, ref.frame_sums)  # int64 S(T)
        numpy.testing.assert_allclose(sums.C, ref.C, rtol=2e-6, atol=1e-6)
        return
    assert sums.n2.dtype == numpy.int64 and sums.frame_sums.dtype == numpy.int64
    numpy.testing.assert_array_equal(sums.n2, ref.n2)
    numpy.testing.assert_array_equal(sums.frame_sums, ref.frame_sums)


def _device_path_equals_reference(scan, device):
    master, labels, gaps, frames = scan
    binning = Binning(labels, bad_pixels=gaps)
    # The stages by hand: raw chunks decompressed and compacted on the device, events resident.
    events = compact_opencl(load_frames(master), device=device, bad_pixels=gaps)
    assert "raw chunks decompressed on the device" in events.compaction
    assert events.resident is not None
    for mode in MODES:
        out = correlate_sums(events, binning, method="opencl-events", device=device, mode=mode)
        _assert_same(mode, out["sums"], _cpu_reference(mode, frames, binning))
    assert events._values is None, "the device-resident events were downloaded to the host"
    # The same through the pipeline from the file, as the Correlate task runs it.
    for mode in MODES:
        out = correlate_sums(load_frames(master), binning, method="opencl-events",
                             device=device, mode=mode, bad_pixels=gaps)
        assert out["method"] == "opencl-events" and out["timings"]["compact_s"] > 0
        _assert_same(mode, out["sums"], _cpu_reference(mode, frames, binning))


def test_device_path_equals_cpu_reference(scan):
    require_opencl("cpu")
    _device_path_equals_reference(scan, "cpu")


@pytest.mark.gpu
def test_device_path_equals_cpu_reference_gpu(scan):
    require_opencl("gpu")
    _device_path_equals_reference(scan, "gpu")


def test_float_events_read_after_the_compaction():
    """Float frames (e.g. weighted by a monitor) compacted on the device: the events are read
    after the compaction's queue is done (no pixel sums downloaded to wait on), every time."""
    require_opencl("cpu")
    rng = numpy.random.default_rng(3)
    labels = 1 + (numpy.arange(48 * 48).reshape(48, 48) % 3)
    weights = numpy.linspace(1.0, 0.7, 2000)[:, None, None]
    frames = (rng.poisson(1.0, (2000, 48, 48)) * weights).astype(numpy.float32)
    binning = Binning(labels)
    for mode, opts in (("multitau", None), ("twotime", {"time_bin": 20})):
        method = {"linear": "reference", "multitau": "numpy", "twotime": "numpy"}[mode]
        ref = correlate_sums(frames, binning, method=method, mode=mode, mode_options=opts)["sums"]
        for _ in range(4):
            sums = correlate_sums(frames, binning, method="opencl-events", device="cpu",
                                  mode=mode, mode_options=opts)["sums"]
            if mode == "twotime":
                numpy.testing.assert_allclose(sums.C, ref.C, rtol=1e-5, atol=1e-6)
            else:
                numpy.testing.assert_allclose(sums.n2, ref.n2, rtol=1e-12)
