"""``auto`` (ewoksxpcs.correlators.auto): occupancy sampled from the file, the cost model's
choice, and the reason recorded in the result file."""

import h5py
import numpy
import pytest

from ewoksxpcs.correlators import costs
from ewoksxpcs.correlators.auto import choose, describe_data
from ewoksxpcs.tools.synthetic_eiger import read_eiger_truth, write_eiger_scan
from ewoksxpcs.engine.frames import IterableFrameSource
from ewoksxpcs.io.load import load_frames
from ewoksxpcs.engine.qmask import Binning

from conftest import require_opencl


def _scan(tmp_path, name, counts, n_frames=120, shape=(64, 64)):
    master = write_eiger_scan(tmp_path / name, n_frames=n_frames, shape=shape, counts=counts,
                              frames_per_file=40, processes=1)
    truth = read_eiger_truth(master)
    return master, truth["labels"].astype(numpy.int32), truth["gap_mask"]


def _true_occupancy(master, binning):
    import hdf5plugin  # noqa: F401

    source = load_frames(master)
    frames = numpy.concatenate(list(source.iter_chunks()))
    flat = frames.reshape(frames.shape[0], -1)[:, binning.pixel_index]
    return numpy.count_nonzero(flat) / flat.size


@pytest.mark.parametrize("counts, label", [(0.01, "sparse"), (3.0, "dense")])
def test_occupancy_sampled_from_the_file(tmp_path, counts, label):
    master, labels, gaps = _scan(tmp_path, label, counts)
    binning = Binning(labels, bad_pixels=gaps)
    feat = describe_data(load_frames(master), binning)
    assert feat.source == "hdf5" and feat.n_frames == 120
    assert "stored chunks decoded (bslz4" in feat.occupancy_from
    true = _true_occupancy(master, binning)
    assert feat.occupancy == pytest.approx(true, rel=0.3)
    # other source kinds: an array, an iterable (its first chunk), events
    frames = numpy.concatenate(list(load_frames(master).iter_chunks()))
    assert describe_data(frames, binning).occupancy == pytest.approx(true, rel=0.3)
    it = IterableFrameSource(iter([frames[:60], frames[60:]]), n_frames=120)
    assert describe_data(it, binning).occupancy_from == "first chunk of 60 frames"
    from ewoksxpcs.engine.events import compact

    ev = describe_data(compact(frames, bad_pixels=gaps), binning)
    assert ev.is_events and ev.occupancy == pytest.approx(true, rel=1e-12)


def test_sparse_path_for_sparse_file_dense_path_for_dense(tmp_path):
    """By the documented rule (the machine's cost table), with the occupancy sampled from the
    file's chunks (not "unknown, dense"): linear g2 takes the events path for a sparse HDF5
    scan and the dense path for a dense one, on both tables; multi-tau and two-time take the
    events path for the sparse scan on a GPU; the choice is always the cheapest estimate, and
    two-time never goes to the OpenCL CPU device of a CPU-only machine."""
    require_opencl("cpu")
    sparse, labels, gaps = _scan(tmp_path, "sparse", 0.01, n_frames=2000, shape=(128, 128))
    dense, labels_d, gaps_d = _scan(tmp_path, "dense", 3.0)
    binning = Binning(labels, bad_pixels=gaps)
    binning_d = Binning(labels_d, bad_pixels=gaps_d)
    for machine in ("gpu", "cpu"):
        c = choose("linear", load_frames(sparse), binning, device="cpu", machine=machine)
        # an events method; on CPUs the numba one (issue 16) where its table entry is lower
        events = ("opencl-events",) if machine == "gpu" else ("opencl-events", "cpu-events")
        assert c.method in events, c.reason
        assert "sparse data" in c.reason and "stored chunks decoded" in c.reason
        c = choose("linear", load_frames(dense), binning_d, device="cpu", machine=machine)
        assert not c.method.endswith("events") and "dense data" in c.reason, c.reason
    for mode, dense_path in (("multitau", "opencl"), ("twotime", "opencl")):
        c = choose(mode, load_frames(sparse), binning, device="cpu", machine="gpu",
                   methods=("opencl-events", dense_path))
        assert c.method == "opencl-events", (mode, c.reason)
    for master, b in ((sparse, binning), (dense, binning_d)):
        for mode in ("linear", "multitau", "twotime"):
            c = choose(mode, load_frames(master), b, device="cpu")
            assert c.estimates[c.method] == min(c.estimates.values())
            assert set(c.estimates) <= set(costs.COSTS["cpu"][mode])
        assert choose("twotime", load_frames(master), b, device="cpu").method == "numpy"


def test_cost_table_entries():
    """One entry per method: only known features, non-negative constants."""
    feats = costs.features(100, 64 * 64, 1000, 0.01, 100)
    for machine, modes in costs.COSTS.items():
        for mode, methods in modes.items():
            for method, entry in methods.items():
                assert set(entry) <= set(feats), (machine, mode, method)
                assert all(v >= 0 for v in entry.values())
                assert costs.estimate(machine, mode, method, feats) > 0
    assert costs.estimate("cpu", "twotime", "opencl", feats) is None  # never on a CPU device


@pytest.mark.parametrize("mode", ["linear", "multitau", "twotime"])
def test_result_file_records_method_device_reason(tmp_path, mode):
    """``ewoksxpcs run`` with defaults only: the result file records the method, the device
    and why auto chose them."""
    from ewoksxpcs.app.cli import main

    master, labels, _ = _scan(tmp_path, "scan", 0.05, n_frames=60, shape=(48, 48))
    numpy.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "r.h5"
    assert main(["run", str(master), "--qmask", str(tmp_path / "labels.npy"), "--mode", mode,
                 "-o", str(out), "-q"]) == 0
    with h5py.File(out, "r") as f:
        proc = f["entry/xpcs"]
        method = proc["method"][()].decode()
        device = proc["device"][()].decode()
        reason = proc["auto_reason"][()].decode()
    assert method and device
    assert reason.startswith(f"{mode}, ") and "cost model" in reason
    assert "stored chunks decoded (bslz4" in reason  # sampled from the file it reads
    assert f"{method} " in reason.split("cost model")[1]  # the chosen one has an estimate


def test_events_beyond_the_budget_cost_passes(tmp_path, monkeypatch):
    """The device budget enters the choice: events that do not fit it cost one more read of
    the compressed data per pixel range."""
    require_opencl("cpu")
    from ewoksxpcs.opencl import device as opencl

    master, labels, gaps = _scan(tmp_path, "s", 0.05)
    binning = Binning(labels, bad_pixels=gaps)
    full = choose("linear", load_frames(master), binning, device="cpu")
    monkeypatch.setattr(opencl, "default_device_memory", lambda dev: 10_000)
    small = choose("linear", load_frames(master), binning, device="cpu")
    assert "compaction passes" in small.reason and "compaction passes" not in full.reason
    assert small.estimates["opencl-events"] > full.estimates["opencl-events"]
    assert small.estimates["fft"] == full.estimates["fft"]


@pytest.mark.gpu
def test_gpu_auto_takes_the_device_events_path_for_a_sparse_scan(tmp_path):
    """On the GPU (the lead's H200 run): a sparse Eiger-like scan goes the device events path in
    every mode, with defaults only."""
    require_opencl("gpu")
    master, labels, gaps = _scan(tmp_path, "sparse", 0.01, n_frames=2000, shape=(256, 256))
    binning = Binning(labels, bad_pixels=gaps)
    for mode in ("linear", "multitau", "twotime"):
        c = choose(mode, load_frames(master), binning)
        assert c.method == "opencl-events", (mode, c.reason)
        assert "cost model 'gpu'" in c.reason


def test_events_on_a_cpu_device_kept_within_the_host_memory_cap(tmp_path, monkeypatch):
    """On a CPU device (PoCL) the events of opencl-events would sit in host memory that cannot
    spill: beyond the host-memory cap auto leaves that method out (and says so); within it,
    the method is a candidate."""
    require_opencl("cpu")
    master, labels, gaps = _scan(tmp_path, "s", 0.05)
    binning = Binning(labels, bad_pixels=gaps)
    monkeypatch.setenv("EWOKSXPCS_MAX_MEMORY", str(2**40))
    roomy = choose("linear", load_frames(master), binning, device="cpu")
    assert "opencl-events" in roomy.estimates and "left out" not in roomy.reason
    monkeypatch.setenv("EWOKSXPCS_MAX_MEMORY", "1000")
    tight = choose("linear", load_frames(master), binning, device="cpu")
    assert "opencl-events" not in tight.estimates and tight.method != "opencl-events"
    assert "opencl-events left out" in tight.reason and "host-memory cap" in tight.reason
    assert set(tight.estimates) == set(roomy.estimates) - {"opencl-events"}
