"""Numeric options refused where they enter (a correlator, ``correlate``, the pipeline, a frame
source, the command) instead of giving an empty or silently different result."""

from __future__ import annotations

import numpy
import pytest

from _faults import assert_cli_refuses, cli_output_args, small_scan  # noqa: F401 (fixture)
from ewoksxpcs import correlate
from ewoksxpcs.correlators import create_correlator
from ewoksxpcs.engine.frames import as_frame_source
from ewoksxpcs.workflow.pipeline import correlate_sums


@pytest.mark.parametrize("value", [-5, 0, 2.5, True, "8"])
@pytest.mark.parametrize("mode", ["linear", "multitau", "twotime"])
def test_chunk_frames_refused(small_scan, mode, value):
    """chunk_frames=-5 used to read no frame and return an empty result."""
    _, frames, _, labels = small_scan
    with pytest.raises(ValueError, match=rf"option chunk_frames must be an integer >= 1 "
                                         rf"\(frames\), got {value!r}"):
        correlate(frames, labels, method="auto", mode=mode, chunk_frames=value)


def test_chunk_frames_refused_by_frame_sources(small_scan):
    _, frames, _, _ = small_scan
    with pytest.raises(ValueError, match="option chunk_frames must be an integer >= 1"):
        next(as_frame_source(frames).iter_chunks(-5))


@pytest.mark.parametrize("option, value, expect", [
    ("n_groups", 0, r"option n_groups must be an integer >= 1"),
    ("n_groups", 2.5, r"option n_groups must be an integer >= 1"),
    ("block_frames", -1, r"option block_frames must be an integer >= 1 \(frames\)"),
    ("threads", 0, r"option threads must be an integer >= 1"),
])
def test_linear_options_refused(small_scan, option, value, expect):
    _, frames, _, labels = small_scan
    with pytest.raises(ValueError, match=expect):
        create_correlator(labels, method="matmul", **{option: value})


@pytest.mark.parametrize("method, option", [("opencl-dense", "max_device_memory"),
                                            ("opencl-dense", "window_frames"),
                                            ("opencl-events", "lag_tile"),
                                            ("opencl-events", "task_pairs")])
def test_opencl_options_refused(small_scan, method, option):
    _, _, _, labels = small_scan
    with pytest.raises(ValueError, match=rf"option {option} must be an integer >= 1"):
        create_correlator(labels, method=method, device="cpu", **{option: -1})


@pytest.mark.parametrize("mode, options, expect", [
    ("multitau", {"lags_per_level": 3}, r"lags_per_level must be an even integer >= 2"),
    ("multitau", {"lags_per_level": 0}, r"lags_per_level must be an even integer >= 2"),
    ("multitau", {"max_levels": 0}, r"max_levels"),
    ("twotime", {"time_bin": 0}, r"time_bin must be an integer >= 1"),
    ("twotime", {"time_bin": -3}, r"time_bin must be an integer >= 1"),
    ("twotime", {"n_segments": 0}, r"n_segments must be an integer >= 1"),
    ("twotime", {"max_frames": 0}, r"max_frames must be an integer >= 1"),
])
def test_mode_options_refused(small_scan, mode, options, expect):
    _, frames, _, labels = small_scan
    with pytest.raises(ValueError, match=expect):
        correlate(frames, labels, method="numpy", mode=mode, **options)


def test_pipeline_refuses(small_scan):
    _, frames, _, labels = small_scan
    with pytest.raises(ValueError, match="option chunk_frames must be an integer >= 1"):
        correlate_sums(frames, labels, method="reference", options={"chunk_frames": -5})
    with pytest.raises(ValueError, match="option n_groups must be an integer >= 1"):
        correlate_sums(frames, labels, method="reference", n_groups=0)


def test_valid_options_accepted(small_scan):
    """The control: chunk_frames=1 (the smallest) gives the same n2 as the default."""
    _, frames, _, labels = small_scan
    a = correlate(frames, labels, method="reference", chunk_frames=1)
    b = correlate(frames, labels, method="reference")
    assert numpy.array_equal(a.n2, b.n2) and a.n2.shape == (2, 40)


def test_cli_refuses_bad_chunk_frames(small_scan, tmp_path, capsys):
    scan, _, qmask, _ = small_scan
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert_cli_refuses(["run", f"{scan}::/data", "--qmask", qmask, "--method", "reference",
                        "--option", "chunk_frames=-5", *cli_output_args(out_dir)],
                       r"chunk_frames must be an integer >= 1", out_dir, capsys)


def test_cli_refuses_bad_groups(small_scan, tmp_path, capsys):
    scan, _, qmask, _ = small_scan
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert_cli_refuses(["run", f"{scan}::/data", "--qmask", qmask, "--groups", "0",
                        *cli_output_args(out_dir)], r"n_groups", out_dir, capsys)


def test_cli_valid_run_writes(small_scan, tmp_path):
    """The control of the command-line refusals: the same command with valid input succeeds."""
    from ewoksxpcs.app.cli import main

    scan, _, qmask, _ = small_scan
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["run", f"{scan}::/data", "--qmask", qmask, "--method", "reference",
                 "--option", "chunk_frames=7", *cli_output_args(out_dir)]) == 0
    assert (out_dir / "r.h5").exists()
