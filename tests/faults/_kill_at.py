"""Run ``ewoksxpcs`` and kill this very process when the run reaches a stage.

    python _kill_at.py STAGE SIGNAL ewoksxpcs-arguments...

STAGE is where the signal is sent, from the code that reaches it: ``load`` (LoadFrames starts),
``compaction`` (compact_frames starts), ``correlation`` (correlate_sums starts), ``writing``
(the result's HDF5 content is being written), ``png`` (the PNG starts being drawn, by the
helper process, while the result is written),
``commit`` (both files complete, before any rename), ``rename`` (after the first rename of
the commit). SIGNAL is KILL or TERM. A real signal ends the real process: nothing is mocked
but the moment.
"""

import importlib
import os
import signal
import sys


def main():
    stage, name, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    sig = getattr(signal, f"SIG{name}")

    def fire(*_, **__):
        os.kill(os.getpid(), sig)

    def before(module, attr):
        real = getattr(module, attr)

        def wrapper(*args, **kwargs):
            fire()
            return real(*args, **kwargs)

        setattr(module, attr, wrapper)

    import ewoksxpcs.io.save as save

    #: stage -> (module, attribute) whose call reaches it.
    hooks = {
        "load": ("ewoksxpcs.tasks.load_frames", "LoadFrames.run"),
        "compaction": ("ewoksxpcs.tasks.compact_events", "compact_frames"),
        "correlation": ("ewoksxpcs.tasks.correlate", "correlate_sums"),
        "writing": ("ewoksxpcs.io.save", "_write_nexus"),
        "png": ("ewoksxpcs.io.save", "_start_pngs"),
        "commit": ("ewoksxpcs.io.save", "commit"),
    }
    if stage in hooks:
        module, attr = hooks[stage]
        owner = importlib.import_module(module)
        *path, attr = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        before(owner, attr)
    elif stage == "rename":
        real_replace = os.replace
        calls = []

        def replace(src, dst, *args, **kwargs):
            real_replace(src, dst, *args, **kwargs)
            calls.append(dst)
            if len(calls) == 1:
                fire()

        save.os = type(sys)("os_with_hook")
        save.os.__dict__.update(os.__dict__)
        save.os.replace = replace
    else:
        raise SystemExit(f"unknown stage {stage}")
    from ewoksxpcs.app.cli import main as cli_main

    sys.exit(cli_main(argv))


if __name__ == "__main__":
    main()
