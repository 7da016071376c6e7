"""Corrupt events refused where they enter: ``EventStack(...)``, ``load_events`` and the
``ewoksxpcs run`` command on an events file; each message names the first violation."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import h5py
import numpy
import pytest

from _faults import assert_cli_refuses, cli_output_args, small_scan  # noqa: F401 (fixture)
from ewoksxpcs import correlate
from ewoksxpcs.engine.events import FORMAT_VERSION, EventStack, compact, load_events


@pytest.fixture()
def good(small_scan):
    """A valid EventStack of the small scan (pixel-major: pixel k's times ascending)."""
    _, frames, _, labels = small_scan
    return compact(frames), frames, labels


def arrays(ev) -> dict:
    return dict(values=ev.values.copy(), times=ev.times.astype(numpy.int64),
                offsets=ev.offsets.copy(), pixel_index=ev.pixel_index.copy(),
                frame_shape=ev.frame_shape, n_frames=ev.n_frames, dtype=ev.dtype)


def _second_event_of_a_pixel(a) -> int:
    """Index of the second event of the first pixel with two or more events."""
    k = int(numpy.flatnonzero(numpy.diff(a["offsets"]) >= 2)[0])
    return int(a["offsets"][k]) + 1


def _corrupt(case: str, a: dict) -> str:
    """Break ``a`` as ``case`` says; return the regex the refusal must match."""
    if case == "offsets decrease":
        a["offsets"][5] = a["offsets"][6] + 1
        return r"offsets decrease at pixel entry 5"
    if case == "offsets start above 0":
        a["offsets"][0] = 1
        return r"offsets\[0\] is 1, not 0"
    if case == "offsets end short":
        a["offsets"][-1] -= 1
        return r"disagree on the event count"
    if case == "time beyond n_frames":
        a["times"][7] = a["n_frames"]
        return rf"event 7 \(pixel \(y=\d+, x=\d+\)\) has time {a['n_frames']}, not below n_frames"
    if case == "time 2**32-1":  # made fft allocate a TiB
        a["times"][3] = 2**32 - 1
        return r"event 3 .* has time 4294967295, not below n_frames = 40"
    if case == "time beyond uint32":
        a["times"][3] = 2**32 + 2  # a cast would wrap it to frame 2
        return r"times\[3\] = 4294967298 does not fit uint32"
    if case == "negative time":
        a["times"][3] = -1
        return r"times\[3\] = -1 does not fit uint32"
    if case == "duplicate time":
        e = _second_event_of_a_pixel(a)
        a["times"][e] = a["times"][e - 1]
        return rf"event {e} .* \(duplicate time; times must increase strictly within a pixel\)"
    if case == "reversed times":
        e = _second_event_of_a_pixel(a)
        a["times"][e - 1], a["times"][e] = a["times"][e], a["times"][e - 1]
        return rf"event {e} .* \(reversed time"
    if case == "n_frames too small":
        a["n_frames"] = int(a["times"].max())
        return r"not below n_frames"
    if case == "pixels unsorted":
        a["pixel_index"][[3, 4]] = a["pixel_index"][[4, 3]]
        return r"pixel_index not strictly ascending at entry 4"
    if case == "pixel twice":
        a["pixel_index"][4] = a["pixel_index"][3]
        return r"pixel_index not strictly ascending at entry 4"
    if case == "pixel outside the frame":
        a["pixel_index"][-1] = 6 * 8
        return r"pixel_index\[47\] = 48 is outside the frame of 6×8 pixels"
    if case == "negative value":
        a["values"] = a["values"].astype(numpy.int16)
        a["dtype"] = numpy.dtype(numpy.int16)
        a["values"][9] = -3
        return r"event 9 \(pixel \(y=\d+, x=\d+\)\) at frame \d+ has value -3: negative"
    if case == "zero value":
        a["values"][9] = 0
        return r"event 9 .* has value 0: zero \(events hold non-zero values only\)"
    if case == "NaN value":
        a["values"] = a["values"].astype(numpy.float32)
        a["dtype"] = numpy.dtype(numpy.float32)
        a["values"][2] = numpy.nan
        return r"event 2 .* has value nan: not a finite count"
    if case == "values of another dtype":
        a["values"] = a["values"].astype(numpy.int32)
        return r"values are int32 but dtype says uint16"
    if case == "float offsets":
        a["offsets"] = a["offsets"].astype(numpy.float64) + 0.5
        return r"offsets are float64, not integers"
    raise AssertionError(case)


CASES = ["offsets decrease", "offsets start above 0", "offsets end short", "time beyond n_frames",
         "time 2**32-1", "time beyond uint32", "negative time", "duplicate time",
         "reversed times", "n_frames too small", "pixels unsorted", "pixel twice",
         "pixel outside the frame", "negative value", "zero value", "NaN value",
         "values of another dtype", "float offsets"]


def write_raw(filename, a: dict, version=FORMAT_VERSION, drop=()) -> str:
    """An events file written with h5py directly (no check), as another program might."""
    with h5py.File(filename, "w") as f:
        g = f.create_group("events")
        g.attrs["ewoksxpcs_events_format"] = version
        g.attrs["frame_shape"] = numpy.asarray(a["frame_shape"], numpy.int64)
        g.attrs["n_frames"] = a["n_frames"]
        g.attrs["dtype"] = str(a["dtype"])
        for name in ("values", "times", "offsets", "pixel_index"):
            if name not in drop:
                g[name] = a[name]
    return str(filename)


def test_valid_stack_accepted(good, tmp_path):
    """The control: a valid stack, built by hand and read back, correlates exactly."""
    ev, frames, labels = good
    a = arrays(ev)
    same = EventStack(**a)
    assert same == ev
    loaded = load_events(write_raw(tmp_path / "ok.h5", a))
    assert loaded == ev
    ref = correlate(frames, labels, method="reference")
    assert numpy.array_equal(correlate(loaded, labels, method="fft").n2, ref.n2)


@pytest.mark.parametrize("case", CASES)
def test_eventstack_refuses(good, case):
    a = arrays(good[0])
    expect = _corrupt(case, a)
    with pytest.raises(ValueError, match=expect):
        EventStack(**a)


@pytest.mark.parametrize("case", CASES)
def test_load_events_refuses(good, tmp_path, case):
    a = arrays(good[0])
    expect = _corrupt(case, a)
    name = write_raw(tmp_path / "bad.h5", a)
    with pytest.raises(ValueError, match=r"bad\.h5::events: .*" + expect):
        load_events(name)


@pytest.mark.parametrize("case", ["time 2**32-1", "duplicate time", "pixels unsorted",
                                  "n_frames too small", "offsets decrease"])
def test_cli_refuses_corrupt_events_file(good, tmp_path, capsys, case):
    ev, _, labels = good
    a = arrays(ev)
    expect = _corrupt(case, a)
    name = write_raw(tmp_path / "bad.h5", a)
    qmask = tmp_path / "q.npy"
    numpy.save(qmask, labels)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert_cli_refuses(["run", name, "--qmask", qmask, "--method", "fft",
                        *cli_output_args(out_dir)], expect, out_dir, capsys)


@pytest.mark.parametrize("version", [2, 0, "1"])
def test_unknown_format_version_refused(good, tmp_path, version):
    name = write_raw(tmp_path / "v.h5", arrays(good[0]), version=version)
    with pytest.raises(ValueError, match=r"v\.h5::events: events format version .* is not 1"):
        load_events(name)


def test_non_integer_n_frames_refused(good, tmp_path):
    name = write_raw(tmp_path / "f.h5", arrays(good[0]))
    with h5py.File(name, "a") as f:
        f["events"].attrs["n_frames"] = 40.5
    with pytest.raises(ValueError, match=r"f\.h5::events: attribute n_frames is 40\.5"):
        load_events(name)


def test_missing_array_refused(good, tmp_path):
    name = write_raw(tmp_path / "m.h5", arrays(good[0]), drop=("times",))
    with pytest.raises(ValueError, match=r"m\.h5::events: events group lacks times"):
        load_events(name)


def test_large_stack_checked_in_steps(monkeypatch):
    """A violation past the first step of the vectorised check is found, with its index."""
    import ewoksxpcs.engine.events as events_module

    monkeypatch.setattr(events_module, "CHECK_STEP", 7)
    n_pix, per = 10, 5
    times = numpy.tile(numpy.arange(per, dtype=numpy.uint32), n_pix)
    offsets = numpy.arange(0, n_pix * per + 1, per)
    values = numpy.ones(times.size, numpy.uint8)
    EventStack(values, times, offsets, numpy.arange(n_pix), (2, 5), per)  # valid: steps
    times[33] = times[32]  # pixel 6, event 3 (inside the fifth step)
    with pytest.raises(ValueError, match=r"event 33 \(pixel \(y=1, x=1\)\) has time 2 after 2"):
        EventStack(values, times, offsets, numpy.arange(n_pix), (2, 5), per)


def test_command_in_a_subprocess(good, tmp_path):
    """The installed entry point, as a user runs it: exit code 1, one line on stderr."""
    ev, _, labels = good
    a = arrays(ev)
    expect = _corrupt("reversed times", a)
    name = write_raw(tmp_path / "bad.h5", a)
    qmask = tmp_path / "q.npy"
    numpy.save(qmask, labels)
    out = tmp_path / "r.h5"
    before = sorted(os.listdir(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "ewoksxpcs", "run", name, "--qmask", str(qmask),
                           "-o", str(out), "--no-plot", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ewoksxpcs: error:"), proc.stderr
    assert re.search(expect, lines[0]), lines[0]
    assert sorted(os.listdir(tmp_path)) == before  # nothing written
