"""Work started once the frames are read (ewoksxpcs.workflow.prefetch): deferred callables
run once, by the next prefetch call, and their errors do not escape."""

import threading

from ewoksxpcs.workflow import prefetch


def _join_prefetch():
    for t in threading.enumerate():
        if t.name == "ewoksxpcs-prefetch":
            t.join()


def test_after_first_read_runs_once_at_the_next_prefetch(monkeypatch):
    monkeypatch.setattr(prefetch, "_deferred", [])
    calls = []
    prefetch.after_first_read(lambda: calls.append("a"))
    prefetch.after_first_read(lambda: 1 / 0)  # an error is left to the step that needs it
    prefetch.after_first_read(lambda: calls.append("b"))
    assert calls == []  # nothing before the frames are read
    prefetch.prefetch(modules=())
    _join_prefetch()
    assert calls == ["a", "b"] and prefetch._deferred == []
    prefetch.prefetch(modules=())
    _join_prefetch()
    assert calls == ["a", "b"]  # once


def test_prefetch_off_imports_nothing_but_runs_deferred_work(monkeypatch):
    monkeypatch.setenv("EWOKSXPCS_PREFETCH", "0")
    monkeypatch.setattr(prefetch, "_deferred", [])
    monkeypatch.setattr(prefetch, "_started", set())
    imported = []
    monkeypatch.setattr(prefetch.importlib, "import_module", imported.append)
    calls = []
    prefetch.after_first_read(lambda: calls.append("png helper"))
    prefetch.prefetch(modules=("a_module_never_imported",))
    _join_prefetch()
    assert imported == [] and calls == ["png helper"] and prefetch._started == set()
