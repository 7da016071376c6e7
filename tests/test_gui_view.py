"""``silx view`` (the ``gui`` extra: Qt and PyOpenGL) on ewoksxpcs results: the g2 default
plot, and two-time maps whose automatic colour scale is not swamped by the diagonal."""

from __future__ import annotations

import os

import numpy
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from silx.gui import qt  # noqa: E402

from ewoksxpcs.app.cli import main  # noqa: E402
from ewoksxpcs.engine.twotime import TwoTimeResult  # noqa: E402


@pytest.fixture(scope="module")
def app():
    return qt.QApplication.instance() or qt.QApplication([])


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    d = tmp_path_factory.mktemp("view")
    scan = str(d / "scan.h5")
    assert main(["simulate", scan, "--shape", "24", "24", "--frames", "120", "--bins", "2",
                 "--mean-counts", "0.3", "--seed", "3"]) == 0
    out = str(d / "tt.h5")
    assert main(["run", scan + "::/1.1", "--qmask", scan + "::/1.1/simulation/labels",
                 "--mode", "twotime", "--time-bin", "2", "-o", out, "-q", "--no-plot"]) == 0
    return out


def _shown_images(viewer):
    from silx.gui.plot import Plot2D

    return [p.getActiveImage() for p in viewer.findChildren(Plot2D)
            if p.getActiveImage() is not None]


def test_pyopengl_backend_importable():
    from silx.gui.plot.backends.BackendOpenGL import BackendOpenGL  # needs PyOpenGL

    assert BackendOpenGL is not None


def test_silx_view_two_time_colour_scale(app, result):
    import h5py
    import silx.io
    from silx.app.view.Viewer import Viewer

    viewer = Viewer()
    viewer.appendFile(result)
    with silx.io.open(result) as f:
        viewer.displayData(f["/entry/xpcs/twotime/maps"])
        app.processEvents()
        images = _shown_images(viewer)
        assert len(images) == 1
        image = images[0]
        vmin, vmax = image.getColormap().getColormapRange(image)
    with h5py.File(result, "r") as f:
        C = TwoTimeResult.read_maps(f["entry/xpcs/twotime/maps"])
    n = C.shape[-1]
    diagonal = C[0, numpy.arange(n), numpy.arange(n)]
    off = C[0][~numpy.eye(n, dtype=bool)]
    # The scale spans the off-diagonal values, far below the diagonal's shot noise.
    assert vmin == pytest.approx(numpy.nanmin(off), rel=1e-5)
    assert vmax == pytest.approx(numpy.nanmax(off), rel=1e-5)
    assert vmax < numpy.nanmedian(diagonal)
    viewer.close()


def test_silx_view_default_plot_is_g2(app, result):
    import silx.io
    from silx.app.view.Viewer import Viewer
    from silx.io.nxdata import get_default

    viewer = Viewer()
    viewer.appendFile(result)
    with silx.io.open(result) as f:
        nxdata = get_default(f)
        assert nxdata.group.name == "/entry/xpcs/g2" and nxdata.is_curve
        viewer.displayData(f["/entry/xpcs/g2"])
        app.processEvents()
        from silx.gui.data.DataViewerFrame import DataViewerFrame

        view = viewer.findChildren(DataViewerFrame)[0].displayedView()
        assert "Curve" in type(view).__name__, type(view).__name__
    viewer.close()
