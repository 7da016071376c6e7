"""``ewoksxpcs benchmark`` command line: the default suite (:mod:`.benchmark`), the GPU suite
(:mod:`.benchmark_gpu`), the end-to-end suite (:mod:`.benchmark_e2e`), the host memory
suite (:mod:`.benchmark_memory`), the CPU suite (:mod:`.benchmark_cpu`) and ``auto`` against every
method (:mod:`.benchmark_auto`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from .benchmark import CASES, QUICK_CASES, machine_description, run_benchmark

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``ewoksxpcs benchmark`` command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="ewoksxpcs benchmark",
        description="Time the correlation methods, and dynamix 0.1.0 on the same data.",
    )
    parser.add_argument("--methods", nargs="+", metavar="NAME",
                        help="registry names (default: every registered method); live "
                             "suite: the method of the live runs (the first name, default auto)")
    parser.add_argument("--cases", nargs="+", metavar="CASE",
                        help=f"cases (default: all): {', '.join(CASES)}; quick: "
                             f"{', '.join(QUICK_CASES)}")
    parser.add_argument("--suite", choices=("default", "gpu", "e2e", "costs", "memory", "cpu",
                                            "live", "overhead", "auto"),
                        default="default",
                        help="default: every method and dynamix on CPU-sized cases; gpu: our "
                             "OpenCL multi-tau, events and two-time against boost_corr, dynamix "
                             "and PyTorch at the sizes of issue 4 (ewoksxpcs.tools.benchmark_gpu); "
                             "e2e: an Eiger 4M bitshuffle-LZ4 scan file to a NeXus g2 file "
                             "through 'ewoksxpcs run' with defaults only "
                             "(ewoksxpcs.tools.benchmark_e2e); costs: the constants of auto's "
                             "cost model (ewoksxpcs.tools.benchmark_costs); memory: peak anonymous "
                             "RSS of 'ewoksxpcs run' against the frame count on every CPU path "
                             "(ewoksxpcs.tools.benchmark_memory); cpu: the CPU engine "
                             "against dynamix, xpcs-correlator, boost_corr (torch CPU) and "
                             "scikit-beam (ewoksxpcs.tools.benchmark_cpu); live: "
                             "latency of the final result of 'ewoksxpcs live' after the last "
                             "frame of a 512x512 scan written at 100 Hz x 5000 frames, or "
                             "with --detector eiger4m of an Eiger 4M bitshuffle-LZ4 scan at "
                             "1 kHz x 10 000 frames (ewoksxpcs.tools.benchmark_live; --scale, "
                             "--mode, --rate, --methods, --device); "
                             "overhead: the fixed costs of 'ewoksxpcs run' stage by stage on an "
                             "Eiger 4M scan of --frames N (default 200), --methods M: --method M "
                             "(ewoksxpcs.tools.benchmark_overhead); auto: "
                             "'ewoksxpcs run' with defaults against every method on issue 10's "
                             "CPU cases (ewoksxpcs.tools.benchmark_auto; --cases, --scale)")
    parser.add_argument("--paths", nargs="+", metavar="PATH",
                        help="memory suite: paths (default: all; see "
                             "ewoksxpcs.tools.benchmark_memory.PATHS)")
    parser.add_argument("--frames", nargs="+", type=int, metavar="N",
                        help="memory suite: frame counts (default 5000 10000 20000 40000); "
                             "overhead suite: frames of its scan (default 200)")
    parser.add_argument("--shape", nargs=2, type=int, default=[256, 256], metavar=("NY", "NX"),
                        help="memory suite: frame shape (default 256 256)")
    parser.add_argument("--mode", nargs="+", default=None,
                        choices=("multitau", "linear", "twotime"),
                        help="live suite: correlation modes, one run each (default: multitau "
                             "linear for 512x512, linear multitau for eiger4m)")
    parser.add_argument("--detector", choices=("512x512", "eiger4m"), default="512x512",
                        help="live suite: 512x512 (Poisson frames written through h5py, 100 Hz "
                             "x 5000 frames) or eiger4m (pre-compressed bitshuffle-LZ4 Eiger 4M "
                             "chunks appended with write_direct_chunk, 1 kHz x 10 000 frames: "
                             "issue 15's GPU target)")
    parser.add_argument("--pool", type=int, default=200,
                        help="live suite, eiger4m: frames of the pool of compressed chunks "
                             "written beforehand and cycled over the scan (default 200)")
    parser.add_argument("--modes", nargs="+", choices=("linear", "multitau", "twotime"),
                        help="e2e suite: correlation modes (default: all three)")
    parser.add_argument("--no-drop-caches", action="store_true",
                        help="e2e suite: do not drop the page cache before the cold runs (a "
                             "shared machine: dropping it slows everyone's processes)")
    parser.add_argument("--rate", type=float, default=None,
                        help="live suite: frames per second of the writer (default 100 for "
                             "512x512, 1000 for eiger4m)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="gpu, e2e and live suites: size factor in (0, 1] of frames and "
                             "pixels; cpu suite: of frames (default 1)")
    parser.add_argument("--counts", type=float, nargs="+", default=None,
                        help="e2e suite: photons per pixel per frame of each scan "
                             "(default 0.01 0.1); live suite: of its scan (the first value, "
                             "default 0.01)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="overhead suite: a source checkout of another version (the "
                             "directory holding its ewoksxpcs package, e.g. 'git archive' of "
                             "main unpacked), measured in the same rounds, interleaved")
    parser.add_argument("--workdir", help="e2e and live suites: directory of the scan and results "
                                          "(default: a temporary one, removed)")
    parser.add_argument("--torch-device", default="cuda",
                        help="gpu suite: PyTorch device of the boost_corr/PyTorch peers (cuda)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed calls per method (best kept; default 3, gpu suite 1)")
    parser.add_argument("--no-peers", action="store_true", help="do not time dynamix")
    parser.add_argument("--quick", action="store_true",
                        help="small cases, one call each (smoke test, seconds)")
    parser.add_argument("--peer-python", metavar="PYTHON",
                        help="cpu suite: Python interpreter of the boost_corr peers, each run "
                             "in a process of its own (default: $EWOKSXPCS_PEER_PYTHON, else in "
                             "this process)")
    parser.add_argument("--device", help="OpenCL device: cpu, gpu or P:D (gpu suite: default gpu; "
                                         "e2e suite: given to every run, default none)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows and the machine as JSON")
    parser.add_argument("--profile", metavar="FILE",
                        help="live suite: cProfile of the live loop's thread (each mode's run), "
                             "the heaviest functions by total and own time, written to FILE")
    args = parser.parse_args(argv)
    if args.suite == "gpu":
        return _main_gpu(args)
    if args.suite == "e2e":
        return _main_e2e(args)
    if args.suite == "costs":
        return _main_costs(args)
    if args.suite == "memory":
        return _main_memory(args)
    if args.suite == "cpu":
        return _main_cpu(args)
    if args.suite == "overhead":
        return _main_overhead(args)
    if args.suite == "auto":
        return _main_auto(args)
    if args.suite == "live":
        from .benchmark_live import live_summary, run_live_benchmark

        from .benchmark_live import DETECTORS

        case = DETECTORS[args.detector]
        shape = tuple(max(16, int(round(n * args.scale ** 0.5))) for n in case["shape"])
        n_frames = max(2, int(round(case["n_frames"] * args.scale)))
        counts = args.counts[0] if args.counts else 0.01
        method = args.methods[0] if args.methods else "auto"
        rows, profiles = [], []
        for mode in args.mode or case["modes"]:
            prof = None
            if args.profile:
                import cProfile

                prof = cProfile.Profile()
            rows.append(run_live_benchmark(n_frames=n_frames, shape=shape,
                                           rate=args.rate or case["rate"], counts=counts,
                                           mode=mode, workdir=args.workdir,
                                           detector=args.detector, chunk=case["chunk"],
                                           pool=args.pool,
                                           method=method, device=args.device, profile=prof))
            profiles.append((mode, prof))
        if args.profile:
            _write_profiles(args.profile, profiles)
        print(machine_description(None))
        for row in rows:
            print(live_summary(row))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"suite": "live", "machine": machine_description(None), "rows": rows},
                          f, indent=1, default=float)
        return 0 if all(row.get("identical", True) for row in rows) else 1
    if args.repeat is None:
        args.repeat = 3
    try:
        rows = run_benchmark(methods=args.methods, sizes=args.cases, repeat=args.repeat,
                             peers=not args.no_peers, quick=args.quick, device=args.device)
    except ValueError as e:
        print(f"ewoksxpcs benchmark: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(args.device), "rows": rows}, f, indent=1,
                      default=float)
    errors = [r for r in rows if r["note"].startswith("error")]
    return 1 if errors else 0


def _main_memory(args) -> int:
    """``--suite memory``: :func:`.benchmark_memory.run_memory_suite`."""
    from .benchmark_memory import FRAMES, run_memory_suite

    try:
        rows = run_memory_suite(paths=args.paths, frames=args.frames or FRAMES,
                                shape=tuple(args.shape), workdir=args.workdir)
    except ValueError as e:
        print(f"ewoksxpcs benchmark: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"suite": "memory", "machine": machine_description(None), "rows": rows},
                      f, indent=1, default=float)
    return 1 if any(r["returncode"] for r in rows) else 0


def _main_overhead(args) -> int:
    """``--suite overhead``: :func:`ewoksxpcs.tools.benchmark_overhead.run_overhead`."""
    from .benchmark_overhead import run_overhead

    options = []
    if args.methods:
        options += ["--method", args.methods[0]]
    if args.device:
        options += ["--device", args.device]
    out = run_overhead(workdir=args.workdir, n_frames=(args.frames or [200])[0],
                       counts=(args.counts or [0.01])[0], run_options=options,
                       repeat=args.repeat or 2, baseline=args.baseline)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"suite": "overhead", "machine": machine_description(args.device), **out},
                      f, indent=1, default=float)
    return 0


def _main_auto(args) -> int:
    """``--suite auto``: :func:`.benchmark_auto.run_auto_suite`, then its table."""
    from .benchmark_auto import format_rows, run_auto_suite

    try:
        rows = run_auto_suite(cases=args.cases, scale=args.scale, workdir=args.workdir,
                              rounds=args.repeat or 2, methods=args.methods)
    except ValueError as e:
        print(f"ewoksxpcs benchmark: error: {e}", file=sys.stderr)
        return 2
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"suite": "auto", "machine": machine_description(None), "rows": rows}, f,
                      indent=1, default=float)
    return 0


def _main_cpu(args) -> int:
    """``--suite cpu``: :func:`ewoksxpcs.tools.benchmark_cpu.run_cpu_suite`."""
    from .benchmark_cpu import run_cpu_suite

    def save(rows):  # after every case: a run cut short keeps the cases done
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"suite": "cpu", "scale": args.scale,
                           "machine": machine_description(args.device or "cpu"), "rows": rows},
                          f, indent=1, default=float)

    try:
        rows = run_cpu_suite(scale=args.scale, repeat=2 if args.repeat is None else args.repeat,
                             cases=args.cases, device=args.device or "cpu", on_row=save,
                             peer_python=args.peer_python)
    except ValueError as e:
        print(f"ewoksxpcs benchmark: error: {e}", file=sys.stderr)
        return 2
    save(rows)
    return 1 if any(r["note"].startswith("error") for r in rows) else 0


def _main_e2e(args) -> int:
    """``--suite e2e``: :func:`ewoksxpcs.tools.benchmark_e2e.run_e2e` (defaults only)."""
    from .benchmark_e2e import MODES, run_e2e

    try:
        out = run_e2e(workdir=args.workdir, scale=args.scale,
                      counts=tuple(args.counts or (0.01, 0.1)), device=args.device,
                      modes=tuple(args.modes or MODES), drop_caches=not args.no_drop_caches)
    except ValueError as e:
        print(f"ewoksxpcs benchmark: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"suite": "e2e", "machine": machine_description(), **out}, f,
                      indent=1, default=float)
    return 0


def _main_costs(args) -> int:
    """``--suite costs``: :func:`ewoksxpcs.tools.benchmark_costs.run_costs`."""
    from .benchmark_costs import fit_costs, run_costs

    description = None

    def save(machine, rows, fitted=None):  # after every timing: a run cut short keeps them
        nonlocal description
        if args.json:
            description = description or machine_description(args.device)
            with open(args.json, "w") as f:
                json.dump({"suite": "costs", "machine": description, "cost_table": machine,
                           "rows": rows, "fitted": fitted or fit_costs(machine, rows)},
                          f, indent=1, default=float)

    # The frames of the cases times --scale; > 1 on a GPU, where small cases measure set-up.
    out = run_costs(device=args.device, scale=args.scale, repeat=args.repeat or 1,
                    workdir=args.workdir, methods=args.methods, on_row=save)
    print(f"fitted constants for COSTS[{out['machine']!r}]:")
    print(json.dumps(out["fitted"], indent=1))
    save(out["machine"], out["rows"], out["fitted"])
    return 0


def _main_gpu(args) -> int:
    """``--suite gpu``: :func:`ewoksxpcs.tools.benchmark_gpu.run_gpu_suite`."""
    from .benchmark_gpu import run_gpu_suite
    from ..opencl.device import OpenCLUnavailableError

    device = args.device or "gpu"
    machine = None

    def save(rows):  # after every case: a run cut short keeps the cases done
        nonlocal machine
        if args.json:
            machine = machine or machine_description(device)
            with open(args.json, "w") as f:
                json.dump({"suite": "gpu", "scale": args.scale, "machine": machine,
                           "rows": rows}, f, indent=1, default=float)

    try:
        rows = run_gpu_suite(scale=args.scale, device=device,
                             repeat=1 if args.repeat is None else args.repeat,
                             peers=not args.no_peers, cases=args.cases,
                             torch_device=args.torch_device, on_row=save)
    except (ValueError, OpenCLUnavailableError) as e:
        print(f"ewoksxpcs benchmark: error: {e}", file=sys.stderr)
        return 2
    save(rows)
    errors = [r for r in rows if "error" in r["note"]]
    return 1 if errors else 0


def _write_profiles(filename: str, profiles) -> None:
    """The heaviest functions of each live run's profile, by cumulative and own time."""
    import io
    import pstats

    out = io.StringIO()
    for mode, prof in profiles:
        out.write(f"# live run, mode {mode}: the live loop's thread\n")
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(30)
    with open(filename, "w") as f:
        f.write(out.getvalue())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
