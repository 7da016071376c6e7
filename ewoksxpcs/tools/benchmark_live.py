"""Live correlation latency: a writer process writes a scan at a fixed frame rate into an HDF5
file (SWMR, ``end_time`` written at the end as Bliss does); ``run_live`` follows it and writes
the result every ``every`` seconds. The figure is the wall time from the writer flushing its
last frame to the final result file being on disk (same machine, same clock), and the final
result is checked bit-identical to the offline run on the finished file.

Two cases (``--detector``):

- ``512x512`` (issue 15's CPU target, 512x512 at 100 Hz x 5000 frames): the writer draws
  Poisson frames in its loop and writes them through h5py (uncompressed chunks of ``chunk``
  frames);
- ``eiger4m`` (the GPU target, Eiger 4M 2162x2068 uint16 at 1 kHz x 10 000 frames): the writer
  appends PRE-COMPRESSED bitshuffle-LZ4 chunks, one frame per chunk, with
  ``write_direct_chunk``, as the detector's file writer does; the chunks come from a pool of
  ``pool`` frames written beforehand by :func:`~ewoksxpcs.tools.synthetic_eiger.write_eiger_scan`
  (speckle at ``counts`` photons per pixel per frame, module gaps masked from the q-mask) and
  read back raw, cycled over the scan. The writer thus costs little CPU and the frame rate is
  that of the detector.

``ewoksxpcs benchmark --suite live [--detector eiger4m] [--scale 1 --rate R --counts 0.01
--mode ...]`` prints, per mode, the seconds from the writer's last frame to the final result on
disk, and whether the live loop kept up with the frame rate.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from typing import Optional, Sequence

import numpy

__all__ = ["run_live_benchmark", "live_summary"]

#: The live loop kept up with the writer when it read the last frames within this many seconds
#: of their writing (a loop slower than the detector ends a growing backlog behind).
KEPT_UP_S = 1.0

#: The cases: frame shape, frames, rate (Hz), chunk (frames per flush of the writer), modes.
DETECTORS = {
    "512x512": {"shape": (512, 512), "n_frames": 5000, "rate": 100.0, "chunk": 10,
                "modes": ("multitau", "linear")},
    "eiger4m": {"shape": (2162, 2068), "n_frames": 10000, "rate": 1000.0, "chunk": 10,
                "modes": ("linear", "multitau")},
}


def _write_scan(filename, shape, dtype, rate, n_frames, chunk, stamp, put, **layout):
    """A growing scan: /1.1/instrument/det/data (linked as /1.1/measurement/det) under SWMR,
    ``put(dset, t, n)`` writing frames t … t + n − 1 at ``rate`` Hz, flushed every ``chunk``
    frames; ``end_time`` at the end as Bliss writes it; the times of the first and last frames
    and of ``end_time`` in ``stamp`` (JSON)."""
    import h5py

    with h5py.File(filename, "w", libver="latest") as f:
        det = f.create_group("1.1/instrument/det")
        dset = det.create_dataset("data", shape=(0,) + shape, maxshape=(None,) + shape,
                                  dtype=dtype, **layout)
        det["acq_parameters/acq_expo_time"] = 1.0 / rate
        f["1.1/measurement/det"] = dset
        f.swmr_mode = True
        t0 = time.time()
        for t in range(0, n_frames, chunk):
            n = min(chunk, n_frames - t)
            delay = t0 + (t + n) / rate - time.time()  # the frames exist at their time
            if delay > 0:
                time.sleep(delay)
            dset.resize(t + n, axis=0)
            put(dset, t, n)
            dset.flush()
        t_last = time.time()
    with h5py.File(filename, "a", locking=False) as f:
        f["1.1/end_time"] = "end"
    with open(stamp, "w") as f:
        json.dump({"t_last_frame": t_last, "t_first_frame": t0, "t_end_time": time.time()}, f)


def _write(filename, n_frames, shape, rate, counts, chunk, seed, stamp):
    """The writer process: Poisson frames at ``rate`` Hz, drawn chunk by chunk, written
    through h5py in chunks of ``chunk`` frames."""
    rng = numpy.random.default_rng(seed)

    def put(dset, t, n):
        dset[t:] = rng.poisson(counts, (n,) + shape).astype(numpy.uint16)

    _write_scan(filename, shape, numpy.uint16, rate, n_frames, chunk, stamp, put,
                chunks=(chunk,) + shape)


def _write_eiger(filename, pool_file, n_frames, rate, chunk, stamp):
    """The writer process of the Eiger case: pre-compressed bitshuffle-LZ4 chunks of the pool
    (``pool_file``: ``data`` bytes, ``offsets``, ``shape``, ``dtype``), one frame per chunk,
    appended with ``write_direct_chunk`` at ``rate`` Hz and flushed every ``chunk`` frames."""
    import hdf5plugin

    pool = numpy.load(pool_file)
    data, offsets = pool["data"], pool["offsets"]
    shape, dtype = tuple(int(n) for n in pool["shape"]), numpy.dtype(str(pool["dtype"]))
    chunks = [data[offsets[i]:offsets[i + 1]].tobytes() for i in range(offsets.size - 1)]

    def put(dset, t, n):
        for i in range(t, t + n):
            dset.id.write_direct_chunk((i, 0, 0), chunks[i % len(chunks)])

    _write_scan(filename, shape, dtype, rate, n_frames, chunk, stamp, put, chunks=(1,) + shape,
                **hdf5plugin.Bitshuffle(cname="lz4"))


def prepare_eiger_pool(directory, n_frames: int, shape: Sequence[int], counts: float,
                       rate: float, seed: int = 0) -> tuple:
    """Write ``n_frames`` synthetic Eiger frames (:func:`write_eiger_scan`, module gaps) and
    read their stored bitshuffle-LZ4 chunks back raw.

    Returns
    -------
    (pool_file, gap_mask)
        ``pool_file``: an ``.npz`` of ``data`` (uint8, the chunks back to back), ``offsets``
        (n_frames + 1,) int64, ``shape``, ``dtype``; ``gap_mask``: (Ny, Nx) bool, the module gaps
        (their pixels read the dtype's maximum: left out of the q-mask).
    """
    from ..io.hdf5chunks import chunk_layout, read_chunks
    from .synthetic_eiger import eiger_gap_mask, write_eiger_scan

    shape = tuple(int(n) for n in shape)
    scan_dir = os.path.join(directory, "pool")
    per_file = max(1, -(-int(n_frames) // (os.cpu_count() or 1)))  # one file per process
    master = write_eiger_scan(scan_dir, n_frames=int(n_frames), shape=shape, counts=counts,
                              frames_per_file=per_file, seed=seed, frame_period=1.0 / rate,
                              overwrite=True)
    layout, why = chunk_layout(master, "/1.1/measurement/eiger")
    if layout is None or layout.codec != "bslz4" or layout.frames_per_chunk != 1:
        raise RuntimeError(f"the pool's chunks cannot be read raw: {why or layout.codec}")
    data, offsets = read_chunks(layout, 0, layout.n_chunks)
    pool_file = os.path.join(directory, "pool.npz")
    numpy.savez(pool_file, data=data[: int(offsets[-1])], offsets=offsets,
                shape=numpy.array(shape), dtype=str(layout.dtype))
    shutil.rmtree(scan_dir, ignore_errors=True)
    return pool_file, eiger_gap_mask(shape)


def run_live_benchmark(n_frames: int = 5000, shape: Sequence[int] = (512, 512),
                       rate: float = 100.0, counts: float = 0.01, mode: str = "multitau",
                       every: float = 2.0, chunk: int = 10, n_bins: int = 10,
                       mode_options: Optional[dict] = None, workdir: Optional[str] = None,
                       check: bool = True, report=print, detector: str = "512x512",
                       pool: int = 200, method: str = "auto",
                       device: Optional[str] = None, profile=None) -> dict:
    """Time a live run against a writer at ``rate`` Hz; returns a row of figures (s).

    ``detector``: ``"512x512"`` (Poisson frames drawn by the writer) or ``"eiger4m"`` (the
    writer appends pre-compressed Eiger chunks from a pool of ``pool`` frames prepared before
    the timing, :func:`prepare_eiger_pool`); ``shape`` is the frame shape of either.
    ``method``, ``device``: of the live run (:func:`~ewoksxpcs.workflow.live.run_live`).
    ``profile``: a :class:`cProfile.Profile` enabled around the live run only (this thread: the
    loop that reads, correlates and writes the updates).

    ``latency_s``: writer's last frame flushed → final result file written (the target);
    ``end_detection_s``: last chunk read → the source seeing ``end_time``; ``behind_s``: how
    long after the writer's last frame the live loop read its last chunk (backlog);
    ``capacity_hz``: frames per CPU second of the live process (what it sustains unloaded on
    one core, reading, correlating, updating); ``kept_up``: ``behind_s`` at most
    :data:`KEPT_UP_S`; ``load_average``: the machine's 1-minute load average at the start and at
    the end (others' work slows the live process down).
    """
    from ..io.live import GrowingHDF5Source
    from ..io.load import load_frames
    from ..workflow.live import run_live
    from ..workflow.pipeline import correlate_sums, normalise_sums

    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {sorted(DETECTORS)}, got {detector!r}")
    shape = tuple(int(n) for n in shape)
    tmp = workdir or tempfile.mkdtemp(prefix="ewoksxpcs-live-bench-")
    os.makedirs(tmp, exist_ok=True)
    scan, stamp = os.path.join(tmp, "scan.h5"), os.path.join(tmp, "stamp.json")
    output = os.path.join(tmp, "result.h5")
    for name in (scan, stamp, output):
        if os.path.exists(name):
            os.remove(name)
    y, x = numpy.indices(shape)
    r = numpy.hypot(y - shape[0] / 2, x - shape[1] / 2)
    qmask = numpy.minimum(r / (r.max() / n_bins), n_bins - 1).astype(numpy.int32) + 1
    t_pool = time.perf_counter()
    if detector == "eiger4m":
        pool_file, gaps = prepare_eiger_pool(tmp, min(int(pool), n_frames), shape, counts, rate)
        qmask[gaps] = 0  # the gaps' pixels read 65535 in every frame
        target, args = _write_eiger, (scan, pool_file, n_frames, rate, chunk, stamp)
    else:
        target, args = _write, (scan, n_frames, shape, rate, counts, chunk, 0, stamp)
    t_pool = time.perf_counter() - t_pool
    writer = multiprocessing.get_context("spawn").Process(target=target, args=args)
    load_start = os.getloadavg()[0]
    writer.start()
    try:
        source = GrowingHDF5Source(f"{scan}::/1.1", quiet_timeout=60, wait_timeout=60)
        cpu0 = time.process_time()
        if profile is not None:
            profile.enable()
        try:
            final = run_live(source, qmask, output, every=every, mode=mode, method=method,
                             device=device, mode_options=mode_options, png=True,
                             overwrite=True, report=report)
        finally:
            if profile is not None:
                profile.disable()
        t_done = time.time()
        cpu = time.process_time() - cpu0  # the live process (threads included), writer apart
        t_final = final["written_at"]  # the final result file on disk (its PNG follows)
    finally:
        writer.join()
    with open(stamp) as f:
        times = json.load(f)
    row = {"mode": mode, "detector": detector, "n_frames": n_frames, "shape": list(shape),
           "rate_hz": rate, "method": final["method"], "device": final.get("device"),
           "live_path": final.get("live_path", ""), "prepare_s": t_pool,
           "counts": counts, "every_s": every, "updates": final["updates"],
           "latency_s": t_final - times["t_last_frame"],
           "after_last_chunk_s": final["latency_s"], "end_detection_s": final["end_detection_s"],
           "final_timings": final["timings"],
           "behind_s": t_final - final["latency_s"] - times["t_last_frame"],
           "png_s": t_done - t_final,
           "writer_s": times["t_last_frame"] - times["t_first_frame"],
           # CPU time of the live process: on a loaded machine, the rate it would sustain alone.
           "live_cpu_s": cpu, "capacity_hz": n_frames / cpu if cpu > 0 else None,
           "load_average": [load_start, os.getloadavg()[0]]}
    row["kept_up"] = bool(row["behind_s"] <= KEPT_UP_S)
    if check:
        t0 = time.perf_counter()
        out = correlate_sums(load_frames(f"{scan}::/1.1"), qmask, mode=mode,
                             mode_options=mode_options, device=device)
        ref = normalise_sums(out["sums"], out["binning"], frame_period=1.0 / rate, mode=mode,
                             mode_options=out["mode_options"])
        row["offline_s"] = time.perf_counter() - t0
        row["identical"] = bool(numpy.array_equal(ref["g2"], final["g2"], equal_nan=True)
                                and numpy.array_equal(ref["g2_err"], final["g2_err"],
                                                      equal_nan=True))
    if workdir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    if report is not None:
        report(json.dumps(row))
    return row


def live_summary(row: dict) -> str:
    """One line of a benchmark row: the latency, whether the loop kept up, the rest."""
    identical = {True: "identical to offline", False: "DIFFERS from offline"}.get(
        row.get("identical"), "not checked")
    cap = row.get("capacity_hz")
    path = f" [{row['method']}{', ' + row['live_path'] if row.get('live_path') else ''}]"
    t = row.get("final_timings") or {}
    loop = (f"; live loop: correlating {t['feed_s']:.2f} s, waiting for frames "
            f"{t['wait_s']:.2f} s, taking updates {t['capture_s']:.2f} s"
            if "feed_s" in t else "")
    return (f"{row['mode']:9s} {row['n_frames']} frames {row['shape'][0]}x{row['shape'][1]} at "
            f"{row['rate_hz']:g} Hz{path}: last frame written -> final result on disk "
            f"{row['latency_s']:.2f} s; kept up: {'yes' if row['kept_up'] else 'no'} "
            f"(last chunk read {row['behind_s']:.2f} s after it was written; "
            f"{'-' if cap is None else f'{cap:.0f}'} frames per CPU s); "
            f"after the last chunk {row['after_last_chunk_s']:.2f} s; offline "
            f"{row.get('offline_s', float('nan')):.1f} s, {identical}; load average "
            f"{row['load_average'][0]:.1f} -> {row['load_average'][1]:.1f}{loop}")
