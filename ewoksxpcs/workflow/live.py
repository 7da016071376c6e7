"""Live correlation: g2 while the scan runs, the final result the moment it ends.

:class:`LiveCorrelator` takes frames as they arrive (:meth:`~LiveCorrelator.feed`) and gives
the normalised result of the frames so far at any time (:meth:`~LiveCorrelator.snapshot`),
without stopping. Per mode, it keeps the state the offline correlators build chunk by chunk, in
the very same objects, so the last snapshot *is* the offline result of the finished data:

- ``multitau``: :class:`~ewoksxpcs.engine.multitau.MultiTauStream` (the sums n2_L, S_0 are updated
  by each chunk; a snapshot normalises them); with ``opencl`` (or ``auto``, integer frames and a
  GPU) the offline OpenCL multi-tau's stream on the device
  (:class:`~ewoksxpcs.correlators.opencl_multitau.LiveOpenCLMultiTau`: the frames uploaded, or
  the stored chunks of the file decoded there);
- ``twotime``: :class:`~ewoksxpcs.engine.twotime.TwoTimeStream` (frames binned in time as they
  come) and, for integer frames, :class:`~ewoksxpcs.engine.live_pairs.LiveGram` (each block of
  new time bins gives the maps' new columns and the diagonal sums of the g2; the binned frames
  are then not kept); a snapshot computes only the g2 of the age segments, and
  :func:`run_live` writes the final file's maps while the scan runs
  (:class:`~ewoksxpcs.io.save.LiveMapsFile`). Float frames, more time bins than
  ``max_frames`` without a ``time_bin``, or maps beyond :data:`LIVE_GRAM_BYTES`: the maps of
  the binned frames so far are computed at the snapshot;
- ``linear``: :class:`~ewoksxpcs.engine.live_pairs.LivePairs` (each chunk's events paired with
  themselves and the earlier ones as they come: n2 is always up to date, a snapshot normalises
  it), or on an OpenCL device (:class:`~ewoksxpcs.opencl.live_pairs.LivePairsOpenCL`); when the
  source hands on the stored chunks of its file (:class:`~ewoksxpcs.io.live.RawChunks`,
  bitshuffle-LZ4 or unfiltered, one frame per chunk: Eiger, Lima) and the sums run on an OpenCL
  device, the chunks are decoded and compacted on the device
  (:class:`~ewoksxpcs.opencl.live_pairs.LiveDevicePairs`: the host never decodes them, as the
  offline ``opencl-events``), the sum image for the mean image kept there too; with an
  explicit backend name, :class:`~ewoksxpcs.engine.events.EventCompactor` (each
  chunk compacted to events on the CPU; a snapshot correlates the events so far through
  :func:`~ewoksxpcs.workflow.pipeline.correlate_sums`).

The normalisation is :func:`~ewoksxpcs.workflow.pipeline.normalise_sums` in every mode. For
integer frames (detector counts) the sums are exact int64 whatever the chunking, so the final
result is bit-identical to the offline run on the finished file; float frames agree to rounding.

:func:`run_live` drives a live frame source (:mod:`ewoksxpcs.io.live`): every ``every``
seconds it writes the result file and its PNG (atomically: the previous ones stay until their
replacement is complete) and reports the g2 of a few bins; at the end it writes the final
result. The feeding thread only takes an update's sums (:meth:`LiveCorrelator.capture`); a
thread of its own normalises and writes them (:meth:`LiveCorrelator.result_of`) while the
next chunks are correlated: an update written synchronously held the correlation of an
Eiger 4M at 1 kHz up for 0.3-0.5 s every 2 s.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from typing import Callable, Optional

import numpy

from ..engine.frames import read_ahead
from ..engine.qmask import DEFAULT_GROUPS
from .pipeline import check_mode_options, correlate_sums, make_binning, normalise_sums

__all__ = ["LiveCorrelator", "run_live", "format_g2"]

logger = logging.getLogger(__name__)

#: Linear mode's method that pairs each chunk's events with the earlier ones as they come.
LIVE_PAIRS = "live-pairs"
#: The same on an OpenCL device (the registry's event backend: its events on the device).
OPENCL_PAIRS = "opencl-events"

#: Two-time: largest maps (bytes, float32, all bins) kept up to date; past it (or past
#: ``max_frames`` time bins without a ``time_bin``) a snapshot computes the maps from the binned
#: frames, as offline.
LIVE_GRAM_BYTES = 2 * 1024**3

#: Two-time: the updates (not the final result) write maps up to this size (bytes); beyond,
#: only their diagonal (an update of 10 maps of 5000² float32, 1 GB, took 3.4 s: a scan ending
#: meanwhile waited for it).
LIVE_UPDATE_MAPS_BYTES = 64 * 1024**2

#: Stored chunks read at once at most (bytes of their decoded frames), when they are decoded on
#: a device: larger than the host's chunks (the compressed bytes are a fraction of it), so that
#: a run behind its detector catches up in a few large steps of device work.
RAW_CHUNK_BYTES = 512 * 1024**2

#: Stored chunks read ahead of the device work (by a thread of their own), at most.
RAW_READ_AHEAD = 4

#: Stored chunks fed first to ``auto``: frames of the first chunk decoded on the host for its
#: choice.
AUTO_SAMPLE_FRAMES = 8

#: Multi-tau's methods that run its stream on an OpenCL device
#: (:class:`~ewoksxpcs.correlators.opencl_multitau.LiveOpenCLMultiTau`); ``auto`` takes it for
#: integer frames when the device is a GPU.
DEVICE_MULTITAU = ("opencl", "opencl-events")
#: Live multi-tau on a device: most frames per launch (its buffers of pair sums grow with it).
MULTITAU_CHUNK_FRAMES = 1024

#: An update (snapshot, result file, PNG; in a thread of its own) starts at least UPDATE_SHARE
#: times its duration after the previous one started (large detectors: fewer updates than
#: ``every``).
UPDATE_SHARE = 5


def _gpu(device) -> bool:
    """Whether the OpenCL device ``device`` (default: the best one) is a GPU."""
    try:
        from ..opencl.device import get_device

        return get_device(device).kind == "gpu"
    except Exception:  # no OpenCL: the CPU paths
        return False


class LiveCorrelator:
    """Correlation updated frame chunk by frame chunk; a result at any time.

    Parameters
    ----------
    qmask : ndarray (Ny, Nx) of int, or Binning
    frame_shape : (int, int)
    dtype : numpy.dtype
        Pixel type of the frames.
    mode : {"multitau", "linear", "twotime"}
    method : str
        Linear mode: ``auto`` or ``live-pairs`` updates the sums with each chunk
        (:class:`~ewoksxpcs.engine.live_pairs.LivePairs`, a snapshot only normalises them);
        ``opencl-events`` does the same on the OpenCL ``device``
        (:class:`~ewoksxpcs.opencl.live_pairs.LivePairsOpenCL`, integer frames; stored
        chunks fed: :class:`~ewoksxpcs.opencl.live_pairs.LiveDevicePairs`, decoded and
        compacted on the device), which ``auto`` takes when the registry's cost model, between
        the event methods, would run such data there on a GPU;
        another registry name (e.g. ``fft`` for dense frames, whose pairs are too many)
        correlates the events so far with that backend at each snapshot. Multi-tau runs its
        NumPy stream, or with ``opencl``/``opencl-events`` (``auto``: integer frames and a GPU)
        the OpenCL one on the ``device``; two-time runs its stream.
    device : str, optional
        OpenCL device of a linear OpenCL backend.
    mode_options : dict, optional
        As for :func:`~ewoksxpcs.workflow.pipeline.correlate_sums`.
    labels, bad_pixels, n_groups
        As for :func:`~ewoksxpcs.workflow.pipeline.correlate_sums`.
    frame_period : float, optional
        Seconds between frames (τ in frames without it).
    q, q_labels, chi
        q (and sector centre) per bin, as for :func:`~ewoksxpcs.workflow.pipeline.normalise_sums`.
    """

    def __init__(self, qmask, frame_shape, dtype, mode: str = "multitau", method: str = "auto",
                 device: Optional[str] = None, mode_options: Optional[dict] = None,
                 labels=None, bad_pixels=None, n_groups: int = DEFAULT_GROUPS,
                 frame_period: Optional[float] = None, q=None, q_labels=None, chi=None):
        self.mode = mode
        self.mode_options = check_mode_options(mode, mode_options)
        self.binning = make_binning(qmask, labels=labels, bad_pixels=bad_pixels,
                                    n_groups=n_groups)
        self.binning.check_frame_shape(frame_shape)
        self.frame_shape = tuple(frame_shape)
        self.dtype = numpy.dtype(dtype)
        self.method, self.device = method, device
        self.bad_pixels = bad_pixels
        self.frame_period = frame_period
        self.q, self.q_labels, self.chi = q, q_labels, chi
        self._sum_image = numpy.zeros(self.frame_shape,
                                      numpy.int64 if self.dtype.kind in "iu" else numpy.float64)
        opts = self.mode_options
        if mode == "multitau":
            from ..engine.multitau import DEFAULT_LAGS_PER_LEVEL, MultiTauStream

            m = opts.get("lags_per_level", DEFAULT_LAGS_PER_LEVEL)
            if method in DEVICE_MULTITAU or (method == "auto" and self.dtype.kind in "iu"
                                             and _gpu(device)):
                from ..correlators.opencl_multitau import LiveOpenCLMultiTau

                frame_bytes = int(numpy.prod(self.frame_shape)) * self.dtype.itemsize
                self.stream = LiveOpenCLMultiTau(
                    self.binning, self.frame_shape, self.dtype, m, device,
                    chunk_frames=min(MULTITAU_CHUNK_FRAMES,
                                     max(2, RAW_CHUNK_BYTES // max(1, frame_bytes))))
                self.device = self.stream.device_name
            else:
                self.stream = MultiTauStream(self.binning, m, self.dtype)
        elif mode == "twotime":
            from ..engine.twotime import NumpyTwoTime

            self.correlator = NumpyTwoTime(self.binning, bins=opts.get("twotime_bins"),
                                           time_bin=opts.get("time_bin"))
            self.stream = self.correlator.stream(self.dtype)
            self.gram = None
            if self.dtype.kind in "iub":  # exact: the Gram matrices updated by blocks of rows
                from ..engine.live_pairs import LiveGram

                self.gram = LiveGram(self.correlator.col_offsets, self.stream.binner.dtype)
                # The binned frames are in the Gram's events: not kept twice (restored if
                # the maps must be computed from them after all).
                self.stream.binner.keep = False
        elif mode == "linear" and method in ("auto", LIVE_PAIRS, OPENCL_PAIRS):
            self.stream = None  # made at the first chunk: auto looks at the data
            self._live_device = device
        elif mode == "linear":
            from ..engine.events import EventCompactor

            self.stream = EventCompactor(self.frame_shape, self.dtype, bad_pixels)
        else:
            raise ValueError(f"mode {mode!r} cannot be correlated live")

    @property
    def n_frames(self) -> int:
        return 0 if self.stream is None else self.stream.n_frames

    #: How the frames of the chunks fed so far were read: "frames" (decoded by the source),
    #: "raw chunks decoded on the device", "raw chunks decoded on the host".
    path = "frames"

    def accepts_raw(self, source) -> bool:
        """Whether to read ``source``'s stored chunks (its ``iter_raw_chunks``) rather than its
        decoded frames: the source's dataset is chunked one frame per chunk, bitshuffle-LZ4 or
        unfiltered, and the frames go to an OpenCL device: linear sums that may run there
        (``opencl-events``, or ``auto`` with a GPU; unsigned frames, which the device
        compaction takes), or multi-tau's stream on the device (integer frames). Otherwise the
        source's frames are read as always."""
        if (self.dtype.kind not in "iu" or self.dtype.itemsize not in (1, 2, 4)
                or not hasattr(source, "iter_raw_chunks")):
            return False
        if self.mode == "multitau":  # when its stream runs on a device
            if not hasattr(self.stream, "feed_raw"):
                return False
        elif (self.mode != "linear" or self.method not in ("auto", OPENCL_PAIRS)
                or self.stream is not None or self.dtype.kind != "u"):
            return False
        elif self.method == "auto" and not _gpu(self._live_device):
            return False  # auto: only where it may pick the events on a GPU
        codec, _ = source.raw_codec()
        return codec in ("bslz4", "none")

    def _live_pairs(self, chunk: numpy.ndarray, raw: bool = False):
        """Linear mode's incremental sums: on the OpenCL device when asked (``opencl-events``)
        or when ``auto``, choosing between the event methods, would correlate such data there
        on a GPU (integer frames: the device's atomic sums are exact), else on the CPU threads.
        ``raw``: the chunks come stored (decoded and compacted on the device when it is
        taken)."""
        from ..engine.live_pairs import LivePairs

        device = self._live_device
        if self.method == "auto" and self.dtype.kind in "iub":
            from ..correlators.auto import choose

            # The live sums are event pairs wherever they run: the choice is between the
            # event methods (the dense ones' costs on a first chunk of a few frames would
            # send a long scan to the CPU).
            choice = choose("linear", chunk, self.binning, device,
                            methods=("cpu-events", OPENCL_PAIRS))
            if choice.method == OPENCL_PAIRS:
                from ..opencl.device import get_device

                if get_device(choice.device).kind == "gpu":
                    self.method, device = OPENCL_PAIRS, choice.device
        if self.method == OPENCL_PAIRS:
            from ..opencl.live_pairs import LiveDevicePairs, LivePairsOpenCL

            stream = (LiveDevicePairs(self.binning, self.frame_shape, self.dtype, device) if raw
                      else LivePairsOpenCL(self.binning, self.dtype, device))
            self.device = stream.device_name
            return stream
        self.method = LIVE_PAIRS
        return LivePairs(self.binning, self.dtype)

    def feed(self, chunk) -> None:
        """Take the next frames, (n, Ny, Nx) of the given dtype, or their stored chunks
        (:class:`~ewoksxpcs.io.live.RawChunks`, from a source's ``iter_raw_chunks`` when
        :meth:`accepts_raw`): decoded on the device when the sums run there, else on the
        host."""
        from ..io.live import RawChunks

        raw = chunk if isinstance(chunk, RawChunks) else None
        if raw is not None:
            layout = raw.layout
            if tuple(layout.frame_shape) != self.frame_shape or layout.dtype != self.dtype:
                raise ValueError(f"chunks of frames of shape {tuple(layout.frame_shape)} "
                                 f"{layout.dtype}, expected {self.frame_shape} {self.dtype}")
            if self.stream is None:
                # auto looks at decoded frames: a few of the first chunk's, decoded on the host.
                sample = (next(raw.split(AUTO_SAMPLE_FRAMES)).decode()
                          if self.method != OPENCL_PAIRS else None)
                self.stream = self._live_pairs(sample, raw=True)
            if hasattr(self.stream, "feed_raw"):
                self.stream.feed_raw(raw)
                self.path = "raw chunks decoded on the device"
                return
            chunk = raw.decode()  # the sums on the CPU: frames decoded on the host
            self.path = "raw chunks decoded on the host"
        if chunk.shape[1:] != self.frame_shape or chunk.dtype != self.dtype:
            raise ValueError(f"frames of shape {chunk.shape[1:]} {chunk.dtype}, expected "
                             f"{self.frame_shape} {self.dtype}")
        if self.stream is None:
            self.stream = self._live_pairs(chunk)
        if not getattr(self.stream, "sums_frames", False):  # else summed where the frames are
            self._sum_image += chunk.sum(axis=0, dtype=self._sum_image.dtype)
        self.stream.feed(chunk)
        if self.mode == "twotime" and self.gram is not None:
            binner = self.stream.binner
            n_t, n_sel = binner.n_rows, self.correlator.col_offsets.size - 1
            if (n_sel * n_t * n_t * 4 > LIVE_GRAM_BYTES
                    or (self.stream.time_bin is None and n_t > self.stream.max_frames)):
                # Too large, or binned further: the maps from X at a snapshot.
                binner.restore(self.gram.binned_rows(binner.dtype))
                self.gram = None
            elif binner.last_rows.shape[0]:  # new complete time bins
                self.gram.feed_block(binner.last_rows)

    def snapshot(self) -> dict:
        """The result of the frames fed so far (feeding may go on).

        Returns
        -------
        dict
            The keys of :func:`~ewoksxpcs.workflow.pipeline.normalise_sums` (``result``,
            ``g2``, ``g2_err``, ``tau``, ``tau_unit``, ``q``, ``labels``...), plus ``n_frames``,
            ``mean_image`` (Ny, Nx) float64 counts per pixel per frame, ``sums``, ``method``.
        """
        return self.result_of(self.capture())

    def capture(self) -> dict:
        """The state of the sums of the frames fed so far, owned by the caller: feeding may go
        on (in this thread) while :meth:`result_of` normalises it (in another).

        Returns
        -------
        dict
            ``sums`` (the mode's sums, copied where the stream keeps adding to them),
            ``method``, ``device``, ``n_frames``, ``sum_image`` (Ny, Nx) and ``path``.
        """
        import copy

        n = self.n_frames
        if n < 2:
            raise ValueError(f"{n} frame(s) so far: a correlation needs at least 2")
        owned = False  # sums freshly computed here (nothing else refers to them)
        if self.mode == "multitau":
            sums = self.stream.sums()
            method, device = ((self.stream.name, self.device) if hasattr(self.stream, "feed_raw")
                              else ("numpy", "cpu"))
        elif self.mode == "twotime":
            if self.gram is not None:  # (past max_frames time bins it is dropped)
                sums = self.correlator.result_from_gram(self.gram, self.stream.binner.time_bin,
                                                        n, self.frame_period)
            else:  # float frames, Gram matrices too large, or time bins binned further
                x, b, n_frames = self.stream.binned()
                sums = self.correlator.result_from_binned(x, b, n_frames, self.frame_period)
            method, device = self.correlator.name, self.correlator.device_name
            owned = True  # maps computed now (large: not copied)
        elif self.method in (LIVE_PAIRS, OPENCL_PAIRS):
            sums, method = self.stream.sums(), self.method
            device = "cpu" if self.method == LIVE_PAIRS else self.device
        else:
            events = self.stream.stack()
            events.frame_period = self.frame_period
            out = correlate_sums(events, self.binning, method=self.method, device=self.device,
                                 mode="linear", bad_pixels=self.bad_pixels)
            sums, method, device = out["sums"], out["method"], out["device"]
            owned = True
        if not owned:  # a stream's sums may share arrays it keeps adding to (small: copied)
            sums = copy.deepcopy(sums)
        sum_image = self._sum_image.copy()
        if getattr(self.stream, "sums_frames", False):
            sum_image += self.stream.sum_image()
        return {"sums": sums, "method": method, "device": device, "n_frames": n,
                "sum_image": sum_image, "path": self.path}

    def result_of(self, captured: dict) -> dict:
        """The snapshot (see :meth:`snapshot`) of a state taken by :meth:`capture`; reads
        nothing that feeding changes (another thread may feed meanwhile)."""
        sums, method, device = captured["sums"], captured["method"], captured["device"]
        n = captured["n_frames"]
        result = normalise_sums(sums, self.binning, frame_period=self.frame_period, q=self.q,
                                q_labels=self.q_labels, chi=self.chi, method=method,
                                device=device, mode=self.mode, mode_options=self.mode_options,
                                info={"live": True})
        result.update(n_frames=n, mean_image=captured["sum_image"] / n, sums=sums,
                      method=method, live_path=captured["path"])
        return result


def format_g2(snapshot: dict, max_bins: int = 4, max_lags: int = 4) -> str:
    """One line: frames so far and g2 of a few bins at a few lags (log-spaced)."""
    g2, tau, labels = snapshot["g2"], snapshot["tau"], snapshot["labels"]
    rows = numpy.unique(numpy.linspace(0, len(labels) - 1, min(max_bins, len(labels))).astype(int))
    positive = numpy.flatnonzero(numpy.asarray(tau) > 0)
    cols = positive[numpy.unique(numpy.geomspace(1, max(positive.size, 1),
                                                 min(max_lags, positive.size)).astype(int) - 1)]
    unit = snapshot["tau_unit"]
    head = " ".join(f"τ={tau[c]:.3g}{'' if unit == 'frame' else unit}" for c in cols)
    parts = [f"bin {labels[r]}: " + " ".join(f"{g2[r, c]:.4f}" for c in cols) for r in rows]
    return f"{snapshot['n_frames']} frames | g2 at {head} | " + " | ".join(parts)


def run_live(source, qmask, output: str, every: float = 2.0, mode: str = "multitau",
             method: str = "auto", device: Optional[str] = None,
             mode_options: Optional[dict] = None, mask=None, q=None, q_unit: str = "",
             n_groups: int = DEFAULT_GROUPS, png=True, overwrite: bool = False,
             report: Optional[Callable[[str], None]] = print, on_snapshot=None,
             token=None) -> dict:
    """Correlate a live frame source; write the result every ``every`` s and at the end.

    Parameters
    ----------
    source : FrameSource
        Frames as they come (:mod:`ewoksxpcs.io.live`), or any frame source.
    qmask : array_like (Ny, Nx) of int, or a label image file/URL
    output : str
        Result file (NeXus), replaced atomically at each update.
    every : float
        Seconds between updates of the result file (0: only the final result); longer when an
        update takes more than 1/:data:`UPDATE_SHARE` of the time. An update is skipped while
        the previous one is still being written.
    mode, method, device, mode_options, n_groups
        As for :class:`LiveCorrelator`.
    mask : array_like, str, or list of them, optional
        Detector masks (non-zero = bad).
    q : array_like (n_labels,), optional
        q of each label of ``qmask``, ``q_unit`` (default: the labels).
    png : bool or str
        Also draw the g2 curves (True: ``<output>_g2.png``).
    overwrite : bool
        Replace an existing result file at the start (updates always replace their own).
    report : callable, optional
        Called with one line per update (default: print).
    on_snapshot : callable, optional
        Called with each snapshot dict, the final one included.
    token : CancelToken, optional
        Checked at every chunk: a cancelled run stops there, leaving the last update in place.

    Returns
    -------
    dict
        The final snapshot, plus ``output``, ``png``, ``updates`` (number of intermediate
        writes), ``ended_early`` (message or ""), ``latency_s`` (from the last chunk received to
        the final result file written; its PNG follows), ``end_detection_s`` (from the last
        chunk to the source reporting the end of the scan), ``written_at`` (``time.time()``
        when the final result file was written) and ``timings`` (seconds: ``last_feed_s``, the
        last chunk correlated (two-time: its stripe of maps written; None: no chunk),
        ``end_wait_s`` then the end of the scan seen, ``snapshot_s`` the final result
        computed (an update still in flight waited for first), ``write_s`` its file written;
        over the whole run: ``wait_s`` waiting for the next chunk, ``feed_s`` correlating,
        ``capture_s`` taking the updates' sums; the updates are normalised and written by a
        thread of their own, one at a time, while the next chunks are correlated).
    """
    from ..io import pngproc
    from ..io.save import (LiveMapsFile, check_output, default_png, save_results,
                           warm_up_plotting)
    from .maskbin import build_qmask

    check_output(output, overwrite)
    png = default_png(output) if png is True else (png or None)
    if png:
        check_output(png, overwrite)
        warm_up_plotting()  # the PNG helper process imports matplotlib while frames come
    qb = build_qmask(source.frame_shape, qmask=qmask, q_values=q, mask=mask, file_mask=False)
    q_unit = qb.q_unit or q_unit
    live = LiveCorrelator(qb.qmask, source.frame_shape, source.dtype, mode=mode, method=method,
                          device=device, mode_options=mode_options, labels=qb.labels,
                          bad_pixels=qb.bad_pixels, n_groups=n_groups,
                          frame_period=source.frame_period, q=qb.q, q_labels=qb.labels,
                          chi=qb.chi)
    parameters = {"live": {"source": getattr(source, "url", repr(source)), "mode": mode,
                           "method": method, "mode_options": live.mode_options,
                           "every": every}}
    written = {"n": 0}
    # Two-time maps kept up to date: the final file's maps written while the scan runs.
    maps_file = (LiveMapsFile(output, live.correlator.col_offsets.size - 1)
                 if getattr(live, "gram", None) is not None else None)

    drawing = []  # the PNG being drawn, at most one

    def draw(snap, title, replace, final):
        """The g2 PNG drawn and written by the PNG helper process (:mod:`ewoksxpcs.io.pngproc`)
        while frames are correlated here: an update's PNG is skipped while the previous one
        is still being drawn; the final one is waited for."""
        if drawing:
            if not final and not drawing[-1].done():
                return
            drawing.pop().result()  # its errors; and the files in order
        drawing.append(pngproc.submit(
            "ewoksxpcs.io.save:plot_g2", png, snap["tau"], snap["g2"], snap["g2_err"],
            snap["q"], q_unit=q_unit, tau_unit=snap["tau_unit"], chi=snap["chi"],
            overwrite=replace, title=title))
        if final:
            drawing.pop().result()

    def write(snap, final: bool):
        nonlocal maps_file
        title = "XPCS g2" + ("" if final else f" (live, {snap['n_frames']} frames)")
        replace = overwrite or written["n"] > 0
        prewritten = None
        if final:  # the feed loop drops maps_file as soon as the maps stop being up to date
            prewritten, maps_file = maps_file, None
        save_results(output, snap["result"], snap["q"], snap["tau"], q_unit=q_unit,
                     tau_unit=snap["tau_unit"], qmask=qb.qmask, mean_image=snap["mean_image"],
                     frame_period=source.frame_period,
                     parameters={**parameters, "final": final, "n_frames": snap["n_frames"],
                                 "ended_early": getattr(source, "ended_early", "")},
                     chi=snap["chi"], overwrite=replace, title=title,
                     compress_maps=False,  # two-time: gzip took most of the final write
                     maps_file=prewritten,
                     write_maps=final or getattr(snap["result"], "C", numpy.zeros(0)).nbytes
                     <= LIVE_UPDATE_MAPS_BYTES)
        written["t"], written["wall"] = time.monotonic(), time.time()  # on disk; PNG follows
        if png:
            draw(snap, title, replace, final)
        written["n"] += 1
        if on_snapshot is not None:
            on_snapshot(snap)
        if report is not None:
            report(("final  " if final else "live   ") + format_g2(snap))

    def update(captured):
        """An update, in the update thread: normalised, written, drawn; returns the snapshot
        and how long it took."""
        t = time.monotonic()
        snap = live.result_of(captured)
        write(snap, final=False)
        return snap, time.monotonic() - t

    # Updates run in a thread of their own while the next frames are correlated: only the
    # capture of the sums (device reads, copies) holds up the feeding. At most one at a time.
    updater = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ewoksxpcs-update")
    pending = None  # the update in flight
    t_last = time.monotonic()
    next_write, last, t_fed = t_last + every, None, None
    clock = {"wait_s": 0.0, "feed_s": 0.0, "capture_s": 0.0}
    try:
        # Stored chunks decoded where the sums are (a device) rather than frames decoded here.
        if live.accepts_raw(source):
            frame_bytes = int(numpy.prod(source.frame_shape)) * live.dtype.itemsize
            most = source.chunk_frames or max(1, RAW_CHUNK_BYTES // frame_bytes)
            # Read by a process of their own (chunk lookups hold a GIL), handed on by a
            # thread: reading overlaps the device work and the updates.
            from ..io.reader_process import raw_chunks

            chunks = read_ahead(raw_chunks(source, most), RAW_READ_AHEAD)
        else:
            chunks = source.iter_chunks()
        t_wait = time.monotonic()
        for chunk in chunks:
            t_last = time.monotonic()  # when the (so far) last frames arrived
            clock["wait_s"] += t_last - t_wait
            if token is not None:
                token.check("live correlation")
            live.feed(chunk)
            if maps_file is not None:
                if live.gram is None:  # past the budget: the maps at the end, as offline
                    maps_file.discard()
                    maps_file = None
                else:
                    maps_file.update(live.gram.maps())
            t_update = t_fed = time.monotonic()
            clock["feed_s"] += t_fed - t_last
            if pending is not None and pending.done():
                last, took = pending.result()  # (its errors raised here)
                pending = None
                # Updates take at most ~1/UPDATE_SHARE of the time (they share the CPU and
                # the device with the correlation, which must keep up).
                next_write = max(next_write, submitted + UPDATE_SHARE * took)
            if (every and pending is None and t_update >= next_write
                    and live.n_frames >= 2):
                pending = updater.submit(update, live.capture())
                submitted = now = time.monotonic()
                clock["capture_s"] += now - t_update
                next_write = now + every
            t_wait = time.monotonic()
        t_end = time.monotonic()
        ended_early = getattr(source, "ended_early", "")
        if ended_early and report is not None:
            report(ended_early)
        if pending is not None:
            last, _ = pending.result()
            pending = None
        # No frame since the last update: its snapshot is the final result (not computed
        # twice).
        final = (last if last is not None and last["n_frames"] == live.n_frames
                 else live.snapshot())
        t_snapshot = time.monotonic()
        updates = written["n"]
        write(final, final=True)
    finally:
        updater.shutdown(wait=True)  # (an update in flight after an error: let it finish)
        if maps_file is not None:  # not committed (an error, or the maps computed at the end)
            maps_file.discard()
    final.update(output=os.path.abspath(output), png=None if not png else os.path.abspath(png),
                 updates=updates, ended_early=ended_early,
                 latency_s=written["t"] - t_last, end_detection_s=t_end - t_last,
                 written_at=written["wall"],
                 timings={"last_feed_s": None if t_fed is None else t_fed - t_last,
                          "end_wait_s": t_end - (t_last if t_fed is None else t_fed),
                          "snapshot_s": t_snapshot - t_end,
                          "write_s": written["t"] - t_snapshot, **clock})
    return final
