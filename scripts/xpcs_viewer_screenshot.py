"""Render a screenshot of APS's xpcs-viewer (pyXpcsViewer, PyPI) showing an ewoksxpcs result.

Simulates the demo acquisition (``ewoksxpcs demo``: 128×128 pixels, 2000 frames of 1 ms,
Brownian motion), runs the workflow with the demo's geometry (q bins and 2 sectors) and
``--format aps``, opens the result folder in xpcs-viewer's own main window under the offscreen
Qt platform, selects the file, draws a tab (default: g2, with the viewer's fits) and saves the
window as a PNG::

    pip install "ewoksxpcs[viewers]"
    python scripts/xpcs_viewer_screenshot.py doc/xpcs_viewer_g2.png [--tab g2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def make_result(directory: str) -> str:
    """A demo scan correlated into ``directory/demo.hdf`` (APS layout); returns the file."""
    from ewoksxpcs.app.cli import DEMO, DEMO_PIXEL, DEMO_WAVELENGTH, demo_distance, main

    scan = os.path.join(directory, "scan.h5")
    argv = ["simulate", scan, "--shape", *map(str, DEMO["shape"]), "--frames",
            str(DEMO["n_frames"]), "--mean-counts", str(DEMO["mean_counts"]), "--contrast",
            str(DEMO["contrast"]), "--diffusion", str(DEMO["diffusion"]), "--bins",
            str(DEMO["n_bins"]), "--q-per-pixel", str(DEMO["q_per_pixel"]), "--q-range",
            *map(str, DEMO["q_range"]), "--seed", str(DEMO["seed"])]
    if main(argv) != 0:
        raise SystemExit("simulation failed")
    results = os.path.join(directory, "results")
    os.mkdir(results)
    output = os.path.join(results, "ewoksxpcs_demo.hdf")
    ny, nx = DEMO["shape"]
    argv = ["run", scan + "::/1.1", "-o", output, "--format", "aps", "--mode", "multitau",
            "--beam-center", str((ny - 1) / 2), str((nx - 1) / 2),
            "--distance", repr(demo_distance(DEMO["q_per_pixel"])),
            "--pixel-size", repr(DEMO_PIXEL), "--wavelength", repr(DEMO_WAVELENGTH),
            "--q-range", *map(str, DEMO["q_range"]), "--bins", "6", "--sectors", "2",
            "--no-plot", "--no-fit", "-q"]
    if main(argv) != 0:
        raise SystemExit("ewoksxpcs run failed")
    return output


def screenshot(result: str, png: str, tab: str = "g2", wait_s: float = 8.0) -> str:
    """Open ``result``'s folder in xpcs-viewer, show ``tab``, save the window to ``png``."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets
    from pyxpcsviewer.gui.view.xpcs_viewer import XpcsViewer, tab_mapping

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    window = XpcsViewer(path=os.path.dirname(result))
    window.resize(1400, 900)
    window.list_view_source.selectAll()
    window.add_target()
    window.list_view_target.selectAll()
    index = {name: i for i, name in tab_mapping.items()}[tab]
    window.tabWidget.setCurrentIndex(index)
    window.update_plot()
    deadline = time.monotonic() + wait_s  # fits run in the viewer's thread pool
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.05)
    window.thread_pool.waitForDone(int(wait_s * 1000))
    app.processEvents()
    if not window.grab().save(png):
        raise SystemExit(f"could not write {png}")
    window.close()
    return os.path.abspath(png)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("png", help="PNG file to write")
    parser.add_argument("--tab", default="g2", help="xpcs-viewer tab (default: g2)")
    parser.add_argument("--result", help="an existing APS-layout result (default: simulate)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = args.result or make_result(tmp)
        print(f"wrote {screenshot(result, args.png, args.tab)} from {result}", flush=True)
    # PySide6 6.x with pyqtgraph may crash while the interpreter finalises its Qt objects
    # (seen here: "bool_dealloc"): the PNG is written, leave without the finalisation.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
