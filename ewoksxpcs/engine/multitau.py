"""Multi-tau g2: log-spaced lags from frames averaged pairwise from one level to the next.

Levels and lags
---------------
With ``m`` lags per level (even, >= 2), level 0 holds the frames themselves and level L the sums
of 2^L consecutive frames (frames averaged pairwise from level L-1: the scale cancels in g2)::

    X_0(t, p) = I(t, p)
    X_L(t, p) = X_{L-1}(2t, p) + X_{L-1}(2t+1, p) = Σ_{j<2^L} I(2^L·t + j, p),
    t = 0 … n_L − 1,   n_L = ⌊Nt / 2^L⌋   (trailing frames of an incomplete group are dropped).

Level 0 correlates the level lags k = 0 … m−1 (τ = k frames), every level L >= 1 the lags
k = m/2 … m−1 (τ = k·2^L frames): τ = 0, 1, …, m−1, m, m+2, …, 2m−2, 2m, 2m+4, … — the scheme of
scikit-beam's ``multi_tau_auto_corr`` (``num_bufs = m``). A lag is kept while it has at least one
pair of level frames, P_L(k) = n_L − k >= 1.

Per sub-bin s (a pixel group of a bin, see :class:`~ewoksxpcs.engine.qmask.Binning`) the backends
accumulate only the additive sums

    n2_L(s, k) = Σ_{t=0}^{n_L−1−k} Σ_{p∈s} X_L(t, p)·X_L(t+k, p)        (int64 for integer frames)

and the per-frame sums S_0(t, s) = Σ_{p∈s} I(t, p), from which S_L(t, s) = Σ_{p∈s} X_L(t, p)
follows by the same pairwise sums. With S summed over the sub-bins of bin q and N_q its pixels:

Normalisations
--------------
``standard`` — this project's definition (:mod:`ewoksxpcs.engine.normalise`) applied to each level's
frames::

    g2(q, τ) = N_q·n2_L(q, k) / d2,   d2 = s2_L(q, k) = Σ_{t=0}^{n_L−1−k} S_L(t, q)·S_L(t+k, q)

At level 0 these are the very sums of the linear-lag correlators: g2 equals the linear result at
lags 0 … m−1 exactly (same int64 n2 and s2).

``symmetric`` — the past/future ("symmetric") normalisation of scikit-beam, XPCS-Eigen and
boost_corr: the mean product over the pixels and pairs divided by the product of the mean *past*
and mean *future* intensities::

    g2(q, τ) = ⟨X_L(t)·X_L(t+k)⟩ / (⟨X_L(t)⟩_past · ⟨X_L(t+k)⟩_future)
             = N_q·P_L(k)·n2_L(q, k) / (SP_L(q, k)·SF_L(q, k)),
    SP_L(q, k) = Σ_{t=0}^{n_L−1−k} S_L(t, q),   SF_L(q, k) = Σ_{t=k}^{n_L−1} S_L(t, q),

⟨·⟩ averaging over the pixels of the bin and the P_L(k) pairs; here d2 = SP·SF / P. The past and
future means are taken over the bin's pixels before dividing, as the three programs do (scikit-beam
over the whole bin, boost_corr and XPCS-Eigen over each static partition): a literal per-pixel
ratio is undefined wherever a pixel saw no photon in its past or future window (common at low
count rates) and biased otherwise. This is exactly scikit-beam's ``multi_tau_auto_corr``.

Error bars
----------
The delete-one-group jackknife of :mod:`ewoksxpcs.engine.normalise`, for both normalisations: g2 is
recomputed without each pixel group g (N_q − N_g, n2 − n2_g, S − S_g) and
σ = sqrt((G−1)/G · Σ_g (g2₋g − mean g2₋g)²).

Exactness: integer frames give int64 n2 and s2, exact; a run whose sums could leave the int64
range is refused (bounds 2^L · max |I| · Σ |I| < 2^63 for n2, (max S)²·n_L < 2^62 for s2, see
:mod:`ewoksxpcs.engine.intrange`); floating frames are accumulated in float64.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy

from .badframes import excluded_of, level_weights, pair_counts
from .frames import as_frame_source
from .intrange import check_int64_bound, check_s2
from .options import check_lags_per_level
from .normalise import expected_pairs, jackknife_error, undefined_lags
from .qmask import DEFAULT_GROUPS, Binning, as_binning

__all__ = [
    "DEFAULT_LAGS_PER_LEVEL",
    "NORMALISATIONS",
    "MultiTauSums",
    "MultiTauResult",
    "MultiTauAccumulator",
    "IntMultiTauAccumulator",
    "MultiTauStream",
    "check_lags_per_level",
    "multitau_lags",
    "level_frame_sums",
    "multitau_n2_events",
    "normalise_multitau",
    "NumpyMultiTau",
]

#: Lags per level m: level 0 has lags 0 … m−1, each further level m/2 lags (4 per octave for 8).
DEFAULT_LAGS_PER_LEVEL = 8

NORMALISATIONS = ("standard", "symmetric")

#: Pixel-frames handed to :class:`MultiTauAccumulator` at once by :class:`NumpyMultiTau`.
FEED_PIXELS = 1 << 22


def check_normalisation(normalisation) -> str:
    """Validate a multi-tau normalisation name."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(
            f"unknown multi-tau normalisation {normalisation!r}; valid: {', '.join(NORMALISATIONS)}"
        )
    return normalisation


def _check_max_levels(max_levels) -> Optional[int]:
    if max_levels is None:
        return None
    if isinstance(max_levels, bool) or not isinstance(max_levels, (int, numpy.integer)) or max_levels < 1:
        raise ValueError(f"max_levels must be an integer >= 1 or None, got {max_levels!r}")
    return int(max_levels)


def level_lags(level: int, m: int) -> numpy.ndarray:
    """Lags of a level in level frames: 0 … m−1 at level 0, m/2 … m−1 above, (n,) int64."""
    return numpy.arange(0 if level == 0 else m // 2, m, dtype=numpy.int64)


def multitau_lags(lags_per_level: int, n_frames: int, max_levels: Optional[int] = None):
    """The multi-tau lags of a series of ``n_frames`` frames.

    Parameters
    ----------
    lags_per_level : int
        m, even >= 2.
    n_frames : int
        Nt.
    max_levels : int, optional
        Highest number of levels (level 0 included); default: as many as have a pair.

    Returns
    -------
    level : ndarray, (n_lags,) int64
        Level L of each lag.
    k : ndarray, (n_lags,) int64
        Lag in level frames.
    Lags in frames are ``k << level``; lags are ascending.
    """
    m = check_lags_per_level(lags_per_level)
    max_levels = _check_max_levels(max_levels)
    levels, ks = [], []
    level = 0
    while max_levels is None or level < max_levels:
        n_l = int(n_frames) >> level
        k = level_lags(level, m)
        k = k[n_l - k >= 1]
        if k.size == 0:
            break
        levels.append(numpy.full(k.size, level, dtype=numpy.int64))
        ks.append(k)
        level += 1
    if not ks:
        return numpy.zeros(0, numpy.int64), numpy.zeros(0, numpy.int64)
    return numpy.concatenate(levels), numpy.concatenate(ks)


def level_frame_sums(frame_sums: numpy.ndarray, level: int) -> numpy.ndarray:
    """Per-frame sums of level ``level``: S_L(t) = Σ_{j<2^L} S_0(2^L·t + j), (n_L, ...)."""
    s = numpy.asarray(frame_sums)
    for _ in range(level):
        n = s.shape[0] // 2
        s = s[0 : 2 * n : 2] + s[1 : 2 * n : 2]
    return s


# ---------------------------------------------------------------------------------- containers
@dataclass
class MultiTauSums:
    """Additive multi-tau sums per sub-bin (add over disjoint pixel sets).

    Attributes
    ----------
    n2 : ndarray, (n_sub, n_lags)
        n2_L(s, k) (see the module docstring); int64 for integer frames, float64 otherwise.
    frame_sums : ndarray, (n_frames, n_sub)
        S_0(t, s), counts; int64 for integer frames, float64 otherwise.
    level, k : ndarray, (n_lags,) int64
        Level and lag in level frames of each column; the lag is ``k << level`` frames.
    lags_per_level : int
    """

    n2: numpy.ndarray
    frame_sums: numpy.ndarray
    level: numpy.ndarray
    k: numpy.ndarray
    lags_per_level: int
    #: Frames excluded (bad frames, read as zeros), (n_frames,) bool, or None.
    excluded: Optional[numpy.ndarray] = None

    @property
    def n_frames(self) -> int:
        return int(self.frame_sums.shape[0])

    @property
    def lags(self) -> numpy.ndarray:
        """Lags in frames, (n_lags,) int64."""
        return self.k << self.level

    @property
    def n_pairs(self) -> numpy.ndarray:
        """Pairs of level frames per lag, P_L(k) = n_L − k, (n_lags,) int64; with excluded
        frames the remaining pairs Σ_t w_L(t)·w_L(t+k) (:mod:`ewoksxpcs.engine.badframes`)."""
        if self.excluded is None:
            return (self.n_frames >> self.level) - self.k

        out = numpy.zeros(self.k.size, dtype=numpy.int64)
        for level in numpy.unique(self.level).tolist():
            cols = self.level == level
            w = level_weights(self.excluded, level)
            out[cols] = pair_counts(w == 0, w.size, self.k[cols])
        return out

    def __add__(self, other: "MultiTauSums") -> "MultiTauSums":
        if (self.n2.shape != other.n2.shape or self.frame_sums.shape != other.frame_sums.shape
                or not numpy.array_equal(self.level, other.level)
                or not numpy.array_equal(self.k, other.k)):
            raise ValueError("cannot add multi-tau sums of different shapes or lags")
        return MultiTauSums(self.n2 + other.n2, self.frame_sums + other.frame_sums,
                            self.level, self.k, self.lags_per_level, self.excluded)


@dataclass
class MultiTauResult:
    """Normalised multi-tau correlation, one row per q bin.

    Attributes
    ----------
    g2, g2_err : ndarray, (n_bins, n_lags) float64
        g2(q, τ) = N_q·n2/d2 and its jackknife standard error; NaN where undefined (as for
        linear lags, with E = d2/N_q: see :mod:`ewoksxpcs.normalise`).
    lags : ndarray, (n_lags,) float64
        Lag times in frames, k·2^L (multiply by the frame period for seconds).
    level : ndarray, (n_lags,) int64
        Level L of each lag (frames summed 2^L at a time).
    n_pairs : ndarray, (n_lags,) int64
        Pairs of level frames averaged, n_L − k.
    normalisation : str
        "standard" or "symmetric".
    lags_per_level : int
        m.
    n2 : ndarray, (n_bins, n_lags)
        Numerator sums (int64 for integer frames).
    d2 : ndarray, (n_bins, n_lags)
        Denominator: s2_L for "standard" (int64 when exact), SP·SF/P for "symmetric" (float64).
    labels, n_pixels : ndarray, (n_bins,) int64
    frame_sums : ndarray, (n_frames, n_bins)
        S(t, q), counts.
    n_frames : int
    frame_period : float or None
        Seconds between frames.
    method, device : str
    sums : MultiTauSums
    info : dict
    expected_pairs : ndarray, (n_bins, n_lags) float64
        d2/N_q: photon pairs of uncorrelated light at each lag (counts of level frames).
    """

    g2: numpy.ndarray
    g2_err: numpy.ndarray
    lags: numpy.ndarray
    level: numpy.ndarray
    n_pairs: numpy.ndarray
    normalisation: str
    lags_per_level: int
    n2: numpy.ndarray
    d2: numpy.ndarray
    labels: numpy.ndarray
    n_pixels: numpy.ndarray
    frame_sums: numpy.ndarray
    n_frames: int
    frame_period: Optional[float] = None
    method: str = ""
    device: str = "cpu"
    sums: Optional[MultiTauSums] = None
    info: dict = field(default_factory=dict)
    expected_pairs: Optional[numpy.ndarray] = None

    mode = "multitau"

    @property
    def n_bins(self) -> int:
        return int(self.labels.size)

    @property
    def lag_times(self) -> Optional[numpy.ndarray]:
        """Lags in seconds, or None when the frame period is unknown."""
        return None if self.frame_period is None else self.lags * self.frame_period

    def write_nexus(self, parent, name: str = "multitau"):
        """Write as NeXus into an open h5py group: an NXdata ``name`` (g2 vs label and tau,
        g2_errors, and the exact sums), returned. ``silx view`` plots g2 curves from it."""
        g = _nx_group(parent, name, "NXdata")
        g.attrs["signal"] = "g2"
        g.attrs["axes"] = ["labels", "tau"]
        g.attrs["labels_indices"] = 0
        g.attrs["tau_indices"] = 1
        g["title"] = f"multi-tau g2(q, tau), {self.normalisation} normalisation"
        g.create_dataset("g2", data=self.g2).attrs["interpretation"] = "spectrum"
        g.create_dataset("g2_errors", data=self.g2_err)
        tau = self.lags if self.frame_period is None else self.lags * self.frame_period
        g.create_dataset("tau", data=tau).attrs["units"] = "frame" if self.frame_period is None else "s"
        g.create_dataset("labels", data=self.labels)
        g.create_dataset("lags", data=self.lags).attrs["units"] = "frame"
        g.create_dataset("level", data=self.level)
        g.create_dataset("n_pairs", data=self.n_pairs)
        g.create_dataset("n_pixels", data=self.n_pixels)
        g["normalisation"] = self.normalisation
        g["lags_per_level"] = self.lags_per_level
        sums = _nx_group(g, "sums", "NXcollection")
        sums.create_dataset("n2", data=self.n2)
        sums.create_dataset("d2", data=self.d2)
        sums.create_dataset("frame_sums", data=self.frame_sums)
        return g

    def __repr__(self) -> str:
        return (
            f"MultiTauResult(normalisation={self.normalisation!r}, method={self.method!r}, "
            f"device={self.device!r}, n_bins={self.n_bins}, n_frames={self.n_frames}, "
            f"n_lags={self.lags.size})"
        )


def _nx_group(parent, name: str, nx_class: str):
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx_class
    return g


# ---------------------------------------------------------------------------------- normalisation
def _bin_rows(binning: Binning, values: numpy.ndarray, axis: int = 0) -> numpy.ndarray:
    """Sum sub-bin entries (n_sub along ``axis``) into bins (n_bins along ``axis``)."""
    values = numpy.asarray(values)
    shape = list(values.shape)
    shape[axis] = binning.n_bins
    out = numpy.zeros(shape, dtype=values.dtype)
    filled = numpy.flatnonzero(binning.n_groups_per_bin > 0)  # sub-bins of a bin are contiguous
    if filled.size and values.shape[axis]:
        sums = numpy.add.reduceat(values, binning.bin_sub_offsets[:-1][filled], axis=axis)
        index = [slice(None)] * values.ndim
        index[axis] = filled
        out[tuple(index)] = sums
    return out


def _lag_products(a: numpy.ndarray, k: numpy.ndarray) -> numpy.ndarray:
    """Σ_{t=0}^{n−1−k} a[t]·a[t+k] per column for each lag k: (n_k, n_cols), exact in int64."""
    n = a.shape[0]
    out = numpy.zeros((k.size, a.shape[1]), dtype=a.dtype)
    for j, kk in enumerate(k.tolist()):
        if kk < n:
            out[j] = numpy.einsum("tc,tc->c", a[: n - kk], a[kk:])
    return out


def _weighted_past_future(a, w, k):
    """SP(k) = Σ_t a(t)·w(t+k), SF(k) = Σ_t w(t)·a(t+k): (n_cols, n_k) float64 each."""
    n = a.shape[0]
    a = a.astype(numpy.float64)
    w = w.astype(numpy.float64)
    sp = numpy.stack([w[kk:] @ a[: n - kk] for kk in k.tolist()], axis=1)
    sf = numpy.stack([w[: n - kk] @ a[kk:] for kk in k.tolist()], axis=1)
    return sp, sf


def _level_normalise(n2, S, k, binning, normalisation, w=None):
    """g2, jackknife error and d2 of one level, (n_bins, n_k) each, from sub-bin sums.

    n2 (n_sub, n_k), S (n_L, n_sub) level frame sums; w (n_L,) level-frame weights (0: all
    members excluded, :func:`ewoksxpcs.engine.badframes.level_weights`) or None. Bins are
    summed from their sub-bins; the leave-one-group-out sums are the bin's minus the group's
    (n2 − n2_g, S − S_g).
    """
    nb = binning.n_bins
    n_l = S.shape[0]
    n2_bin = _bin_rows(binning, n2)
    n2_loo = n2_bin[binning.sub_bin] - n2
    if normalisation == "standard":
        B = _bin_rows(binning, S, axis=1)
        D = B[:, binning.sub_bin] - S  # each bin's sums without one of its groups
        if S.dtype.kind in "iu":
            check_s2(B)  # refused, not wrapped, beyond the exact int64 range
        d2 = _lag_products(B, k).T  # (nb, n_k): s2_L(q, k)
        d2_loo = _lag_products(D, k).T  # (n_sub, n_k)
    else:
        P = (n_l - k).astype(numpy.float64)
        # SP(k) = total − (last k rows), SF(k) = total − (first k rows): k < m, so only the
        # first and last m rows and the totals are needed — of the sub-bins, of the bins (their
        # sums) and of the bins without one group (bin − sub-bin): no (n_l, n_sub) temporaries.
        kmax = min(int(k.max()) + 1 if k.size else 0, n_l)
        first, last, total = S[:kmax], S[n_l - kmax:], S.sum(axis=0)

        def past_future(first, last, total):
            zero = numpy.zeros((1, first.shape[1]), dtype=first.dtype)
            head = numpy.concatenate([zero, numpy.cumsum(first, axis=0)])
            tail = numpy.concatenate([zero, numpy.cumsum(last[::-1], axis=0)])
            kk = numpy.minimum(k, kmax)
            return ((total - tail[kk]).T.astype(numpy.float64),
                    (total - head[kk]).T.astype(numpy.float64))  # SP, SF: (n_cols, n_k)

        def bins(a):
            return _bin_rows(binning, a, axis=a.ndim - 1)

        def without_group(a):
            return bins(a)[..., binning.sub_bin] - a

        if w is None:
            sp, sf = past_future(bins(first), bins(last), bins(total))
            sp_loo, sf_loo = past_future(without_group(first), without_group(last),
                                         without_group(total))
        else:  # over the remaining level pairs only (linear in S: per sub-bin, then summed)
            P = pair_counts(w == 0, n_l, k).astype(numpy.float64)
            sp_s, sf_s = (x.T for x in _weighted_past_future(S, w, k))  # (n_k, n_sub)
            sp, sf = bins(sp_s).T, bins(sf_s).T
            sp_loo, sf_loo = without_group(sp_s).T, without_group(sf_s).T
        d2 = sp * sf / P
        d2_loo = sp_loo * sf_loo / P
    npix = binning.n_pixels.astype(numpy.float64)[:, None]
    n_loo = (npix[binning.sub_bin] - binning.sub_n_pixels.astype(numpy.float64)[:, None])
    with numpy.errstate(invalid="ignore", divide="ignore"):
        g2 = npix * n2_bin.astype(numpy.float64) / d2.astype(numpy.float64)
        g2_loo = n_loo * n2_loo.astype(numpy.float64) / d2_loo.astype(numpy.float64)
    g2[binning.n_pixels == 0] = numpy.nan
    err = numpy.full((nb, k.size), numpy.nan)
    for i in range(nb):
        s0, s1 = int(binning.bin_sub_offsets[i]), int(binning.bin_sub_offsets[i + 1])
        if s1 - s0 > 1:
            err[i] = jackknife_error(g2_loo[s0:s1])
    return g2, err, d2


def normalise_multitau(
    sums: MultiTauSums,
    binning: Binning,
    normalisation: str = "standard",
    method: str = "",
    device: str = "cpu",
    frame_period: Optional[float] = None,
    info: Optional[dict] = None,
) -> MultiTauResult:
    """Compute multi-tau g2 and its jackknife error per bin from per-sub-bin sums.

    Parameters
    ----------
    sums : MultiTauSums
    binning : Binning
        The binning the sums were computed with.
    normalisation : {"standard", "symmetric"}
        See the module docstring.
    method, device : str
        Recorded in the result.
    frame_period : float, optional
        Seconds between frames (recorded; gives :attr:`MultiTauResult.lag_times`).
    """
    check_normalisation(normalisation)
    nb, nl = binning.n_bins, sums.level.size
    g2 = numpy.full((nb, nl), numpy.nan)
    g2_err = numpy.full((nb, nl), numpy.nan)
    d2_parts = []
    S = numpy.asarray(sums.frame_sums)
    for level in range(int(sums.level.max()) + 1 if nl else 0):
        if level:
            S = level_frame_sums(S, 1)  # pair sums of the previous level
        cols = numpy.flatnonzero(sums.level == level)
        if cols.size == 0:
            continue
        w = None if sums.excluded is None else level_weights(sums.excluded, level)
        g, e, d = _level_normalise(sums.n2[:, cols], S, sums.k[cols], binning, normalisation, w)
        g2[:, cols], g2_err[:, cols] = g, e
        d2_parts.append((cols, d))
    exact = all(d.dtype.kind in "iu" for _, d in d2_parts)
    d2 = numpy.zeros((nb, nl), dtype=numpy.int64 if exact else numpy.float64)
    for cols, d in d2_parts:
        d2[:, cols] = d
    n2 = _bin_rows(binning, sums.n2)
    pairs = expected_pairs(d2, binning.n_pixels)
    undefined_lags(g2, g2_err, n2, pairs, counts=sums.n2.dtype.kind in "iu")
    return MultiTauResult(
        g2=g2,
        g2_err=g2_err,
        lags=sums.lags.astype(numpy.float64),
        level=sums.level.copy(),
        n_pairs=sums.n_pairs,
        normalisation=normalisation,
        lags_per_level=int(sums.lags_per_level),
        n2=n2,
        d2=d2,
        labels=binning.labels.copy(),
        n_pixels=binning.n_pixels.copy(),
        frame_sums=_bin_rows(binning, sums.frame_sums, axis=1),
        n_frames=sums.n_frames,
        frame_period=frame_period,
        method=method,
        device=device,
        sums=sums,
        info=dict(info or {}),
        expected_pairs=pairs,
    )


def check_int64_range(n2_bound: float, what: str = "multi-tau n2") -> None:
    """Raise ValueError when an int64 accumulation could leave the int64 range (bound >= 2^63,
    see :mod:`ewoksxpcs.engine.intrange`)."""
    check_int64_bound(n2_bound, what=what, how="2^L · max |I| · Σ |I| of a sub-bin")


def n2_bound(level: numpy.ndarray, vmax: float, sub_totals: numpy.ndarray) -> float:
    """Upper bound of |n2_L(s, k)|: 2^L·max|I| · Σ_{t,p∈s} |I| (Σ_t X X' <= max X · Σ_t X)."""
    if level.size == 0 or sub_totals.size == 0:
        return 0.0
    return float(2.0 ** int(level.max()) * float(vmax) * float(numpy.abs(sub_totals).max()))


# ---------------------------------------------------------------------------------- NumPy: dense
class MultiTauAccumulator:
    """Streaming multi-tau sums on gathered blocks of frames (NumPy).

    Per level, a ring of the last m−1 level frames of every binned pixel (the earlier frames the
    new ones pair with), the odd frame waiting for its partner of the next level, and the sums
    n2_L(s, k) per sub-bin. Memory: about levels × m × n_pixels × 8 bytes.

    Parameters
    ----------
    sub_offsets : ndarray, (n_sub + 1,) int64
        Sub-bin boundaries in the gathered pixel order (:attr:`Binning.sub_offsets`).
    lags_per_level : int
    acc_dtype : numpy.dtype
        int64 (integer frames, exact) or float64.
    max_levels : int, optional
    """

    def __init__(self, sub_offsets, lags_per_level: int, acc_dtype, max_levels: Optional[int] = None):
        self.m = check_lags_per_level(lags_per_level)
        self.max_levels = _check_max_levels(max_levels)
        self.sub_starts = numpy.asarray(sub_offsets, dtype=numpy.int64)[:-1]
        self.n_sub = self.sub_starts.size
        self.acc_dtype = numpy.dtype(acc_dtype)
        self.n_frames = 0
        self._tails: List[numpy.ndarray] = []
        self._carry: List[Optional[numpy.ndarray]] = []
        self._n2: List[numpy.ndarray] = []
        self._count: List[int] = []

    def _add_level(self, n_pixels):
        self._tails.append(numpy.zeros((0, n_pixels), dtype=self.acc_dtype))
        self._carry.append(None)
        self._n2.append(numpy.zeros((self.n_sub, self.m), dtype=self.acc_dtype))
        self._count.append(0)

    def feed(self, block: numpy.ndarray) -> None:
        """Take the next frames as a gathered block (n, n_pixels)."""
        block = numpy.asarray(block)
        self.n_frames += block.shape[0]
        self._feed_level(0, block.astype(self.acc_dtype, copy=False))

    def _feed_level(self, level: int, x: numpy.ndarray) -> None:
        while True:
            if len(self._tails) <= level:
                self._add_level(x.shape[1])
            n = x.shape[0]
            if n == 0:
                return
            tail = self._tails[level]
            r = tail.shape[0]
            y = numpy.concatenate([tail, x]) if r else x
            acc = self._n2[level]
            for k in level_lags(level, self.m):
                j0 = max(r, int(k))  # new frames j pair with j − k; none before frame 0
                if j0 >= r + n:
                    continue
                per_pixel = numpy.einsum("tp,tp->p", y[j0 - k : r + n - k], y[j0 : r + n])
                acc[:, k] += numpy.add.reduceat(per_pixel, self.sub_starts)
            self._tails[level] = y[max(0, y.shape[0] - (self.m - 1)) :].copy()
            self._count[level] += n
            if self.max_levels is not None and level + 1 >= self.max_levels:
                return
            carry = self._carry[level]
            z = numpy.concatenate([carry, x]) if carry is not None else x
            n_pairs = z.shape[0] // 2
            self._carry[level] = z[2 * n_pairs :].copy() if z.shape[0] % 2 else None
            x = z[0 : 2 * n_pairs : 2] + z[1 : 2 * n_pairs : 2]
            level += 1

    def finish(self):
        """Return (n2 (n_sub, n_lags), level, k) for the frames fed so far."""
        level, k = multitau_lags(self.m, self.n_frames, self.max_levels)
        n2 = numpy.zeros((self.n_sub, level.size), dtype=self.acc_dtype)
        for j, (lv, kk) in enumerate(zip(level, k)):
            n2[:, j] = self._n2[int(lv)][:, kk]
        return n2, level, k


def numba_array_type(ndim: int):
    """numba's type of a C-contiguous int64 array of ``ndim`` dimensions (typed lists)."""
    import numba

    return numba.types.Array(numba.types.int64, ndim, "C")


def _has_numba() -> bool:
    """Whether numba can be imported (a dependency; an environment without it, such as a
    device machine's, keeps the NumPy accumulator: the same sums, slower)."""
    import importlib.util

    return importlib.util.find_spec("numba") is not None


class IntMultiTauAccumulator:
    """:class:`MultiTauAccumulator` for integer frames: the same int64 sums, by a numba kernel
    that runs every level of a sub-bin while its pixels are in the cache
    (:func:`ewoksxpcs.engine.multitau_numba.feed_levels`); also gives the per-frame sub-bin sums.

    Parameters
    ----------
    binning : Binning
    lags_per_level : int
    max_levels : int, optional
    """

    def __init__(self, binning: Binning, lags_per_level: int, max_levels: Optional[int] = None):
        self.m = check_lags_per_level(lags_per_level)
        self.max_levels = _check_max_levels(max_levels)
        self.sub_offsets = numpy.ascontiguousarray(binning.sub_offsets, dtype=numpy.int64)
        self.n_sub = binning.n_sub
        self.n_frames = 0
        from numba.typed import List as TypedList

        self._n_pixels = int(binning.pixel_index.size)
        # Per level (added as the frames double): a ring of its last m − 1 frames and its carry
        # row, (m − 1, n_pixels) and (n_pixels,) int64, in lists the kernel indexes.
        self._tails = TypedList.empty_list(numba_array_type(2))
        self._carry = TypedList.empty_list(numba_array_type(1))
        self._acc = numpy.zeros((0, self.n_sub, self.m), dtype=numpy.int64)
        self._vmax = numpy.zeros(self.n_sub, dtype=numpy.int64)
        self._count: List[int] = []  # level frames per level
        self._has_carry: List[int] = []

    def _grow(self, n_levels: int) -> None:
        extra = n_levels - self._acc.shape[0]
        if extra > 0:  # a new level every doubling of the frames
            for _ in range(extra):
                self._tails.append(numpy.zeros((self.m - 1, self._n_pixels), numpy.int64))
                self._carry.append(numpy.zeros(self._n_pixels, numpy.int64))
            self._acc = numpy.concatenate(
                [self._acc, numpy.zeros((extra,) + self._acc.shape[1:], numpy.int64)])
            self._count += [0] * extra
            self._has_carry += [0] * extra

    def feed(self, block: numpy.ndarray) -> numpy.ndarray:
        """Take the next frames as a gathered block (n, n_pixels) of integers; return their
        sub-bin sums (n, n_sub) int64."""
        from .multitau_numba import feed_levels

        n = block.shape[0]
        frame_sums = numpy.zeros((n, self.n_sub), dtype=numpy.int64)
        if n == 0:
            return frame_sums
        cap = self.max_levels if self.max_levels is not None else 1 << 30
        n_new, level = [n], 0  # new frames per level, as the kernel will make them
        while level + 1 < cap:
            carry = self._has_carry[level] if level < len(self._has_carry) else 0
            pairs = (carry + n_new[-1]) // 2
            if pairs == 0:
                break
            n_new.append(pairs)
            level += 1
        n_levels = len(n_new)
        self._grow(n_levels)
        counts = numpy.array(self._count[:n_levels], dtype=numpy.int64)
        carry_in = numpy.array(self._has_carry[:n_levels], dtype=numpy.int64)
        feed_levels(numpy.ascontiguousarray(block), self.sub_offsets, self.m, counts, carry_in,
                    n_levels, cap, self._tails, self._carry, self._acc, frame_sums, self._vmax)
        for L in range(n_levels):
            self._count[L] += n_new[L]
            if L + 1 < cap:
                self._has_carry[L] = (self._has_carry[L] + n_new[L]) % 2
        self.n_frames += n
        return frame_sums

    @property
    def vmax(self) -> int:
        """Largest |value| of the binned pixels so far."""
        return int(self._vmax.max()) if self._vmax.size else 0

    def finish(self):
        """Return (n2 (n_sub, n_lags) int64, level, k) for the frames fed so far."""
        level, k = multitau_lags(self.m, self.n_frames, self.max_levels)
        n2 = numpy.zeros((self.n_sub, level.size), dtype=numpy.int64)
        for j, (lv, kk) in enumerate(zip(level, k)):
            n2[:, j] = self._acc[int(lv), :, kk]
        return n2, level, k


class MultiTauStream:
    """Multi-tau sums of frames fed chunk by chunk; the sums of the frames so far at any time.

    What :meth:`NumpyMultiTau.compute_sums` runs on frames, and what live correlation feeds
    as frames arrive: the same code gives the same sums.

    Parameters
    ----------
    binning : Binning
    lags_per_level : int
    dtype : numpy.dtype
        Pixel type of the frames (integer frames: exact int64 sums).
    max_levels : int, optional
    """

    def __init__(self, binning: Binning, lags_per_level: int, dtype,
                 max_levels: Optional[int] = None):
        self.binning = binning
        self.lags_per_level = check_lags_per_level(lags_per_level)
        self.acc_dtype = numpy.dtype(numpy.int64 if numpy.dtype(dtype).kind in "iu"
                                     else numpy.float64)
        if self.acc_dtype == numpy.int64 and _has_numba():
            # exact sums: the numba kernel, the same values as the NumPy accumulator
            self.accumulator = IntMultiTauAccumulator(binning, self.lags_per_level, max_levels)
        else:
            self.accumulator = MultiTauAccumulator(binning.sub_offsets, self.lags_per_level,
                                                   self.acc_dtype, max_levels)
        self._frame_sums: List[numpy.ndarray] = []
        self._vmax = 0

    @property
    def n_frames(self) -> int:
        return self.accumulator.n_frames

    def feed(self, chunk: numpy.ndarray) -> None:
        """Take the next frames, (n, Ny, Nx)."""
        b = self.binning
        n = chunk.shape[0]
        block = numpy.take(chunk.reshape(n, -1), b.pixel_index, axis=1)
        # Fed FEED_PIXELS pixel-frames at a time: the accumulator works in int64/float64,
        # 8 bytes a value, so its temporaries stay small whatever the chunk size.
        step = max(2 * self.lags_per_level, FEED_PIXELS // max(1, block.shape[1]))
        if isinstance(self.accumulator, IntMultiTauAccumulator):
            for t0 in range(0, n, step):  # the frame sums come from the same pass
                self._frame_sums.append(self.accumulator.feed(block[t0: t0 + step]))
            self._vmax = self.accumulator.vmax
            return
        self._frame_sums.append(b.sum_sub_bins(block))
        if block.size and self.acc_dtype == numpy.int64:
            self._vmax = max(self._vmax, int(numpy.abs(block).max()))
        for t0 in range(0, n, step):
            self.accumulator.feed(block[t0: t0 + step])

    def sums(self) -> MultiTauSums:
        """The sums of the frames fed so far (the stream goes on)."""
        n2, level, k = self.accumulator.finish()
        fs = (numpy.concatenate(self._frame_sums) if self._frame_sums
              else numpy.zeros((0, self.binning.n_sub), dtype=self.acc_dtype))
        if self.acc_dtype == numpy.int64:
            check_int64_range(n2_bound(level, self._vmax, numpy.abs(fs).sum(axis=0)))
        return MultiTauSums(n2, fs, level, k, self.lags_per_level)


# ---------------------------------------------------------------------------------- NumPy: events
def multitau_n2_events(events, binning: Binning, lags_per_level: int,
                       max_levels: Optional[int] = None, progress=None):
    """Multi-tau sums n2_L(s, k) from an :class:`~ewoksxpcs.engine.events.EventStack` (NumPy).

    Each level's events are the non-zero X_L(t, p): events of one pixel with the same t >> L
    summed; pairs at lag k are found by searching (pixel, t + k) among the sorted level events.

    Returns
    -------
    n2 : ndarray, (n_sub, n_lags)
        int64 for integer events, float64 otherwise.
    level, k : ndarray, (n_lags,) int64
    """
    from .events import pixel_blocks

    m = check_lags_per_level(lags_per_level)
    sub = events.pixel_sub_bins(binning)
    acc = numpy.int64 if events.values.dtype.kind in "iub" else numpy.float64
    level, k = multitau_lags(m, events.n_frames, max_levels)
    n2 = numpy.zeros((binning.n_sub, level.size), dtype=acc)
    # Pairs never cross pixels: blocks of pixels bound the per-event temporaries.
    for p0, p1 in pixel_blocks(events.offsets):
        e0, e1 = int(events.offsets[p0]), int(events.offsets[p1])
        counts = numpy.diff(events.offsets[p0 : p1 + 1])
        ev_sub = numpy.repeat(sub[p0:p1], counts)
        keep = ev_sub >= 0
        row = numpy.repeat(numpy.arange(p0, p1, dtype=numpy.int64), counts)[keep]
        t = events.times[e0:e1][keep].astype(numpy.int64)
        v = events.values[e0:e1][keep].astype(acc)
        _multitau_events_block(n2, row, t, v, sub, level, k, events.n_frames)
        if progress is not None:
            progress(e1 / max(1, events.n_events))
    return n2, level, k


def _multitau_events_block(n2, row, t, v, sub, level, k, n_frames) -> None:
    """Add to ``n2`` the multi-tau sums of the events (row, t, v) of some whole pixels."""
    for lv in numpy.unique(level):
        n_l = n_frames >> int(lv)
        tl = t >> int(lv)
        ok = tl < n_l  # frames of an incomplete last group are dropped
        key = row[ok] * n_l + tl[ok]  # ascending: rows ascending, times ascending in a row
        if key.size == 0:
            continue
        starts = numpy.flatnonzero(numpy.concatenate([[True], key[1:] != key[:-1]]))
        ukey = key[starts]
        uval = numpy.add.reduceat(v[ok], starts)
        usub = sub[ukey // n_l]
        utime = ukey % n_l
        for j in numpy.flatnonzero(level == lv):
            kk = int(k[j])
            target = ukey + kk
            pos = numpy.searchsorted(ukey, target)
            pos_c = numpy.minimum(pos, ukey.size - 1)
            match = (pos < ukey.size) & (ukey[pos_c] == target) & (utime + kk < n_l)
            numpy.add.at(n2[:, j], usub[match], uval[match] * uval[pos_c[match]])


# ---------------------------------------------------------------------------------- backend
class NumpyMultiTau:
    """Multi-tau correlator on the CPU (NumPy), for frame stacks and EventStacks.

    Parameters
    ----------
    qmask : array_like (Ny, Nx) of int, or Binning
    lags_per_level : int
        m (even >= 2).
    normalisation : {"standard", "symmetric"}
    max_levels : int, optional
        Cap on the number of levels (default: every level with a pair of frames).
    n_groups : int
        Pixel groups per bin for the jackknife error bars.
    bad_pixels : array_like of bool (Ny, Nx), optional
    chunk_frames : int, optional
        Frames read per chunk.
    """

    name = "numpy"
    #: ``report_progress(fraction)`` of an EventStack's blocks of pixels (set by the caller).
    report_progress = None

    def __init__(self, qmask, lags_per_level: int = DEFAULT_LAGS_PER_LEVEL,
                 normalisation: str = "standard", max_levels: Optional[int] = None,
                 n_groups: int = DEFAULT_GROUPS, bad_pixels=None, chunk_frames: Optional[int] = None):
        self.binning = as_binning(qmask, n_groups=n_groups, bad_pixels=bad_pixels)
        self.lags_per_level = check_lags_per_level(lags_per_level)
        self.normalisation = check_normalisation(normalisation)
        self.max_levels = _check_max_levels(max_levels)
        self.chunk_frames = chunk_frames

    device_name = "cpu"

    def compute_sums(self, data) -> MultiTauSums:
        from .events import EventStack

        b = self.binning
        if isinstance(data, EventStack):
            b.check_frame_shape(data.frame_shape)
            n2, level, k = multitau_n2_events(data, b, self.lags_per_level, self.max_levels,
                                              progress=self.report_progress)
            fs = data.frame_sums_for(b)
            if n2.dtype.kind == "i":
                vmax = int(data.values.max()) if data.values.size else 0
                check_int64_range(n2_bound(level, vmax, fs.sum(axis=0)))
            return MultiTauSums(n2, fs, level, k, self.lags_per_level)
        source = as_frame_source(data)
        b.check_frame_shape(source.frame_shape)
        stream = MultiTauStream(b, self.lags_per_level, source.dtype, self.max_levels)
        for chunk in source.iter_chunks(self.chunk_frames):
            stream.feed(chunk)
        return stream.sums()

    def correlate(self, data, frame_period: Optional[float] = None, **info) -> MultiTauResult:
        """Multi-tau g2 of ``data`` (frames or an EventStack)."""
        t0 = time.perf_counter()
        sums = self.compute_sums(data)
        sums.excluded = excluded_of(data)  # bad frames: the remaining pairs' counts
        t1 = time.perf_counter()
        if frame_period is None:
            frame_period = getattr(data, "frame_period", None)
        result = normalise_multitau(sums, self.binning, self.normalisation, method=self.name,
                                    device=self.device_name, frame_period=frame_period, info=info)
        result.info.setdefault("timings", {}).update(
            correlate_s=t1 - t0, normalise_s=time.perf_counter() - t1)
        return result
