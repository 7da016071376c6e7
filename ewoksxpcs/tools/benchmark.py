"""``ewoksxpcs benchmark``: time every correlation method, and dynamix 0.1.0 on the same data.

Each *case* is a data set generated once (generation is not timed): dense frame stacks from
:class:`~ewoksxpcs.tools.synthetic.SyntheticXPCS` (speckle with a known g2), or sparse events drawn
directly as an :class:`~ewoksxpcs.engine.events.EventStack` (independent Poisson counts, so a large
sparse detector needs no dense stack). On each case every registered method that takes that
kind of input is timed (``reference`` only on small cases, OpenCL methods only with an OpenCL
device), then dynamix's ``MatMulCorrelator`` (dense cases) or ``EventCorrelator`` (event cases,
OpenCL, on the same device) on the same data, in the same run.

``--suite gpu`` runs instead the GPU cases of issue 4 (multi-tau, events, two-time at full size,
or ``--scale``-d down) against boost_corr, dynamix and PyTorch: :mod:`ewoksxpcs.tools.benchmark_gpu`.

Figures of a row
----------------
time_s
    Best wall time of ``correlator.correlate(data)`` over the repeats (the object is built
    before timing: OpenCL kernels compiled in the constructor are not timed, kernels compiled
    on the first call are; ``first_s`` is that first call). A first call longer than
    ``SLOW_S`` seconds is not repeated.
throughput
    Dense: binned pixel-frames per second. Events: photon pairs per second,
    Σ over binned pixels of k(k+1)/2 for k events of the pixel (pairs i ≤ j, lag 0 included).
peak_mib
    Peak of the Python/NumPy allocations during the first call (:mod:`tracemalloc`; NumPy
    registers its buffers with it). Excludes the input data, memmapped files, BLAS/FFTW internal
    work space and OpenCL buffers (device memory, or PoCL's host allocations).
speed_vs_dynamix
    Throughput of the row divided by the throughput of dynamix on the same case (> 1: faster).
g2_rel_diff
    Largest |g2 − g2_base| / |g2_base| over the lags where g2_base is finite and non-zero, with
    g2_base the first method of ours that ran on the case (dynamix is float32: ~1e-6…1e-4).
auto
    What :func:`~ewoksxpcs.correlators.auto.choose_method` picks for the case's data.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
import tracemalloc
from typing import List, Optional, Sequence

import numpy

__all__ = ["Case", "CASES", "QUICK_CASES", "run_benchmark", "machine_description"]

#: A first run longer than this (seconds) is not repeated.
SLOW_S = 15.0
#: g2 agreement tolerance (relative) reported in the "agrees" column (dynamix works in float32).
AGREE_RTOL = 1e-3
#: ``reference`` runs only while binned pixels × Nt² stays below this (it is O(Nt²·N) in Python).
REFERENCE_MAX_WORK = 2e10
#: ``matmul`` (O(Nt²·N)) and dynamix's MatMulCorrelator (an Nt × Nt float32 matrix per bin) are
#: skipped on longer series.
MATMUL_MAX_FRAMES = 20_000
#: Largest Nt²·N for opencl-dense on a CPU OpenCL device (PoCL took ~8 min on 10 000² × 13 070).
OPENCL_DENSE_CPU_MAX_WORK = 2e10
DYNAMIX_MATMUL_MAX_FRAMES = 10_000


@dataclasses.dataclass(frozen=True)
class Case:
    """A benchmark data set.

    Attributes
    ----------
    name : str
    kind : {"dense", "events"}
    shape : (int, int)
        Detector (Ny, Nx), pixels.
    n_frames : int
    mean_counts : float
        Mean counts per pixel per frame.
    n_bins : int
        q bins (annuli).
    dtype : str
        Pixel type.
    seed : int
    """

    name: str
    kind: str
    shape: tuple
    n_frames: int
    mean_counts: float
    n_bins: int = 10
    dtype: str = "uint8"
    seed: int = 0

    def describe(self) -> str:
        ny, nx = self.shape
        return (f"{ny}x{nx}x{self.n_frames} {self.dtype} {self.kind} "
                f"{self.mean_counts:g} cts/px/frame {self.n_bins} bins")


CASES = {
    c.name: c
    for c in (
        Case("dense-small", "dense", (64, 64), 1000, 0.5),
        # The shape of dynamix's own dense test set (eiger_514_10k: 115 x 116, 10 bins).
        Case("dense-dynamix", "dense", (115, 116), 10_000, 0.5),
        Case("dense-long", "dense", (32, 32), 50_000, 0.2, dtype="uint16"),
        Case("events-dynamix", "events", (512, 512), 10_000, 0.01),
    )
}
QUICK_CASES = {
    c.name: c
    for c in (
        Case("dense-quick", "dense", (115, 116), 400, 0.5),
        Case("events-quick", "events", (96, 96), 1000, 0.02),
    )
}


# ---------------------------------------------------------------------- data
def _beamstop_labels(shape, n_bins):
    """Annular q bins around the centre, with a masked beamstop (label 0) in the middle."""
    ny, nx = shape
    y, x = numpy.mgrid[0:ny, 0:nx]
    r = numpy.hypot(y - (ny - 1) / 2, x - (nx - 1) / 2)
    r_in = 0.08 * min(ny, nx)
    edges = numpy.linspace(r_in, r.max() + 1e-9, n_bins + 1)
    labels = numpy.searchsorted(edges, r, side="right")
    labels[r < r_in] = 0
    return numpy.minimum(labels, n_bins).astype(numpy.int32)


def make_dense(case: Case):
    """Frames (Nt, Ny, Nx) and label image of a dense case."""
    try:
        from .synthetic import SyntheticXPCS
    except ImportError:  # pragma: no cover - the generator is part of the package
        SyntheticXPCS = None
    ny, nx = case.shape
    y, x = numpy.mgrid[0:ny, 0:nx]
    beamstop = numpy.hypot(y - (ny - 1) / 2, x - (nx - 1) / 2) < 0.08 * min(ny, nx)
    if SyntheticXPCS is not None and case.n_frames * ny * nx <= 2e8:
        sim = SyntheticXPCS(shape=case.shape, n_frames=case.n_frames, mean_counts=case.mean_counts,
                            n_bins=case.n_bins, dtype=case.dtype, seed=case.seed, mask=beamstop)
        return sim.frames(), sim.labels
    # Long series: independent Poisson counts (g2 = 1), much faster to draw.
    rng = numpy.random.default_rng(case.seed)
    frames = numpy.empty((case.n_frames, ny, nx), dtype=case.dtype)
    for t in range(0, case.n_frames, 4096):
        n = min(4096, case.n_frames - t)
        frames[t : t + n] = rng.poisson(case.mean_counts, size=(n, ny, nx))
    return frames, _beamstop_labels(case.shape, case.n_bins)


def make_events(case: Case):
    """EventStack (every pixel kept) and label image of an events case.

    Each pixel receives Poisson(mean_counts·Nt) photons at uniformly random frames; the
    multiplicities give i.i.d. Poisson(mean_counts) counts per pixel and frame.
    """
    from ..engine.events import EventStack

    ny, nx = case.shape
    npix, nt = ny * nx, case.n_frames
    rng = numpy.random.default_rng(case.seed)
    photons = rng.poisson(case.mean_counts * nt, size=npix)
    pix = numpy.repeat(numpy.arange(npix, dtype=numpy.int64), photons)
    key = pix * nt + rng.integers(0, nt, size=pix.size)
    key, values = numpy.unique(key, return_counts=True)
    counts = numpy.bincount(key // nt, minlength=npix)
    offsets = numpy.concatenate([[0], numpy.cumsum(counts)]).astype(numpy.int64)
    events = EventStack(values.astype(case.dtype), (key % nt).astype(numpy.uint32), offsets,
                        numpy.arange(npix, dtype=numpy.int64), case.shape, nt, case.dtype,
                        trusted=True)  # unique sorted keys: valid by construction
    return events, _beamstop_labels(case.shape, case.n_bins)


# ---------------------------------------------------------------------- machine
def machine_description(device: Optional[str] = None) -> dict:
    """CPU model, core counts, RAM, OpenCL devices, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    from ..engine.pixel_series import available_memory

    try:
        from ..opencl.device import list_devices

        devices = [f"{d['spec']} {d['kind']} {d['name']}" for d in list_devices()]
    except Exception as e:  # pragma: no cover - no pyopencl at all
        devices = [f"none ({e})"]
    versions = {"numpy": numpy.__version__}
    from importlib import metadata

    for mod in ("pyfftw", "pyopencl", "dynamix"):
        try:
            versions[mod] = metadata.version(mod)
        except metadata.PackageNotFoundError:
            versions[mod] = "absent"
    return dict(cpu=cpu, cpu_count=os.cpu_count(), usable_cores=usable,
                load_average=os.getloadavg() if hasattr(os, "getloadavg") else None,
                available_ram_gib=round(available_memory() / 1024**3, 1),
                opencl_devices=devices, versions=versions)


# ---------------------------------------------------------------------- timing
def _timed(fn, repeat: int):
    """Run ``fn`` ``repeat`` times: (first result, best s, first s, peak MiB of the first run)."""
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        result = fn()
        first = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 1024**2
    finally:
        tracemalloc.stop()
    best = first
    if first < SLOW_S:
        for _ in range(repeat - 1):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    return result, best, first, peak


def _rel_diff(g2, base) -> float:
    g2 = numpy.asarray(g2, dtype=numpy.float64)
    base = numpy.asarray(base, dtype=numpy.float64)
    if g2.shape != base.shape:
        return float("inf")
    ok = numpy.isfinite(base) & (base != 0)
    if not ok.any():
        return float("nan")
    with numpy.errstate(invalid="ignore"):
        d = numpy.abs(g2[ok] - base[ok]) / numpy.abs(base[ok])
    return float(numpy.nanmax(numpy.where(numpy.isfinite(d), d, numpy.inf)))


def _work(case: Case, data, binning) -> tuple:
    """(amount, unit) of work of a case: binned pixel-frames, or photon pairs for events."""
    if case.kind == "events":
        rank = numpy.searchsorted(data.pixel_index, binning.pixel_index)
        k = (data.offsets[rank + 1] - data.offsets[rank]).astype(numpy.float64)
        return float((k * (k + 1) / 2).sum()), "pairs/s"
    return float(binning.n_binned_pixels) * case.n_frames, "px-frames/s"


def _methods_for(case: Case, methods: Optional[Sequence[str]], opencl_ok: bool, binning,
                 opencl_kind: Optional[str] = None):
    """[(method, reason to skip or None)] for a case."""
    from ..correlators import METHODS

    names = list(METHODS) if methods is None else list(methods)
    out = []
    for name in names:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; registered: {', '.join(METHODS)}")
        cls = METHODS[name]
        skip = None
        if case.kind == "events" and cls.input_kind != "events" and name != "fft":
            skip = "dense-only method (events case)"
        elif case.kind == "dense" and cls.input_kind == "events":
            skip = "event method (dense case)"
        elif cls.uses_opencl and not opencl_ok:
            skip = "no OpenCL device"
        elif name == "reference" and binning.n_binned_pixels * case.n_frames**2 > REFERENCE_MAX_WORK:
            skip = "reference: too large (O(Nt²·N) Python loops)"
        elif (name == "opencl-dense" and opencl_kind == "cpu"
              and binning.n_binned_pixels * case.n_frames**2 > OPENCL_DENSE_CPU_MAX_WORK):
            # Gram tiles without BLAS on CPU cores: minutes where matmul/fft take seconds.
            skip = "opencl-dense on a CPU device: too large (auto uses fft/matmul on CPUs)"
        elif name == "matmul" and case.n_frames > MATMUL_MAX_FRAMES:
            skip = f"matmul: Nt > {MATMUL_MAX_FRAMES} (O(Nt²·N))"
        out.append((name, skip))
    return out


def _dynamix_dense(case, frames, labels, repeat):
    from dynamix.correlator.dense import MatMulCorrelator

    corr = MatMulCorrelator(frames.shape[1:], frames.shape[0], qmask=labels)
    return _timed(lambda: corr.correlate(frames), repeat), "MatMulCorrelator", "cpu (numpy BLAS)"


def dynamix_event_inputs(events, labels, device=None):
    """Arguments of dynamix 0.1.0's ``EventCorrelator`` for an EventStack, on ``device``.

    Returns
    -------
    kwargs : dict
        Constructor keywords (shape, nframes, max/total event counts, qmask, dtype, device ids).
    args : tuple
        ``correlate`` arguments: int32 times, values, uint32 per-pixel offsets over the frame.
    device_name : str
    """
    from ..opencl.device import get_device

    dev = get_device(device)
    shape = tuple(events.frame_shape)
    counts = numpy.diff(events.offsets)
    # dynamix wants per-pixel offsets over the whole frame, int32 times, uint32 offsets.
    offsets = numpy.zeros(shape[0] * shape[1] + 1, dtype=numpy.int64)
    full = numpy.zeros(shape[0] * shape[1], dtype=numpy.int64)
    full[events.pixel_index] = counts
    offsets[1:] = numpy.cumsum(full)
    if offsets[-1] >= 2**32:
        raise ValueError(f"dynamix's uint32 offsets cannot hold {int(offsets[-1])} events")
    kwargs = dict(shape=shape, nframes=events.n_frames,
                  max_events_count=int(counts.max()) if counts.size else 1,
                  total_events_count=max(1, int(events.n_events)), qmask=labels,
                  dtype=events.values.dtype, platformid=dev.platform_id, deviceid=dev.device_id)
    args = (events.times.astype(numpy.int32), events.values, offsets.astype(numpy.uint32))
    return kwargs, args, dev.name


def _dynamix_events(case, events, labels, repeat, device):
    from dynamix.correlator.event import EventCorrelator

    kwargs, args, name = dynamix_event_inputs(events, labels, device)
    corr = EventCorrelator(**kwargs)
    # Its integer accumulator is not cleared between calls: only the first result is valid.
    return (_timed(lambda: corr.correlate(*args), repeat), "EventCorrelator", f"OpenCL {name}")


def run_benchmark(methods: Optional[Sequence[str]] = None, sizes: Optional[Sequence] = None,
                  repeat: int = 3, peers: bool = True, quick: bool = False,
                  device: Optional[str] = None, file=None) -> List[dict]:
    """Time the correlation methods (and dynamix) on generated data; print a table.

    Parameters
    ----------
    methods : sequence of str, optional
        Registry names (default: all registered).
    sizes : sequence of str or Case, optional
        Case names of :data:`CASES` (or :data:`QUICK_CASES`) or :class:`Case` objects. Default:
        every case of :data:`CASES`, or of :data:`QUICK_CASES` when ``quick``.
    repeat : int
        Timed calls per method (the best is reported; slow first calls are not repeated).
    peers : bool
        Also time dynamix 0.1.0 on the same data.
    quick : bool
        Small cases and one call each: a smoke test that runs in seconds.
    device : str, optional
        OpenCL device for OpenCL methods and dynamix's EventCorrelator ("cpu", "gpu", "P:D").
    file : file object, optional
        Where the table goes (default: standard output; None output with ``file=False``).

    Returns
    -------
    list of dict
        One row per (case, method): see the module docstring for the figures.
    """
    from ..correlators import create_correlator
    from ..correlators.auto import choose_method
    from ..engine.qmask import Binning

    from ..correlators import METHODS

    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for name in methods or ():
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; registered: {', '.join(METHODS)}")
    out = sys.stdout if file is None else file
    if quick:
        repeat = 1
    catalogue = {**CASES, **QUICK_CASES}
    if sizes is None:
        sizes = list((QUICK_CASES if quick else CASES).values())
    cases = []
    for s in sizes:
        if isinstance(s, Case):
            cases.append(s)
        elif s in catalogue:
            cases.append(catalogue[s])
        else:
            raise ValueError(f"unknown benchmark case {s!r}; known: {', '.join(catalogue)}")
    opencl_ok, opencl_why, opencl_kind = True, "", None
    try:
        from ..opencl.device import get_device

        opencl_kind = get_device(device).kind
    except Exception as e:
        opencl_ok, opencl_why = False, str(e)
    machine = machine_description(device)
    if out:
        _print_machine(machine, out, opencl_why)
    rows: List[dict] = []
    for case in cases:
        t0 = time.perf_counter()
        data, labels = make_dense(case) if case.kind == "dense" else make_events(case)
        gen_s = time.perf_counter() - t0
        binning = Binning(labels)
        work, unit = _work(case, data, binning)
        auto, _, reason = choose_method(data, binning, device)
        if out:
            _print_header(case, gen_s, auto, reason, binning, out)
        case_rows = []
        base_g2 = None
        for name, skip in _methods_for(case, methods, opencl_ok, binning, opencl_kind):
            row = dict(case=case.name, data=case.describe(), method=name, peer=False,
                       device="", time_s=None, first_s=None, throughput=None, unit=unit,
                       peak_mib=None, speed_vs_dynamix=None, g2_rel_diff=None, agrees=None,
                       auto=auto, note=skip or "")
            case_rows.append(row)
            if not skip:
                try:
                    corr = create_correlator(binning, method=name, device=device)
                    result, best, first, peak = _timed(lambda: corr.correlate(data), repeat)
                except Exception as e:  # recorded, the other methods still run
                    row["note"] = f"error: {type(e).__name__}: {e}"
                else:
                    row.update(device=result.device, time_s=best, first_s=first,
                               throughput=work / best if best > 0 else float("inf"),
                               peak_mib=peak)
                    if base_g2 is None:
                        base_g2, base_name = result.g2, name
                    row["g2_rel_diff"] = _rel_diff(result.g2, base_g2)
                    row["agrees"] = bool(row["g2_rel_diff"] <= AGREE_RTOL)
                    row["note"] = f"g2 vs {base_name}" if name != base_name else "g2 base"
            if out:
                _print_row(row, out)
        if peers:
            row = _run_peer(case, data, labels, repeat, device, opencl_ok, work, unit, auto)
            case_rows.append(row)
            if row["time_s"] is not None and row["_g2"] is not None and base_g2 is not None:
                row["g2_rel_diff"] = _rel_diff(row["_g2"], base_g2)
                row["agrees"] = bool(row["g2_rel_diff"] <= AGREE_RTOL)
                row["note"] = (row["note"] + "; " if row["note"] else "") + f"g2 vs {base_name}"
            row.pop("_g2", None)
            if row["throughput"]:
                for r in case_rows:
                    if not r["peer"] and r["throughput"]:
                        r["speed_vs_dynamix"] = r["throughput"] / row["throughput"]
            if out:
                _print_row(row, out)
                _print_ratios(case_rows, out)
        rows.extend(case_rows)
    return rows


def _run_peer(case, data, labels, repeat, device, opencl_ok, work, unit, auto) -> dict:
    row = dict(case=case.name, data=case.describe(), method="dynamix", peer=True, device="",
               time_s=None, first_s=None, throughput=None, unit=unit, peak_mib=None,
               speed_vs_dynamix=None, g2_rel_diff=None, agrees=None, auto=auto, note="", _g2=None)
    import importlib.util

    if importlib.util.find_spec("dynamix") is None:
        row["note"] = "dynamix not installed"
        return row
    try:
        if case.kind == "dense":
            if case.n_frames > DYNAMIX_MATMUL_MAX_FRAMES:
                row["note"] = f"skipped: Nt > {DYNAMIX_MATMUL_MAX_FRAMES} (Nt x Nt float32 per bin)"
                return row
            (g2, best, first, peak), cls, dev = _dynamix_dense(case, data, labels, repeat)
        else:
            if not opencl_ok:
                row["note"] = "skipped: no OpenCL device"
                return row
            (g2, best, first, peak), cls, dev = _dynamix_events(case, data, labels, repeat, device)
    except Exception as e:
        row["note"] = f"error: {type(e).__name__}: {e}"
        return row
    row.update(method=f"dynamix {cls}", device=dev, time_s=best, first_s=first,
               throughput=work / best if best > 0 else float("inf"), peak_mib=peak, _g2=g2)
    return row


# ---------------------------------------------------------------------- printing
def _fmt(v, fmt):
    width = fmt.split(".")[0]
    return format("-", f">{width}") if v is None else format(v, fmt)


def _short_device(name: str) -> str:
    return (name or "-").replace("Portable Computing Language", "PoCL")


def _print_machine(m, out, opencl_why=""):
    print(f"machine: {m['cpu']}, {m['cpu_count']} logical CPUs ({m['usable_cores']} usable), "
          f"{m['available_ram_gib']} GiB RAM available, load average "
          f"{', '.join(f'{x:.1f}' for x in m['load_average'] or [])}", file=out)
    print(f"OpenCL devices: {'; '.join(m['opencl_devices']) or 'none'}"
          + (f" (unusable: {opencl_why})" if opencl_why else ""), file=out)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), file=out)


def _print_header(case, gen_s, auto, reason, binning, out):
    print(f"\n== {case.name}: {case.describe()}, {binning.n_binned_pixels} binned pixels "
          f"(generated in {gen_s:.1f} s, not timed)", file=out)
    print(f"   auto picks: {auto} ({reason})", file=out)
    print(f"   {'method':<26} {'device':<34} {'time_s':>8} {'first_s':>8} {'throughput':>18} "
          f"{'peak_MiB':>9} {'vs_dynamix':>10} {'g2_rel_diff':>11}  note", file=out)
    out.flush()


def _print_row(r, out):
    thr = "-" if r["throughput"] is None else f"{r['throughput']:.3g} {r['unit']}"
    vs = "-" if r["speed_vs_dynamix"] is None else f"{r['speed_vs_dynamix']:.2f}x"
    dev = _short_device(r["device"])[:34]
    print(f"   {r['method']:<26} {dev:<34} {_fmt(r['time_s'], '8.3f')} "
          f"{_fmt(r['first_s'], '8.3f')} {thr:>18} {_fmt(r['peak_mib'], '9.1f')} "
          f"{vs:>10} {_fmt(r['g2_rel_diff'], '11.2e')}  {r['note']}", file=out)
    out.flush()


def _print_ratios(rows, out):
    """One line per case: each of our methods' speed relative to dynamix."""
    parts = [f"{r['method']} {r['speed_vs_dynamix']:.2f}x" for r in rows
             if not r["peer"] and r["speed_vs_dynamix"] is not None]
    if parts:
        print("   speed vs dynamix (throughput ratio ours/dynamix): " + ", ".join(parts), file=out)
        out.flush()
