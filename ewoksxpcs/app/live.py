"""``ewoksxpcs live SOURCE --qmask LABELS -o result.h5``: g2 while the scan runs.

SOURCE is a Bliss scan in its Redis data store, ``redis://host:port/<scan key>`` (read through
blissdata), or an HDF5 file still being written, ``scan.h5::/1.1`` (``--lima-files`` for Lima
data files appearing one after another). Every ``--every`` seconds the result file and its PNG
are replaced (atomically) by those of the frames so far and a line with the g2 of a few bins is
printed; when the scan ends the final result is written, identical to that of ``ewoksxpcs run``
on the finished file (same mode and options). A scan that ends before all its frames came
(writer silent for ``--quiet-timeout`` seconds, or fewer frames than announced) prints
"scan ended early at frame N: ..." and keeps the result of the frames it got.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["add_arguments", "run_from_args", "parse_seconds"]


def parse_seconds(text: str) -> float:
    """``2``, ``2s``, ``500ms``, ``1m`` → seconds (>= 0)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|min)?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 2s, 500ms)")
    scale = {"ms": 1e-3, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0}[m.group(2)]
    return float(m.group(1)) * scale


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="redis://host:port/<scan key>, or scan.h5::/1.1 being written")
    p.add_argument("--qmask", required=True, help="label image (.npy, EDF, file.h5::/path)")
    p.add_argument("--q-values", help="q of each label, nm^-1 (file or URL)")
    p.add_argument("--mask", action="append", help="detector mask, non-zero = bad (repeatable)")
    p.add_argument("-o", "--output", required=True, help="result file (NeXus HDF5)")
    p.add_argument("--every", type=parse_seconds, default=2.0,
                   help="seconds between updates of the result, e.g. 2s (default 2s; 0: final only)")
    p.add_argument("--mode", default="multitau", choices=["multitau", "linear", "twotime"],
                   help="correlation mode (default: multitau)")
    p.add_argument("--method", default="auto",
                   help="linear mode: backend (default: auto); multitau: opencl runs it on the "
                        "OpenCL --device (auto: integer frames on a GPU)")
    p.add_argument("--device", help="linear mode: OpenCL device (cpu, gpu, P:D)")
    p.add_argument("--lags-per-level", type=int, help="multitau: lags per level (even)")
    p.add_argument("--normalisation", choices=["standard", "symmetric"], help="multitau")
    p.add_argument("--time-bin", type=int, help="twotime: frames per time bin")
    p.add_argument("--twotime-bins", type=int, nargs="+", help="twotime: labels of the maps")
    p.add_argument("--stream", help="Redis: name of the image stream (default: the only one)")
    p.add_argument("--fallback", help="Redis: file.h5::/path of the frames on disk")
    p.add_argument("--lima-files", help="HDF5: glob pattern of Lima data files to follow")
    p.add_argument("--detector", help="HDF5: detector of the scan")
    p.add_argument("--expected-frames", type=int, help="HDF5: frames of the complete scan")
    p.add_argument("--frame-period", type=float, help="seconds between frames")
    p.add_argument("--quiet-timeout", type=parse_seconds, default=30.0,
                   help="end the scan after this long without a new frame (default 30s)")
    p.add_argument("--wait-timeout", type=parse_seconds, default=60.0,
                   help="wait this long for the scan to start (default 60s)")
    p.add_argument("--no-plot", action="store_true", help="no PNG")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the final line")


def run_from_args(args) -> int:
    from ..io.live import open_live_source
    from ..workflow.live import run_live

    source = open_live_source(
        args.source, stream=args.stream, fallback=args.fallback, files=args.lima_files,
        detector=args.detector, expected_frames=args.expected_frames,
        quiet_timeout=args.quiet_timeout, wait_timeout=args.wait_timeout,
        frame_period=args.frame_period)
    mode_options = {"lags_per_level": args.lags_per_level, "normalisation": args.normalisation,
                    "time_bin": args.time_bin, "twotime_bins": args.twotime_bins}
    final = run_live(source, args.qmask, args.output, every=args.every, mode=args.mode,
                     method=args.method, device=args.device, mode_options=mode_options,
                     mask=args.mask, q=args.q_values, png=not args.no_plot,
                     overwrite=args.overwrite,
                     report=None if args.quiet else (lambda line: print(line, flush=True)))
    print(f"result: {final['output']} ({final['n_frames']} frames, written "
          f"{final['latency_s']:.2f} s after the last frame)", flush=True)
    return 0
