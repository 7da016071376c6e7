"""``ewoksxpcs benchmark --suite cpu``: the CPU engine against every CPU peer, in one run.

Cases (``--scale`` multiplies the number of frames)::

    dense       115×116×10 000 uint8, 0.5 counts, 10 bins     linear lags: ours auto (fft)
    sparse-0.01 512×512×10 000, 0.01 counts, 10 bins          ours cpu-events (and opencl-events
    sparse-0.1  512×512×10 000, 0.1 counts, 10 bins           on the OpenCL CPU device, fft)
    multitau    256×256×20 000 uint8, 0.05 counts, 10 bins    ours NumPy (and OpenCL, dense and
                                                              events, on the OpenCL CPU device)
    twotime     10 000 px (100×100) × 5 000 frames, 0.05 counts, one bin: ours NumPy

Peers, each fed its best input form (printed with the rows): dynamix 0.1.0 (``MatMulCorrelator``
on the dense frames; ``EventCorrelator`` on OpenCL with its own event arrays), xpcs-correlator
(``correlator_dense_chunked`` on the frames; ``correlator_sparse_pixel_chunked`` on CSC arrays,
numba, without a dask cluster, and with a local cluster of one worker per core),
boost_corr 0.1.7 on PyTorch CPU (``MultitauCorrelator`` fed frame batches as float32 tensors;
``TwotimeCorrelator``; in a process of another Python with ``--peer-python``), scikit-beam
(``multi_tau_auto_corr`` on the frames). A peer that is not installed is reported as missing.
Each case first prints what ``auto`` would run there and its cost-model estimates (compare with
the measured rows). Every tool first makes one call on the first frames (numba and OpenCL
compilation, not timed), then the timed calls of all tools alternate (``--repeat`` rounds; the
best wall time of each is kept, with its CPU time): on a machine
shared with other work, read the ratios of one run rather than the seconds.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Callable, List, Optional

import numpy

__all__ = ["CPUCase", "cpu_cases", "run_cpu_suite"]


@dataclasses.dataclass(frozen=True)
class CPUCase:
    name: str
    kind: str  # "linear", "events", "multitau", "twotime"
    shape: tuple
    n_frames: int
    mean_counts: float
    n_bins: int = 10

    def describe(self) -> str:
        ny, nx = self.shape
        what = "events" if self.kind == "events" else "uint8"
        return (f"{ny}x{nx}x{self.n_frames} {what} {self.mean_counts:g} cts/px/frame "
                f"{self.n_bins} bin{'s' if self.n_bins > 1 else ''}")


def cpu_cases(scale: float = 1.0) -> List[CPUCase]:
    """The suite's cases, frames multiplied by ``scale`` in (0, 1]."""
    if not (isinstance(scale, (int, float)) and 0 < scale <= 1.0):
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")

    def nt(n):
        return max(64, int(round(n * scale)))

    return [
        CPUCase("dense", "linear", (115, 116), nt(10_000), 0.5),
        CPUCase("sparse-0.01", "events", (512, 512), nt(10_000), 0.01),
        CPUCase("sparse-0.1", "events", (512, 512), nt(10_000), 0.1),
        CPUCase("multitau", "multitau", (256, 256), nt(20_000), 0.05),
        CPUCase("twotime", "twotime", (100, 100), nt(5_000), 0.05, n_bins=1),
    ]


# ---------------------------------------------------------------------- data
def _labels(case: CPUCase):
    from .benchmark import _beamstop_labels

    if case.n_bins == 1:
        return numpy.ones(case.shape, dtype=numpy.int32)
    return _beamstop_labels(case.shape, case.n_bins)


def _frames(case: CPUCase, seed: int = 0) -> numpy.ndarray:
    """Independent Poisson counts, uint8 (Nt, Ny, Nx)."""
    rng = numpy.random.default_rng(seed)
    out = numpy.empty((case.n_frames,) + tuple(case.shape), dtype=numpy.uint8)
    for t in range(0, case.n_frames, 1024):
        out[t: t + 1024] = rng.poisson(case.mean_counts, size=out[t: t + 1024].shape)
    return out


def _events(case: CPUCase):
    from .benchmark import Case, make_events

    return make_events(Case(case.name, "events", case.shape, case.n_frames, case.mean_counts,
                            case.n_bins))[0]


# ---------------------------------------------------------------------- peers
def _missing(module: str) -> Optional[str]:
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"not installed (pip install {_PIP.get(module, module)})"


_PIP = {"dynamix": "dynamix==0.1.0", "xpcscorr": "xpcs-correlator", "boost_corr": "boost-corr torch",
        "skbeam": "scikit-beam", "torch": "torch"}


def _xpcscorr_sparse(events, labels, workers: Optional[int]):
    import xpcscorr

    opts = {"dask_cluster_type": None}
    if workers:
        n = int(events.n_pixels)
        opts = {"dask_cluster_type": "local", "dask_n_workers": workers,
                "dask_cores_per_worker": 1, "chunks_N": max(1, n // (4 * workers))}
    shape = (events.n_frames,) + tuple(events.frame_shape)
    res = xpcscorr.correlator_sparse_pixel_chunked(events.values, events.times, events.offsets,
                                                   shape, labels, extra_options=opts)
    return numpy.asarray(res.g2)


def _xpcscorr_dense(frames, labels):
    import xpcscorr

    res = xpcscorr.correlator_dense_chunked(frames, labels,
                                            extra_options={"dask_cluster_type": None})
    return numpy.asarray(res.g2)


def _boost_twotime(frames, labels):
    """boost_corr 0.1.7 ``TwotimeCorrelator`` on torch CPU: maps of the one bin (upper
    triangle, as it yields them) and its g2."""
    import torch

    from .benchmark_gpu import _import_boost_corr

    _import_boost_corr()  # tqdm stand-in if needed
    from boost_corr.twotime import TwotimeCorrelator

    nt = frames.shape[0]
    pix = numpy.flatnonzero(labels.ravel() > 0)
    qinfo = {"dq_idx": [1], "dq_slc": [slice(0, pix.size)], "sq_idx": [1],
             "sq_slc": [slice(0, pix.size)]}
    crop = torch.from_numpy(pix)
    tc = TwotimeCorrelator(qinfo, nt, det_size=tuple(frames.shape[1:]), mask_crop=crop,
                           device="cpu")
    flat = frames.reshape(nt, -1)
    for s in range(0, nt, 1024):
        tc.process(torch.from_numpy(flat[s: s + 1024][:, pix]).float())
    tc.post_processing(smooth_method="sqmap")
    out = list(tc.get_twotime_generator(num_partials=4))
    return out[0]["correlation_map/c2_00001"]


def _skbeam_multitau(frames, labels, m, n_levels):
    from skbeam.core.correlation import multi_tau_auto_corr

    g2, lags = multi_tau_auto_corr(n_levels, m, labels, frames)
    return g2.T, lags


def _versions(python: Optional[str] = None) -> str:
    """Versions of the tools, here or in another interpreter."""
    if python:
        import subprocess

        code = ("import sys, importlib.metadata as m\n"
                "for d in ('numpy', 'boost-corr', 'torch'):\n"
                "    try: print(d, m.version(d), end=', ')\n"
                "    except m.PackageNotFoundError: print(d, 'absent', end=', ')\n"
                "print('Python', sys.version.split()[0])")
        try:
            return subprocess.run([python, "-c", code], capture_output=True, text=True,
                                  timeout=120).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            return f"unusable ({type(e).__name__})"
    from importlib import metadata

    out = []
    for dist in ("numpy", "numba", "scipy", "pyopencl", "dynamix", "xpcs-correlator",
                 "boost-corr", "torch", "scikit-beam"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} absent")
    return ", ".join(out)


# ---------------------------------------------------------------------- timing
def _measure(fn: Callable):
    p = time.process_time()
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - p


@dataclasses.dataclass
class _Entry:
    name: str  # tool and method
    side: str  # "ours" or "peer"
    feed: str  # input form
    run: Optional[Callable] = None  # full-size call
    warm: Optional[Callable] = None  # untimed first call on the first frames
    note: str = ""
    timed: bool = False  # run/warm return (result, wall_s, cpu_s) measured by the peer's process
    close: Optional[Callable] = None
    wall: Optional[float] = None
    cpu: Optional[float] = None
    result: object = None


#: Events per pixel beyond which the slowest rows of an events case are skipped (the pairs grow
#: as its square): at 0.1 counts × 2 500 frames on the 2-core AMD EPYC machine, loaded, dynamix's
#: EventCorrelator took 17×, xpcs-correlator on a 2-worker dask cluster 5.9× and our
#: opencl-events on PoCL 1.7× the time of cpu-events (doc/benchmarks/cpu_suite_2core.txt):
#: at 10 000 frames, 16× those times, dynamix alone over an hour.
HEAVY_EVENTS_PER_PIXEL = 500


def _peer(name: str, feed: str, missing: Optional[str], fn: Callable, data, small) -> _Entry:
    """A peer's row: ``fn(data)`` timed, ``fn(small)`` first; only a note when ``missing``."""
    e = _Entry(name, "peer", feed, note=missing or "")
    if not missing:
        e.run, e.warm = (lambda: fn(data)), (lambda: fn(small))
    return e


def _remote_peer(name: str, feed: str, missing: Optional[str], python: str, function: str,
                 arrays: dict, small: dict) -> _Entry:
    """A peer's row run by ``python`` in a process of its own (:mod:`.peer_process`)."""
    from .peer_process import RemotePeer

    e = _Entry(name, "peer", feed + f"; own process ({python})", note=missing or "",
               timed=True)
    if not missing:
        peer = RemotePeer(python, function, arrays, small)
        e.run, e.warm, e.close = (lambda: peer.call("data")), (lambda: peer.call("small")), \
            peer.close
    return e


def _peer_missing(python: Optional[str], modules) -> Optional[str]:
    """Why the peer's modules cannot be imported by ``python`` (None: here), or None."""
    if not python:
        return next((m for m in map(_missing, modules) if m), None)
    import subprocess

    code = "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None " \
           f"for m in {list(modules)!r}))"
    try:
        ok = subprocess.run([python, "-c", code], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError) as e:
        return f"peer Python {python!r} unusable ({type(e).__name__})"
    return None if ok else f"not installed in {python} ({', '.join(modules)})"


def _boost_peer(name: str, feed: str, peer_python: Optional[str], function: str, extra: dict,
                data, small) -> _Entry:
    """A boost_corr row: ``function(frames=…, **extra)`` of this module, in a process of
    ``peer_python`` when given, else here."""
    missing = _peer_missing(peer_python, ("boost_corr", "torch"))
    if peer_python:
        return _remote_peer(name, feed, missing, peer_python, f"{__name__}:{function}",
                            dict(extra, frames=data), dict(extra, frames=small))
    fn = globals()[function]
    return _peer(name, feed, missing, lambda x: fn(frames=x, **extra), data, small)


def boost_multitau_peer(frames, pixel_index):
    """boost_corr's multi-tau of ``frames`` on torch CPU, the pixels ``pixel_index`` (bin by
    bin), fed as :func:`.benchmark_gpu.boost_multitau` does (what a peer process calls)."""
    from .benchmark_gpu import boost_multitau

    return boost_multitau(frames, frames.shape[0], pixel_index, device="cpu", feed="pageable")


def _entries(case: CPUCase, labels, data, small, opencl_device, threads,
             xpcscorr_dask: bool = True, peer_python: Optional[str] = None) -> List[_Entry]:
    from ..correlators import correlate, multitau, twotime

    out: List[_Entry] = []
    kind = case.kind
    if kind == "linear":
        out.append(_Entry("ewoksxpcs auto (fft)", "ours", "frames (Nt, Ny, Nx) uint8 array",
                          lambda: correlate(data, labels, method="auto", device="cpu"),
                          lambda: correlate(small, labels, method="auto", device="cpu")))
        def matmul(frames):
            from dynamix.correlator.dense import MatMulCorrelator

            return MatMulCorrelator(frames.shape[1:], frames.shape[0], qmask=labels).correlate(frames)

        out.append(_peer("dynamix 0.1.0 MatMulCorrelator", "frames (Nt, Ny, Nx) uint8 array",
                         _missing("dynamix"), matmul, data, small))
        out.append(_peer("xpcs-correlator dense chunked",
                         "frames (Nt, Ny, Nx) uint8 array, float32 chunks, no dask",
                         _missing("xpcscorr"), lambda x: _xpcscorr_dense(x, labels), data, small))
    elif kind == "events":
        ev, ev_small = data, small
        heavy = case.mean_counts * case.n_frames > HEAVY_EVENTS_PER_PIXEL
        why = (f"skipped: over {HEAVY_EVENTS_PER_PIXEL} events per pixel, one of the slowest "
               "rows at quarter frames")
        out.append(_Entry("ewoksxpcs cpu-events", "ours", "EventStack (pixel-major CSR)",
                          lambda: correlate(ev, labels, method="cpu-events"),
                          lambda: correlate(ev_small, labels, method="cpu-events")))
        if case.n_frames * ev.n_pixels <= 1e9:  # the frames as a uint8 array: at most 1 GB
            frames, frames_small = ev.to_dense(), ev_small.to_dense()
            out.append(_Entry("ewoksxpcs cpu-events from frames (numba compaction)", "ours",
                              "frames (Nt, Ny, Nx) uint8 array",
                              lambda: correlate(frames, labels, method="cpu-events"),
                              lambda: correlate(frames_small, labels, method="cpu-events")))
        else:
            out.append(_Entry("ewoksxpcs cpu-events from frames (numba compaction)", "ours",
                              "frames", note="skipped: frames above 1 GB"))
        if opencl_device and heavy:
            out.append(_Entry("ewoksxpcs opencl-events (OpenCL CPU)", "ours",
                              "EventStack (pixel-major CSR)", note=why))
        elif opencl_device:
            out.append(_Entry("ewoksxpcs opencl-events (OpenCL CPU)", "ours",
                              "EventStack (pixel-major CSR)",
                              lambda: correlate(ev, labels, method="opencl-events",
                                                device=opencl_device),
                              lambda: correlate(ev_small, labels, method="opencl-events",
                                                device=opencl_device)))
        if case.n_frames * ev.n_pixels <= 5e8:
            out.append(_Entry("ewoksxpcs fft", "ours", "EventStack (pixel-major CSR)",
                              lambda: correlate(ev, labels, method="fft"),
                              lambda: correlate(ev_small, labels, method="fft")))
        else:
            out.append(_Entry("ewoksxpcs fft", "ours", "EventStack", note="skipped: Nt·N > 5e8 "
                              "(an FFT of every pixel: minutes)"))
        for workers in (None,) if heavy else (None, threads):
            label = ("no dask (numba, one thread)" if not workers
                     else f"local dask cluster of {workers} workers")
            out.append(_peer(f"xpcs-correlator sparse pixel, {label}",
                             "CSC arrays intensity, time_index (uint32), pixel_pointer (int64)",
                             _missing("xpcscorr"),
                             lambda x, w=workers: _xpcscorr_sparse(x, labels, w), ev, ev_small))
            if workers is None and (threads <= 1 or not xpcscorr_dask):
                break

        if heavy and threads > 1 and xpcscorr_dask:
            out.append(_Entry(f"xpcs-correlator sparse pixel, local dask cluster of {threads} "
                              "workers", "peer", "CSC arrays", note=why))

        def dyn(events):
            from dynamix.correlator.event import EventCorrelator

            from .benchmark import dynamix_event_inputs

            kwargs, args, _ = dynamix_event_inputs(events, labels, opencl_device)
            return EventCorrelator(**kwargs).correlate(*args)

        out.append(_peer("dynamix 0.1.0 EventCorrelator (OpenCL CPU)",
                         "int32 times, values, uint32 per-pixel offsets over the frame",
                         _missing("dynamix") or (None if opencl_device else "no OpenCL device")
                         or (why if heavy else None),
                         dyn, ev, ev_small))
    elif kind == "multitau":
        out.append(_Entry("ewoksxpcs multi-tau NumPy", "ours", "frames (Nt, Ny, Nx) uint8 array",
                          lambda: multitau(data, labels, method="numpy",
                                           normalisation="symmetric"),
                          lambda: multitau(small, labels, method="numpy",
                                           normalisation="symmetric")))
        for method, label in (("opencl", "OpenCL"), ("opencl-events", "OpenCL events")):
            if opencl_device:
                out.append(_Entry(f"ewoksxpcs multi-tau {label} (CPU device)", "ours",
                                  "frames (Nt, Ny, Nx) uint8 array",
                                  lambda m=method: multitau(data, labels, method=m,
                                                            device=opencl_device,
                                                            normalisation="symmetric"),
                                  lambda m=method: multitau(small, labels, method=m,
                                                            device=opencl_device,
                                                            normalisation="symmetric")))
        from ..engine.qmask import as_binning

        pix = as_binning(labels).pixel_index  # bin by bin: columns of a bin are contiguous
        out.append(_boost_peer("boost_corr 0.1.7 MultitauCorrelator (torch CPU)",
                               "256-frame batches of the binned pixels as torch tensors",
                               peer_python, "boost_multitau_peer", {"pixel_index": pix}, data,
                               small))
        out.append(_peer("scikit-beam multi_tau_auto_corr", "frames (Nt, Ny, Nx) uint8 array",
                         _missing("skbeam"),
                         lambda x: _skbeam_multitau(x, labels, 8,
                                                    max(1, int(math.log2(x.shape[0] / 8)) + 1)),
                         data, small))
    else:  # twotime
        out.append(_Entry("ewoksxpcs two-time NumPy (exact Gram)", "ours",
                          "frames (Nt, Ny, Nx) uint8 array",
                          lambda: twotime(data, labels, method="numpy"),
                          lambda: twotime(small, labels, method="numpy")))
        out.append(_boost_peer("boost_corr 0.1.7 TwotimeCorrelator (torch CPU)",
                               "1024-frame batches of the binned pixels as float32 tensors",
                               peer_python, "_boost_twotime", {"labels": labels}, data, small))
    return out


def _auto_choice(case: CPUCase, data, labels, opencl_device) -> str:
    """What ``auto`` would run on this case here, and its cost-model estimates (not timed)."""
    from ..correlators.auto import choose
    from ..engine.qmask import as_binning

    mode = {"linear": "linear", "events": "linear"}.get(case.kind, case.kind)
    try:
        c = choose(mode, data, as_binning(labels), device=opencl_device or "none")
    except Exception as e:  # a courtesy line: never fail the timing on it
        return f"? ({type(e).__name__}: {e})"
    ranked = ", ".join(f"{m} {t:.3g} s" for m, t in sorted(c.estimates.items(),
                                                             key=lambda x: x[1]))
    return f"{c.method} (cost model estimates: {ranked})"


def _agreement(case: CPUCase, ours, entry: _Entry) -> str:
    """Max relative difference of a peer's g2 (or map) to ours, where comparable."""
    from .benchmark_gpu import _max_rel_diff

    r = entry.result
    try:
        if case.kind in ("linear", "events"):
            if entry.name.startswith("ewoksxpcs"):
                return "n2 equal" if numpy.array_equal(r.n2, ours.n2) else "n2 DIFFER"
            g2 = numpy.asarray(r[0] if isinstance(r, tuple) else r, dtype=numpy.float64)
            if g2.ndim == 2 and g2.shape[1] == ours.g2.shape[1] - 1:  # xpcs-correlator: no lag 0
                return f"g2 rel {_max_rel_diff(g2, ours.g2[:, 1:]):.1e}"
            if g2.shape == ours.g2.shape:
                return f"g2 rel {_max_rel_diff(g2, ours.g2):.1e}"
        if case.kind == "multitau":
            if entry.name.startswith("ewoksxpcs"):
                return "n2 equal" if numpy.array_equal(r.n2, ours.n2) else "n2 DIFFER"
            if entry.name.startswith("scikit-beam"):
                g2, lags = r
                n = min(g2.shape[1], ours.g2.shape[1])
                return f"g2 rel {_max_rel_diff(g2[:, :n], ours.g2[:, :n]):.1e}"
            if entry.name.startswith("boost"):
                from .benchmark_gpu import _multitau_common, boost_bin_g2
                from ..engine.qmask import as_binning

                _, G2, tau, _ = r
                g2 = boost_bin_g2(G2, as_binning(ours.labels_image).bin_offsets) \
                    if hasattr(ours, "labels_image") else None
                if g2 is not None:
                    mine, theirs = _multitau_common(ours, tau)
                    return f"g2 rel {_max_rel_diff(g2[:, theirs], ours.g2[:, mine]):.1e}"
        if case.kind == "twotime" and entry.name.startswith("boost"):
            C = ours.C[0]
            iu = numpy.triu_indices(C.shape[0])
            return f"map rel {_max_rel_diff(numpy.asarray(r)[iu], C[iu]):.1e}"
    except Exception as e:  # agreement is a courtesy column: never fail the timing on it
        return f"? ({type(e).__name__})"
    return "-"


def run_cpu_suite(scale: float = 1.0, repeat: int = 2, cases=None, device: Optional[str] = "cpu",
                  file=None, on_row=None, xpcscorr_dask: bool = True,
                  peer_python: Optional[str] = None) -> List[dict]:
    """Run the suite; print it; return one row per (case, tool).

    Parameters
    ----------
    scale : float
        Frames factor in (0, 1].
    repeat : int
        Timed rounds (tools alternate within a round; the best wall time is kept).
    cases : sequence of str, optional
        Case names (default: all).
    device : str, optional
        OpenCL CPU device for our OpenCL methods and dynamix's EventCorrelator (None: none).
    xpcscorr_dask : bool
        Also time xpcs-correlator's sparse correlator on a local dask cluster (one worker per
        core; its start-up, seconds, is part of each call).
    peer_python : str, optional
        Python interpreter of the boost_corr peers (default: the environment variable
        ``EWOKSXPCS_PEER_PYTHON``): each runs in a process of its own there, with the inputs
        loaded before the timing (:mod:`.peer_process`). Unset: in our process.
    """
    from .peer_process import PEER_PYTHON_ENV

    from .benchmark import machine_description

    file = file or sys.stdout
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    opencl_device = None
    if device:
        try:
            from ..opencl.device import get_device

            opencl_device = device if get_device(device) is not None else None
        except Exception as e:
            print(f"no OpenCL device {device!r} ({e}): OpenCL rows skipped", file=file)
    m = machine_description(opencl_device)
    load = m.get("load_average")
    load = ", ".join(f"{x:.1f}" for x in load) if load else "?"
    print(f"machine: {m.get('cpu')}, {m.get('usable_cores')} usable CPUs, "
          f"{m.get('available_ram_gib')} GiB RAM available, load average {load} "
          f"(shared with other work: read the ratios)", file=file)
    print(f"OpenCL devices: {'; '.join(m.get('opencl_devices', []))}", file=file)
    peer_python = peer_python or os.environ.get(PEER_PYTHON_ENV) or None
    print(f"versions: {_versions()}", file=file)
    if peer_python:
        print(f"boost_corr peers in their own process of {peer_python}: "
              f"{_versions(peer_python)}", file=file)
    print(f"suite cpu, scale {scale:g} (frames x{scale:g}), {repeat} timed round(s), "
          f"tools alternating", file=file)
    rows: List[dict] = []
    names = [c.name for c in cpu_cases(scale)]
    unknown = set(cases or ()) - set(names)
    if unknown:
        raise ValueError(f"unknown case(s) {sorted(unknown)}; cpu suite cases: {', '.join(names)}")
    for case in cpu_cases(scale):
        if cases and case.name not in cases:
            continue
        labels = _labels(case)
        t0 = time.perf_counter()
        if case.kind == "events":
            data = _events(case)
            small = _events(dataclasses.replace(case, n_frames=64))
        else:
            data = _frames(case)
            small = data[:64]
        gen = time.perf_counter() - t0
        print(f"\n== {case.name}: {case.describe()} (generated in {gen:.1f} s, not timed)",
              file=file, flush=True)
        print(f"   auto: {_auto_choice(case, data, labels, opencl_device)}", file=file,
              flush=True)
        entries = _entries(case, labels, data, small, opencl_device, threads, xpcscorr_dask,
                           peer_python)
        for e in entries:
            if e.run is not None:
                try:
                    e.warm()
                except Exception as err:
                    e.run, e.note = None, f"error: {type(err).__name__}: {err}"[:160]
        for _ in range(max(1, repeat)):
            for e in entries:
                if e.run is None:
                    continue
                try:
                    result, wall, cpu = e.run() if e.timed else _measure(e.run)
                except Exception as err:
                    e.run, e.note = None, f"error: {type(err).__name__}: {err}"[:160]
                    continue
                if e.wall is None or wall < e.wall:
                    e.wall, e.cpu = wall, cpu
                if e.result is None:
                    e.result = result
        ours = entries[0]
        if ours.result is not None and case.kind == "multitau":
            ours.result.labels_image = labels  # for the peers' per-bin sums
        print(f"   {'tool':<58} {'wall_s':>8} {'cpu_s':>8} {'ratio':>7}  agreement        "
              f"feed / note", file=file)
        for e in entries:
            ratio = (e.wall / ours.wall) if (e.wall and ours.wall) else None
            agree = _agreement(case, ours.result, e) if (e.result is not None and e is not ours
                                                         and ours.result is not None) else "-"
            wall = f"{e.wall:8.2f}" if e.wall is not None else f"{'-':>8}"
            cpu = f"{e.cpu:8.2f}" if e.cpu is not None else f"{'-':>8}"
            rs = f"{ratio:6.2f}x" if ratio is not None and e is not ours else f"{'-':>7}"
            print(f"   {e.name:<58} {wall} {cpu} {rs}  {agree:<16} {e.feed}"
                  f"{'; ' + e.note if e.note else ''}", file=file, flush=True)
            rows.append(dict(case=case.name, data=case.describe(), tool=e.name, side=e.side,
                             feed=e.feed, wall_s=e.wall, cpu_s=e.cpu,
                             ratio_vs_ours=None if e is ours else ratio, agreement=agree,
                             note=e.note, scale=scale))
        print("   ratio: wall time of the row / wall time of the first row (>1: the first row "
              "is faster)", file=file, flush=True)
        for e in entries:
            e.result = None
            if e.close is not None:
                e.close()
        del data, small
        if on_row is not None:
            on_row(rows)
    return rows
