"""The shipped workflows through Ewoks, on the core, ppf and dask engines."""

from __future__ import annotations

import json
from importlib import metadata, resources
from pathlib import Path

import h5py
import numpy
import pytest
from ewoks import execute_graph
from ewokscore import load_graph
from ewokscore.task_discovery import discover_tasks_from_modules

from ewoksxpcs import correlate
from ewoksxpcs.engine.twotime import TwoTimeResult
from ewoksxpcs.tools.synthetic import SyntheticXPCS
from ewoksxpcs.workflows import WORKFLOWS, workflow_path

ENGINES = ["core", "ppf", "dask"]
#: Worker processes must be spawned, not forked: a fork after OpenCL was initialised in this
#: process (an OpenCL method ran here) hangs in the OpenCL driver. dask spawns by default.
#: One ppf worker process, reused by every task (a spawned process starts slowly).
ENGINE_OPTIONS = {
    "core": {},
    "dask": {},
    "ppf": {"pool_options": {"context": "spawn"}, "scaling_workers": False, "max_workers": 1},
}
TASKS = {"LoadFrames", "BuildQMask", "CompactEvents", "Correlate", "Normalise", "SaveResults"}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    sim = SyntheticXPCS(
        shape=(24, 24),
        n_frames=80,
        mean_counts=0.4,
        contrast=0.3,
        n_bins=3,
        q_per_pixel=1e-3,
        diffusion=5e4,
        frame_period=1e-3,
        seed=9,
        n_threads=1,
    )
    directory = tmp_path_factory.mktemp("wf")
    filename = str(directory / "scan.h5")
    sim.write_bliss_h5(filename, detector="eiger")
    return filename, sim.frames(), sim


def inputs(**by_node):
    """Ewoks inputs from ``node={"name": value}`` keyword arguments."""
    return [
        {"id": node, "name": k, "value": v}
        for node, values in by_node.items()
        for k, v in values.items()
    ]


def check_result(path, frames, labels, q=None):
    expected = correlate(frames, labels, method="reference")
    with h5py.File(path, "r") as f:
        proc = f["entry/xpcs"]
        numpy.testing.assert_array_equal(proc["sums/n2"][()], expected.n2)
        numpy.testing.assert_array_equal(proc["g2/g2"][()], expected.g2)
        numpy.testing.assert_allclose(proc["g2/tau"][()], expected.lags * 1e-3)
        if q is not None:
            numpy.testing.assert_array_equal(proc["g2/q"][()], q)
        return {name: proc[name][()].decode() for name in ("method", "device", "mode")}


def test_workflow_files():
    for name in WORKFLOWS:
        with open(workflow_path(name)) as f:
            graph = json.load(f)
        assert graph["graph"]["schema_version"] == "1.2"
        load_graph(json.loads(json.dumps(graph)))  # a valid Ewoks graph (loading alters the dict)
        # The package resource is the top-level workflows/ file.
        packaged = resources.files("ewoksxpcs.workflows").joinpath(f"{name}.json")
        assert json.loads(packaged.read_text()) == graph
        assert Path(workflow_path(name)).parent.name == "workflows"
    with pytest.raises(ValueError, match="unknown workflow 'nope'"):
        workflow_path("nope")


def test_entry_points_and_discovery():
    groups = {ep.name: ep.value for ep in metadata.entry_points(group="ewoks.tasks.class")}
    assert groups.get("ewoksxpcs.tasks.*") == "ewoksxpcs"
    assert "ewoksxpcs.workflows.*" in {
        ep.name for ep in metadata.entry_points(group="ewoks.workflows")
    }
    found = discover_tasks_from_modules("ewoksxpcs.tasks.*", task_type="class")
    names = {t["task_identifier"].rsplit(".", 1)[-1] for t in found}
    assert TASKS <= names
    correlate_task = next(t for t in found if t["task_identifier"].endswith(".Correlate"))
    assert correlate_task["required_input_names"] == ["frames", "qmask"]
    assert correlate_task["input_model"].endswith("correlate.Inputs")


@pytest.mark.parametrize("engine", ENGINES)
def test_xpcs_workflow(scan, tmp_path, engine):
    filename, frames, sim = scan
    out = str(tmp_path / "result.h5")
    result = execute_graph(
        workflow_path("xpcs"),
        engine=engine,
        **ENGINE_OPTIONS[engine],
        inputs=inputs(
            load={"url": f"{filename}::/1.1"},
            qmask={
                "qmask": f"{filename}::/1.1/simulation/labels",
                "q_values": f"{filename}::/1.1/simulation/q",
            },
            correlate={"method": "reference"},
            save={"output": out},
        ),
    )
    assert result["output"] == out and result["png"] == str(tmp_path / "result_g2.png")
    info = check_result(out, frames, sim.labels, q=sim.q)
    assert info == {"method": "reference", "device": "cpu", "mode": "linear"}
    with h5py.File(out, "r") as f:
        params = f["entry/xpcs/parameters"]
        assert set(params) == {"load", "qmask", "correlate", "normalise", "save"}
        assert params["load/frame_period"][()] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "mode, options, engine",
    [
        ("multitau", {"lags_per_level": 4, "normalisation": "symmetric"}, "dask"),
        ("twotime", {"twotime_bins": [2], "time_bin": 4}, "core"),
    ],
)
def test_xpcs_workflow_modes(scan, tmp_path, mode, options, engine):
    """The mode and its options are inputs of the correlate node of workflows/xpcs.json."""
    from silx.io.nxdata import NXdata, get_default

    from ewoksxpcs.correlators import multitau
    from ewoksxpcs.correlators import twotime

    filename, frames, sim = scan
    out = str(tmp_path / "result.h5")
    result = execute_graph(
        workflow_path("xpcs"),
        engine=engine,
        **ENGINE_OPTIONS[engine],
        inputs=inputs(
            load={"url": f"{filename}::/1.1"},
            qmask={
                "qmask": f"{filename}::/1.1/simulation/labels",
                "q_values": f"{filename}::/1.1/simulation/q",
            },
            correlate={"method": "numpy", "mode": mode, **options},
            save={"output": out},
        ),
    )
    assert result["png"] == str(tmp_path / "result_g2.png")
    with h5py.File(out, "r") as f:
        proc = f["entry/xpcs"]
        assert proc["mode"][()] == mode.encode() and proc["method"][()] == b"numpy"
        default = get_default(f)
        assert default.group.name == "/entry/xpcs/g2"
        assert default.axes_dataset_names == ["q", "tau"] and default.errors is not None
        if mode == "multitau":
            expected = multitau(frames, sim.labels, method="numpy", **options)
            assert proc["g2/normalisation"][()] == b"symmetric"
            numpy.testing.assert_array_equal(default.signal[()], expected.g2)
            numpy.testing.assert_allclose(default.axes[1][()], expected.lags * 1e-3)
            numpy.testing.assert_array_equal(default.axes[0][()], sim.q)
        else:
            expected = twotime(frames, sim.labels, bins=[2], time_bin=4, method="numpy")
            numpy.testing.assert_array_equal(default.signal[()], expected.g2)
            numpy.testing.assert_array_equal(default.axes[0][()], sim.q[[1]])
            maps = NXdata(proc["twotime/maps"])
            assert maps.signal.ndim == 3 and maps.interpretation == "image"
            numpy.testing.assert_array_equal(TwoTimeResult.read_maps(maps.group), expected.C)
        assert proc["parameters/correlate/mode"][()] == mode.encode()


@pytest.mark.parametrize("engine", ENGINES)
def test_events_workflows(scan, tmp_path, engine):
    """Frames → events file + result; then events file → result with another q-mask."""
    filename, frames, sim = scan
    events_file = str(tmp_path / "events.h5")
    first = str(tmp_path / "first.h5")
    execute_graph(
        workflow_path("xpcs_compact"),
        engine=engine,
        **ENGINE_OPTIONS[engine],
        inputs=inputs(
            load={"url": f"{filename}::/1.1/measurement/eiger"},
            qmask={"qmask": f"{filename}::/1.1/simulation/labels"},
            compact={"events_file": events_file},
            save={"output": first, "plot": False},
        ),
    )
    check_result(first, frames, sim.labels)
    # Re-bin from the events file alone: two half-detector bins, no raw frame read.
    labels = numpy.zeros((24, 24), dtype=numpy.int32)
    labels[:12] = 5
    labels[12:] = 9
    numpy.save(tmp_path / "labels.npy", labels)  # dask needs JSON inputs: a file, not an array
    second = str(tmp_path / "second.h5")
    result = execute_graph(
        workflow_path("xpcs_events"),
        engine=engine,
        **ENGINE_OPTIONS[engine],
        inputs=inputs(
            load={"url": events_file},
            qmask={"qmask": str(tmp_path / "labels.npy")},
            save={"output": second, "plot": False},
        ),
    )
    assert result["png"] is None
    info = check_result(second, frames, labels)
    assert info["method"] in ("opencl-events", "cpu-events", "fft", "reference", "matmul",
                              "opencl-dense")
    with h5py.File(second, "r") as f:
        assert f["entry/xpcs/g2/labels"][()].tolist() == [5, 9]
        assert f["entry/xpcs/parameters/load/events"][()]


def test_by_module_name(scan, tmp_path):
    filename, frames, sim = scan
    out = str(tmp_path / "m.h5")
    execute_graph(
        "ewoksxpcs.workflows.xpcs",
        load_options={"representation": "json_module"},
        inputs=inputs(
            load={"url": f"{filename}::/1.1", "stop": 40},
            qmask={"qmask": f"{filename}::/1.1/simulation/labels"},
            save={"output": out, "plot": False, "fit": False},
        ),
    )
    expected = correlate(frames[:40], sim.labels, method="reference")
    with h5py.File(out, "r") as f:
        numpy.testing.assert_array_equal(f["entry/xpcs/sums/n2"][()], expected.n2)
        assert "fit" not in f["entry/xpcs"]


def test_ewoks_command_line(scan, tmp_path):
    """``ewoks execute workflows/xpcs.json -pn node:name=value``, as documented."""
    from ewoks.__main__ import main as ewoks_main

    filename, frames, sim = scan
    out = str(tmp_path / "cli.h5")
    status = ewoks_main(
        [
            "ewoks",
            "execute",
            workflow_path("xpcs"),
            "-pn",
            f"load:url={filename}::/1.1",
            "-pn",
            "load:stop=30",
            "-pn",
            f"qmask:qmask={filename}::/1.1/simulation/labels",
            "-pn",
            "correlate:method=reference",
            "-pn",
            f"save:output={out}",
            "-pn",
            "save:plot=false",
        ],
        shell=False,
    )
    assert status != 1
    expected = correlate(frames[:30], sim.labels, method="reference")
    with h5py.File(out, "r") as f:
        numpy.testing.assert_array_equal(f["entry/xpcs/sums/n2"][()], expected.n2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.h5"]


def test_failure_writes_nothing(scan, tmp_path):
    filename, _, _ = scan
    out = tmp_path / "r.h5"
    with pytest.raises(Exception, match="qmask shape .* differs from the frame shape"):
        execute_graph(
            workflow_path("xpcs"),
            inputs=inputs(
                load={"url": f"{filename}::/1.1"},
                qmask={"qmask": numpy.ones((5, 5), dtype=int)},
                save={"output": str(out)},
            ),
        )
    assert list(tmp_path.iterdir()) == []
