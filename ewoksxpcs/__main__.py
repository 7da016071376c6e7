"""``python -m ewoksxpcs``: the ``ewoksxpcs`` command line."""

from .app.cli import console_main

if __name__ == "__main__":
    console_main()
