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
    monkeypatch.setattr(prefetch, "import_module", imported.append)
    calls = []
    prefetch.after_first_read(lambda: calls.append("png helper"))
    prefetch.prefetch(modules=("a_module_never_imported",))
    _join_prefetch()
    assert imported == [] and calls == ["png helper"] and prefetch._started == set()


def test_prefetch_imports_under_the_shared_import_lock(monkeypatch):
    """The prefetch thread imports under the lock that ewoksxpcs' own SciPy imports take
    (ewoksxpcs.engine.lazy_imports): never two threads inside those packages' imports at once."""
    import sys

    from ewoksxpcs.engine import lazy_imports

    monkeypatch.setattr(prefetch, "_deferred", [])
    monkeypatch.setattr(prefetch, "_started", set())
    monkeypatch.delenv("EWOKSXPCS_PREFETCH", raising=False)
    name = "ewoksxpcs_prefetch_probe_module"
    ran = threading.Event()

    class Finder:  # a module that records whether the lock was held by its importer
        @staticmethod
        def find_spec(fullname, path=None, target=None):
            if fullname != name:
                return None
            import importlib.util

            class Loader:
                def create_module(self, spec):
                    return None

                def exec_module(self, module):
                    module.lock_held = lazy_imports._LOCK._is_owned()
                    ran.set()

            return importlib.util.spec_from_loader(fullname, Loader())

    monkeypatch.setattr(sys, "meta_path", [Finder] + sys.meta_path)
    with lazy_imports._LOCK:  # held here: the thread waits for it
        prefetch.prefetch(modules=(name,))
        assert not ran.wait(0.3)
    _join_prefetch()
    assert ran.is_set() and sys.modules.pop(name).lock_held
