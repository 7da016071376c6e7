"""Result layouts chosen by name: file names, the CLI option, the task and the reprocessing
table (a ``formats`` column); all-or-nothing writing."""

from __future__ import annotations

import os

import h5py
import pytest

from _scandata import make_scans
from ewoksxpcs.app.cli import main
from ewoksxpcs.io.formats import check_formats, format_filenames
from ewoksxpcs.app.reprocess import read_scans, reprocess
from ewoksxpcs.io.save_id02 import MAGIC


def test_names(tmp_path):
    assert check_formats(None) == ("nexus",)
    assert check_formats("aps, nexus aps") == ("aps", "nexus")
    with pytest.raises(ValueError, match="unknown result format 'hdf'"):
        check_formats(["hdf"])
    out = str(tmp_path / "r.h5")
    assert format_filenames(out, ["aps", "id02", "nexus"]) == {
        "aps": out, "id02": str(tmp_path / "r_id02.h5"), "nexus": str(tmp_path / "r_nexus.h5")}
    hdf = str(tmp_path / "r.hdf")
    assert format_filenames(hdf, ["aps", "nexus"])["nexus"] == str(tmp_path / "r.h5")


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return make_scans(tmp_path_factory.mktemp("fmt"), 2)


def test_cli_refuses_an_existing_secondary_file(scans, tmp_path, capsys):
    urls, qmask, _ = scans
    out = tmp_path / "r.h5"
    (tmp_path / "r_id02.h5").write_text("keep me")
    argv = ["run", urls[0], "--qmask", qmask, "-o", str(out), "-q", "--no-plot",
            "--format", "nexus", "--format", "id02"]
    assert main(argv) == 1
    assert "r_id02.h5" in capsys.readouterr().err
    assert not out.exists() and (tmp_path / "r_id02.h5").read_text() == "keep me"
    assert main(argv + ["--overwrite"]) == 0
    with h5py.File(tmp_path / "r_id02.h5", "r") as f:
        assert f.attrs["MagicString"] == MAGIC
    assert out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_aps_only_and_reprocessing_column(scans, tmp_path):
    urls, qmask, _ = scans
    csv = tmp_path / "scans.csv"
    csv.write_text("input,output,formats\n"
                   f"{urls[0]},{tmp_path / 'a.hdf'},aps\n"
                   f"{urls[1]},{tmp_path / 'b.h5'},nexus aps\n")
    jobs = read_scans([str(csv)], parameters={"qmask": qmask, "plot": False})
    report = reprocess(jobs, executor="local", max_workers=1)
    assert report.exit_code == 0, report.table()
    with h5py.File(tmp_path / "a.hdf", "r") as f:  # the first format writes the output
        assert "xpcs/multitau/normalized_g2" in f and "entry/xpcs" not in f
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert "entry/xpcs/g2" in f
    assert (tmp_path / "b_results.hdf").exists()
