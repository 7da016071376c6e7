"""Progress of the workflow's stages on stderr, plugged into ewokscore's progress mechanism.

Pass it to Ewoks as a task option (``task_options={"progress": TerminalProgress()}``): every
ewoksxpcs task reports its advancement through ``TaskWithProgress.progress`` and names itself.

- On a terminal, a :mod:`tqdm` bar per stage, with the rate (percent per second) and the time
  left, redrawn in place.
- Elsewhere (stderr redirected to a file or a pipe: batch jobs, logs), one line per stage when
  it ends: ``Correlate: 100 % in 12.3 s`` (``stopped at 40 %`` when the next stage starts
  before this one reached 100 %, e.g. after an error).

It holds no open stream between calls (the bar is dropped when pickled), so it also travels to
worker processes.
"""

from __future__ import annotations

import sys
import time
from typing import Optional

from ewokscore.progress import BasePercentageProgress

__all__ = ["TerminalProgress"]

#: tqdm layout: name, percent, bar, elapsed < time left, rate.
BAR_FORMAT = "{desc:<14s} {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {rate_fmt}"


class TerminalProgress(BasePercentageProgress):
    """A progress bar per stage on stderr, or one line per stage when stderr is no terminal.

    Parameters
    ----------
    width : int
        Characters of the bar (terminal only).
    min_interval : float
        Seconds between redraws (terminal only; the last one, 100 %, is always drawn).
    terminal : bool, optional
        Force the terminal (True) or the line (False) output; default: ``sys.stderr.isatty()``.
    """

    def __init__(self, width: int = 30, min_interval: float = 0.1,
                 terminal: Optional[bool] = None):
        super().__init__()
        self.width = int(width)
        self.min_interval = float(min_interval)
        self.terminal = terminal
        self.task_name = ""
        self._t0: Optional[float] = None
        self._bar = None

    def _is_terminal(self) -> bool:
        if self.terminal is not None:
            return bool(self.terminal)
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())

    def start(self, task_name: str) -> None:
        """Begin a new stage (ends the previous one)."""
        self.close()
        self.task_name = task_name
        self._t0 = time.monotonic()
        self._lastUpdate = None
        self._progress = 0
        if self._is_terminal():
            from tqdm import tqdm

            self._bar = tqdm(total=100, desc=task_name, file=sys.stderr, ncols=None,
                             bar_format=BAR_FORMAT, unit="%", mininterval=self.min_interval,
                             dynamic_ncols=True, leave=True)

    def _update(self):
        p = int(self.progress or 0)
        if self._bar is not None:
            self._bar.update(p - self._bar.n)
        if p >= 100:
            self.close()

    def close(self) -> None:
        """End the current stage: close its bar, or write its line."""
        if self._t0 is None:
            return
        elapsed = time.monotonic() - self._t0
        self._t0 = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        p = int(self.progress or 0)
        state = "100 %" if p >= 100 else f"stopped at {p} %"
        sys.stderr.write(f"{self.task_name}: {state} in {elapsed:.1f} s\n")
        sys.stderr.flush()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_bar"] = None  # a stream does not travel to another process
        return state
