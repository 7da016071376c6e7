"""Orange widgets of the ewoksxpcs tasks, for the Ewoks graphical editor (``ewoks-canvas``).

Registered through the ``orange.widgets`` entry point (category "XPCS"); the tutorial
workflow ``tutorials/xpcs.ows`` (the graph of ``workflows/xpcs.json``) through
``orange.widgets.tutorials``. Needs the ``orange`` extra (ewoksorange and a Qt binding).
"""

NAME = "XPCS"

DESCRIPTION = "X-ray photon correlation spectroscopy: g2(q, τ) from detector frames"

LONG_DESCRIPTION = DESCRIPTION

ICON = "icons/category.svg"

BACKGROUND = "light-blue"
