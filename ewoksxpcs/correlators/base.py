"""Base classes of the correlators: one interface, two kinds of input (dense frames, events).

A correlator computes the additive sums of :class:`~ewoksxpcs.engine.result.CorrelationSums` (n2 and
the per-frame sums, per sub-bin); :func:`~ewoksxpcs.engine.normalise.normalise` turns them into g2 and
error bars the same way for every backend. Backends only implement the numerator n2.
"""

from __future__ import annotations

import logging
import time
from typing import ClassVar, Optional

import numpy

from ..engine.frames import FrameSource, as_frame_source
from ..engine.normalise import normalise
from ..engine.options import check_options, positive_int
from ..engine.qmask import DEFAULT_GROUPS, Binning, as_binning
from ..engine.result import CorrelationResult, CorrelationSums
from ..engine.spill import SpillArray

__all__ = ["Correlator", "DenseCorrelator", "EventCorrelator", "accumulator_dtype"]

logger = logging.getLogger(__name__)


def accumulator_dtype(dtype) -> numpy.dtype:
    """int64 for integer pixel types (exact sums), float64 for float32 frames."""
    return numpy.dtype(numpy.int64 if numpy.dtype(dtype).kind in "iub" else numpy.float64)


class Correlator:
    """Common interface of every correlation backend.

    Parameters
    ----------
    qmask : array_like (Ny, Nx) of int, or Binning
        Label image (0 = unused) or a prepared :class:`~ewoksxpcs.engine.qmask.Binning`.
    device : str, optional
        Where to run: None, "cpu", "gpu" or "platform:device" (OpenCL backends only).
    n_groups : int
        Pixel groups per bin for the jackknife error bars.
    **options
        Backend options (see each backend).
    """

    #: Registry name.
    name: ClassVar[str] = ""
    #: "dense" (frame stacks) or "events" (EventStack).
    input_kind: ClassVar[str] = "dense"
    #: Whether the backend needs an OpenCL device.
    uses_opencl: ClassVar[bool] = False
    #: One-line description for listings.
    description: ClassVar[str] = ""

    def __init__(self, qmask, device: Optional[str] = None, n_groups: int = DEFAULT_GROUPS,
                 **options):
        self.binning: Binning = as_binning(qmask, n_groups=n_groups)
        if not self.uses_opencl and device not in (None, "cpu", "auto"):
            raise ValueError(f"method {self.name!r} runs on the CPU; device {device!r} is not allowed")
        self.device = device
        self.options = check_options(options)
        unknown = set(options) - set(self.option_names())
        if unknown:
            raise TypeError(
                f"method {self.name!r} got unknown option(s) {sorted(unknown)}; "
                f"valid options: {sorted(self.option_names())}"
            )

    def check_positive_int_options(self, names) -> None:
        """Raise ValueError if one of the options ``names`` is given but not an integer ≥ 1."""
        for opt in names:
            positive_int(self.options.get(opt), opt)

    # ------------------------------------------------------------------ to override
    @classmethod
    def option_names(cls) -> tuple:
        """Names of the backend's options."""
        return ()

    @property
    def device_name(self) -> str:
        return "cpu"

    def compute_sums(self, data) -> CorrelationSums:
        raise NotImplementedError

    # ------------------------------------------------------------------ common
    def correlate(self, data, **info) -> CorrelationResult:
        """Correlate ``data`` (frames for dense backends; frames or EventStack for event ones).

        Returns
        -------
        CorrelationResult
        """
        t0 = time.perf_counter()
        sums = self.compute_sums(data)
        t1 = time.perf_counter()
        result = normalise(
            sums, self.binning, method=self.name, device=self.device_name,
            s2_method=self.s2_method, info=info,
        )
        result.info.setdefault("timings", {}).update(
            correlate_s=t1 - t0, normalise_s=time.perf_counter() - t1
        )
        return result

    #: How s2 is computed from the frame sums (the reference uses direct sums).
    s2_method: ClassVar[str] = "auto"

    #: Share of the time spent after the frames are read (e.g. ``fft``'s transforms), for the
    #: progress of :func:`ewoksxpcs.workflow.pipeline.correlate_sums`; 0: the work follows the reading.
    compute_share: ClassVar[float] = 0.0
    #: ``report_progress(fraction)``, set by the caller: the fraction in [0, 1] of the work
    #: after the reading (or of all the work for an EventStack) done so far.
    report_progress = None

    def _report(self, fraction: float) -> None:
        if self.report_progress is not None:
            self.report_progress(min(1.0, max(0.0, float(fraction))))


class DenseCorrelator(Correlator):
    """Backend on dense frame stacks, fed chunk by chunk.

    The driver gathers each chunk's binned pixels (in :attr:`Binning.pixel_index` order, native
    dtype), accumulates the per-frame sub-bin sums, and hands the gathered block to
    :meth:`_feed`. Subclasses implement :meth:`_start`, :meth:`_feed` and :meth:`_finish`.
    """

    input_kind = "dense"

    @classmethod
    def option_names(cls):
        return ("chunk_frames",)

    def _open_source(self, frames) -> FrameSource:
        """Check ``frames`` against the binning; set :attr:`acc_dtype`; return the source."""
        from ..engine.events import EventStack

        if isinstance(frames, EventStack):  # else a confusing "not an iterable" error
            raise TypeError(
                f"method {self.name!r} takes dense frames, not an EventStack: use an event "
                "method, or 'fft', or EventStack.to_dense()"
            )
        source: FrameSource = as_frame_source(frames)
        self.binning.check_frame_shape(source.frame_shape)
        self._validate_source(source)
        self.acc_dtype = accumulator_dtype(source.dtype)
        return source

    def compute_sums(self, frames) -> CorrelationSums:
        source = self._open_source(frames)
        self._start(source)
        idx = self.binning.pixel_index
        # Sized once when Nt is known (no list of chunks concatenated at the end).
        frame_sums = SpillArray((self.binning.n_sub,), self.acc_dtype, capacity=source.n_frames)
        t0 = 0
        for chunk in source.iter_chunks(self.options.get("chunk_frames")):
            n = chunk.shape[0]
            block = numpy.take(chunk.reshape(n, -1), idx, axis=1)
            frame_sums.append(self.binning.sum_sub_bins(block))
            self._feed(t0, block)
            t0 += n
        n2 = self._finish(t0)
        return CorrelationSums(n2=n2, frame_sums=frame_sums.array(),
                               lags=numpy.arange(t0, dtype=numpy.int64))

    def _validate_source(self, source: FrameSource) -> None:
        pass

    def _start(self, source: FrameSource) -> None:
        raise NotImplementedError

    def _feed(self, t0: int, block: numpy.ndarray) -> None:
        """Take frames t0 … t0+n-1 as a gathered block (n, n_pixels), native dtype."""
        raise NotImplementedError

    def _finish(self, n_frames: int) -> numpy.ndarray:
        """Return n2 (n_sub, n_frames), :attr:`acc_dtype`."""
        raise NotImplementedError


class EventCorrelator(Correlator):
    """Backend on sparse events (:class:`~ewoksxpcs.engine.events.EventStack`).

    Frames given instead of an EventStack are compacted first (on the CPU).
    """

    input_kind = "events"

    def compute_sums(self, data) -> CorrelationSums:
        from ..engine.events import EventStack, compact

        events = data if isinstance(data, EventStack) else compact(data)
        self.binning.check_frame_shape(events.frame_shape)
        frame_sums = events.frame_sums_for(self.binning)  # first: it validates the events
        n2 = self._n2(events)
        return CorrelationSums(
            n2=n2,
            frame_sums=frame_sums,
            lags=numpy.arange(events.n_frames, dtype=numpy.int64),
        )

    def _n2(self, events) -> numpy.ndarray:
        """Return n2 (n_sub, n_frames) int64 (float64 for float events)."""
        raise NotImplementedError
