"""Shared set-up of the fault tests: a small scan (helpers in ``_faults.py``)."""

from __future__ import annotations

import h5py
import numpy
import pytest


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
