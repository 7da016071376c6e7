"""The ``ewoksxpcs`` command end to end: simulate, run, demo, and one-line errors on bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import threading

import h5py
import numpy
import pytest

from ewoksxpcs import correlate
from ewoksxpcs.app.cli import demo_distance, main
from ewoksxpcs.tools.synthetic import SyntheticXPCS
from ewoksxpcs.engine.twotime import TwoTimeResult


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A scan written by ``ewoksxpcs simulate``, its frames and label image."""
    directory = tmp_path_factory.mktemp("cli")
    filename = str(directory / "scan.h5")
    argv = [
        "simulate",
        filename,
        "--shape",
        "24",
        "24",
        "--frames",
        "60",
        "--bins",
        "3",
        "--mean-counts",
        "0.5",
        "--seed",
        "4",
    ]
    assert main(argv) == 0
    with h5py.File(filename, "r") as f:
        frames = f["1.1/measurement/eiger"][()]
        labels = f["1.1/simulation/labels"][()]
    return filename, frames, labels


def listing(path):
    return sorted(os.listdir(path))


def test_simulate(scan, capsys):
    filename, frames, labels = scan
    assert frames.shape == (60, 24, 24) and frames.dtype == numpy.uint8
    assert labels.max() == 3
    # The same simulation from the library.
    sim = SyntheticXPCS(
        shape=(24, 24),
        n_frames=60,
        n_bins=3,
        mean_counts=0.5,
        seed=4,
        contrast=0.2,
        diffusion=1e5,
        q_per_pixel=1e-3,
    )
    numpy.testing.assert_array_equal(frames, sim.frames())
    assert main(["simulate", filename]) == 1  # exists
    assert "exists" in capsys.readouterr().err


def test_run_qmask(scan, tmp_path, capsys):
    filename, frames, labels = scan
    out = str(tmp_path / "r.h5")
    argv = [
        "run",
        f"{filename}::/1.1",
        "--qmask",
        f"{filename}::/1.1/simulation/labels",
        "--output",
        out,
        "--method",
        "reference",
        "--start",
        "5",
        "--stop",
        "55",
        "--step",
        "2",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    # stderr is no terminal here: one line per stage
    assert "Correlate: 100 % in" in captured.err
    assert f"result: {out}" in captured.out
    expected = correlate(frames[5:55:2], labels, method="reference")
    with h5py.File(out, "r") as f:
        numpy.testing.assert_array_equal(f["entry/xpcs/sums/n2"][()], expected.n2)
        numpy.testing.assert_allclose(f["entry/xpcs/g2/tau"][()], expected.lags * 2e-3)
    assert listing(tmp_path) == ["r.h5", "r_g2.png", "r_gamma.png"]


def test_run_builds_the_binning_once(scan, tmp_path, monkeypatch):
    """BuildQMask's Binning reaches Correlate with the label image: one pixel sort per run."""
    from ewoksxpcs.engine.qmask import Binning

    filename, frames, labels = scan
    built = []
    real = Binning.__init__

    def counting(self, *args, **kwargs):
        built.append(kwargs.get("n_groups"))
        real(self, *args, **kwargs)

    monkeypatch.setattr(Binning, "__init__", counting)
    argv = ["run", f"{filename}::/1.1", "--qmask", f"{filename}::/1.1/simulation/labels",
            "-o", str(tmp_path / "r.h5"), "--method", "reference", "-q"]
    assert main(argv) == 0
    assert len(built) == 1
    expected = correlate(frames, labels, method="reference")
    with h5py.File(tmp_path / "r.h5", "r") as f:
        numpy.testing.assert_array_equal(f["entry/xpcs/sums/n2"][()], expected.n2)


def test_run_geometry_events_and_rebin(scan, tmp_path):
    filename, frames, labels = scan
    poni = tmp_path / "det.poni"
    # Beam at the detector centre: PONI = (centre + 0.5 pixel) × pixel size.
    poni.write_text(
        f"poni_version: 2.1\nDetector: Detector\nDetector_config: "
        f'{{"pixel1": 7.5e-05, "pixel2": 7.5e-05, "orientation": 3}}\n'
        f"Distance: {demo_distance(1e-3)}\nPoni1: {12 * 75e-6}\nPoni2: {12 * 75e-6}\n"
        f"Rot1: 0\nRot2: 0\nRot3: 0\nWavelength: 1e-10\n"
    )
    out = str(tmp_path / "geo.h5")
    events = str(tmp_path / "events.h5")
    argv = [
        "run",
        f"{filename}::/1.1",
        "--poni",
        str(poni),
        "--bins",
        "3",
        "--q-range",
        "0.002",
        "0.012",
        "--output",
        out,
        "--events-file",
        events,
        "--no-plot",
        "-q",
    ]
    assert main(argv) == 0
    with h5py.File(out, "r") as f:
        qmask = f["entry/xpcs/qmask/labels"][()]
        q = f["entry/xpcs/g2/q"][()]
        n2 = f["entry/xpcs/sums/n2"][()]
    assert qmask.max() == 3 and numpy.all((q > 0.002) & (q < 0.012))
    numpy.testing.assert_array_equal(n2, correlate(frames, qmask, method="reference").n2)
    # Re-bin from the events file: another label image, no raw frames.
    numpy.save(
        tmp_path / "half.npy", (numpy.arange(24)[:, None] // 12 + 1) * numpy.ones((1, 24), int)
    )
    out2 = str(tmp_path / "rebin.h5")
    assert (
        main(
            [
                "run",
                events,
                "--qmask",
                str(tmp_path / "half.npy"),
                "--output",
                out2,
                "-q",
                "--no-plot",
                "--no-fit",
            ]
        )
        == 0
    )
    half = numpy.load(tmp_path / "half.npy")
    with h5py.File(out2, "r") as f:
        numpy.testing.assert_array_equal(
            f["entry/xpcs/sums/n2"][()], correlate(frames, half, method="reference").n2
        )
        assert f["entry/xpcs/parameters/load/events"][()]


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "wrong dataset path",
        "2-D dataset",
        "frame range beyond the data",
        "qmask shape mismatch",
        "missing PONI file",
        "output directory not writable",
        "existing output without overwrite",
        "no q-mask",
        "unknown method",
    ],
)
def test_bad_input_one_line_nothing_written(scan, tmp_path, capsys, case):
    filename, frames, labels = scan
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = str(out_dir / "r.h5")
    qmask = ["--qmask", f"{filename}::/1.1/simulation/labels"]
    argv, expect = {
        "missing file": (
            ["run", str(tmp_path / "nope.h5") + "::/1.1", *qmask, "-o", out],
            "input file .*nope.h5.* does not exist",
        ),
        "wrong dataset path": (
            ["run", f"{filename}::/7.1", *qmask, "-o", out],
            "has no dataset or group '/7.1'",
        ),
        "2-D dataset": (
            ["run", f"{filename}::/1.1/simulation/labels", *qmask, "-o", out],
            "2-D dataset .* must be a 3-D dataset",
        ),
        "frame range beyond the data": (
            ["run", f"{filename}::/1.1", *qmask, "--stop", "99", "-o", out],
            r"frame range \[0:99\] is beyond the data: it has 60 frames",
        ),
        "qmask shape mismatch": (
            [
                "run",
                f"{filename}::/1.1",
                "--qmask",
                f"{filename}::/1.1/simulation/q_map",
                "--output",
                out,
            ],
            r"qmask must hold integer labels|differs from the frame shape",
        ),
        "missing PONI file": (
            ["run", f"{filename}::/1.1", "--poni", str(tmp_path / "x.poni"), "-o", out],
            "PONI file .*x.poni.* does not exist",
        ),
        "output directory not writable": (
            ["run", f"{filename}::/1.1", *qmask, "-o", "/proc/r.h5"],
            "output directory '/proc' is not writable",
        ),
        "existing output without overwrite": (
            ["run", f"{filename}::/1.1", *qmask, "-o", out],
            "exists .*use overwrite",
        ),
        "no q-mask": (["run", f"{filename}::/1.1", "-o", out], "give a q-mask"),
        "unknown method": (
            ["run", f"{filename}::/1.1", *qmask, "--method", "magic", "-o", out],
            "unknown correlation method 'magic'",
        ),
    }[case]
    if case == "existing output without overwrite":
        with open(out, "wb") as fh:
            fh.write(b"old")
    if case == "qmask shape mismatch":
        wrong = tmp_path / "wrong.npy"
        numpy.save(wrong, numpy.ones((5, 5), dtype=numpy.int32))
        argv[argv.index("--qmask") + 1] = str(wrong)
        expect = r"qmask shape \(5, 5\) differs from the frame shape \(24, 24\)"
    before = listing(out_dir)
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ewoksxpcs: error:")]
    assert len(lines) == 1, err
    import re

    assert re.search(expect, lines[0]), lines[0]
    assert "Traceback" not in err
    assert listing(out_dir) == before  # nothing written (an existing file untouched)
    if case == "existing output without overwrite":
        with open(out, "rb") as fh:
            assert fh.read() == b"old"


def test_run_modes(scan, tmp_path, capsys):
    """``--mode multitau|twotime`` with their options: the result file holds their NXdata."""
    from silx.io.nxdata import NXdata, get_default

    from ewoksxpcs.correlators import multitau
    from ewoksxpcs.correlators import twotime

    filename, frames, labels = scan
    common = [f"{filename}::/1.1", "--qmask", f"{filename}::/1.1/simulation/labels", "-q"]
    mt = str(tmp_path / "mt.h5")
    argv = ["run", *common, "-o", mt, "--mode", "multitau", "--lags-per-level", "4"]
    assert main(argv + ["--normalisation", "standard"]) == 0
    linear = correlate(frames, labels, method="reference")
    expected = multitau(frames, labels, lags_per_level=4, method="numpy")
    with h5py.File(mt, "r") as f:
        nxdata = get_default(f)
        assert "multi-tau" in nxdata.title and nxdata.axes_dataset_names[1] == "tau"
        numpy.testing.assert_array_equal(nxdata.signal[()], expected.g2)
        numpy.testing.assert_array_equal(nxdata.signal[:, :4], linear.g2[:, :4])  # level 0
        numpy.testing.assert_allclose(nxdata.axes[1][()], expected.lags * 1e-3)
    tt = str(tmp_path / "tt.h5")
    argv = ["run", *common, "-o", tt, "--mode", "twotime", "--twotime-bins", "1", "3"]
    assert main(argv + ["--time-bin", "3", "--no-plot"]) == 0
    expected = twotime(frames, labels, bins=[1, 3], time_bin=3, method="numpy")
    with h5py.File(tt, "r") as f:
        assert get_default(f).signal.shape == (2, 20)
        maps = NXdata(f["entry/xpcs/twotime/maps"])
        assert maps.signal.shape == (2, 20, 20) and maps.interpretation == "image"
        numpy.testing.assert_array_equal(TwoTimeResult.read_maps(maps.group), expected.C)
        assert f["entry/xpcs/parameters/correlate/mode_options/time_bin"][()] == 3
    assert listing(tmp_path) == ["mt.h5", "mt_g2.png", "mt_gamma.png", "tt.h5"]
    # An option of another mode, a bad value: one line, nothing written.
    bad = str(tmp_path / "bad.h5")
    assert main(["run", *common, "-o", bad, "--mode", "twotime", "--lags-per-level", "4"]) == 1
    assert "--lags-per-level applies to --mode multitau only" in capsys.readouterr().err
    assert main(["run", *common, "-o", bad, "--mode", "multitau", "--lags-per-level", "5"]) == 1
    err = capsys.readouterr().err
    assert "lags_per_level must be an even integer >= 2, got 5" in err and err.count("\n") == 1
    assert main(["run", *common, "-o", bad, "--mode", "circular"]) == 2
    assert "invalid choice: 'circular'" in capsys.readouterr().err
    assert listing(tmp_path) == ["mt.h5", "mt_g2.png", "mt_gamma.png", "tt.h5"]


@pytest.mark.parametrize("engine", ["ppf", "dask"])
def test_run_engines(scan, tmp_path, engine):
    filename, frames, labels = scan
    out = str(tmp_path / "r.h5")
    argv = [
        "run",
        f"{filename}::/1.1",
        "--qmask",
        f"{filename}::/1.1/simulation/labels",
        "--output",
        out,
        "--method",
        "reference",
        "--engine",
        engine,
        "--no-plot",
        "--no-fit",
        "-q",
    ]
    assert main(argv) == 0
    with h5py.File(out, "r") as f:
        numpy.testing.assert_array_equal(
            f["entry/xpcs/sums/n2"][()], correlate(frames, labels, method="reference").n2
        )


def test_benchmark_subcommand(capsys):
    try:
        import ewoksxpcs.tools.benchmark  # noqa: F401
    except ImportError:
        assert main(["benchmark"]) == 1
        assert "benchmark is not available" in capsys.readouterr().err
        return
    assert main(["benchmark", "--help"]) == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_usage_errors(capsys):
    assert main([]) == 2
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "the following arguments are required: input, --output/-o (see --help)" in err
    assert main(["run", "x.h5", "-o", "r.h5", "--bins", "many"]) == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err


def test_demo(tmp_path, capsys):
    assert main(["demo", "--dir", str(tmp_path), "--frames", "400", "-q"]) == 0
    out = capsys.readouterr().out
    assert f"writing into {tmp_path}" in out
    assert "Gamma fit" in out and "beta fit" in out and "median |Gamma fit / Gamma true - 1|" in out
    assert listing(tmp_path) == ["g2.png", "g2_gamma.png", "result.h5", "scan.h5"]
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("0.0")]
    assert len(rows) == 8
    # Columns: q, q true, Γ fit, ±, Γ err, Γ true, β fit, ±, β err, β true.
    q, q_true = numpy.array([[float(r[0]), float(r[1])] for r in rows]).T
    numpy.testing.assert_allclose(q, q_true, rtol=2e-3)
    gamma_fit, gamma_true = numpy.array([[float(r[2]), float(r[5])] for r in rows]).T
    assert numpy.median(numpy.abs(gamma_fit / gamma_true - 1)) < 0.25
    with h5py.File(tmp_path / "result.h5", "r") as f:
        assert f["entry/xpcs/parameters/correlate/method_requested"][()] == b"auto"
    # Rerunning into the same directory refuses to overwrite.
    assert main(["demo", "--dir", str(tmp_path), "--frames", "100", "-q"]) == 1
    assert "exists" in capsys.readouterr().err


def test_console_script_help():
    exe = os.path.join(os.path.dirname(sys.executable), "ewoksxpcs")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "ewoksxpcs.app.cli"]
    proc = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for word in ("demo", "simulate", "run", "benchmark"):
        assert word in proc.stdout
    proc = subprocess.run(cmd + ["run", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--poni" in proc.stdout and "--events-file" in proc.stdout


@pytest.mark.parametrize("file_mask", [True, False])
def test_run_eiger_scan_uses_the_detector_mask(tmp_path, file_mask):
    """An Eiger scan (bitshuffle-LZ4 files behind a virtual dataset, gaps at 65535): its
    pixel_mask is applied without --mask (the gaps' constant 65535 would otherwise be binned),
    and the events are compacted from the raw chunks on the OpenCL device."""
    from ewoksxpcs.tools.synthetic_eiger import eiger_gap_mask, write_eiger_scan

    master = write_eiger_scan(tmp_path / "scan", n_frames=40, shape=(48, 64), frames_per_file=20,
                              processes=1, counts=0.2)
    labels = numpy.ones((48, 64), dtype=numpy.int32)
    numpy.save(tmp_path / "labels.npy", labels)
    out = str(tmp_path / "r.h5")
    argv = ["run", master, "--qmask", str(tmp_path / "labels.npy"), "--method", "opencl-events",
            "--device", "cpu", "-o", out, "--no-plot", "--no-fit", "-q"]
    if not file_mask:
        argv.append("--no-file-mask")
    assert main(argv) == 0
    gaps = eiger_gap_mask((48, 64))
    with h5py.File(out, "r") as f:
        n_pixels = int(f["entry/xpcs/g2/n_pixels"][0])
        mean_gap = f["entry/xpcs/mean_image/mean_image"][()][gaps]
        params = f["entry/xpcs/parameters/qmask"]
        assert bool(params["use_file_mask"][()]) is file_mask
        recorded = params["file_mask/source"][()] if "file_mask" in params else b""
    assert n_pixels == (48 * 64 - int(gaps.sum()) if file_mask else 48 * 64)
    if file_mask:
        assert recorded.decode().endswith("pixel_mask")
        assert not mean_gap.any()  # gap pixels dropped at compaction
    else:
        assert not recorded
        assert (mean_gap == 65535).all()  # the gaps' constant value


#: Modules that ``ewoksxpcs run`` must not import unless a feature asks for them.
HEAVY = ("matplotlib", "PyQt5", "orangewidget", "dask", "distributed", "celery", "pyFAI",
         "ewoksjob")


def _modules_after(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\n"
                          "print(' '.join(sorted(m for m in sys.modules if '.' not in m)))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_version_imports_nothing_heavy():
    """``ewoksxpcs --version`` and the package import stay light (lazy imports)."""
    loaded = _modules_after("import ewoksxpcs, ewoksxpcs.app.cli\n"
                            "try:\n    ewoksxpcs.app.cli.main(['--version'])\n"
                            "except SystemExit:\n    pass")
    assert not loaded & set(HEAVY + ("numpy", "scipy", "h5py", "pyopencl", "pyfftw",
                                    "ewokscore")), sorted(loaded)
    assert "ewoksxpcs" in loaded
    # The public names are still there, imported on first use.
    loaded = _modules_after("import ewoksxpcs\nassert callable(ewoksxpcs.correlate)")
    assert "numpy" in loaded


def test_run_imports_nothing_heavy(scan, tmp_path):
    """A whole ``ewoksxpcs run`` without plot (CPU method) imports none of the extras: not
    matplotlib, Qt/Orange, dask, Celery, pyFAI or ewoksjob; the parser imports no job module."""
    filename, _, _ = scan
    argv = ["run", f"{filename}::/1.1", "--qmask", f"{filename}::/1.1/simulation/labels",
            "-o", str(tmp_path / "r.h5"), "--method", "matmul", "--no-plot", "-q"]
    loaded = _modules_after(f"from ewoksxpcs.app.cli import main\nassert main({argv!r}) == 0")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    loaded = _modules_after("import sys\nfrom ewoksxpcs.app.cli import build_parser\n"
                            "build_parser(job_commands=False)\n"
                            "assert 'ewoksxpcs.app.submit' not in sys.modules\n"
                            "assert 'ewoksxpcs.app.reprocess' not in sys.modules")
    assert not loaded & set(HEAVY)


#: Modules that ``ewoksxpcs run`` must not have imported when it reads its first frame.
NOT_BEFORE_FIRST_READ = HEAVY + ("Orange", "scipy")

@pytest.mark.parametrize("mode", ["linear", "multitau"])
def test_run_imports_nothing_heavy_before_the_first_frame_read(tmp_path, mode):
    """``ewoksxpcs run`` with defaults only (auto method, fit and PNG) on an Eiger-like Bliss
    scan: at its first frame read, none of matplotlib, Qt/Orange, dask, Celery, pyFAI, scipy
    or ewoksjob is imported; matplotlib never is in this process (the PNG is drawn by the
    helper process of ewoksxpcs.io.pngproc), and the PNG is there."""
    from ewoksxpcs.tools.benchmark_overhead import probe
    from ewoksxpcs.tools.synthetic_eiger import read_eiger_truth, write_eiger_scan

    master = write_eiger_scan(tmp_path / "scan", n_frames=40, shape=(64, 72), counts=0.05,
                              frames_per_file=20, processes=1)
    labels = tmp_path / "labels.npy"
    numpy.save(labels, read_eiger_truth(master)["labels"].astype(numpy.int32))
    out = tmp_path / "r.h5"
    argv = ["run", master, "--qmask", str(labels), "--mode", mode, "-o", str(out), "-q"]
    # The probe of the overhead benchmark: stamps, and sys.modules at the first frame read
    # (raw chunks or h5py).
    got = probe(argv)[0]
    assert got["rc"] == 0
    assert got["first_read_modules"], "no frame was read through the probed readers"
    early = set(got["first_read_modules"]) & set(NOT_BEFORE_FIRST_READ)
    assert not early, f"imported before the first frame read: {sorted(early)}"
    assert "matplotlib" not in got["end_modules"]
    assert "scipy" in got["end_modules"]  # the fit ran (after the read)
    assert out.exists() and (tmp_path / "r_g2.png").exists()
    # Below 4 cores the PNG helper (matplotlib) starts once frames are read, not before.
    assert got["png_helper_at_first_read"] == (len(os.sched_getaffinity(0)) >= 4)


def _join_open_ahead():
    """Wait for the thread that works ahead of ``run``'s workflow, if it is running."""
    for t in threading.enumerate():
        if t.name == "ewoksxpcs-open-ahead":
            t.join()


def test_run_opens_its_scan_once_ahead_of_the_workflow(scan, tmp_path, monkeypatch):
    """``run`` opens the scan before ewokscore starts the workflow; the LoadFrames step takes
    that source (the file is opened once) and auto's samples are read once, in the thread
    that works ahead."""
    from ewoksxpcs.correlators import auto
    from ewoksxpcs.io import hdf5chunks, load
    from ewoksxpcs.workflow import ahead

    filename, frames, labels = scan
    numpy.save(tmp_path / "labels.npy", labels)
    opened, reads = [], []
    real_load, real_read = load.load_frames, hdf5chunks.read_chunks

    def counting_load(frames, *args, **kwargs):
        if isinstance(frames, str):
            opened.append(threading.current_thread().name)
        return real_load(frames, *args, **kwargs)

    def counting_read(*args, **kwargs):
        reads.append(threading.current_thread().name)
        return real_read(*args, **kwargs)

    real_describe = auto.describe_data

    def describe_after_ahead(*args, **kwargs):
        # On a busy machine the step may reach auto before the thread working ahead has
        # read the samples (then the step reads them, once); here the step waits for it, so
        # what is tested is that the step takes the samples read ahead.
        _join_open_ahead()
        return real_describe(*args, **kwargs)

    monkeypatch.setattr(load, "load_frames", counting_load)
    monkeypatch.setattr(hdf5chunks, "read_chunks", counting_read)
    monkeypatch.setattr(auto, "describe_data", describe_after_ahead)
    out = tmp_path / "r.h5"
    assert main(["run", filename, "--qmask", str(tmp_path / "labels.npy"), "-o", str(out),
                 "--no-plot", "-q"]) == 0
    assert len(opened) == 1  # before the workflow; its LoadFrames step took that source
    n_sampled = len(numpy.unique(numpy.linspace(0, frames.shape[0] - 1, auto.N_SAMPLE)
                                 .astype(int)))  # one frame per stored chunk in this scan
    assert reads[:n_sampled] == ["ewoksxpcs-open-ahead"] * n_sampled
    assert "ewoksxpcs-open-ahead" not in reads[n_sampled:]
    assert not ahead._opened  # nothing left for a later run of this process
    with h5py.File(out, "r") as f:
        assert f["entry/xpcs/g2/q"].shape[0] == numpy.unique(labels[labels > 0]).size


def test_run_reads_the_samples_once_when_the_step_comes_first(scan, tmp_path, monkeypatch):
    """On a busy machine the step may reach ``auto`` before the thread working ahead has read
    its samples: then the step reads them and the late thread reads nothing again."""
    from ewoksxpcs.correlators import auto
    from ewoksxpcs.io import hdf5chunks

    filename, frames, labels = scan
    numpy.save(tmp_path / "labels.npy", labels)
    reads, described, late = [], threading.Event(), []
    real_read, real_describe, real_samples = (hdf5chunks.read_chunks, auto.describe_data,
                                              auto.read_samples)

    def counting_read(*args, **kwargs):
        reads.append(threading.current_thread().name)
        return real_read(*args, **kwargs)

    def describe_then_release(*args, **kwargs):
        try:
            return real_describe(*args, **kwargs)
        finally:
            described.set()

    def samples_after_the_step(source, *args, **kwargs):
        late.append(described.wait(timeout=120))
        return real_samples(source, *args, **kwargs)

    monkeypatch.setattr(hdf5chunks, "read_chunks", counting_read)
    monkeypatch.setattr(auto, "describe_data", describe_then_release)
    monkeypatch.setattr(auto, "read_samples", samples_after_the_step)
    out = tmp_path / "r.h5"
    assert main(["run", filename, "--qmask", str(tmp_path / "labels.npy"), "-o", str(out),
                 "--no-plot", "-q"]) == 0
    _join_open_ahead()
    assert late == [True]  # the thread working ahead came after the step
    n_sampled = len(numpy.unique(numpy.linspace(0, frames.shape[0] - 1, auto.N_SAMPLE)
                                 .astype(int)))
    assert reads[:n_sampled] == ["MainThread"] * n_sampled
    assert "ewoksxpcs-open-ahead" not in reads  # kept with the source: not read again
    with h5py.File(out, "r") as f:
        assert f["entry/xpcs/g2/q"].shape[0] == numpy.unique(labels[labels > 0]).size


@pytest.mark.parametrize("cores", [1, 8])
def test_run_warm_up_defers_the_png_helper_on_small_machines(monkeypatch, cores):
    """``run`` starts the PNG helper at once from 4 cores, else hands it to the prefetch of
    the first frame read; the OpenCL warm-up thread only for methods that use a device."""
    import argparse
    import threading

    from ewoksxpcs.app import cli
    from ewoksxpcs.io import save
    from ewoksxpcs.workflow import ahead, prefetch

    started = []
    monkeypatch.setattr(save, "warm_up_plotting", lambda: started.append(True))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(prefetch, "_deferred", [])
    before = {t.name for t in threading.enumerate()}
    args = argparse.Namespace(engine="core", method="matmul", device=None, input="missing.h5",
                              start=0, stop=None, step=1, frame_period=None, detector=None)
    cli._warm_up(args, plot=True)
    ahead.discard()  # the scan opened ahead (missing: its step would report it)
    assert started == ([True] if cores >= 4 else [])
    assert len(prefetch._deferred) == (0 if cores >= 4 else 1)
    assert "ewoksxpcs-warm-up" not in {t.name for t in threading.enumerate()} - before
    if cores < 4:
        prefetch.prefetch(modules=())  # what Correlate calls once frames are read
        for t in threading.enumerate():
            if t.name == "ewoksxpcs-prefetch":
                t.join()
        assert started == [True] and not prefetch._deferred


def test_main_restores_the_sigterm_handler(tmp_path):
    """main() called in-process (tests, a worker) leaves the caller's SIGTERM handler in place."""
    import signal

    def mine(signum, frame):  # pragma: no cover - never delivered
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        assert main(["run", str(tmp_path / "missing.h5"), "--qmask", str(tmp_path / "q.npy"),
                     "-o", str(tmp_path / "r.h5")]) != 0
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


_CONSOLE = """
import atexit, json, sys
from ewoksxpcs.io import pngproc
started = pngproc.start
def start(*a, **k):  # the helper's pid, for the test to see it end
    ok = started(*a, **k)
    with open({pidfile!r}, "w") as f:
        json.dump(pngproc.helper_pid(), f)
    return ok
pngproc.start = start
atexit.register(lambda: open({marker!r}, "w").close())
from ewoksxpcs.app.cli import console_main
console_main({argv!r})
"""


@pytest.mark.parametrize("fast", [True, False])
def test_console_main_ends_at_once_after_a_run(scan, tmp_path, fast):
    """After a successful ``run``, ``console_main`` ends the process without the interpreter's
    teardown (atexit handlers do not run), the result and PNG complete, the exit status 0,
    the PNG helper process gone by itself; ``EWOKSXPCS_FAST_EXIT=0`` exits normally."""
    psutil = pytest.importorskip("psutil")
    import json
    import time

    filename, frames, labels = scan
    out, marker, pidfile = tmp_path / "r.h5", tmp_path / "atexit-ran", tmp_path / "pid.json"
    argv = ["run", f"{filename}::/1.1", "--qmask", f"{filename}::/1.1/simulation/labels",
            "-o", str(out), "--method", "matmul", "-q"]
    env = dict(os.environ, EWOKSXPCS_FAST_EXIT="1" if fast else "0", EWOKSXPCS_PNG_PROCESS="1")
    code = _CONSOLE.format(pidfile=str(pidfile), marker=str(marker), argv=argv)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert marker.exists() != fast  # atexit handlers skipped only by the fast exit
    with h5py.File(out, "r") as f:
        numpy.testing.assert_array_equal(
            f["entry/xpcs/g2/g2"][()],
            correlate(frames, labels, method="matmul").g2)
    assert (tmp_path / "r_g2.png").stat().st_size > 1000
    pid = json.loads(pidfile.read_text())
    assert pid is not None  # the run drew its PNG in the helper process
    deadline = time.monotonic() + 20  # the helper sees its pipe closed and ends
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"PNG helper {pid} still running after the command ended")


def test_console_main_exits_normally_on_failure(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ewoksxpcs", "run", str(tmp_path / "no.h5"),
                           "--qmask", str(tmp_path / "no.npy"), "-o", str(tmp_path / "r.h5")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "does not exist" in proc.stderr and not (tmp_path / "r.h5").exists()
