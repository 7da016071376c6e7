"""Widget of :class:`ewoksxpcs.tasks.live_correlate.LiveCorrelate`: the g2 curves of a scan
being acquired, redrawn at every update of the result, then the final ones."""

from __future__ import annotations

from AnyQt import QtCore

from ..tasks.live_correlate import LiveCorrelate
from ._base import XpcsWidget, choice, optional_float, path, text
from .plots import G2Plot

__all__ = ["OWLiveCorrelate"]

#: What the GUI thread gets of a snapshot (its large arrays stay in the worker).
SHOWN = ("g2", "g2_err", "tau", "tau_unit", "labels", "q", "n_frames")


class _Relay(QtCore.QObject):
    """Hands snapshots from the task's thread to the GUI thread (a queued signal)."""

    snapshot = QtCore.Signal(object)


class OWLiveCorrelate(XpcsWidget, ewokstaskclass=LiveCorrelate):
    name = "Live correlation"
    description = "g2 while the scan runs (Bliss scan in Redis or a file being written)"
    icon = "icons/category.svg"
    priority = 35
    keywords = ["xpcs", "live", "g2", "bliss", "redis", "online"]

    PARAMETERS = {
        "source": text("scan (redis://… or file.h5::/1.1)"),
        "output": path("result file"),
        "every": optional_float("update every (s)"),
        "mode": choice(["multitau", "linear", "twotime"], "mode"),
        "frame_period": optional_float("frame period (s)"),
    }

    def __init__(self, *args, **kwargs):
        self._relay = _Relay()
        #: (n_frames, final) of each snapshot drawn, in order.
        self.snapshots = []
        super().__init__(*args, **kwargs)
        self._relay.snapshot.connect(self._show_snapshot)

    def init_display(self, layout):
        self._g2 = G2Plot(parent=self.mainArea)
        layout.addWidget(self._g2)

    def _get_task_arguments(self):
        arguments = super()._get_task_arguments()
        # Called at each update (by the live run's update thread; the final one by the task's
        # thread): only small arrays cross to the GUI, through a queued signal.
        arguments["inputs"] = dict(arguments.get("inputs") or {}, on_snapshot=self._emit)
        return arguments

    def _emit(self, snapshot: dict) -> None:
        self._relay.snapshot.emit({key: snapshot.get(key) for key in SHOWN})

    def _show_snapshot(self, snap: dict) -> None:
        self._g2.getXAxis().setLabel(f"τ ({snap['tau_unit']})")
        self._g2.set_g2(snap["tau"], snap["g2"], snap["g2_err"], labels=snap["labels"])
        self.snapshots.append(snap["n_frames"])
        self.set_status(f"live: {snap['n_frames']} frames")

    def show_outputs(self, outputs):
        early = outputs.get("ended_early") or ""
        self.set_status(f"final: {outputs['n_frames']} frames in {outputs['output']}, "
                        f"{outputs['latency_s']:.2f} s after the last frame"
                        + (f" ({early})" if early else ""))
