"""ewoksxpcs.workflow.ahead: the scan opened (and its samples read) before the workflow starts."""

import threading

import numpy
import pytest

from ewoksxpcs.correlators import auto
from ewoksxpcs.tools.synthetic_eiger import write_eiger_scan
from ewoksxpcs.workflow import ahead
from ewoksxpcs.workflow.pipeline import open_source


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    return write_eiger_scan(str(tmp_path_factory.mktemp("scan") / "scan"), n_frames=64,
                            shape=(64, 48), counts=0.2, processes=1, frames_per_file=32)


@pytest.fixture(autouse=True)
def _forget():
    yield
    ahead.discard()


def test_open_source_takes_the_source_opened_ahead_once(master):
    opened = ahead.open_source_ahead(master, stop=40)
    assert opened.n_frames == 40
    assert open_source(master, stop=40) is opened
    again = open_source(master, stop=40)  # handed out once: a later run opens its own
    assert again is not opened and again.n_frames == 40


def test_other_arguments_open_the_scan_again(master):
    opened = ahead.open_source_ahead(master, stop=40)
    other = open_source(master, stop=32)
    assert other is not opened and other.n_frames == 32
    assert open_source(master, stop=40) is opened


def test_a_failed_opening_is_reported_by_the_step(tmp_path):
    missing = str(tmp_path / "missing.h5")
    assert ahead.open_source_ahead(missing) is None
    with pytest.raises((OSError, ValueError)) as err:
        open_source(missing)
    assert "missing.h5" in str(err.value)


def test_follow_ups_run_in_a_thread_on_the_opened_source(master):
    seen = []
    done = threading.Event()
    caller = threading.current_thread()

    def job(source):
        seen.append((source, threading.current_thread() is caller))
        done.set()

    source = ahead.open_source_ahead(master, then=(lambda s: 1 / 0, job))  # errors ignored
    assert done.wait(30)
    assert seen == [(source, False)]
    assert open_source(master) is source


def test_samples_read_ahead_are_those_auto_uses(master, monkeypatch):
    """read_samples() reads the chunks that describe_data() then uses without reading again."""
    from ewoksxpcs.io import hdf5chunks

    source = open_source(master)
    reads = []
    real = hdf5chunks.read_chunks

    def counting(*args, **kwargs):
        reads.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(hdf5chunks, "read_chunks", counting)
    auto.read_samples(source)
    n = len(reads)
    assert n > 0
    features = auto.describe_data(source)
    assert len(reads) == n  # no chunk read twice
    fresh = auto.describe_data(open_source(master))  # another source: read again
    assert len(reads) == 2 * n
    assert features.occupancy == pytest.approx(fresh.occupancy) and features.occupancy > 0


def test_non_string_sources_are_not_opened_ahead():
    assert ahead.open_source_ahead(numpy.zeros((2, 4, 4))) is None
    assert ahead.source_key(numpy.zeros(3)) is None
