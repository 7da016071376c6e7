"""Helpers of the fault tests: a small scan (fixture ``small_scan``, imported by the test
modules), and the check that a bad input given to the ``ewoksxpcs`` command fails with a
non-zero exit code, one error line naming the cause, no traceback, and nothing written.

(No ``conftest.py`` here: it would shadow ``tests/conftest.py`` for ``from conftest import``.)"""

from __future__ import annotations

import os
import re

import h5py
import numpy
import pytest

from ewoksxpcs.app.cli import main


@pytest.fixture()
def small_scan(tmp_path):
    """(scan.h5 holding /data (40, 6, 8) uint16 Poisson counts, labels.npy (6, 8) int32)."""
    rng = numpy.random.default_rng(11)
    frames = rng.poisson(0.8, (40, 6, 8)).astype(numpy.uint16)
    scan = tmp_path / "scan.h5"
    with h5py.File(scan, "w") as f:
        f["data"] = frames
    labels = numpy.zeros((6, 8), numpy.int32)
    labels[:, :4], labels[:, 4:] = 1, 2
    qmask = tmp_path / "labels.npy"
    numpy.save(qmask, labels)
    return str(scan), frames, str(qmask), labels


def cli_output_args(out_dir) -> list:
    """``-o out_dir/r.h5`` with no PNG and no fit (quick)."""
    return ["-o", os.path.join(out_dir, "r.h5"), "--no-plot", "--no-fit", "--quiet"]


def assert_cli_refuses(argv, expect: str, out_dir, capsys) -> str:
    """Run ``ewoksxpcs`` with ``argv``: exit code non-zero, exactly one error line that matches
    ``expect`` (a regex), no traceback, and ``out_dir`` unchanged. Returns the error line."""
    out_dir = str(out_dir)
    before = sorted(os.listdir(out_dir))
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc != 0, err
    lines = [line for line in err.splitlines() if line.startswith("ewoksxpcs: error:")]
    assert len(lines) == 1, err
    assert re.search(expect, lines[0]), lines[0]
    assert "Traceback" not in err
    assert sorted(os.listdir(out_dir)) == before, "something was written"
    return lines[0]
