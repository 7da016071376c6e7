"""Shared by the result-layout tests: ewoksxpcs runs saved in every format."""

from __future__ import annotations

import h5py
import numpy

from ewoksxpcs.app.cli import main

GEOMETRY = ["--beam-center", "12", "13", "--distance", "1.0", "--pixel-size", "75e-6",
            "--wavelength", "1e-10"]


def make_runs(d):
    """One scan; multi-tau with sectors (geometry), linear with a given q-mask, two-time;
    each saved as nexus, aps and id02."""
    scan = str(d / "scan.h5")
    assert main(["simulate", scan, "--shape", "24", "26", "--frames", "64", "--bins", "3",
                 "--mean-counts", "0.5", "--seed", "2"]) == 0
    url = scan + "::/1.1"
    out = {}
    argv = {
        "multitau": GEOMETRY + ["--bins", "4", "--sectors", "2", "--mode", "multitau"],
        "linear": ["--qmask", scan + "::/1.1/simulation/labels"],
        "twotime": GEOMETRY + ["--bins", "3", "--sectors", "2", "--mode", "twotime",
                               "--time-bin", "2", "--twotime-bins", "2", "4", "5"],
    }
    for name, extra in argv.items():
        output = str(d / f"{name}.h5")
        assert main(["run", url, "-o", output, "-q", "--no-plot", "--no-fit",
                     "--format", "nexus", "--format", "aps", "--format", "id02"] + extra) == 0
        out[name] = output
    out["scan"] = scan
    return out


def nexus_result(output):
    """The arrays of an ewoksxpcs NeXus result."""
    with h5py.File(output, "r") as f:
        x = f["entry/xpcs"]
        g = x["g2"]
        r = {k: g[k][()] for k in ("g2", "g2_errors", "q", "lags", "labels", "n_pixels")}
        r["q_nominal"] = g["q_nominal"][()] if "q_nominal" in g else None
        r["chi"] = g["chi"][()] if "chi" in g else None
        r["qmask"] = x["qmask/labels"][()]
        r["frame_period"] = float(x["frame_period"][()])
        r["geometry"] = (dict((k, x["geometry"][k][()]) for k in x["geometry"])
                         if isinstance(x["geometry"], h5py.Group) else x["geometry"][()].decode())
        if "twotime" in x:
            r["C"] = x["twotime/maps/C"][()]
            r["C_diagonal"] = x["twotime/maps/C_diagonal"][()]
        return r


