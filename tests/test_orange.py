"""Orange widgets: registration, the tutorial workflow, and the widget chain run headless."""

import json
import os
import subprocess
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display in CI

import numpy  # noqa: E402
import pytest  # noqa: E402

from _scandata import check_result, frames_of, make_scans  # noqa: E402
from ewoksxpcs.engine.twotime import TwoTimeResult  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(ROOT, "ewoksxpcs", "orange", "tutorials", "xpcs.ows")
WIDGETS = {
    "ewoksxpcs.tasks.load_frames.LoadFrames": "ewoksxpcs.orange.loadframes.OWLoadFrames",
    "ewoksxpcs.tasks.build_qmask.BuildQMask": "ewoksxpcs.orange.buildqmask.OWBuildQMask",
    "ewoksxpcs.tasks.compact_events.CompactEvents": "ewoksxpcs.orange.compactevents.OWCompactEvents",
    "ewoksxpcs.tasks.correlate.Correlate": "ewoksxpcs.orange.correlate.OWCorrelate",
    "ewoksxpcs.tasks.normalise.Normalise": "ewoksxpcs.orange.normalise.OWNormalise",
    "ewoksxpcs.tasks.save_results.SaveResults": "ewoksxpcs.orange.saveresults.OWSaveResults",
    "ewoksxpcs.tasks.live_correlate.LiveCorrelate": "ewoksxpcs.orange.live.OWLiveCorrelate",
}


@pytest.fixture(scope="module")
def canvas():
    from ewoksorange.gui.canvas.handler import OrangeCanvasHandler
    from ewoksorange.gui.qt_utils.app import ensure_qtapp

    ensure_qtapp()
    with OrangeCanvasHandler() as handler:
        yield handler


def test_every_task_has_a_registered_widget():
    from ewoksorange.gui.owwidgets.registration import get_owwidget_descriptions
    from ewoksutils.import_utils import import_qualname

    found = {d.qualified_name: d for d in get_owwidget_descriptions()
             if d.qualified_name.startswith("ewoksxpcs.")}
    assert set(found) == set(WIDGETS.values())
    for task, widget in WIDGETS.items():
        assert found[widget].category == "XPCS"
        cls = import_qualname(widget)
        assert cls.ewokstaskclass.class_registry_name() == task
        assert cls.want_main_area


def test_control_area_sets_task_inputs(canvas):
    from ewoksxpcs.orange.correlate import OWCorrelate
    from ewoksxpcs.orange.loadframes import OWLoadFrames

    widget = OWCorrelate()
    try:
        assert widget._form.get_parameter_value("method") == "auto"  # the task's default
        widget._form.set_parameter_value("method", "fft")
        widget._form.set_parameter_value("n_groups", 4)
        widget._form_changed()
        assert widget.get_default_input_values()["method"] == "fft"
        assert widget.get_default_input_values()["n_groups"] == 4
    finally:
        widget.close()
    widget = OWLoadFrames()
    try:
        widget._form.set_parameter_value("stop", "100")
        widget._form_changed()
        assert widget.get_default_input_values()["stop"] == 100
        widget._form.set_parameter_value("stop", "")  # empty: back to the task's default
        widget._form_changed()
        assert widget.get_default_input_values().get("stop") is None
    finally:
        widget.close()


def test_tutorial_is_the_xpcs_workflow():
    from ewokscore import load_graph
    from ewoksorange.gui.workflows.owscheme import ows_to_ewoks

    from ewoksxpcs.orange import tutorials

    assert os.path.dirname(tutorials.__file__) == os.path.dirname(TUTORIAL)
    from importlib.metadata import entry_points

    listed = {ep.value for ep in entry_points(group="orange.widgets.tutorials")}
    assert "ewoksxpcs.orange.tutorials" in listed
    ows = ows_to_ewoks(TUTORIAL).graph
    with open(os.path.join(ROOT, "workflows", "xpcs.json")) as f:
        ref = load_graph(json.load(f)).graph

    def tasks(g):
        return sorted(a["task_identifier"] for a in g.nodes.values())

    def links(g):
        ident = {n: a["task_identifier"] for n, a in g.nodes.items()}
        return sorted(
            (ident[s], ident[t], m["source_output"], m["target_input"])
            for (s, t), a in g.edges.items() for m in a["data_mapping"]
        )

    def defaults(g):
        return sorted(
            (a["task_identifier"], d["name"], json.dumps(d["value"]))
            for a in g.nodes.values() for d in a.get("default_inputs", [])
        )

    assert tasks(ows) == tasks(ref)
    assert links(ows) == links(ref)
    assert defaults(ows) == defaults(ref)


def _run(canvas, url, qmask, output, method="matmul", **correlate_inputs):
    canvas.load_ows(TUTORIAL)
    canvas.set_input_values([
        {"label": "LoadFrames", "name": "url", "value": url},
        {"label": "BuildQMask", "name": "qmask", "value": qmask},
        {"label": "Correlate", "name": "method", "value": method},
        {"label": "SaveResults", "name": "output", "value": output},
    ] + [{"label": "Correlate", "name": k, "value": v} for k, v in correlate_inputs.items()])
    canvas.start_workflow()
    canvas.wait_widgets(timeout=60)
    return dict(canvas.iter_widgets_with_name())


def test_widget_chain_on_small_data(canvas, tmp_path):
    from ewoksxpcs import correlate
    from ewoksxpcs.correlators import twotime

    urls, qmask, labels = make_scans(tmp_path, 1, n_frames=80)
    output = str(tmp_path / "result.h5")
    widgets = _run(canvas, urls[0], qmask, output)

    # The file written by the Save widget holds the exact result.
    check_result(output, urls[0], labels, "matmul")
    frames = frames_of(urls[0])
    expected = correlate(frames, labels, method="matmul")

    # Outputs of the widgets.
    out = widgets["Normalise"].get_task_output_values()
    assert numpy.array_equal(out["g2"], expected.g2, equal_nan=True)
    assert numpy.allclose(out["tau"], numpy.arange(80) * 1e-3)
    assert widgets["SaveResults"].get_task_output_values()["output"] == output

    # Main areas: g2 curves with error bars, label image over the mean frame, first frame.
    g2plot = widgets["Normalise"]._g2
    curves = g2plot.getAllCurves()
    assert len(curves) == expected.n_bins
    assert curves[0].getYErrorData() is not None
    assert numpy.allclose(curves[0].getYData(), expected.g2[0, 1:41])
    overlay = widgets["Correlate"]._plot
    assert numpy.array_equal(overlay.getImage("labels").getData() > 0, labels > 0)
    assert numpy.allclose(overlay.getImage("mean").getData(), frames.mean(axis=0))
    first = widgets["LoadFrames"]._plot.getImage("frame 0").getData()
    assert numpy.array_equal(first, frames[0])
    assert "4 bins" in widgets["BuildQMask"]._status.text()
    assert "matmul" in widgets["Correlate"]._status.text()

    # The two-time tab shows the maps of a two-time result.
    norm = widgets["Normalise"]
    tt = twotime(frames, labels, bins=[1, 3], frame_period=1e-3)
    norm.set_twotime(tt)
    norm._bin.setCurrentIndex(1)
    image = norm._twotime.getImage("ttcf")
    assert numpy.allclose(image.getData(), tt.C[1], equal_nan=True)
    assert "two-time maps of 2 bins" in norm._status.text()


def test_twotime_run_through_the_widgets(canvas, tmp_path):
    """Correlate mode 'twotime' in the tutorial: the Normalise widget shows the real maps."""
    import h5py

    from ewoksxpcs.correlators import twotime

    urls, qmask, labels = make_scans(tmp_path, 1, n_frames=60)
    output = str(tmp_path / "tt.h5")
    widgets = _run(canvas, urls[0], qmask, output, method="numpy", mode="twotime",
                   twotime_bins=[1, 3], time_bin=2)
    expected = twotime(frames_of(urls[0]), labels, bins=[1, 3], time_bin=2, method="numpy")
    norm = widgets["Normalise"]
    assert norm.get_task_output_values()["result"].C.shape == (2, 30, 30)
    assert "two-time maps of 2 bins, 30² time bins of 2 frame(s)" in norm._status.text()
    norm._bin.setCurrentIndex(1)
    image = norm._twotime.getImage("ttcf")
    numpy.testing.assert_array_equal(image.getData(), expected.C[1])
    assert len(norm._g2.getAllCurves()) == 2
    assert "mode twotime" in widgets["Correlate"]._status.text()
    with h5py.File(output, "r") as f:
        numpy.testing.assert_array_equal(
            TwoTimeResult.read_maps(f["entry/xpcs/twotime/maps"]), expected.C)


def test_widget_failure_is_reported(canvas, tmp_path):
    urls, qmask, _ = make_scans(tmp_path, 1, n_frames=20)
    with pytest.raises(Exception, match="9.1"):
        _run(canvas, urls[0].replace("/1.1", "/9.1"), qmask, str(tmp_path / "r.h5"))
    load = dict(canvas.iter_widgets_with_name())["LoadFrames"]
    assert load._status.text().startswith("failed")
    assert not os.path.exists(tmp_path / "r.h5")


def test_screenshot_script(tmp_path):
    png = tmp_path / "orange.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "orange_tutorial.py"),
                    "--screenshot", str(png)], check=True, env=env, timeout=240,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from silx.gui import qt

    image = qt.QImage(str(png))
    assert image.width() > 800 and image.height() > 600


def test_live_widget_draws_snapshots_then_the_final_result(canvas, tmp_path):
    """The live widget follows a file being written by another process: its g2 curves are
    redrawn from at least two snapshots, then from the final one, equal to the offline result."""
    import _live_writers as W
    from ewoksorange.gui.qt_utils.app import QtEvent

    from ewoksxpcs.orange.live import OWLiveCorrelate
    from ewoksxpcs.workflow.pipeline import correlate_sums, normalise_sums

    scan, output = str(tmp_path / "scan.h5"), str(tmp_path / "live.h5")
    writer = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "_live_writers.py"),
                               "hdf5", json.dumps(dict(filename=scan, seed=5, n=300, chunk=10,
                                                       period=0.2))])  # 6 s
    widget = OWLiveCorrelate()
    try:
        widget.set_parameters(source=f"{scan}::/1.1", output=output, every=0.05,
                              mode="multitau", frame_period=0.01, plot=False,
                              qmask=W.qmask(), mode_options={"lags_per_level": 4},
                              quiet_timeout=20.0)
        done = QtEvent()
        widget.task_executor.finished.connect(lambda: QtEvent.set(done))
        widget.execute_ewoks_task_without_propagation()
        assert done.wait(timeout=60)
        deadline = time.monotonic() + 30  # the queued snapshot signals, on a busy machine too
        while not (widget.snapshots and widget.snapshots[-1] == 300) \
                and time.monotonic() < deadline:
            QtEvent().wait(timeout=0.1)
        assert widget.task_succeeded, widget.task_exception
        assert len(widget.snapshots) >= 3 and widget.snapshots[-1] == 300
        assert widget.snapshots == sorted(widget.snapshots) and widget.snapshots[0] < 300
        out = correlate_sums(W.frames(5, 300), W.qmask(), mode="multitau",
                             mode_options={"lags_per_level": 4})
        ref = normalise_sums(out["sums"], out["binning"], frame_period=0.01, mode="multitau",
                             mode_options=out["mode_options"])
        curves = widget._g2.getAllCurves()
        assert len(curves) == len(ref["labels"])
        numpy.testing.assert_array_equal(curves[0].getYData(), ref["g2"][0, 1:][
            : curves[0].getYData().size])
        assert widget._status.text().startswith("final: 300 frames")
    finally:
        writer.wait(30)
        widget.onDeleteWidget()
