"""Synthetic photon-counting XPCS data with a known intensity correlation.

This module simulates a stack of photon-counting detector frames of a
sample undergoing Brownian motion (free diffusion) and writes it, if asked,
to a Bliss-like HDF5 scan file such as those recorded with an Eiger detector
at the ESRF.  Its purpose is to provide test and demonstration data whose
intensity auto-correlation :math:`g_2(q, \\tau)` is known analytically.

Units
-----
* ``q`` in nm\\ :sup:`-1` (``q_per_pixel`` in nm\\ :sup:`-1` per pixel),
* diffusion coefficient ``D`` in nm\\ :sup:`2`/s,
* relaxation rate ``Gamma = D q**2`` in 1/s,
* frame period, exposure time and lag times in s; lags given as a number of
  frames where stated,
* intensities and counts in photons (counts) per pixel per frame.

Model
-----
Every labelled pixel ``p`` (label image value ``b`` in ``1..n_bins``) carries
an independent circular complex Gaussian field ``E_p(t)`` with
``<|E|**2> = 1``, evolved frame by frame with the exact Ornstein-Uhlenbeck
(AR(1)) recursion::

    E(t) = rho_b * E(t-1) + sqrt(1 - rho_b**2) * w(t),  rho_b = exp(-Gamma_b * dt)

where ``w(t)`` is circular complex Gaussian white noise with ``<|w|**2> = 1``
and ``E(0)`` is drawn from the stationary distribution.  Hence
``<E(t) E*(t + tau)> = rho_b**tau = exp(-Gamma_b tau dt)`` (``tau`` in frames).
The speckle intensity ``i = |E|**2`` is exponentially distributed with mean
1 and, because the field is Gaussian (Siegert relation),
``<i(t) i(t + tau)> = 1 + exp(-2 Gamma_b tau dt)``.

To obtain a contrast ``beta`` smaller than one, the speckle is mixed with a
constant background, ``a = sqrt(beta)``::

    I(t) = mu_b * ((1 - a) + a * i(t))

so ``<I> = mu_b`` and
``<I(t) I(t + tau)> = mu_b**2 ((1-a)**2 + 2 a (1-a) + a**2 (1 + e)) =
mu_b**2 (1 + beta e)`` with ``e = exp(-2 Gamma_b tau dt)``.  The recorded
counts are ``n(t) ~ Poisson(I(t))``, independently for every pixel and frame
given ``I``.  Therefore, for the ensemble average over pixels of a bin,

* ``g2(q_b, tau) = <n(t) n(t+tau)> / <n>**2 = 1 + beta exp(-2 Gamma_b tau dt)``
  for ``tau >= 1`` frame,
* ``g2(q_b, 0) = <n**2> / <n>**2 = 1 + beta + 1 / mu_b`` (the extra
  ``1/mu_b`` is the Poisson shot-noise term ``<n**2> = <I**2> + <I>``).

:meth:`SyntheticXPCS.analytic_g2` returns exactly this, including the
shot-noise term at zero lag.  Estimators normalised by pixel-summed
intensities, e.g. ``g2 = N_b sum_t,p n(t) n(t+tau) / sum_t S(t) S(t+tau)``
with ``S(t) = sum_p n(t)``, agree with it up to biases of order
``1/N_b`` (number of pixels of the bin) and ``1/N_frames``.

The intensity is sampled instantaneously once per frame (no averaging over
the exposure time, which is metadata only).

Geometry
--------
The momentum transfer of a pixel is proportional to its distance from the
beam centre: ``q(pixel) = q_per_pixel * r`` with
``r = hypot(y - y0, x - x0)`` in pixels (pixel centres at integer indices).
``n_bins`` concentric annuli of equal width in ``q`` between
``q_range[0]`` and ``q_range[1]`` define the label image (``int32``; 0 for
pixels outside the range or masked; bins ``1..n_bins``; a pixel at exactly
``q_range[1]`` belongs to the last bin).  The ``q`` of a bin is the mean of
the ``q`` of its pixels (the geometric bin centre for an empty bin) and every
pixel of a bin relaxes with the bin's ``Gamma_b = D q_b**2``, so the g2 of a
bin is exactly a single exponential.  Pixels with label 0 are treated as
masked: they always record 0 counts.

Random numbers and determinism
------------------------------
The labelled pixels (in C order) are split into fixed blocks of
``block_pixels`` pixels; block ``k`` uses two ``numpy.random.SFC64`` bit
generators seeded with the two children of child ``k`` of
``numpy.random.SeedSequence(seed)``: one for the field and the photon
arrival decisions (three 32-bit words per pixel and frame), one for the
numbers of additional photons of the pixels that receive photons.  Within a
block, each stream is consumed in frame order, pixel order.
The output therefore depends only on the specification (including ``seed``
and ``block_pixels``) and not on the chunk size nor on the number of threads.
(Bitwise reproducibility across machines or numpy versions is not
guaranteed: the ``float32`` transcendental functions may differ in the last
bit between SIMD implementations.)

The Gaussian field innovations use the Box-Muller representation
``w = sqrt(-log u1) * exp(2 pi i u2)`` and the Poisson counts use the
arrival-time construction: with ``e = -log(1 - v)`` (the first arrival of a
unit rate Poisson process), the count is 0 if ``e > I``, i.e. if
``v >= -expm1(-I)``, and ``1 + Poisson(I - e)`` otherwise (drawn with
``Generator.poisson`` for the few pixels that receive photons).  Both are exact samplers; uniforms are
taken from 32-bit random integers and the arithmetic is ``float32``, so the
distributions are exact up to that resolution (~1e-7 relative).

Output dtype
------------
``uint8`` (default), ``uint16``, ``uint32``, ``int32`` or ``float32``.
Counts above the maximum of an integer dtype are clipped to that maximum
(``overflow="clip"``, default) or raise :class:`OverflowError`
(``overflow="raise"``).  With ``mu <= 10`` and ``uint8`` this practically
never happens (it needs a speckle intensity of more than 25 times the mean,
probability ~1e-11 per pixel and frame).
"""

from __future__ import annotations

import dataclasses
import math
import os
import uuid
from datetime import datetime
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "SyntheticSpec",
    "SyntheticXPCS",
    "SyntheticData",
    "generate",
    "ALLOWED_DTYPES",
]

ALLOWED_DTYPES = ("uint8", "uint16", "uint32", "int32", "float32")

_TWO_POW_M32 = 2.0**-32

ArrayLike = Union[float, Sequence[float], np.ndarray]


def write_quantities(grp, items) -> None:
    """Write ``(name, value, units)`` items as datasets of ``grp`` (units attribute if any)."""
    for name, value, units in items:
        grp[name] = value
        if units:
            grp[name].attrs["units"] = units


def _now_iso() -> str:
    return datetime.now().astimezone().isoformat()


@dataclass
class SyntheticSpec:
    """Parameters of a synthetic XPCS acquisition.

    Parameters
    ----------
    shape : (int, int)
        Detector shape ``(Ny, Nx)`` in pixels.
    n_frames : int
        Number of frames ``Nt``.
    mean_counts : float or sequence of float
        Mean number of photons per pixel per frame ``mu`` (> 0; typically
        0.001 to 10).  Scalar, or one value per bin (length ``n_bins``).
    contrast : float or sequence of float
        Speckle contrast ``beta``, ``0 < beta <= 1``.  Scalar or per bin.
    diffusion : float
        Diffusion coefficient ``D`` in nm^2/s (>= 0).  ``Gamma = D q**2``.
    frame_period : float
        Time between frame starts ``dt`` in s (> 0).
    n_bins : int
        Number of concentric q bins.
    q_per_pixel : float
        Momentum transfer per pixel of distance from the beam centre, in
        nm^-1 per pixel (> 0).
    q_range : (float, float), optional
        ``(q_min, q_max)`` in nm^-1 covered by the bins.  Default: from 0 to
        the q of the detector corner farthest from the beam centre (every
        pixel is labelled).
    beam_center : (float, float), optional
        Beam centre ``(y0, x0)`` in pixels (may lie outside the detector).
        Default: the detector centre ``((Ny-1)/2, (Nx-1)/2)``.
    mask : numpy.ndarray, optional
        ``(Ny, Nx)`` array, nonzero/True for pixels to exclude (label 0,
        always 0 counts).
    seed : int
        Seed of the :class:`numpy.random.SeedSequence`.
    dtype : str
        Output dtype, one of ``uint8`` (default), ``uint16``, ``uint32``,
        ``int32``, ``float32``.
    overflow : str
        ``"clip"`` (default) clips counts to the maximum of an integer dtype,
        ``"raise"`` raises :class:`OverflowError` instead.
    exposure_time : float, optional
        Exposure (count) time per frame in s, stored as metadata only.
        Default: ``frame_period``.
    block_pixels : int
        Number of pixels per random-number block (part of the definition of
        the random stream: changing it changes the output).
    n_threads : int, optional
        Worker threads (default: number of CPUs, at most the number of
        blocks).  Does not change the output.
    """

    shape: Tuple[int, int] = (256, 256)
    n_frames: int = 1000
    mean_counts: ArrayLike = 0.01
    contrast: ArrayLike = 0.2
    diffusion: float = 1.0e6
    frame_period: float = 1.0e-3
    n_bins: int = 10
    q_per_pixel: float = 1.0e-4
    q_range: Optional[Tuple[float, float]] = None
    beam_center: Optional[Tuple[float, float]] = None
    mask: Optional[np.ndarray] = None
    seed: int = 0
    dtype: str = "uint8"
    overflow: str = "clip"
    exposure_time: Optional[float] = None
    block_pixels: int = 32768
    n_threads: Optional[int] = None


def _per_bin(value, n_bins: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n_bins, float(arr))
    elif arr.shape != (n_bins,):
        raise ValueError(
            f"{name} must be a scalar or have shape ({n_bins},), got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


class _Block:
    """State and random streams of one fixed block of labelled pixels."""

    def __init__(self, pix, rho, s2, c0, c1, seedseq):
        n = pix.size
        self.n = n
        self.pix = pix
        field_ss, count_ss = seedseq.spawn(2)
        # field and hit decisions: raw 64-bit words, 3 uint32 per pixel/frame
        self.bitgen = np.random.SFC64(field_ss)
        # photon numbers of the pixels receiving photons, in frame order
        self.rng = np.random.Generator(np.random.SFC64(count_ss))
        self.n_raw = n + (n + 1) // 2
        f32 = np.float32
        self.rho = rho.astype(f32)
        self.neg_s2 = (-s2).astype(f32)
        # intensity I = c0 + c1 * i; -I = nc1 * i + nc0
        self.c0 = c0.astype(np.float64)
        self.c1 = c1.astype(np.float64)
        self.nc1 = (-c1).astype(f32)
        self.nc0 = (-c0).astype(f32)
        self.er = np.empty(n, f32)
        self.ei = np.empty(n, f32)
        self.amp = np.empty(n, f32)
        self.ang = np.empty(n, f32)
        self.tmp = np.empty(n, f32)
        self.inten = np.empty(n, f32)
        self.thr = np.empty(n, f32)
        self.hit = np.empty(n, np.bool_)
        self.started = False

    def advance(self, out2: np.ndarray, maxval: Optional[int], raise_overflow: bool):
        """Simulate ``out2.shape[0]`` frames, scattering counts into ``out2``
        (``(n, Ny*Nx)``, zero-filled)."""
        n = self.n
        two_pi_scale = np.float32(2.0 * math.pi * _TWO_POW_M32)
        scale = np.float32(_TWO_POW_M32)
        amp, ang, tmp, er, ei = self.amp, self.ang, self.tmp, self.er, self.ei
        inten, thr, hitmask = self.inten, self.thr, self.hit
        minus_two_pow_32 = np.float32(-(2.0**32))
        hits, hit_inten, hit_k = [], [], []
        for k in range(out2.shape[0]):
            raw = self.bitgen.random_raw(self.n_raw).view(np.uint32)
            ka = raw[:n]
            kb = raw[n : 2 * n].view(np.int32)
            kc = raw[2 * n : 3 * n]
            # innovation amplitude sqrt(s2 * (-log u1)), u1 in (0, 1]
            np.bitwise_or(ka, 1, out=ka)
            np.copyto(amp, ka, casting="unsafe")
            amp *= scale
            np.log(amp, out=amp)
            if self.started:
                amp *= self.neg_s2
            else:  # stationary start: s2 = 1
                np.negative(amp, out=amp)
            np.sqrt(amp, out=amp)
            # phase 2 pi u2, uniform in [-pi, pi)
            np.copyto(ang, kb, casting="unsafe")
            ang *= two_pi_scale
            np.cos(ang, out=tmp)
            np.sin(ang, out=ang)
            tmp *= amp
            ang *= amp
            # E(t) = rho E(t-1) + innovation
            if self.started:
                er *= self.rho
                er += tmp
                ei *= self.rho
                ei += ang
            else:
                er[...] = tmp
                ei[...] = ang
                self.started = True
            # speckle intensity i = |E|**2 (mean 1)
            np.multiply(er, er, out=inten)
            np.multiply(ei, ei, out=tmp)
            inten += tmp
            # first photon arrival e = -log(1 - v) <= I  <=>  v < 1 - exp(-I),
            # v = kc / 2**32 uniform in [0, 1)
            np.multiply(inten, self.nc1, out=thr)
            thr += self.nc0
            np.expm1(thr, out=thr)
            thr *= minus_two_pow_32
            np.copyto(tmp, kc, casting="unsafe")
            np.less(tmp, thr, out=hitmask)
            hit = np.flatnonzero(hitmask)
            hits.append(hit)
            hit_inten.append(np.take(inten, hit))
            hit_k.append(np.take(kc, hit))
        # photons after the first one: Poisson(I - e)
        nhits = np.fromiter((h.size for h in hits), dtype=np.intp, count=len(hits))
        if nhits.sum() == 0:
            return
        idx = np.concatenate(hits)
        lam = self.c1[idx] * np.concatenate(hit_inten)
        lam += self.c0[idx]
        v = np.concatenate(hit_k) + 0.5
        v *= -_TWO_POW_M32
        lam += np.log1p(v)  # I - e
        np.maximum(lam, 0.0, out=lam)
        counts = self.rng.poisson(lam)
        counts += 1
        if maxval is not None:
            cmax = counts.max()
            if cmax > maxval:
                if raise_overflow:
                    raise OverflowError(
                        f"{cmax} counts in a pixel exceed the maximum {maxval} "
                        f"of the output dtype {out2.dtype}"
                    )
                np.minimum(counts, maxval, out=counts)
        pos = self.pix[idx]
        pos += np.repeat(np.arange(len(hits), dtype=np.intp) * out2.shape[1], nhits)
        out2.reshape(-1)[pos] = counts


class _Engine:
    """Running simulation: fills successive frames, from frame 0."""

    def __init__(self, sim: "SyntheticXPCS"):
        self.sim = sim
        self.blocks: List[_Block] = sim._make_blocks()
        dtype = sim.dtype
        if np.issubdtype(dtype, np.integer):
            self.maxval = int(np.iinfo(dtype).max)
        else:
            self.maxval = None
        self.raise_overflow = sim.spec.overflow == "raise"
        n_threads = sim.spec.n_threads
        if n_threads is None:
            n_threads = os.cpu_count() or 1
        self.n_threads = max(1, min(int(n_threads), len(self.blocks)))
        self.pool = (
            ThreadPoolExecutor(self.n_threads) if self.n_threads > 1 else None
        )
        self.next_frame = 0

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    def fill(self, out: np.ndarray):
        """``out``: zero-filled C-contiguous (n, Ny, Nx) array of the output
        dtype, receives the next n frames."""
        n = out.shape[0]
        out2 = out.reshape(n, -1)
        if not np.shares_memory(out2, out):
            raise ValueError("output buffer must be C-contiguous")

        def work(block):
            block.advance(out2, self.maxval, self.raise_overflow)

        if self.pool is None:
            for block in self.blocks:
                work(block)
        else:
            for _ in self.pool.map(work, self.blocks):
                pass
        self.next_frame += n


def write_bliss_scan_header(
    f,
    scan: str,
    detector: str,
    title: str,
    n_frames: int,
    exposure_time: float,
    frame_period: float,
    creator: str,
):
    """Create a Bliss-like scan entry and its detector group with the acquisition metadata.

    Writes the root attributes, ``/<scan>`` (NXentry: title, start_time), ``instrument/<det>``
    (NXdetector) with ``acquisition`` (count_time, exposure_time, frame_period, latency_time
    in s, nb_frames) and Lima-style ``acq_parameters`` (see :meth:`SyntheticXPCS.write_bliss_h5`),
    where :func:`ewoksxpcs.io.load.read_frame_period` finds the frame period. The caller adds
    the detector ``data`` and ``measurement``.

    Parameters
    ----------
    f : h5py.File
        Open for writing.
    exposure_time, frame_period : float
        Seconds.

    Returns
    -------
    (entry, det) : h5py.Group
    """
    f.attrs["NX_class"] = "NXroot"
    f.attrs["creator"] = creator
    entry = f.create_group(scan)
    entry.attrs["NX_class"] = "NXentry"
    entry["title"] = title
    entry["start_time"] = _now_iso()
    instrument = entry.create_group("instrument")
    instrument.attrs["NX_class"] = "NXinstrument"
    det = instrument.create_group(detector)
    det.attrs["NX_class"] = "NXdetector"
    acq = det.create_group("acquisition")
    acq.attrs["NX_class"] = "NXcollection"
    latency = max(frame_period - exposure_time, 0.0)
    for name, value in (
        ("count_time", exposure_time),
        ("exposure_time", exposure_time),
        ("frame_period", frame_period),
        ("latency_time", latency),
    ):
        acq[name] = float(value)
        acq[name].attrs["units"] = "s"
    acq["nb_frames"] = np.int64(n_frames)
    lima = det.create_group("acq_parameters")
    lima.attrs["NX_class"] = "NXcollection"
    lima["acq_expo_time"] = float(exposure_time)
    lima["acq_latency_time"] = float(latency)
    lima["acq_nb_frames"] = np.int64(n_frames)
    lima["acq_mode"] = "SINGLE"
    lima["acq_trigger_mode"] = "INTERNAL_TRIGGER"
    return entry, det


class SyntheticXPCS:
    """Synthetic photon-counting XPCS acquisition with a known g2.

    Parameters
    ----------
    spec : SyntheticSpec, optional
        Acquisition parameters.
    **kwargs
        Fields of :class:`SyntheticSpec`, overriding those of ``spec``.

    Attributes
    ----------
    spec : SyntheticSpec
        The (completed) specification.
    labels : numpy.ndarray
        ``(Ny, Nx)`` int32 label image; 0 = unused, bins ``1..n_bins``.
    q : numpy.ndarray
        ``(n_bins,)`` float64, q of each bin (mean over its pixels), nm^-1.
    q_edges : numpy.ndarray
        ``(n_bins + 1,)`` float64 bin edges, nm^-1.
    gamma : numpy.ndarray
        ``(n_bins,)`` float64 relaxation rate ``Gamma = D q**2``, 1/s (the
        field correlation is ``exp(-Gamma t)``, the intensity one
        ``exp(-2 Gamma t)``).
    mean_counts : numpy.ndarray
        ``(n_bins,)`` float64 mean counts per pixel per frame ``mu``.
    contrast : numpy.ndarray
        ``(n_bins,)`` float64 contrast ``beta``.
    n_pixels : numpy.ndarray
        ``(n_bins,)`` int64 number of pixels per bin.
    q_map : numpy.ndarray
        ``(Ny, Nx)`` float64 q of every pixel, nm^-1.
    """

    def __init__(self, spec: Optional[SyntheticSpec] = None, **kwargs):
        if spec is None:
            spec = SyntheticSpec(**kwargs)
        elif kwargs:
            spec = dataclasses.replace(spec, **kwargs)
        self.spec = spec = self._validate(spec)
        ny, nx = spec.shape
        y0, x0 = spec.beam_center
        yy = np.arange(ny, dtype=np.float64)[:, None] - y0
        xx = np.arange(nx, dtype=np.float64)[None, :] - x0
        self.q_map = spec.q_per_pixel * np.hypot(yy, xx)
        qmin, qmax = spec.q_range
        self.q_edges = np.linspace(qmin, qmax, spec.n_bins + 1)
        labels = np.searchsorted(self.q_edges, self.q_map, side="right")
        labels[self.q_map == qmax] = spec.n_bins
        labels[(self.q_map < qmin) | (self.q_map > qmax)] = 0
        if spec.mask is not None:
            labels[spec.mask] = 0
        self.labels = labels.astype(np.int32)
        flat_labels = self.labels.ravel()
        self.n_pixels = np.bincount(flat_labels, minlength=spec.n_bins + 1)[1:]
        qsum = np.bincount(
            flat_labels, weights=self.q_map.ravel(), minlength=spec.n_bins + 1
        )[1:]
        centres = 0.5 * (self.q_edges[:-1] + self.q_edges[1:])
        with np.errstate(invalid="ignore", divide="ignore"):
            self.q = np.where(
                self.n_pixels > 0, qsum / np.maximum(self.n_pixels, 1), centres
            )
        self.gamma = spec.diffusion * self.q**2
        self.mean_counts = _per_bin(spec.mean_counts, spec.n_bins, "mean_counts")
        self.contrast = _per_bin(spec.contrast, spec.n_bins, "contrast")
        if np.any(self.mean_counts <= 0):
            raise ValueError("mean_counts must be > 0")
        if np.any(self.contrast <= 0) or np.any(self.contrast > 1):
            raise ValueError("contrast must be in (0, 1]")
        self.dtype = np.dtype(spec.dtype)

    # ------------------------------------------------------------------
    @staticmethod
    def _validate(spec: SyntheticSpec) -> SyntheticSpec:
        shape = tuple(int(s) for s in spec.shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be (Ny, Nx) with Ny, Nx >= 1, got {spec.shape}")
        if int(spec.n_frames) < 1:
            raise ValueError("n_frames must be >= 1")
        if int(spec.n_bins) < 1:
            raise ValueError("n_bins must be >= 1")
        if not spec.frame_period > 0:
            raise ValueError("frame_period must be > 0 (s)")
        if not spec.diffusion >= 0:
            raise ValueError("diffusion must be >= 0 (nm^2/s)")
        if not spec.q_per_pixel > 0:
            raise ValueError("q_per_pixel must be > 0 (nm^-1/pixel)")
        if int(spec.block_pixels) < 1:
            raise ValueError("block_pixels must be >= 1")
        dtype = np.dtype(spec.dtype).name
        if dtype not in ALLOWED_DTYPES:
            raise ValueError(f"dtype must be one of {ALLOWED_DTYPES}, got {dtype}")
        if spec.overflow not in ("clip", "raise"):
            raise ValueError("overflow must be 'clip' or 'raise'")
        ny, nx = shape
        if spec.beam_center is None:
            beam_center = ((ny - 1) / 2.0, (nx - 1) / 2.0)
        else:
            beam_center = tuple(float(v) for v in spec.beam_center)
            if len(beam_center) != 2:
                raise ValueError("beam_center must be (y0, x0)")
        if spec.q_range is None:
            y0, x0 = beam_center
            rmax = max(
                math.hypot(y - y0, x - x0) for y in (0, ny - 1) for x in (0, nx - 1)
            )
            q_range = (0.0, spec.q_per_pixel * rmax)
        else:
            q_range = tuple(float(v) for v in spec.q_range)
            if len(q_range) != 2 or not (0 <= q_range[0] < q_range[1]):
                raise ValueError("q_range must be (q_min, q_max) with 0 <= q_min < q_max")
        mask = spec.mask
        if mask is not None:
            mask = np.asarray(mask).astype(bool)
            if mask.shape != shape:
                raise ValueError(f"mask shape {mask.shape} != detector shape {shape}")
        exposure_time = (
            spec.frame_period if spec.exposure_time is None else float(spec.exposure_time)
        )
        return dataclasses.replace(
            spec,
            shape=shape,
            n_frames=int(spec.n_frames),
            n_bins=int(spec.n_bins),
            frame_period=float(spec.frame_period),
            diffusion=float(spec.diffusion),
            q_per_pixel=float(spec.q_per_pixel),
            q_range=q_range,
            beam_center=beam_center,
            mask=mask,
            dtype=dtype,
            exposure_time=exposure_time,
            block_pixels=int(spec.block_pixels),
        )

    @property
    def shape(self) -> Tuple[int, int]:
        """Detector shape ``(Ny, Nx)``."""
        return self.spec.shape

    @property
    def n_frames(self) -> int:
        """Number of frames ``Nt``."""
        return self.spec.n_frames

    @property
    def n_bins(self) -> int:
        return self.spec.n_bins

    @property
    def frame_period(self) -> float:
        """Frame period in s."""
        return self.spec.frame_period

    def _make_blocks(self) -> List[_Block]:
        spec = self.spec
        flat = self.labels.ravel()
        pix = np.flatnonzero(flat)
        nblocks = -(-pix.size // spec.block_pixels)
        children = np.random.SeedSequence(spec.seed).spawn(nblocks)
        rho_bin = np.exp(-self.gamma * spec.frame_period)
        s2_bin = -np.expm1(-2.0 * self.gamma * spec.frame_period)  # 1 - rho**2
        a = np.sqrt(self.contrast)
        c0_bin = self.mean_counts * (1.0 - a)
        c1_bin = self.mean_counts * a
        blocks = []
        for k in range(nblocks):
            p = pix[k * spec.block_pixels : (k + 1) * spec.block_pixels]
            b = flat[p] - 1
            blocks.append(
                _Block(p, rho_bin[b], s2_bin[b], c0_bin[b], c1_bin[b], children[k])
            )
        return blocks

    # ------------------------------------------------------------------
    def analytic_g2(self, lags, shot_noise: bool = True) -> np.ndarray:
        """Ensemble g2 of every bin.

        Parameters
        ----------
        lags : array_like
            ``(n_lags,)`` lag times in frames (>= 0; need not be integers).
        shot_noise : bool
            Add the Poisson term ``1/mu`` at zero lag (default True).

        Returns
        -------
        numpy.ndarray
            ``(n_bins, n_lags)`` float64:
            ``1 + beta exp(-2 Gamma lag frame_period)``, plus ``1/mu`` where
            ``lag == 0`` if ``shot_noise``.
        """
        lags = np.atleast_1d(np.asarray(lags, dtype=np.float64))
        if lags.ndim != 1:
            raise ValueError("lags must be one-dimensional")
        if np.any(lags < 0):
            raise ValueError("lags must be >= 0")
        t = lags[None, :] * self.spec.frame_period
        g2 = 1.0 + self.contrast[:, None] * np.exp(-2.0 * self.gamma[:, None] * t)
        if shot_noise:
            g2 = g2 + (lags[None, :] == 0) / self.mean_counts[:, None]
        return g2

    def iter_chunks(self, chunk_frames: int = 64) -> Iterator[np.ndarray]:
        """Generate the frames chunk by chunk, from frame 0.

        Parameters
        ----------
        chunk_frames : int
            Frames per chunk (the last one may be shorter).

        Yields
        ------
        numpy.ndarray
            ``(n, Ny, Nx)`` arrays of ``self.dtype`` (counts), a new array
            for each chunk.  The concatenation is identical for any
            ``chunk_frames`` and number of threads.
        """
        chunk_frames = int(chunk_frames)
        if chunk_frames < 1:
            raise ValueError("chunk_frames must be >= 1")
        ny, nx = self.shape
        engine = _Engine(self)
        try:
            for start in range(0, self.n_frames, chunk_frames):
                n = min(chunk_frames, self.n_frames - start)
                out = np.zeros((n, ny, nx), dtype=self.dtype)
                engine.fill(out)
                yield out
        finally:
            engine.close()

    def frames(self) -> np.ndarray:
        """The whole stack, ``(Nt, Ny, Nx)`` of ``self.dtype``.

        Holds everything in memory: for small data sets and tests; use
        :meth:`iter_chunks` or :meth:`write_bliss_h5` otherwise.
        """
        ny, nx = self.shape
        out = np.zeros((self.n_frames, ny, nx), dtype=self.dtype)
        engine = _Engine(self)
        try:
            step = 256
            for start in range(0, self.n_frames, step):
                engine.fill(out[start : start + step])
        finally:
            engine.close()
        return out

    # ------------------------------------------------------------------
    def write_bliss_h5(
        self,
        filename: Union[str, os.PathLike],
        detector: str = "eiger",
        scan: str = "1.1",
        chunk_frames: int = 64,
        overwrite: bool = False,
    ) -> str:
        """Write the frames to a Bliss-like HDF5 scan file, chunk by chunk.

        The file is written under a temporary name in the same directory and
        renamed at the end, so a failure leaves no partial file.

        Layout (``<scan>`` = ``scan``, ``<det>`` = ``detector``)::

            /                                  @NX_class=NXroot, @creator
            /<scan>                            NXentry
                title                          str "synthetic_xpcs ..."
                start_time, end_time           str ISO 8601
                instrument                     NXinstrument
                    <det>                      NXdetector
                        data                   (Nt, Ny, Nx) dtype, chunks (1, Ny, Nx),
                                               bitshuffle-LZ4 (filter 32008),
                                               @interpretation=image
                        acquisition            NXcollection
                            count_time         float64 s (exposure time)
                            exposure_time      float64 s (same)
                            frame_period       float64 s (frame start to frame start)
                            latency_time       float64 s (frame_period - exposure_time)
                            nb_frames          int64
                        acq_parameters         NXcollection (Lima-style names)
                            acq_expo_time, acq_latency_time, acq_nb_frames,
                            acq_mode ("SINGLE"), acq_trigger_mode ("INTERNAL_TRIGGER")
                measurement                    NXcollection
                    <det>                      hard link to instrument/<det>/data
                simulation                     NXcollection: the truth
                    labels     (Ny, Nx) int32   q (n_bins,) nm^-1   q_edges (n_bins+1,)
                    gamma      (n_bins,) 1/s    contrast, mean_counts, n_pixels (n_bins,)
                    q_map      (Ny, Nx) nm^-1   diffusion (nm^2/s), frame_period (s),
                    q_per_pixel, beam_center (y0, x0), seed, block_pixels, model (str)

        Parameters
        ----------
        filename : str or os.PathLike
            Output file name.
        detector : str
            Detector name.
        scan : str
            Scan (entry) name.
        chunk_frames : int
            Frames generated (and held in memory) at a time.
        overwrite : bool
            Replace an existing file (default: raise :class:`FileExistsError`).

        Returns
        -------
        str
            The file name.
        """
        import h5py
        import hdf5plugin

        filename = os.fspath(filename)
        if os.path.exists(filename) and not overwrite:
            raise FileExistsError(f"File exists (use overwrite=True): {filename!r}")
        # temporary name in the same directory (same file system: atomic
        # rename); created by HDF5 itself so that it gets the usual permissions
        tmpname = f"{filename}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        spec = self.spec
        ny, nx = self.shape
        try:
            with h5py.File(tmpname, "x") as f:
                entry, det = write_bliss_scan_header(
                    f,
                    scan,
                    detector,
                    f"synthetic_xpcs {detector} {self.n_frames} frames "
                    f"{spec.frame_period:g} s",
                    self.n_frames,
                    spec.exposure_time,
                    spec.frame_period,
                    creator="ewoksxpcs.tools.synthetic",
                )
                dset = det.create_dataset(
                    "data",
                    shape=(self.n_frames, ny, nx),
                    dtype=self.dtype,
                    chunks=(1, ny, nx),
                    **hdf5plugin.Bitshuffle(cname="lz4"),
                )
                dset.attrs["interpretation"] = "image"
                meas = entry.create_group("measurement")
                meas.attrs["NX_class"] = "NXcollection"
                meas[detector] = dset  # hard link
                self._write_truth(entry.create_group("simulation"))

                start = 0
                for chunk in self.iter_chunks(chunk_frames):
                    dset[start : start + chunk.shape[0]] = chunk
                    start += chunk.shape[0]
                if start != self.n_frames:
                    raise RuntimeError(
                        f"generated {start} frames instead of {self.n_frames}"
                    )
                entry["end_time"] = _now_iso()
            if os.path.exists(filename) and not overwrite:
                raise FileExistsError(
                    f"File exists (use overwrite=True): {filename!r}"
                )
            os.replace(tmpname, filename)
        except BaseException:
            try:
                os.unlink(tmpname)
            except FileNotFoundError:
                pass
            raise
        return filename

    def _write_truth(self, grp):
        spec = self.spec
        grp.attrs["NX_class"] = "NXcollection"
        grp["model"] = (
            "g2(q,tau) = 1 + contrast*exp(-2*gamma*tau*frame_period) "
            "(+ 1/mean_counts at tau=0), gamma = diffusion*q**2; "
            "OU complex Gaussian field, I = mu*((1-a)+a*|E|^2), a = sqrt(contrast), "
            "counts ~ Poisson(I)"
        )
        grp.create_dataset("labels", data=self.labels, compression="gzip")
        grp.create_dataset("q_map", data=self.q_map, compression="gzip")
        write_quantities(grp, (
            ("q", self.q, "nm^-1"),
            ("q_edges", self.q_edges, "nm^-1"),
            ("gamma", self.gamma, "s^-1"),
            ("contrast", self.contrast, None),
            ("mean_counts", self.mean_counts, "counts/pixel/frame"),
            ("n_pixels", self.n_pixels, None),
            ("diffusion", spec.diffusion, "nm^2/s"),
            ("frame_period", spec.frame_period, "s"),
            ("q_per_pixel", spec.q_per_pixel, "nm^-1"),
            ("beam_center", np.asarray(spec.beam_center), "pixel"),
            ("seed", np.int64(spec.seed), None),
            ("block_pixels", np.int64(spec.block_pixels), None),
        ))


class SyntheticData(NamedTuple):
    """Result of :func:`generate`.

    Attributes
    ----------
    frames : numpy.ndarray
        ``(Nt, Ny, Nx)`` counts.
    labels : numpy.ndarray
        ``(Ny, Nx)`` int32 label image (0 = unused, bins 1..n_bins).
    q : numpy.ndarray
        ``(n_bins,)`` q per bin, nm^-1.
    g2 : callable
        ``g2(lags) -> (n_bins, n_lags)`` analytic g2, lags in frames
        (:meth:`SyntheticXPCS.analytic_g2`).
    """

    frames: np.ndarray
    labels: np.ndarray
    q: np.ndarray
    g2: Callable[..., np.ndarray]


def generate(spec: Optional[SyntheticSpec] = None, **kwargs) -> SyntheticData:
    """Generate a whole synthetic stack in memory.

    Parameters
    ----------
    spec : SyntheticSpec, optional
    **kwargs
        :class:`SyntheticSpec` fields (override ``spec``).

    Returns
    -------
    SyntheticData
        ``(frames, labels, q, g2)``, see :class:`SyntheticData`.
    """
    sim = SyntheticXPCS(spec, **kwargs)
    return SyntheticData(sim.frames(), sim.labels, sim.q, sim.analytic_g2)
