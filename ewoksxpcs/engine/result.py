"""Data containers shared by every correlator: additive sums and the normalised result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy

__all__ = ["CorrelationSums", "CorrelationResult"]


@dataclass
class CorrelationSums:
    """Raw sums a correlator produces, per sub-bin (see :class:`ewoksxpcs.engine.qmask.Binning`).

    Both arrays are additive over disjoint sets of pixels, so partial results computed on pixel
    blocks (on several workers) add up exactly.

    Attributes
    ----------
    n2 : ndarray, (n_sub, n_lags)
        n2[k, τ] = Σ_{t=0}^{Nt-1-τ} Σ_{p ∈ sub-bin k} I(t, p)·I(t+τ, p); int64 for integer
        frames (exact), float64 for float32 frames. Counts², summed.
    frame_sums : ndarray, (n_frames, n_sub)
        S[t, k] = Σ_{p ∈ sub-bin k} I(t, p); int64 for integer frames, float64 otherwise.
    lags : ndarray, (n_lags,) int64
        Lags τ in frames.
    s2 : list, optional
        :func:`ewoksxpcs.engine.normalise.s2_rows` of these frame sums, lags and the binning
        ``s2_binning``, when the backend computed them with the sums (``opencl-events`` on a GPU
        does, on the device while it computes n2); :func:`~ewoksxpcs.engine.normalise.normalise`
        uses them for that binning instead of computing them again. Not additive: a sum of
        CorrelationSums has none.
    s2_binning : Binning, optional
        The binning of ``s2``.
    """

    n2: numpy.ndarray
    frame_sums: numpy.ndarray
    lags: numpy.ndarray
    s2: Optional[list] = field(default=None, repr=False, compare=False)
    s2_binning: Optional[object] = field(default=None, repr=False, compare=False)

    @property
    def n_frames(self) -> int:
        return int(self.frame_sums.shape[0])

    def __add__(self, other: "CorrelationSums") -> "CorrelationSums":
        if self.n2.shape != other.n2.shape or self.frame_sums.shape != other.frame_sums.shape:
            raise ValueError("cannot add correlation sums of different shapes")
        return CorrelationSums(self.n2 + other.n2, self.frame_sums + other.frame_sums, self.lags)


@dataclass
class CorrelationResult:
    """Normalised correlation, one row per q bin.

    Attributes
    ----------
    g2 : ndarray, (n_bins, n_lags) float64
        g2(q, τ) = N_q·n2(q, τ) / s2(q, τ); NaN where undefined (empty bin, s2 = 0, no photon
        pair, or fewer expected pairs than ``normalise.MIN_EXPECTED_PAIRS``: see
        :mod:`ewoksxpcs.engine.normalise`).
    g2_err : ndarray, (n_bins, n_lags) float64
        Standard error of g2 (delete-one-group jackknife over pixel groups, at least the
        photon-counting error of the pairs; see :mod:`ewoksxpcs.engine.normalise`). NaN for bins
        of one pixel and where g2 is undefined.
    n2 : ndarray, (n_bins, n_lags)
        Numerator sums, int64 for integer frames (exact), else float64.
    s2 : ndarray, (n_bins, n_lags)
        Denominator sums Σ_t S(t)·S(t+τ); int64 for integer frames when it fits, else float64.
    lags : ndarray, (n_lags,) int64
        Lags τ in frames (multiply by the frame period for seconds).
    labels : ndarray, (n_bins,) int64
        qmask label of each row.
    n_pixels : ndarray, (n_bins,) int64
        Pixels per bin N_q.
    frame_sums : ndarray, (n_frames, n_bins)
        Intensity per frame and bin S(t, q), counts.
    n_frames : int
        Nt.
    method : str
        Registry name of the correlator used.
    device : str
        Where it ran ("cpu", or the OpenCL platform and device names).
    sums : CorrelationSums
        The per-sub-bin sums the result was normalised from.
    info : dict
        Free-form details (reason of an ``auto`` choice, timings, options).
    expected_pairs : ndarray, (n_bins, n_lags) float64
        s2/N_q: the photon pairs n2 would hold for uncorrelated light (for counts), beside n2,
        the pairs seen.
    """

    g2: numpy.ndarray
    g2_err: numpy.ndarray
    n2: numpy.ndarray
    s2: numpy.ndarray
    lags: numpy.ndarray
    labels: numpy.ndarray
    n_pixels: numpy.ndarray
    frame_sums: numpy.ndarray
    n_frames: int
    method: str = ""
    device: str = "cpu"
    sums: Optional[CorrelationSums] = None
    info: dict = field(default_factory=dict)
    expected_pairs: Optional[numpy.ndarray] = None

    @property
    def n_bins(self) -> int:
        return int(self.labels.size)

    @property
    def mean_intensity(self) -> numpy.ndarray:
        """Mean counts per pixel per frame in each bin, (n_bins,) float64."""
        with numpy.errstate(invalid="ignore", divide="ignore"):
            return self.frame_sums.sum(axis=0) / (self.n_pixels * max(self.n_frames, 1))

    def __repr__(self) -> str:
        return (
            f"CorrelationResult(method={self.method!r}, device={self.device!r}, "
            f"n_bins={self.n_bins}, n_frames={self.n_frames}, n_lags={self.lags.size})"
        )
