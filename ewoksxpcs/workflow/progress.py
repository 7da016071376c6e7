"""A text progress bar on stderr that plugs into ewokscore's progress mechanism.

Pass it to Ewoks as a task option (``task_options={"progress": TerminalProgress()}``): every
ewoksxpcs task reports its advancement through ``TaskWithProgress.progress`` and names itself on
the bar. It holds no open stream, so it also travels to worker processes.
"""

from __future__ import annotations

import sys
import time

from ewokscore.progress import BasePercentageProgress

__all__ = ["TerminalProgress"]


class TerminalProgress(BasePercentageProgress):
    """``Correlate  [##########----------]  50%`` on stderr, redrawn in place.

    Parameters
    ----------
    width : int
        Characters of the bar.
    min_interval : float
        Seconds between redraws (the last one, 100 %, is always drawn).
    """

    def __init__(self, width: int = 30, min_interval: float = 0.1):
        super().__init__()
        self.width = int(width)
        self.min_interval = float(min_interval)
        self.task_name = ""
        self._last_draw = 0.0

    def start(self, task_name: str) -> None:
        """Begin the bar of a new task."""
        self.task_name = task_name
        self._last_draw = 0.0
        self._lastUpdate = None
        self._progress = 0
        self._draw(force=True)

    def _update(self):
        self._draw(force=self.progress >= 100)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        p = int(self.progress or 0)
        filled = int(round(self.width * p / 100))
        bar = "#" * filled + "-" * (self.width - filled)
        end = "\n" if p >= 100 else ""
        stream = sys.stderr
        stream.write(f"\r{self.task_name:<14s} [{bar}] {p:3d}%{end}")
        stream.flush()
