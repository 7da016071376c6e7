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
