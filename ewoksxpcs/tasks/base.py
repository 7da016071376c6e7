"""Common base of the ewoksxpcs Ewoks tasks: progress, cancellation, recorded parameters."""

from __future__ import annotations

from ewokscore.taskwithprogress import TaskWithProgress

from ..workflow.cancellation import CancelToken
from ..workflow.orphan import exit_with_parent
from ..workflow.pipeline import describe

__all__ = ["XpcsTask"]


class XpcsTask(TaskWithProgress, register=False):
    """A task that reports progress (ewokscore ``TaskWithProgress``) and can be cancelled.

    ``cancel()`` may be called from any thread: the running library loop notices it at its next
    chunk (well within a second) and the task fails with :class:`~ewoksxpcs.workflow.cancellation.Cancelled`,
    leaving no partial output file.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._token = CancelToken()
        exit_with_parent()  # a pool process (ppf engine) does not outlive a killed main process

    def cancel(self) -> None:
        self.cancelled = True
        self._token.cancel()

    @property
    def token(self) -> CancelToken:
        return self._token

    def start_progress(self) -> None:
        """Reset the progress to 0 and, for a terminal bar, show the task's name."""
        bar = self._task_progress
        if bar is not None and hasattr(bar, "start"):
            bar.start(type(self).__name__)
        elif bar is not None:
            self.progress = 0

    def report(self, fraction: float) -> None:
        """Progress callback of the library functions (fraction in [0, 1])."""
        self.progress = int(max(0.0, min(1.0, float(fraction))) * 100)

    def input_files(self) -> list:
        """Files the run read so far, from the ``parameters`` record (outputs may not be one)."""
        from ..io.inputfiles import input_files

        params = self.get_input_value("parameters", None)
        return input_files(params) if isinstance(params, dict) else []

    def record(self, section: str, values: dict) -> dict:
        """The ``parameters`` input with this task's ``values`` under ``section``."""
        params = self.get_input_value("parameters", None)
        params = dict(params) if isinstance(params, dict) else {}
        params[section] = describe(values)
        return params
