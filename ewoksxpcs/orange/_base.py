"""Base of the XPCS widgets: a parameter form in the control area, result plots in the main area.

Each widget wraps one Ewoks task (``ewokstaskclass``) and runs it in a thread
(``OWEwoksWidgetOneThread``), so the canvas stays responsive during long correlations. Subclasses
list the task inputs editable in the control area (:attr:`XpcsWidget.PARAMETERS`) and draw the
task outputs in the main area (:meth:`XpcsWidget.init_display`, :meth:`XpcsWidget.show_outputs`).
"""

from __future__ import annotations

import logging
from typing import Any, Dict

from AnyQt import QtCore, QtWidgets
from ewokscore import missing_data
from ewoksorange.gui.orange_utils.orange_imports import gui
from ewoksorange.gui.owwidgets.meta import ow_build_opts
from ewoksorange.gui.owwidgets.threaded import OWEwoksWidgetOneThread
from ewoksorange.gui.widgets.parameter_form import ParameterForm

__all__ = ["XpcsWidget", "text", "optional_int", "optional_float", "optional_text", "path", "flag",
           "integer", "choice"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ parameter kinds
def _optional(convert):
    def serialize(value):
        return "" if value is None or missing_data.is_missing_data(value) else str(value)

    def deserialize(text):
        text = str(text).strip()
        return missing_data.MISSING_DATA if text == "" else convert(text)

    return {"value_for_type": "", "serialize": serialize, "deserialize": deserialize}


def optional_int(label=None):
    """An integer that may be left empty (the task's default then applies)."""
    return dict(_optional(int), label=label)


def optional_float(label=None):
    """A float that may be left empty (the task's default then applies)."""
    return dict(_optional(float), label=label)


def optional_text(label=None):
    """Text that may be left empty."""
    return dict(_optional(str), label=label)


def text(label=None):
    return dict(_optional(str), label=label)


def path(label=None, select="file"):
    """A file name (or URL) with a browse button."""
    return dict(_optional(str), label=label, select=select)


def flag(label=None):
    return {"value_for_type": False, "label": label}


def integer(label=None):
    return {"value_for_type": 0, "label": label}


def choice(values, label=None):
    return {"value_for_type": list(values), "label": label}


# ------------------------------------------------------------------ widget
class XpcsWidget(OWEwoksWidgetOneThread, **ow_build_opts):
    """Parameter form + Trigger/Execute buttons (control area), plots and a status line (main)."""

    want_main_area = True
    resizing_enabled = True
    #: Editable task inputs: name → options of ``ParameterForm.addParameter``.
    PARAMETERS: Dict[str, dict] = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_control_area()
        self._init_main_area()

    # -------------------------------------------------------------- control area
    def _init_control_area(self):
        box = gui.widgetBox(self.controlArea, "Parameters")
        self._form = ParameterForm(parent=box)
        defaults = self.get_default_input_values(include_missing=True)
        for name, options in self.PARAMETERS.items():
            options = {k: v for k, v in options.items() if v is not None}
            value = defaults.get(name, missing_data.MISSING_DATA)
            self._form.addParameter(name, value=value, value_change_callback=self._form_changed,
                                    **options)
        super()._init_control_area()  # Trigger / Execute buttons under the form

    def _form_changed(self):
        values = self._form.get_parameter_values()
        self.update_default_inputs(**{k: v for k, v in values.items() if k in self.PARAMETERS})

    def set_parameters(self, **values: Any) -> None:
        """Set task inputs as if typed in the form (scripts, tests)."""
        self.update_default_inputs(**values)
        for name, value in values.items():
            if self._form.has_parameter(name):
                self._form.set_parameter_value(name, value)

    def handleNewSignals(self):
        # Inputs coming from upstream widgets override the form: grey them out.
        dynamic = set(self.get_dynamic_input_values())
        for name in self.PARAMETERS:
            self._form.set_parameter_enabled(name, name not in dynamic)
        super().handleNewSignals()

    # -------------------------------------------------------------- main area
    def _init_main_area(self):
        super()._init_main_area()
        layout = self._get_main_layout()
        self._status = QtWidgets.QLabel("")
        self._status.setWordWrap(True)
        self._status.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        self.init_display(layout)
        layout.addWidget(self._status)

    def init_display(self, layout: QtWidgets.QLayout) -> None:
        """Add the result widgets to the main area layout."""

    def show_outputs(self, outputs: dict) -> None:
        """Draw the task outputs (called in the GUI thread after each run)."""

    def set_status(self, message: str) -> None:
        self._status.setText(message)

    def task_output_changed(self):
        if self.task_succeeded is False:
            error = self.task_exception
            self.set_status(f"failed: {type(error).__name__}: {error}" if error else "failed")
            return
        outputs = {k: v for k, v in self.get_task_output_values().items()
                   if not missing_data.is_missing_data(v)}
        if not outputs:
            return
        try:
            self.show_outputs(outputs)
        except Exception as e:  # a display problem must not break the workflow
            logger.exception("cannot display the outputs of %s", self.name)
            self.set_status(f"cannot display the results: {e}")
        super().task_output_changed()

    def input_value(self, name: str, default=None):
        """The value the task ran with: from upstream if linked, else from the form."""
        value = self.get_task_input_value(name, default=missing_data.MISSING_DATA)
        return default if missing_data.is_missing_data(value) else value
