"""Re-binning after the fact: a result kept with its per-pixel time series (or an events file)
correlated on a new partition equals a direct run on that partition, in every mode."""

from __future__ import annotations

import os

import h5py
import numpy
import pytest

from ewoksxpcs.app.cli import main, run_workflow
from ewoksxpcs.workflow.maskbin import build_qmask
from ewoksxpcs.io.rebin import pixel_series, recorded_settings

GEOMETRY = ["--beam-center", "11", "12", "--distance", "1.0", "--pixel-size", "75e-6",
            "--wavelength", "1e-10"]
QUIET = ["-q", "--no-plot", "--no-fit"]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    d = tmp_path_factory.mktemp("rebin")
    url = str(d / "scan.h5")
    assert main(["simulate", url, "--shape", "22", "24", "--frames", "64", "--bins", "3",
                 "--mean-counts", "0.6", "--seed", "8"]) == 0
    # The new partition: other centre, q bins and 3 sectors.
    qb = build_qmask((22, 24), beam_center=(9.5, 14), distance=1.0, pixel_size=75e-6,
                     wavelength=1e-10, n_bins=4, n_sectors=3)
    numpy.save(d / "new.npy", qb.qmask)
    return d, url + "::/1.1", str(d / "new.npy")


def _arrays(output):
    with h5py.File(output, "r") as f:
        x = f["entry/xpcs"]
        out = {k: x["g2"][k][()] for k in ("g2", "g2_errors", "lags", "labels", "n_pixels")}
        out.update({k: x["sums"][k][()] for k in x["sums"] if k != "description"})
        if "twotime" in x:
            out["C"] = x["twotime/maps/C"][()]
        return out


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        numpy.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("mode", [[], ["--mode", "multitau", "--lags-per-level", "4"],
                                  ["--mode", "twotime", "--time-bin", "2"]],
                         ids=["linear", "multitau", "twotime"])
def test_rebin_result_equals_direct_run(scan, mode):
    d, url, new = scan
    name = mode[1] if mode else "linear"
    kept = str(d / f"kept_{name}.h5")
    assert main(["run", url, "-o", kept, "--keep-events", "--bins", "5"] + GEOMETRY + mode
                + QUIET) == 0
    assert recorded_settings(kept).get("--mode", "linear") == name
    rebinned = str(d / f"rebinned_{name}.h5")
    assert main(["rebin", kept, "--qmask", new, "-o", rebinned] + QUIET) == 0  # mode recorded
    direct = str(d / f"direct_{name}.h5")
    assert main(["run", url, "--qmask", new, "-o", direct] + mode + QUIET) == 0
    _same(_arrays(rebinned), _arrays(direct))


def test_rebin_events_file_and_recorded_events_file(scan):
    d, url, new = scan
    result, events = str(d / "c.h5"), str(d / "c_events.h5")
    assert main(["run", url, "-o", result, "--events-file", events, "--bins", "5"] + GEOMETRY
                + QUIET) == 0
    assert pixel_series(result) == (f"{events}::/events", "recorded events file")
    direct = str(d / "direct_events.h5")
    assert main(["run", url, "--qmask", new, "-o", direct] + QUIET) == 0
    for i, source in enumerate((events, result)):
        out = str(d / f"from_events_{i}.h5")
        assert main(["rebin", source, "--qmask", new, "-o", out] + QUIET) == 0
        _same(_arrays(out), _arrays(direct))


def test_workflow_task(scan):
    d, url, new = scan
    kept = str(d / "kept_wf.h5")
    assert main(["run", url, "-o", kept, "--keep-events", "--bins", "5"] + GEOMETRY
                + QUIET) == 0
    out = str(d / "wf.h5")
    outputs = run_workflow("xpcs_rebin", {"url": kept, "qmask": new, "output": out,
                                          "plot": False, "fit": False}, progress=False)
    assert outputs["output"] == out
    direct = str(d / "direct_wf.h5")
    assert main(["run", url, "--qmask", new, "-o", direct] + QUIET) == 0
    _same(_arrays(out), _arrays(direct))


def test_refusals(scan, capsys):
    d, url, new = scan
    plain = str(d / "plain.h5")
    assert main(["run", url, "-o", plain, "--bins", "5"] + GEOMETRY + QUIET) == 0
    out = str(d / "never.h5")
    assert main(["rebin", plain, "--qmask", new, "-o", out] + QUIET) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no per-pixel time series" in err[0]
    assert not os.path.exists(out)
    # Pixels masked when the events were kept stay masked: as a direct run with that mask.
    kept = str(d / "kept_masked.h5")
    mask = numpy.zeros((22, 24), dtype=numpy.uint8)
    mask[3, 4] = 1
    numpy.save(d / "mask.npy", mask)
    assert main(["run", url, "-o", kept, "--keep-events", "--mask", str(d / "mask.npy"),
                 "--bins", "5"] + GEOMETRY + QUIET) == 0
    full = numpy.ones((22, 24), dtype=numpy.int32)
    numpy.save(d / "full.npy", full)
    assert main(["rebin", kept, "--qmask", str(d / "full.npy"), "-o", out] + QUIET) == 0
    direct = str(d / "direct_masked.h5")
    assert main(["run", url, "--qmask", str(d / "full.npy"), "--mask", str(d / "mask.npy"),
                 "-o", direct] + QUIET) == 0
    _same(_arrays(out), _arrays(direct))
    assert _arrays(out)["n_pixels"].tolist() == [22 * 24 - 1]
