"""Build the Orange tutorial workflow and render the README screenshot, without a display.

    python scripts/orange_tutorial.py --ows          # regenerate ewoksxpcs/orange/tutorials/xpcs.ows
    python scripts/orange_tutorial.py --screenshot doc/orange.png

The tutorial is ``workflows/xpcs.json`` converted by ewoksorange, with node positions for the
canvas. The screenshot runs that workflow in the Orange canvas (offscreen Qt platform) on a small
synthetic scan and composes the canvas with the main areas of the Correlate and Normalise widgets
(label image over the mean frame, g2 curves with error bars, two-time map).
"""

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(ROOT, "ewoksxpcs", "orange", "tutorials", "xpcs.ows")
POSITIONS = {"load": (40, 160), "qmask": (170, 50), "correlate": (300, 160), "normalise": (430, 160),
             "save": (560, 160)}


def write_ows(filename=TUTORIAL):
    """Convert workflows/xpcs.json into an Orange .ows file with node positions."""
    from ewoksorange.bindings import convert_graph

    with open(os.path.join(ROOT, "workflows", "xpcs.json")) as f:
        graph = json.load(f)
    for node in graph["nodes"]:
        node["ows"] = {"position": POSITIONS.get(node["id"], (0, 0))}
    graph["graph"]["label"] = "XPCS: frames -> g2 -> NeXus result"
    convert_graph(graph, filename)
    return filename


def run_tutorial(handler, url, qmask, output, method="matmul", timeout=120):
    """Load the tutorial in an Orange canvas handler, set the scan, run it, wait for the widgets."""
    handler.load_ows(TUTORIAL)
    handler.set_input_values([
        {"label": "LoadFrames", "name": "url", "value": url},
        {"label": "BuildQMask", "name": "qmask", "value": qmask},
        {"label": "Correlate", "name": "method", "value": method},
        {"label": "SaveResults", "name": "output", "value": output},
    ])
    handler.start_workflow()
    handler.wait_widgets(timeout=timeout)
    return {title: widget for title, widget in handler.iter_widgets_with_name()}


def screenshot(png):
    """Run the tutorial on a synthetic scan and save a composite picture of the canvas and results."""
    import numpy
    from AnyQt import QtCore, QtGui
    from ewoksorange.gui.canvas.handler import OrangeCanvasHandler
    from ewoksorange.gui.qt_utils.app import qtapp_context

    from ewoksxpcs.tools.synthetic import SyntheticXPCS
    from ewoksxpcs import twotime

    tmp = tempfile.mkdtemp(prefix="ewoksxpcs_orange_")
    sim = SyntheticXPCS(shape=(96, 96), n_frames=400, mean_counts=0.2, contrast=0.3, n_bins=6,
                        q_per_pixel=5e-4, beam_center=(-20, 48), diffusion=3e4, frame_period=1e-3)
    sim.write_bliss_h5(os.path.join(tmp, "scan.h5"))
    numpy.save(os.path.join(tmp, "qmask.npy"), sim.labels)
    url = os.path.join(tmp, "scan.h5") + "::/1.1"
    with qtapp_context():
        with OrangeCanvasHandler() as handler:
            widgets = run_tutorial(handler, url, os.path.join(tmp, "qmask.npy"),
                                   os.path.join(tmp, "result.h5"))
            norm = widgets["Normalise"]
            # The two-time tab: the map of the same scan (ewoksxpcs.engine.twotime), shown by the widget.
            tt = twotime(sim.frames(), sim.labels, bins=[2, 5], frame_period=sim.frame_period)
            norm.set_twotime(tt)
            canvas = handler.canvas
            canvas.resize(1060, 400)
            canvas.show()
            panels = []
            for widget, tab in ((widgets["Correlate"], None), (norm, 0), (norm, 1)):
                widget.resize(720, 480)
                widget.show()
                if tab is not None:
                    widget._tabs.setCurrentIndex(tab)
                handler.process_events()
                panels.append(widget.mainArea.grab())
            handler.process_events()
            top = canvas.grab()
            width = max(top.width(), sum(p.width() for p in panels))
            height = top.height() + max(p.height() for p in panels)
            image = QtGui.QPixmap(width, height)
            image.fill(QtCore.Qt.white)
            painter = QtGui.QPainter(image)
            painter.drawPixmap(0, 0, top)
            x = 0
            for p in panels:
                painter.drawPixmap(x, top.height(), p)
                x += p.width()
            painter.end()
            os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
            if not image.save(png):
                raise RuntimeError(f"cannot write {png}")
            for widget in widgets.values():
                widget.close()
    return png


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ows", action="store_true", help=f"regenerate {os.path.relpath(TUTORIAL, ROOT)}")
    parser.add_argument("--screenshot", metavar="PNG", help="render the README screenshot")
    args = parser.parse_args(argv)
    if args.ows:
        print(write_ows())
    if args.screenshot:
        print(screenshot(args.screenshot))
    if not (args.ows or args.screenshot):
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
