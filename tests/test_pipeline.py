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


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("through", ["pipeline", "correlator"])
def test_the_correlation_programs_compile_while_the_frames_are_compacted(scan, monkeypatch,
                                                                        mode, through):
    """The device path asks for its correlation's programs (and the decoder's) before it
    compacts: they compile in background threads, none on the run's own thread."""
    from _opencl_checks import recording_compiles
    from ewoksxpcs.correlators.registry import get_backend
    from ewoksxpcs.opencl.device import get_device

    require_opencl("cpu")
    master, labels, gaps, frames = scan
    binning = Binning(labels, bad_pixels=gaps)
    compiled = recording_compiles(monkeypatch, get_device("cpu"))
    if through == "pipeline":
        sums = correlate_sums(load_frames(master), binning, method="opencl-events", device="cpu",
                              mode=mode, bad_pixels=gaps)["sums"]
        _assert_same(mode, sums, _cpu_reference(mode, frames, binning))
    else:  # the correlator's own compaction
        correlator = get_backend(mode, "opencl-events")(binning, device="cpu")
        if mode == "twotime":
            ref = _cpu_reference(mode, frames, binning)
            numpy.testing.assert_allclose(correlator.correlate(load_frames(master)).C, ref.C,
                                          rtol=2e-6, atol=1e-6)
        else:
            _assert_same(mode, correlator.compute_sums(load_frames(master)),
                         _cpu_reference(mode, frames, binning))
    program = {"linear": "events.cl", "multitau": "multitau.cl", "twotime": "twotime.cl"}[mode]
    where = {}
    for thread, filename, _ in compiled:
        where.setdefault(filename, set()).add(thread)
    assert where.get(program) == {"ewoksxpcs-build"}, compiled
    assert where.get("bslz4.cl") == {"ewoksxpcs-build"}, compiled
    assert where.get("compact.cl") == {"MainThread"}, compiled


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


# ------------------------------------------------------------------------------ one path, top to bottom
@pytest.fixture(scope="module")
def small_scan(tmp_path_factory):
    """A Bliss-layout HDF5 scan with a known g2 (exponential decay), its frames and labels."""
    from ewoksxpcs.tools.synthetic import SyntheticXPCS

    sim = SyntheticXPCS(shape=(24, 24), n_frames=120, mean_counts=0.5, contrast=0.3, n_bins=3,
                        q_per_pixel=1e-3, diffusion=5e4, frame_period=1e-3, seed=4, n_threads=1)
    filename = str(tmp_path_factory.mktemp("path") / "scan.h5")
    sim.write_bliss_h5(filename, detector="eiger")
    return filename, sim.frames(), sim.labels


@pytest.mark.parametrize("mode", MODES)
def test_run_pipeline_from_the_file_equals_the_steps_on_the_frames(small_scan, mode):
    """run_pipeline(url) = the public correlate() on the frames in memory (exact int64 sums)."""
    from ewoksxpcs import correlate
    from ewoksxpcs.workflow.pipeline import run_pipeline

    filename, frames, labels = small_scan
    method = "reference" if mode == "linear" else "numpy"
    out = run_pipeline(filename + "::/1.1", labels, method=method, mode=mode, fit=True)
    ref = correlate(frames, labels, method=method, mode=mode)
    assert out["frame_period"] == pytest.approx(1e-3)
    numpy.testing.assert_array_equal(out["q_bins"].qmask, labels)
    assert out["tau_unit"] == "s" and out["n_frames"] == frames.shape[0]
    numpy.testing.assert_array_equal(out["labels"], ref.labels)
    numpy.testing.assert_allclose(out["g2"], ref.g2, rtol=1e-12, equal_nan=True)
    numpy.testing.assert_allclose(out["tau"], ref.lags * 1e-3)
    numpy.testing.assert_allclose(out["mean_image"], frames.mean(axis=0), rtol=1e-12)
    if mode != "twotime":
        assert out["sums"].n2.dtype == numpy.int64
    assert out["fit"].gamma.shape == (3,) and out["power_law"] is not None


def test_run_pipeline_equals_the_shipped_workflow(small_scan, tmp_path):
    """The same inputs through the Ewoks workflow ``xpcs`` and through run_pipeline: the same
    sums, g2, τ, q and fit (q-mask and q per bin read from the file, a bad frame)."""
    import h5py
    from ewokscore import execute_graph

    from ewoksxpcs.workflow.pipeline import run_pipeline
    from ewoksxpcs.workflows import workflow_path

    filename, frames, labels = small_scan
    qmask = {"qmask": f"{filename}::/1.1/simulation/labels",
             "q_values": f"{filename}::/1.1/simulation/q"}
    out_file = str(tmp_path / "r.h5")
    values = {"load": {"url": f"{filename}::/1.1"}, "qmask": qmask,
              "correlate": {"method": "matmul", "bad_frames": "7"},
              "save": {"output": out_file, "plot": False, "fit": "exp"}}
    wf = execute_graph(workflow_path("xpcs"), inputs=[
        {"id": node, "name": k, "value": v} for node, kv in values.items() for k, v in kv.items()])
    out = run_pipeline(f"{filename}::/1.1", qmask.pop("qmask"), qmask_options=qmask,
                       method="matmul", bad_frames="7", fit="exp")
    with h5py.File(out_file, "r") as f:
        proc = f["entry/xpcs"]
        numpy.testing.assert_array_equal(proc["sums/n2"][()], out["result"].n2)
        numpy.testing.assert_array_equal(proc["g2/g2"][()], out["g2"])
        numpy.testing.assert_array_equal(proc["g2/tau"][()], out["tau"])
        numpy.testing.assert_array_equal(proc["g2/q"][()], out["q"])
    numpy.testing.assert_array_equal(wf["fit"]["gamma"], out["fit"].gamma)
    assert out["bad_frames"]["scan_indices"].tolist() == [7]


def test_the_source_is_opened_once_and_monitored_once_per_pass(small_scan, monkeypatch):
    """The frame source the pipeline opens is the one every pass reads (no re-wrapping): the
    bad-frame detection and the correlation each read it through one monitor, whose chain of
    sources ends at that very object."""
    from ewoksxpcs.engine.frames import FrameSource
    from ewoksxpcs.io.load import load_frames
    from ewoksxpcs.workflow import pipeline
    from ewoksxpcs.workflow.cancellation import MonitoredFrameSource

    monitors = []

    class Counted(MonitoredFrameSource):
        def __init__(self, source, **kwargs):
            monitors.append(self)
            super().__init__(source, **kwargs)

    monkeypatch.setattr(pipeline, "MonitoredFrameSource", Counted)
    filename, frames, labels = small_scan
    source = load_frames(filename + "::/1.1")
    out = pipeline.correlate_sums(source, labels, method="reference", bad_frames="3",
                                  auto_bad_frames=True, normalise_by="frame-sum")
    assert out["bad_frames"]["scan_indices"].tolist()[:1] == [3]
    assert [m.what for m in monitors] == ["bad-frame detection", "correlation"]
    for monitor in monitors:
        bottom = monitor.source
        while isinstance(getattr(bottom, "source", None), FrameSource):
            bottom = bottom.source
        assert bottom is source
    with pytest.raises(TypeError, match="wraps a FrameSource, not a ndarray"):
        MonitoredFrameSource(frames)


def test_open_source_passes_a_built_source_through(small_scan):
    from ewoksxpcs.engine.events import compact
    from ewoksxpcs.workflow.pipeline import open_source

    filename, frames, _ = small_scan
    source = open_source(filename + "::/1.1")
    assert open_source(source) is source
    events = compact(frames)
    assert open_source(events) is events
    assert open_source(frames, step=2).n_frames == frames.shape[0] // 2


def test_the_pipeline_modes_are_those_of_the_registry():
    from ewoksxpcs.correlators.registry import MODES as REGISTRY
    from ewoksxpcs.workflow.pipeline import MODES as PIPELINE, register_mode

    assert tuple(PIPELINE) == REGISTRY
    with pytest.raises(ValueError, match="not a mode of the correlator registry"):
        register_mode("fourtime", *(lambda *a, **k: None,) * 3)
    assert "fourtime" not in PIPELINE


def test_fit_decays_options():
    from ewoksxpcs.workflow.pipeline import fit_decays, fit_model

    assert fit_model(True) == "exp" and fit_model("kww") == "kww"
    assert fit_model(None) is None and fit_model("none") is None and fit_model(False) is None
    assert fit_decays(numpy.arange(3.0), None, None, None) == (None, None)
    with pytest.raises(ValueError, match="unknown fit model 'lorentz'"):
        fit_model("lorentz")


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32",
                                   "float32"])
def test_chunk_sum_exact_through_a_narrow_accumulator(dtype):
    """The sum image of a chunk equals NumPy's int64 (float64) sum, extremes included, whatever
    the accumulator it goes through."""
    from ewoksxpcs.workflow.cancellation import chunk_sum

    dt = numpy.dtype(dtype)
    rng = numpy.random.default_rng(3)
    if dt.kind == "f":
        chunk = rng.random((50, 6, 7)).astype(dt)
        acc = numpy.float64
    else:
        info = numpy.iinfo(dt)
        chunk = rng.integers(info.min, info.max, (300, 6, 7), endpoint=True).astype(dt)
        chunk[:, 0, 0] = info.max  # the largest sum the accumulator must hold
        chunk[:, 0, 1] = info.min
        acc = numpy.int64
    out = chunk_sum(chunk, numpy.dtype(acc))
    assert out.dtype == acc and out.shape == (6, 7)
    numpy.testing.assert_array_equal(out, chunk.sum(axis=0, dtype=acc))


@pytest.mark.parametrize("n", [2**15 - 1, 2**15])
def test_chunk_sum_at_the_accumulator_bound(n):
    """int16 frames at their extremes over as many frames as the 32-bit accumulator allows, and
    one more (the int64 sum then)."""
    from ewoksxpcs.workflow.cancellation import chunk_sum

    chunk = numpy.empty((n, 2, 2), numpy.int16)
    chunk[:, 0, :] = numpy.iinfo(numpy.int16).min
    chunk[:, 1, :] = numpy.iinfo(numpy.int16).max
    out = chunk_sum(chunk, numpy.dtype(numpy.int64))
    numpy.testing.assert_array_equal(out, chunk.sum(axis=0, dtype=numpy.int64))
    assert out[0, 0] == -(2**15) * n
