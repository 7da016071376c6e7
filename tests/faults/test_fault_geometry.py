"""Geometry validated where it enters: distance, pixel size, wavelength or energy > 0 and finite,
a finite beam centre; a malformed PONI file named with its field, in one line."""

from __future__ import annotations

import math

import pytest

from _faults import assert_cli_refuses, cli_output_args, small_scan  # noqa: F401 (fixture)
from ewoksxpcs.workflow.maskbin import Geometry, read_poni

GOOD_PONI = """poni_version: 2.1
Detector: Detector
Detector_config: {"pixel1": 7.5e-05, "pixel2": 7.5e-05, "max_shape": [6, 8], "orientation": 3}
Distance: 5.0
Poni1: 0.0003
Poni2: 0.0003
Rot1: 0.0
Rot2: 0.0
Rot3: 0.0
Wavelength: 1.0e-10
"""

PONI_CASES = {
    "negative distance": (("Distance: 5.0", "Distance: -5.0"),
                          r"distance must be a finite value > 0 \(m\), got -5.0"),
    "zero distance": (("Distance: 5.0", "Distance: 0"), r"distance must be a finite value > 0"),
    "zero pixel size": (('"pixel1": 7.5e-05', '"pixel1": 0'), r"pixel1 must be"),
    "negative pixel size": (('"pixel2": 7.5e-05', '"pixel2": -1e-4'),
                            r"pixel2 must be a finite value > 0"),
    "zero wavelength": (("Wavelength: 1.0e-10", "Wavelength: 0"), r"wavelength"),
    "NaN poni": (("Poni1: 0.0003", "Poni1: nan"), r"poni1 must be finite \(m\), got nan"),
    "infinite rotation": (("Rot2: 0.0", "Rot2: inf"), r"rot2 must be finite \(rad\)"),
    "text for a number": (("Distance: 5.0", "Distance: five"),
                          r"field 'distance' is not a number \(m\): 'five'"),
    "empty number": (("Poni2: 0.0003", "Poni2:"), r"field 'poni2' is not a number \(m\): ''"),
    "malformed detector config": (("Detector_config: {", "Detector_config: {{"),
                                  r"field 'detector_config' is not valid JSON"),
    "text orientation": (('"orientation": 3', '"orientation": "three"'),
                         r"field 'detector_config' has orientation 'three', not an integer"),
}


def poni(tmp_path, case=None) -> str:
    text = GOOD_PONI
    if case is not None:
        old, new = PONI_CASES[case][0]
        assert old in text
        text = text.replace(old, new)
    name = tmp_path / "det.poni"
    name.write_text(text)
    return str(name)


@pytest.mark.parametrize("use_pyfai", [True, False])
def test_good_poni_read(tmp_path, use_pyfai):
    if use_pyfai:
        pytest.importorskip("pyFAI")
    g = read_poni(poni(tmp_path), use_pyfai=use_pyfai)
    assert (g.distance, g.pixel1, g.wavelength) == (5.0, 7.5e-05, 1e-10)


@pytest.mark.parametrize("use_pyfai", [True, False])
@pytest.mark.parametrize("case", sorted(PONI_CASES))
def test_bad_poni_refused(tmp_path, case, use_pyfai):
    if use_pyfai:
        pytest.importorskip("pyFAI")
    name = poni(tmp_path, case)
    with pytest.raises(ValueError, match=PONI_CASES[case][1]) as info:
        read_poni(name, use_pyfai=use_pyfai)
    message = str(info.value)
    assert "det.poni" in message and "\n" not in message
    assert "Expecting value" not in message


def test_non_poni_text_refused(tmp_path):
    name = tmp_path / "x.poni"
    name.write_text("{this is not a PONI file}\n")
    with pytest.raises(ValueError, match=r"x\.poni' is not a PONI file: missing distance"):
        read_poni(str(name))


@pytest.mark.parametrize("kwargs, expect", [
    (dict(distance=0), r"distance must be > 0 m"),
    (dict(distance=-1), r"distance must be > 0 m"),
    (dict(distance=math.nan), r"distance must be > 0 m"),
    (dict(pixel_size=0), r"pixel_size must be one or two positive values"),
    (dict(pixel_size=(7.5e-5, math.inf)), r"pixel_size must be one or two positive values"),
    (dict(wavelength=0), r"wavelength must be a finite value > 0 m"),
    (dict(wavelength=math.nan), r"wavelength must be a finite value > 0 m"),
    (dict(wavelength=None, energy=-8), r"energy must be a finite value > 0 keV"),
    (dict(wavelength=None, energy=math.inf), r"energy must be a finite value > 0 keV"),
    (dict(beam_center=(math.nan, 3)), r"beam_center must be finite"),
    (dict(beam_center=(2, math.inf)), r"beam_center must be finite"),
    (dict(beam_center=("a", 3)), r"beam_center must be two numbers"),
])
def test_bad_beam_centre_geometry_refused(kwargs, expect):
    args = dict(beam_center=(2.5, 3.5), distance=5.0, pixel_size=7.5e-5, wavelength=1e-10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=expect):
        Geometry.from_beam_center(**args)


def test_geometry_checks_itself():
    with pytest.raises(ValueError, match=r"geometry from test: pixel2 must be a finite value > 0"):
        Geometry(distance=1, poni1=0, poni2=0, wavelength=1e-10, pixel1=1e-4, pixel2=0,
                 source="test")


@pytest.mark.parametrize("case", ["negative distance", "zero pixel size", "text for a number"])
def test_cli_refuses_bad_poni(small_scan, tmp_path, capsys, case):
    scan, _, _, _ = small_scan
    name = poni(tmp_path, case)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    line = assert_cli_refuses(["run", f"{scan}::/data", "--poni", name, "--bins", "3",
                               *cli_output_args(out_dir)], PONI_CASES[case][1], out_dir, capsys)
    assert "det.poni" in line


def test_cli_refuses_bad_beam_centre(small_scan, tmp_path, capsys):
    scan, _, _, _ = small_scan
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert_cli_refuses(["run", f"{scan}::/data", "--beam-center", "2", "3", "--distance", "-5",
                        "--pixel-size", "7.5e-5", "--energy", "8", *cli_output_args(out_dir)],
                       r"distance.*(greater than 0|> 0)", out_dir, capsys)


def test_cli_good_poni_runs(small_scan, tmp_path):
    """The control: the same command with the good PONI file writes its result."""
    from ewoksxpcs.app.cli import main

    scan, _, _, _ = small_scan
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["run", f"{scan}::/data", "--poni", poni(tmp_path), "--bins", "3",
                 *cli_output_args(out_dir)]) == 0
    assert (out_dir / "r.h5").exists()
