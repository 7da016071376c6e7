"""The ``ewoksxpcs`` command: a thin front over the Ewoks workflows of ``workflows/``.

::

    ewoksxpcs demo                      # simulate a scan, run workflows/xpcs.json, print the fit
    ewoksxpcs simulate scan.h5          # a synthetic Bliss-like scan file (bitshuffle-LZ4)
    ewoksxpcs run scan.h5::/1.1 --qmask labels.npy --output result.h5
    ewoksxpcs run scan.h5::/1.1 --poni det.poni --bins 20 --output result.h5
    ewoksxpcs run scan.h5::/1.1 --qmask labels.npy --mode multitau --output result.h5
    ewoksxpcs run scan.h5::/1.1 --qmask labels.npy --mode twotime --time-bin 10 --output tt.h5
    ewoksxpcs live redis://host:6379/esrf:scan:ID --qmask labels.npy -o result.h5 --every 2s
    ewoksxpcs benchmark ...             # ewoksxpcs.tools.benchmark

``run`` only turns its options into workflow inputs and executes the workflow through Ewoks
(``xpcs``; ``xpcs_compact`` with ``--events-file``; ``xpcs_events`` when the input is an events
file). On bad input it exits with status 1 (2 for bad usage) and a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import List, Optional

from .errors import reason

__all__ = ["main", "console_main"]

PROG = "ewoksxpcs"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class UsageError(Exception):
    """Bad input found before running the workflow."""


class Terminated(BaseException):
    """SIGTERM received: unwinds like KeyboardInterrupt so that temporaries are removed."""


def _terminate(signum, frame):
    raise Terminated()


# ------------------------------------------------------------------------------ execution
def run_workflow(
    workflow: str,
    parameters: dict,
    engine: str = "core",
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Execute a shipped workflow with flat parameters (task input names); return its outputs."""
    if engine in ("core", None):
        # ewokscore itself: ``ewoks`` would also import ewoksjob and Celery (~0.2 s of start-up).
        from ewokscore import execute_graph
    else:
        from ewoks import execute_graph

    from .scan_job import load_workflow, workflow_inputs

    graph = load_workflow(workflow)
    inputs = workflow_inputs(graph, parameters, overwrite=overwrite)
    options = {}
    bar = None
    if progress and engine != "dask":  # dask sends task options as JSON: no progress object
        from ..workflow.progress import TerminalProgress

        bar = TerminalProgress()
        options["task_options"] = {"progress": bar}
    if engine not in ("core", None):
        options["engine"] = engine
    if engine == "ppf":
        # Spawned, not forked, workers: a fork after OpenCL was initialised hangs in the
        # driver; one worker reused by every task (spawning is slow).
        options.update(pool_options={"context": "spawn"}, scaling_workers=False, max_workers=1)
    try:
        return execute_graph(graph, inputs=inputs, **options)
    finally:
        if bar is not None:
            bar.close()  # a stage cut short by an error still gets its line


def _check_input_file(url: str, what: str = "input") -> str:
    from ..io.load import parse_url

    if not isinstance(url, str):
        return url
    filename, _, _ = parse_url(url)
    import glob

    if glob.has_magic(filename):
        if not glob.glob(filename):
            raise UsageError(f"no {what} file matches {filename!r}")
    elif not os.path.exists(filename):
        raise UsageError(f"{what} file {filename!r} does not exist")
    return filename


def _run_parameters(args) -> dict:
    """Workflow parameters from the ``run`` options (checked for what can be checked early)."""
    from ..io.inputfiles import check_not_input, input_files
    from ..io.load import is_events_file
    from ..io.save import check_output, default_png

    filename = _check_input_file(args.input)
    params = {"url": args.input, "output": os.path.abspath(args.output)}
    for path, what in ((args.qmask, "qmask"), (args.poni, "PONI"), (args.q_values, "q values")):
        if path:
            _check_input_file(path, what)
    for m in args.mask or []:
        _check_input_file(m, "mask")
    png = None
    if args.png:
        png = (
            args.png
            if os.path.dirname(args.png)
            else os.path.join(os.path.dirname(os.path.abspath(args.output)), args.png)
        )
    elif not args.no_plot:
        png = default_png(args.output)
    inputs = input_files(
        {"url": args.input, "qmask": args.qmask, "q_values": args.q_values, "poni": args.poni,
         "mask": args.mask}
    )
    try:
        for name, what in ((args.output, "result file"), (png, "PNG"),
                           (args.events_file, "events file")):
            if name:
                check_output(name, args.overwrite)
                check_not_input(name, inputs, what)
        if png and os.path.abspath(png) == os.path.abspath(args.output):
            raise ValueError(f"the PNG and the result are the same file {png!r}")
        _check_format_outputs(args)
    except (OSError, ValueError) as e:
        raise UsageError(reason(e)) from None
    events_input = is_events_file(filename)
    if events_input and (args.start or args.stop is not None or args.step != 1):
        raise UsageError(f"{filename!r} is an events file: a frame range cannot be applied")
    if events_input and args.events_file:
        raise UsageError(f"{filename!r} is already an events file: --events-file does not apply")
    params.update(
        start=args.start or None,
        stop=args.stop,
        step=args.step if args.step != 1 else None,
        frame_period=args.frame_period,
        detector=args.detector,
        qmask=args.qmask,
        q_values=args.q_values,
        poni=args.poni,
        beam_center=args.beam_center,
        distance=args.distance,
        pixel_size=args.pixel_size,
        wavelength=args.wavelength,
        energy=args.energy,
        n_bins=args.bins,
        q_edges=args.q_edges,
        q_range=args.q_range,
        log_bins=args.log_bins or None,
        n_sectors=args.sectors,
        mask=args.mask or None,
        auto_mask=args.auto_mask or None,
        file_mask=False if args.no_file_mask else None,
        method=args.method,
        device=args.device,
        n_groups=args.groups,
        options=_options(args.option) or None,
        **_mode_parameters(args),
        events_file=args.events_file,
        plot=False if args.no_plot else (args.png or True),
        formats=args.formats,
        keep_events=True if args.keep_events else None,
        pixel_g2=True if args.pixel_g2 else None,
        fit=False if args.no_fit else None,
    )
    params.update(_science_parameters(args))
    if args.poni is None and args.qmask is None and args.beam_center is None:
        raise UsageError(
            "give a q-mask: --qmask LABELS, --poni FILE, or --beam-center with "
            "--distance, --pixel-size and --wavelength/--energy"
        )
    if args.qmask is None and args.bins is None and args.q_edges is None:
        params["n_bins"] = 10
    workflow = "xpcs_events" if events_input else ("xpcs_compact" if args.events_file else "xpcs")
    return {"workflow": workflow, "parameters": params}


def _add_format_option(group) -> None:
    from ..io.formats import FORMATS

    group.add_argument(
        "--format", dest="formats", action="append", choices=FORMATS, metavar="FORMAT",
        help="result layout, repeatable: nexus (default), aps (APS 8-ID-I, xpcs-viewer), "
        "id02 (ESRF ID02, xpcsutilities); the first writes --output, the others "
        "<stem>_results.hdf / <stem>_id02.h5 / <stem>.h5 (<stem>_nexus.h5 if that is --output) next to it",
    )


def _check_format_outputs(args) -> None:
    """Every file the formats will write can be written (the first is --output); the options
    that need a format have it."""
    from ..io.formats import format_filenames
    from ..io.save import check_output

    names = format_filenames(args.output, args.formats)
    if args.pixel_g2 and "aps" not in names:
        raise ValueError("--pixel-g2 is written in the aps layout: add --format aps")
    if args.keep_events and "nexus" not in names:
        raise ValueError("--keep-events keeps the events in the nexus result: add --format nexus")
    for name in list(names.values())[1:]:
        check_output(name, args.overwrite)


def _mode_parameters(args) -> dict:
    """``mode`` and the options of that mode; an option of another mode is a usage error."""
    from ..workflow.pipeline import MODES

    params = {"mode": args.mode}
    for mode, entry in MODES.items():
        for name in entry["options"]:
            value = getattr(args, name)
            if value is None:
                continue
            if mode != args.mode:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} applies to --mode {mode} only (mode is {args.mode})")
            params[name] = value
    return params


def _add_science_options(p) -> None:
    """``run`` options of the physics steps: bad frames, normalisation, segments, fit model."""
    g = p.add_argument_group("bad frames, normalisation, stability, fit")
    g.add_argument(
        "--bad-frames", metavar="LIST",
        help="frames excluded from every pair, indices of the original scan: e.g. 10,200-250 "
        "(ranges inclusive)")
    g.add_argument(
        "--auto-bad-frames", nargs="?", type=float, const=True, metavar="K",
        help="also exclude frames whose total or per-bin intensity departs from a running "
        "median (51 frames) by more than K robust standard deviations (default K: 6)")
    g.add_argument(
        "--normalise-by", metavar="NAME",
        help="per-frame weights: 'frame-sum', or a counter of the scan (measurement/NAME, "
        "e.g. an I0 monitor); the sums are then float64, not exact integers")
    g.add_argument(
        "--segments", type=int, metavar="N",
        help="also correlate N equal time segments: partial g2 and mean intensity per "
        "segment (stability figure)")
    g.add_argument(
        "--fit", choices=["exp", "kww", "double", "none"],
        help="model fitted per bin (default: exp), then gamma(q) = D*q^n")


def _science_parameters(args) -> dict:
    """Workflow parameters of :func:`_add_science_options`, checked early."""
    from ..engine.badframes import parse_frame_list

    if args.bad_frames is not None:
        try:
            parse_frame_list(args.bad_frames)
        except ValueError as e:
            raise UsageError(f"--bad-frames: {e}") from None
    if args.auto_bad_frames is not None and args.auto_bad_frames is not True \
            and not args.auto_bad_frames > 0:
        raise UsageError(f"--auto-bad-frames: K must be > 0, got {args.auto_bad_frames}")
    if args.segments is not None and args.segments < 1:
        raise UsageError(f"--segments must be >= 1, got {args.segments}")
    if args.fit is not None and args.no_fit and args.fit != "none":
        raise UsageError("--fit and --no-fit contradict each other")
    params = {
        "bad_frames": args.bad_frames,
        "auto_bad_frames": args.auto_bad_frames,
        "normalise_by": args.normalise_by,
        "segments": args.segments,
    }
    if args.fit is not None:
        params["fit"] = False if args.fit == "none" else args.fit
    return params


def _options(items: Optional[List[str]]) -> dict:
    import json

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"engine option {item!r} must be KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


REBIN_HELP = """usage: ewoksxpcs rebin SOURCE (--qmask LABELS | --poni FILE | --beam-center ...) -o OUTPUT
                       [run options]

Re-bin after the fact (ewoksxpcs.io.rebin): correlate the per-pixel time series of SOURCE (an
events file, a result saved with --keep-events, or one made with --events-file) on a new q/phi
partition, exactly as a direct run on it, without the raw frames. The mode and its settings,
the error-bar groups and the frame period recorded in a result are used unless given; every
option of 'ewoksxpcs run' applies (--format, --mode, --bins, --sectors...).
"""


def _rebin_argv(argv: List[str]) -> List[str]:
    """``rebin SOURCE ...`` as ``run URL-of-its-events [recorded settings] ...``."""
    from ..io.rebin import pixel_series, recorded_settings

    if not argv or argv[0] in ("-h", "--help"):
        print(REBIN_HELP, end="")
        raise SystemExit(0 if argv else 2)
    source, rest = argv[0], list(argv[1:])
    try:
        url, kind = pixel_series(source)
        recorded = {} if kind == "events file" else recorded_settings(source)
    except (OSError, ValueError) as e:
        raise UsageError(reason(e)) from None
    if "--mode" in rest:  # another mode: its own settings only
        recorded = {k: v for k, v in recorded.items() if k in ("--groups", "--frame-period")}
    extra = []
    for flag, value in recorded.items():
        if flag not in rest:
            extra += [flag, str(value)]
    return ["run", url] + extra + rest


def _warm_up_device(spec) -> None:
    """Create the OpenCL device ``spec`` and the compaction's prefix-sum program in a thread
    (:func:`ewoksxpcs.opencl.device.get_device` hands that device to the Correlate step)."""
    import threading

    def device():
        try:
            from ..opencl.device import get_device
            from ..opencl.prefix_sum import DeviceScan

            dev = get_device(spec)
            # The prefix sum of the compaction (events path): its program depends on the
            # device only (0.07 s from the kernel cache on PoCL).
            DeviceScan(dev)
        except Exception:  # no OpenCL, or not this device: the correlation step reports it
            pass

    # Not a daemon: a thread stopped inside the driver's initialisation at exit may abort.
    threading.Thread(target=device, daemon=False, name="ewoksxpcs-warm-up").start()


def _warm_up(args, plot: bool) -> None:
    """Start the run's set-up work that depends on none of its steps, off the critical path.

    The PNG helper process (matplotlib) starts at once on a machine of 4 cores or more; on a
    smaller one once the frames are being read
    (:func:`ewoksxpcs.workflow.prefetch.after_first_read`): at the start it would take CPU
    from these steps. A thread creates the OpenCL device that the correlation will ask for
    (``auto`` asks for it too; silx's inventory, pyopencl and the context: 0.3-1 s) and the
    prefix-sum program of the compaction (:func:`_warm_up_device`). Then the scan is opened
    as the LoadFrames step will open it (:mod:`ewoksxpcs.workflow.ahead`: the step takes that
    source) and a thread starts reading its chunks ahead and reads the samples ``auto``
    decides from, while this thread imports ewokscore and runs the first steps: the disk
    works from the start. Only for the in-process engine (``core``): other engines run the
    tasks in other processes.
    """
    in_process = args.engine in ("core", None)
    if plot:
        from ..io.save import warm_up_plotting

        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            cores = os.cpu_count() or 1
        if in_process and cores < 4:
            from ..workflow.prefetch import after_first_read

            after_first_read(warm_up_plotting)
        else:
            warm_up_plotting()
    method = (args.method or "auto").strip().lower()
    if in_process and args.device != "none" and (
            method == "auto" or method.startswith("opencl")):
        _warm_up_device(args.device)
    if in_process:
        from ..workflow.ahead import open_source_ahead

        def readahead(source):
            from ..io.readahead import start_readahead

            start_readahead(source)

        def samples(source):
            from ..correlators.auto import read_samples

            read_samples(source)

        open_source_ahead(args.input, args.start, args.stop, args.step, args.frame_period,
                          args.detector, then=(readahead,) + ((samples,) if method == "auto"
                                                              else ()))


def cmd_run(args) -> int:
    plan = _run_parameters(args)
    _warm_up(args, bool(plan["parameters"].get("plot")))
    t0 = time.perf_counter()
    try:
        outputs = run_workflow(
            plan["workflow"],
            plan["parameters"],
            engine=args.engine,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    finally:
        from ..workflow.ahead import discard

        discard()
    elapsed = time.perf_counter() - t0
    if not args.quiet:
        print(f"workflow {plan['workflow']} ({args.engine} engine) finished in {elapsed:.1f} s")
        print(f"result: {outputs.get('output')}")
        if outputs.get("png"):
            print(f"plot:   {outputs['png']}")
    return 0


def cmd_average(args) -> int:
    from ..workflow.average import average_files

    if not args.threshold > 0:
        raise UsageError(f"--threshold must be > 0, got {args.threshold}")
    for name in args.inputs:
        _check_input_file(name, "result")
    try:
        out = average_files(args.inputs, args.output, args.threshold, args.overwrite)
    except (OSError, ValueError) as e:
        raise UsageError(reason(e)) from None
    print(f"averaged {len(out['kept'])} of {len(args.inputs)} repeats into {out['output']}")
    for name in out["rejected"]:
        print(f"rejected: {name}")
    return 0


# ------------------------------------------------------------------------------ simulate
def _simulation(args):
    from ..tools.synthetic import SyntheticXPCS

    return SyntheticXPCS(
        shape=tuple(args.shape),
        n_frames=args.frames,
        mean_counts=args.mean_counts,
        contrast=args.contrast,
        diffusion=args.diffusion,
        frame_period=args.frame_period,
        n_bins=args.bins,
        q_per_pixel=args.q_per_pixel,
        q_range=tuple(args.q_range) if args.q_range else None,
        seed=args.seed,
        dtype=args.dtype,
    )


def cmd_simulate(args) -> int:
    from ..io.save import check_output

    try:
        check_output(args.output, args.overwrite)
    except (OSError, ValueError) as e:
        raise UsageError(reason(e)) from None
    sim = _simulation(args)
    t0 = time.perf_counter()
    filename = sim.write_bliss_h5(args.output, detector=args.detector, overwrite=args.overwrite)
    print(
        f"wrote {filename} in {time.perf_counter() - t0:.1f} s: {sim.n_frames} frames of "
        f"{sim.shape[0]}x{sim.shape[1]} {sim.dtype} at {sim.frame_period:g} s; frames at "
        f"{filename}::/1.1/measurement/{args.detector}, labels at "
        f"{filename}::/1.1/simulation/labels"
    )
    return 0


# ------------------------------------------------------------------------------ demo
#: The demo's acquisition: 128×128 pixels, 2000 frames of 1 ms, 8 q bins (0.008–0.048 nm⁻¹),
#: Brownian motion D = 8e4 nm²/s (Γ = D·q² from 5 to 190 s⁻¹), contrast 0.2, 0.1 counts/pixel/frame.
DEMO = dict(
    shape=(128, 128),
    n_frames=2000,
    mean_counts=0.1,
    contrast=0.2,
    diffusion=8e4,
    frame_period=1e-3,
    n_bins=8,
    q_range=(0.008, 0.048),
    q_per_pixel=1e-3,
    seed=2024,
)
#: A geometry giving the demo's q per pixel at small angles: q = 4π/λ·sin(atan(r·p/d)/2).
DEMO_WAVELENGTH = 1e-10  # m (12.4 keV)
DEMO_PIXEL = 75e-6  # m


def demo_distance(q_per_pixel: float) -> float:
    """Sample–detector distance (m) giving ``q_per_pixel`` (nm⁻¹) near the beam."""
    import math

    lam_nm = DEMO_WAVELENGTH * 1e9
    # q(r=1 pixel) = 4π/λ·sin(atan(p/d)/2) = q_per_pixel
    theta = 2 * math.asin(q_per_pixel * lam_nm / (4 * math.pi))
    return DEMO_PIXEL / math.tan(theta)


def cmd_demo(args) -> int:
    import tempfile

    import h5py
    import numpy

    from ..engine.fit import STATUSES
    from ..tools.synthetic import SyntheticXPCS

    t_start = time.perf_counter()
    if args.dir:
        directory = os.path.abspath(args.dir)
        os.makedirs(directory, exist_ok=True)
    else:
        directory = tempfile.mkdtemp(prefix="ewoksxpcs-demo-")
    print(f"ewoksxpcs demo: writing into {directory}")
    spec = dict(DEMO)
    if args.frames:
        spec["n_frames"] = args.frames
    sim = SyntheticXPCS(**spec)
    scan = os.path.join(directory, "scan.h5")
    output = os.path.join(directory, "result.h5")
    png = os.path.join(directory, "g2.png")
    for name in (output, png):
        if os.path.exists(name) and not args.overwrite:
            raise UsageError(f"{name!r} exists (use --overwrite or another --dir)")
    t0 = time.perf_counter()
    sim.write_bliss_h5(scan, detector="eiger", overwrite=True)
    print(
        f"simulated {sim.n_frames} frames of {sim.shape[0]}x{sim.shape[1]} pixels "
        f"({sim.frame_period * 1e3:g} ms each, Brownian motion D = {sim.spec.diffusion:g} nm^2/s, "
        f"bitshuffle-LZ4) in {time.perf_counter() - t0:.1f} s: {scan}"
    )
    y0, x0 = sim.spec.beam_center
    params = {
        "url": f"{scan}::/1.1",
        "output": output,
        "plot": png,
        "beam_center": [y0, x0],
        "distance": demo_distance(sim.spec.q_per_pixel),
        "pixel_size": DEMO_PIXEL,
        "wavelength": DEMO_WAVELENGTH,
        "n_bins": sim.n_bins,
        "q_range": list(sim.spec.q_range),
        "method": args.method,
        "device": args.device,
        "title": "ewoksxpcs demo",
    }
    t0 = time.perf_counter()
    outputs = run_workflow(
        "xpcs", params, engine=args.engine, progress=not args.quiet, overwrite=args.overwrite
    )
    t_wf = time.perf_counter() - t0
    with h5py.File(output, "r") as f:
        proc = f["entry/xpcs"]
        method = proc["method"][()].decode()
        device = proc["device"][()].decode()
        q = proc["fit/q"][()]
        fit = {k: proc[f"fit/{k}"][()]
               for k in ("gamma", "gamma_errors", "beta", "beta_errors", "status")}
    print(
        f"workflows/xpcs.json ran through Ewoks ({args.engine} engine) in {t_wf:.1f} s, "
        f"method {method!r} on {device}"
    )
    print("fit of g2 = baseline + beta*exp(-2*Gamma*tau) per q bin (true: Gamma = D*q^2, beta):")
    print(
        f"  {'q (nm^-1)':>10s} {'q true':>8s} {'Gamma fit (1/s)':>18s} {'Gamma true':>10s} "
        f"{'beta fit':>14s} {'beta true':>9s}"
    )
    for i in range(q.size):
        print(
            f"  {q[i]:10.4f} {sim.q[i]:8.4f} {fit['gamma'][i]:9.1f} ± {fit['gamma_errors'][i]:6.1f} "
            f"{sim.gamma[i]:10.1f} {fit['beta'][i]:7.3f} ± {fit['beta_errors'][i]:.3f} "
            f"{sim.contrast[i]:9.3f}"
            + ("" if fit["status"][i] == 0 else f"  ({STATUSES[int(fit['status'][i])]})")
        )
    rel = numpy.abs(fit["gamma"] / sim.gamma - 1)
    print(f"median |Gamma fit / Gamma true - 1| = {numpy.median(rel):.1%}")
    print(f"result: {outputs['output']}  (silx view {outputs['output']})")
    print(f"plot:   {outputs['png']}")
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0


# ------------------------------------------------------------------------------ benchmark
def cmd_benchmark(argv: List[str]) -> int:
    try:
        from ..tools.benchmark_cli import main as benchmark_main
    except ImportError as e:
        raise UsageError(f"the benchmark is not available in this installation ({e})") from None
    try:
        return int(benchmark_main(argv) or 0)
    except SystemExit as e:  # its argparse (--help, usage errors)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


# ------------------------------------------------------------------------------ parser
def _add_simulation_options(p, frames: int = 1000):
    g = p.add_argument_group("simulation")
    g.add_argument(
        "--shape",
        type=int,
        nargs=2,
        default=[256, 256],
        metavar=("NY", "NX"),
        help="detector shape, pixels (default: 256 256)",
    )
    g.add_argument(
        "--frames", type=int, default=frames, help=f"number of frames (default: {frames})"
    )
    g.add_argument(
        "--mean-counts",
        type=float,
        default=0.05,
        help="mean counts per pixel per frame (default: 0.05)",
    )
    g.add_argument(
        "--contrast", type=float, default=0.2, help="speckle contrast beta (default: 0.2)"
    )
    g.add_argument(
        "--diffusion",
        type=float,
        default=1e5,
        help="diffusion coefficient D, nm^2/s (Gamma = D q^2; default: 1e5)",
    )
    g.add_argument(
        "--frame-period", type=float, default=1e-3, help="seconds per frame (default: 1e-3)"
    )
    g.add_argument("--bins", type=int, default=10, help="number of q bins (default: 10)")
    g.add_argument(
        "--q-per-pixel",
        type=float,
        default=1e-3,
        help="q per pixel of distance to the beam, nm^-1 (default: 1e-3)",
    )
    g.add_argument(
        "--q-range",
        type=float,
        nargs=2,
        metavar=("QMIN", "QMAX"),
        help="q range of the bins, nm^-1 (default: whole detector)",
    )
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    g.add_argument(
        "--dtype",
        default="uint8",
        choices=["uint8", "uint16", "uint32", "int32", "float32"],
        help="pixel type (default: uint8)",
    )


#: Sub-commands whose options come from modules imported only when they are used.
JOB_COMMANDS = ("submit", "reprocess")


def build_parser(job_commands: bool = True) -> argparse.ArgumentParser:
    """The command-line parser; ``job_commands=False`` leaves out the options of ``submit``
    and ``reprocess`` (their modules are not imported: faster start-up for ``run``)."""
    from .. import __version__

    parser = _Parser(prog=PROG, description="XPCS correlation g2(q, tau) as Ewoks workflows.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        "--debug",
        dest="verbose",
        action="store_true",
        help="show the Ewoks log and the traceback of errors",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "demo",
        help="simulate a scan, correlate it through Ewoks, print the fit",
        description="Simulate a Bliss-like scan (Brownian motion, bitshuffle-LZ4), run "
        "workflows/xpcs.json through Ewoks, write result.h5 and g2.png into a directory, "
        "and print per q bin the fitted relaxation rate and contrast next to the true ones.",
    )
    p.add_argument("--dir", help="output directory (default: a new temporary directory)")
    p.add_argument("--frames", type=int, help=f"number of frames (default: {DEMO['n_frames']})")
    p.add_argument("--method", default="auto", help="correlation method (default: auto)")
    p.add_argument("--device", help="OpenCL device for OpenCL methods (cpu, gpu, P:D)")
    p.add_argument(
        "--engine",
        default="core",
        choices=["core", "ppf", "dask"],
        help="Ewoks engine (default: core)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing results in --dir")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "simulate",
        help="write a synthetic Bliss-like scan file",
        description="Write synthetic photon-counting XPCS frames with a known g2 to a "
        "Bliss-like HDF5 scan file (/1.1/measurement/<det>, bitshuffle-LZ4), with the "
        "truth (labels, q, Gamma, contrast) under /1.1/simulation.",
    )
    p.add_argument("output", help="HDF5 file to write")
    p.add_argument("--detector", default="eiger", help="detector name (default: eiger)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    _add_simulation_options(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "run",
        help="correlate a scan: frames (or events file) -> NeXus result + PNG",
        description="Run the XPCS workflow (workflows/xpcs.json; xpcs_compact.json with --events-file; "
        "xpcs_events.json when INPUT is an events file) through Ewoks.",
        epilog="examples:\n  ewoksxpcs run scan.h5::/1.1 --qmask labels.npy --output result.h5\n"
        "  ewoksxpcs run scan.h5::/1.1/measurement/eiger --poni eiger.poni --bins 20 "
        "--q-range 0.01 0.1 --output result.h5\n"
        "  ewoksxpcs run scan.h5::/1.1 --beam-center 511.5 520 --distance 5 --pixel-size 75e-6 "
        "--energy 10 --bins 16 --sectors 4 --output result.h5\n"
        "  ewoksxpcs run scan.h5::/1.1 --qmask labels.npy --mode multitau --lags-per-level 8 "
        "--output result.h5\n"
        "  ewoksxpcs run scan.h5::/1.1 --qmask labels.npy --mode twotime --twotime-bins 1 3 "
        "--time-bin 10 --output twotime.h5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input",
        help="frames: 'file.h5::/path' (Bliss scan /1.1, a detector dataset, NeXus), "
        "an EDF/CBF file or glob pattern, or an ewoksxpcs events file",
    )
    p.add_argument("--output", "-o", required=True, help="result file (NeXus HDF5)")
    g = p.add_argument_group("frames")
    g.add_argument("--start", type=int, default=0, help="first frame (default: 0)")
    g.add_argument("--stop", type=int, help="end of the frame range, excluded (default: all)")
    g.add_argument("--step", type=int, default=1, help="frame stride (default: 1)")
    g.add_argument("--frame-period", type=float, help="seconds per frame (default: from the file)")
    g.add_argument("--detector", help="detector name in a Bliss scan with several")
    g = p.add_argument_group("q-mask (one of --qmask, --poni, --beam-center ...)")
    g.add_argument("--qmask", help="label image: .npy/EDF file or 'file.h5::/path' (0 = unused)")
    g.add_argument("--q-values", help="q per label of --qmask, nm^-1 (.npy or 'file.h5::/path')")
    g.add_argument("--poni", help="pyFAI PONI file")
    g.add_argument(
        "--beam-center", type=float, nargs=2, metavar=("Y0", "X0"), help="beam centre, pixels"
    )
    g.add_argument("--distance", type=float, help="sample-detector distance, m")
    g.add_argument("--pixel-size", type=float, help="pixel size, m")
    g.add_argument("--wavelength", type=float, help="wavelength, m")
    g.add_argument("--energy", type=float, help="X-ray energy, keV")
    g.add_argument("--bins", type=int, help="number of q bins (default with a geometry: 10)")
    g.add_argument("--q-edges", type=float, nargs="+", metavar="Q", help="q bin edges, nm^-1")
    g.add_argument(
        "--q-range", type=float, nargs=2, metavar=("QMIN", "QMAX"), help="q range, nm^-1"
    )
    g.add_argument("--log-bins", action="store_true", help="bins equal in log q")
    g.add_argument("--sectors", type=int, help="number of azimuthal sectors")
    g.add_argument("--mask", action="append", help="detector mask (non-zero = bad); repeatable")
    g.add_argument(
        "--auto-mask", action="store_true", help="also mask hot/dead pixels found in the data"
    )
    g.add_argument(
        "--no-file-mask", action="store_true",
        help="ignore the detector's pixel mask stored in the data file (NXdetector pixel_mask, "
        "Eiger detectorSpecific/pixel_mask), used by default")
    g = p.add_argument_group("correlation")
    g.add_argument("--method", default="auto", help="correlation method (default: auto)")
    g.add_argument("--device", help="OpenCL device: cpu, gpu or P:D")
    g.add_argument(
        "--groups", type=int, help="pixel groups per bin for the error bars (default: 16)"
    )
    g.add_argument(
        "--option", action="append", metavar="KEY=VALUE", help="engine option; repeatable"
    )
    g.add_argument(
        "--events-file", help="compact the frames into this events file first (for re-binning)"
    )
    g.add_argument(
        "--keep-events", action="store_true",
        help="keep the per-pixel time series (events) in the NeXus result, for 'rebin'",
    )
    g.add_argument(
        "--pixel-g2", action="store_true",
        help="--format aps: also the pixel-level G2/IP/IF at every delay (xpcs-viewer's G2 map)",
    )
    g.add_argument(
        "--mode",
        default="linear",
        choices=["linear", "multitau", "twotime"],
        help="linear: every lag; multitau: log-spaced lags; twotime: two-time maps C(q, t1, t2) "
        "and the g2 derived from them (default: linear)",
    )
    g.add_argument(
        "--lags-per-level",
        type=int,
        metavar="M",
        help="multitau: lags per level, even (default: 8)",
    )
    g.add_argument(
        "--normalisation",
        choices=["standard", "symmetric"],
        help="multitau: g2 normalisation (default: standard)",
    )
    g.add_argument(
        "--twotime-bins",
        type=int,
        nargs="+",
        metavar="LABEL",
        help="twotime: q-mask labels to map (default: every bin)",
    )
    g.add_argument(
        "--time-bin",
        type=int,
        metavar="FRAMES",
        help="twotime: frames summed per time bin (default: at most 10000 time bins)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_format_option(g)
    g.add_argument("--png", help="PNG of the g2 curves (default: <output>_g2.png)")
    g.add_argument("--no-plot", action="store_true", help="no PNG")
    g.add_argument("--no-fit", action="store_true", help="no exponential fit")
    g.add_argument(
        "--engine",
        default="core",
        choices=["core", "ppf", "dask"],
        help="Ewoks engine (default: core)",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar nor summary")
    _add_science_options(p)
    p.set_defaults(func=cmd_run)

    sub.add_parser(
        "benchmark", help="time the correlation methods (ewoksxpcs.tools.benchmark)", add_help=False
    )
    sub.add_parser(
        "rebin", help="re-bin a result (saved with --keep-events) or an events file on a new "
        "partition, without the raw frames", add_help=False,
    )

    p = sub.add_parser(
        "average",
        help="average g2 over repeats (result files), rejecting damaged repeats",
        description="Error-weighted average of g2 over result files of repeats; a repeat whose "
        "baseline or contrast departs from the others is rejected (ewoksxpcs.workflow.average).",
    )
    p.add_argument("inputs", nargs="+", help="result files of the repeats")
    p.add_argument("--output", "-o", required=True, help="result file of the average")
    p.add_argument("--threshold", type=float, default=4.0,
                   help="rejection threshold k, robust standard deviations (default: 4)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_average)

    from . import live as _live  # live correlation (ewoksxpcs.app.live)

    p = sub.add_parser("live", help="g2 while the scan runs (Bliss/Redis or a growing HDF5 file)",
                       description=_live.__doc__.split("\n\n")[0])
    _live.add_arguments(p)
    p.set_defaults(func=_live.run_from_args)

    if not job_commands:
        for name in JOB_COMMANDS:
            sub.add_parser(name, add_help=False)
        return parser
    # Job queue and reprocessing front-ends (ewoksxpcs.app.submit, ewoksxpcs.app.reprocess).
    from . import reprocess as _reprocess, submit as _submit

    for name, module, text in (
        ("submit", _submit, "send the workflow of one scan to an ewoksjob queue, print the job id"),
        ("reprocess", _reprocess, "run the workflow over many scans (process pool, dask, ewoksjob)"),
    ):
        p = sub.add_parser(name, help=text, description=module.__doc__.split("\n\n")[0])
        module.add_arguments(p)
        p.set_defaults(func=module.run_from_args)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point; returns the exit status (0 success, 1 failure, 2 bad usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "rebin":
        try:
            run_argv = _rebin_argv(argv[1:])
        except UsageError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 1
        except SystemExit as e:  # --help
            return int(e.code or 0)
        return main(run_argv)
    if argv and argv[0] == "benchmark":
        try:
            return cmd_benchmark(argv[1:])
        except UsageError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 1
    if argv == ["--version"]:  # without building the parser (its options import NumPy)
        from .. import __version__

        print(f"{PROG} {__version__}")
        return 0
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(job_commands=first in JOB_COMMANDS or first is None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    import logging

    if not args.verbose:
        # Ewoks logs task failures; the command reports them as one line instead.
        logging.getLogger("ewokscore").setLevel(logging.CRITICAL)
    previous = None
    try:
        # SIGTERM unwinds the stack like Ctrl-C: temporaries are removed, old results kept.
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (main() called from a thread)
        pass
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"\n{PROG}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as e:  # one line, no traceback
        if args.verbose:
            import traceback

            traceback.print_exc()
        bar_shown = args.command in ("run", "demo") and not args.quiet
        print(f"{chr(10) if bar_shown else ''}{PROG}: error: {reason(e)}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:  # main() called in a process that had its own handler
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


#: Commands after which :func:`console_main` ends the process at once.
FAST_EXIT_COMMANDS = ("run", "rebin")


def console_main(argv: Optional[List[str]] = None) -> None:
    """The ``ewoksxpcs`` command (``python -m ewoksxpcs`` too): :func:`main`, then the exit.

    After a successful ``run`` (or ``rebin``) every output is written, committed and fsynced, so
    the process ends at once (``os._exit``, standard streams and logging flushed first) instead
    of tearing the interpreter down: stopping the PNG helper process, finalising modules and
    the OpenCL context took 0.4-0.6 s of the command's wall time after the result was on disk
    (2-core machine). The PNG helper ends by itself on its closed pipe. Other commands, failures,
    a profiler or tracer (cProfile, coverage: they write at exit) and ``EWOKSXPCS_FAST_EXIT=0``
    exit normally.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    rc = main(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    if (rc == 0 and first in FAST_EXIT_COMMANDS and sys.getprofile() is None
            and sys.gettrace() is None
            and os.environ.get("EWOKSXPCS_FAST_EXIT", "1").strip() != "0"):
        import logging

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        logging.shutdown()
        os._exit(0)
    sys.exit(rc)

