"""Mask and bin: q-bin label images from geometry, detector masks, automatic bad-pixel mask.

Geometry
--------
The momentum transfer of a pixel is ``q = 4π/λ · sin(2θ/2)`` (nm⁻¹, λ in nm), 2θ the scattering
angle of the pixel centre. The geometry is either

- a pyFAI PONI file (read with pyFAI when installed, else with the small parser here, which
  supports flat detectors whose pixel sizes are in the file, any rot1/rot2/rot3, orientation 3),
- or a beam centre (y0, x0) in pixels (pixel centres at integer indices), the sample–detector
  distance (m), the pixel size (m) and the wavelength (m) or energy (keV), detector normal to
  the beam.

Both follow pyFAI's conventions: with t = R·(p1 − poni1, p2 − poni2, L) the pixel position in
the sample frame, 2θ = atan2(√(t1² + t2²), t3) and the azimuth χ = atan2(t1, t2) (degrees here;
axis 1 is along rows (y), axis 2 along columns (x)).

Labels
------
``n_q`` q bins (explicit edges, or ``n_bins`` equal bins over a q range) times ``n_sectors``
azimuthal sectors give labels ``1 + i_q + n_q·i_sector``; 0 marks pixels outside every bin or
masked. A pixel at exactly the last edge belongs to the last bin.

Automatic bad-pixel mask (:func:`auto_bad_pixels`)
--------------------------------------------------
From ``n_sample`` frames spread evenly over the range (default 100; all if fewer), per pixel
total ``C_p`` (counts) and per group ``E`` = the mean of ``C_p`` over the *good* pixels of the
pixel's q bin (or of the whole detector without a label image; two passes, so hot pixels do not
raise ``E``). A pixel is

- *flagged* if any sampled value equals the maximum of a 16- or 32-bit integer type (the value
  Eiger/Lima detectors give gaps and defective pixels) or is negative;
- *hot* if ``C_p > hot_factor·E + hot_min_counts`` (defaults 20 and 10 counts). For a speckle
  frozen in time the total is exponentially distributed, so a live pixel exceeds 20·E with
  probability e⁻²⁰;
- *dead* if ``C_p = 0`` while ``E ≥ dead_min_counts`` (default 20 counts, so that a live pixel
  of Poisson statistics stays silent with probability ≲ e⁻²⁰; sparse data are never flagged);
- an *outlier* of its ring (with a label image; ``mad_threshold`` k, default 15): with ``m`` the
  median and MAD the median absolute deviation of ``C_p`` over the good pixels of the bin,
  ``C_p − m > k·max(1.4826·MAD, √m, 1)`` — hot relative to its ring although below the
  ``hot_factor`` rule (√m: the Poisson floor where the MAD vanishes at low counts). The totals
  of a pixel average many speckle realisations when the sample moves; a static speckle of full
  contrast (exponential totals) has 1.4826·MAD = 0.71·mean and loses e^(−0.69−0.71k) of its
  pixels, 1·10⁻⁵ at k = 15 (4·10⁻⁴ at k = 10): set ``mad_threshold=None`` for static samples.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Union

import numpy

from ..engine.qmask import Binning, as_label_image, present_labels, remember_binning
from .cancellation import chunk_sum

__all__ = [
    "Geometry",
    "read_poni",
    "q_chi_maps",
    "make_q_edges",
    "make_sectors",
    "label_image",
    "QBinning",
    "combine_masks",
    "auto_bad_pixels",
    "build_qmask",
    "HC_KEV_M",
]

#: h·c in keV·m: λ[m] = HC_KEV_M / E[keV].
HC_KEV_M = 1.239841984332e-9


@dataclass
class Geometry:
    """Detector geometry in pyFAI's convention (SI units).

    Attributes
    ----------
    distance : float
        Sample to point of normal incidence (PONI) distance, m.
    poni1, poni2 : float
        PONI coordinates along rows (y) and columns (x) from the detector's first corner, m.
    rot1, rot2, rot3 : float
        Detector rotations, radians.
    wavelength : float
        m.
    pixel1, pixel2 : float
        Pixel sizes along rows and columns, m.
    detector : str
        Detector name (informative).
    """

    distance: float
    poni1: float
    poni2: float
    wavelength: float
    pixel1: float
    pixel2: float
    rot1: float = 0.0
    rot2: float = 0.0
    rot3: float = 0.0
    detector: str = ""
    source: str = ""

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise ValueError unless distance, pixel sizes and wavelength are finite and > 0 and
        the PONI and rotations finite; the message names the source and the field."""
        where = f"geometry from {self.source}" if self.source else "geometry"
        for name, unit, positive in (("distance", "m", True), ("pixel1", "m", True),
                                     ("pixel2", "m", True), ("wavelength", "m", True),
                                     ("poni1", "m", False), ("poni2", "m", False),
                                     ("rot1", "rad", False), ("rot2", "rad", False),
                                     ("rot3", "rad", False)):
            value = getattr(self, name)
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: {name} must be a number ({unit}), got {value!r}") \
                    from None
            if not math.isfinite(v) or (positive and not v > 0):
                need = "a finite value > 0" if positive else "finite"
                raise ValueError(f"{where}: {name} must be {need} ({unit}), got {value!r}")

    @classmethod
    def from_beam_center(
        cls,
        beam_center,
        distance: float,
        pixel_size,
        wavelength: Optional[float] = None,
        energy: Optional[float] = None,
    ) -> "Geometry":
        """Geometry of a detector normal to the beam.

        Parameters
        ----------
        beam_center : (float, float)
            (y0, x0) in pixels, pixel centres at integer indices.
        distance : float
            Sample–detector distance, m.
        pixel_size : float or (float, float)
            Pixel size (rows, columns), m.
        wavelength : float, optional
            m. Or ``energy`` in keV.
        """
        if beam_center is None or len(beam_center) != 2:
            raise ValueError(f"beam_center must be (y0, x0) in pixels, got {beam_center!r}")
        try:
            y0, x0 = (float(v) for v in beam_center)
        except (TypeError, ValueError):
            raise ValueError(f"beam_center must be two numbers (y0, x0) in pixels, got "
                             f"{beam_center!r}") from None
        if not (math.isfinite(y0) and math.isfinite(x0)):
            raise ValueError(f"beam_center must be finite (pixels), got {beam_center!r}")
        p1, p2 = _pair(pixel_size, "pixel_size")
        wavelength = _wavelength(wavelength, energy)
        if distance is None or not float(distance) > 0:
            raise ValueError(f"distance must be > 0 m, got {distance!r}")
        return cls(
            distance=float(distance),
            poni1=(y0 + 0.5) * p1,
            poni2=(x0 + 0.5) * p2,
            wavelength=wavelength,
            pixel1=p1,
            pixel2=p2,
            source="beam centre",
        )

    @property
    def beam_center(self) -> Tuple[float, float]:
        """(y0, x0) in pixels of the PONI (the direct beam when there is no rotation)."""
        return self.poni1 / self.pixel1 - 0.5, self.poni2 / self.pixel2 - 0.5

    def as_dict(self) -> Dict[str, Union[float, str]]:
        return {
            k: getattr(self, k)
            for k in (
                "distance",
                "poni1",
                "poni2",
                "rot1",
                "rot2",
                "rot3",
                "wavelength",
                "pixel1",
                "pixel2",
                "detector",
                "source",
            )
        }


def _pair(value, name) -> Tuple[float, float]:
    if value is None:
        raise ValueError(f"{name} is required (m)")
    try:
        v = numpy.atleast_1d(numpy.asarray(value, dtype=numpy.float64))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be one or two positive values (m), got {value!r}") from None
    if v.size == 1:
        v = numpy.repeat(v, 2)
    if v.size != 2 or not numpy.all((v > 0) & numpy.isfinite(v)):
        raise ValueError(f"{name} must be one or two positive values (m), got {value!r}")
    return float(v[0]), float(v[1])


def _wavelength(wavelength, energy) -> float:
    if wavelength is not None and energy is not None:
        raise ValueError("give the wavelength (m) or the energy (keV), not both")
    if wavelength is None and energy is None:
        raise ValueError("the wavelength (m) or the energy (keV) is required")
    if energy is not None:
        if not _finite_positive(energy):
            raise ValueError(f"energy must be a finite value > 0 keV, got {energy!r}")
        return HC_KEV_M / float(energy)
    if not _finite_positive(wavelength):
        raise ValueError(f"wavelength must be a finite value > 0 m, got {wavelength!r}")
    if float(wavelength) > 1e-6:
        raise ValueError(
            f"wavelength {wavelength!r} m is implausible for X-rays: give it in metres"
        )
    return float(wavelength)


def _finite_positive(value) -> bool:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and v > 0


# ------------------------------------------------------------------------------ PONI files
#: Numeric fields of a PONI file (lower case) and their units.
_PONI_NUMBERS = {"distance": "m", "poni1": "m", "poni2": "m", "rot1": "rad", "rot2": "rad",
                 "rot3": "rad", "wavelength": "m", "pixelsize1": "m", "pixelsize2": "m"}


def _check_poni_fields(filename: str, values: dict) -> None:
    """Raise ValueError naming the file and the first malformed field of a parsed PONI file."""
    import json

    for key, unit in _PONI_NUMBERS.items():
        if key in values:
            try:
                float(values[key])
            except ValueError:
                raise ValueError(f"PONI file {filename!r}: field {key!r} is not a number "
                                 f"({unit}): {values[key]!r}") from None
    if "detector_config" in values:
        try:
            config = json.loads(values["detector_config"])
        except ValueError as e:
            raise ValueError(f"PONI file {filename!r}: field 'detector_config' is not valid "
                             f"JSON ({e})") from None
        if not isinstance(config, dict):
            raise ValueError(f"PONI file {filename!r}: field 'detector_config' is not a JSON "
                             "object")
        orientation = config.get("orientation", 3)
        if isinstance(orientation, bool) or not isinstance(orientation, int):
            raise ValueError(f"PONI file {filename!r}: field 'detector_config' has orientation "
                             f"{orientation!r}, not an integer")


def _parse_poni_text(text: str) -> dict:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        values[key.strip().lower()] = value.strip()
    return values


def read_poni(filename, use_pyfai: Optional[bool] = None) -> Geometry:
    """Read a pyFAI PONI file.

    Parameters
    ----------
    filename : str
    use_pyfai : bool, optional
        Use pyFAI (None: when it is installed). Without pyFAI the file must give the pixel sizes
        (``PixelSize1/2`` or ``Detector_config`` with ``pixel1/2``) and orientation 3.

    Raises
    ------
    FileNotFoundError
        Missing file.
    ValueError
        Not a PONI file, missing keys, unsupported detector description.
    """
    import json

    filename = os.fspath(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"PONI file {filename!r} does not exist")
    with open(filename, "r", errors="replace") as f:
        values = _parse_poni_text(f.read())
    missing = [k for k in ("distance", "poni1", "poni2") if k not in values]
    if missing:
        raise ValueError(f"{filename!r} is not a PONI file: missing {', '.join(missing)}")
    _check_poni_fields(filename, values)
    if use_pyfai is None:
        try:
            import pyFAI  # noqa: F401

            use_pyfai = True
        except ImportError:
            use_pyfai = False
    if use_pyfai:
        import pyFAI

        try:
            ai = pyFAI.load(filename)
            det = ai.detector
        except Exception as e:  # pyFAI's reasons vary: one line naming the file instead
            raise ValueError(f"PONI file {filename!r}: pyFAI cannot read it: "
                             f"{type(e).__name__}: {e}") from None
        if getattr(det, "orientation", 3) not in (0, 3):
            raise ValueError(
                f"{filename!r}: detector orientation {int(det.orientation)} is not supported (use 3)"
            )
        if not ai.wavelength:
            raise ValueError(f"{filename!r} has no wavelength")
        return Geometry(
            distance=ai.dist,
            poni1=ai.poni1,
            poni2=ai.poni2,
            rot1=ai.rot1,
            rot2=ai.rot2,
            rot3=ai.rot3,
            wavelength=ai.wavelength,
            pixel1=det.pixel1,
            pixel2=det.pixel2,
            detector=det.name,
            source=os.path.abspath(filename),
        )
    p1 = values.get("pixelsize1")
    p2 = values.get("pixelsize2")
    name = values.get("detector", "")
    if "detector_config" in values:
        try:
            config = json.loads(values["detector_config"])
        except ValueError:
            raise ValueError(f"{filename!r}: unreadable Detector_config") from None
        p1 = config.get("pixel1", p1)
        p2 = config.get("pixel2", p2)
        if int(config.get("orientation", 3)) not in (0, 3):
            raise ValueError(
                f"{filename!r}: detector orientation {config['orientation']} needs pyFAI"
            )
    if p1 is None or p2 is None:
        raise ValueError(
            f"{filename!r}: detector {name!r} gives no pixel size; install pyFAI "
            "(pip install ewoksxpcs[pyfai]) to read detector definitions"
        )
    if "wavelength" not in values:
        raise ValueError(f"{filename!r} has no wavelength")
    try:
        pixel1, pixel2 = float(p1), float(p2)
    except (TypeError, ValueError):
        raise ValueError(f"PONI file {filename!r}: pixel size {p1!r}, {p2!r} is not a number "
                         "(m)") from None
    return Geometry(  # checks the values, naming the file and the field
        distance=float(values["distance"]),
        poni1=float(values["poni1"]),
        poni2=float(values["poni2"]),
        rot1=float(values.get("rot1", 0)),
        rot2=float(values.get("rot2", 0)),
        rot3=float(values.get("rot3", 0)),
        wavelength=float(values["wavelength"]),
        pixel1=pixel1,
        pixel2=pixel2,
        detector=name,
        source=os.path.abspath(filename),
    )


# ------------------------------------------------------------------------------ q and chi
def q_chi_maps(shape, geometry: Geometry) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """q (nm⁻¹) and azimuth χ (degrees, in (−180, 180]) of every pixel centre.

    Parameters
    ----------
    shape : (int, int)
        (Ny, Nx).
    geometry : Geometry

    Returns
    -------
    q, chi : ndarray, (Ny, Nx) float64
    """
    g = geometry
    ny, nx = (int(n) for n in shape)
    p1 = (numpy.arange(ny, dtype=numpy.float64) + 0.5) * g.pixel1 - g.poni1
    p2 = (numpy.arange(nx, dtype=numpy.float64) + 0.5) * g.pixel2 - g.poni2
    c1, c2, c3 = math.cos(g.rot1), math.cos(g.rot2), math.cos(g.rot3)
    s1, s2, s3 = math.sin(g.rot1), math.sin(g.rot2), math.sin(g.rot3)
    r1 = numpy.array([[1.0, 0.0, 0.0], [0.0, c1, s1], [0.0, -s1, c1]])
    r2 = numpy.array([[c2, 0.0, -s2], [0.0, 1.0, 0.0], [s2, 0.0, c2]])
    r3 = numpy.array([[c3, -s3, 0.0], [s3, c3, 0.0], [0.0, 0.0, 1.0]])
    rot = r3 @ r2 @ r1
    P1, P2 = numpy.meshgrid(p1, p2, indexing="ij")
    t1 = rot[0, 0] * P1 + rot[0, 1] * P2 + rot[0, 2] * g.distance
    t2 = rot[1, 0] * P1 + rot[1, 1] * P2 + rot[1, 2] * g.distance
    t3 = rot[2, 0] * P1 + rot[2, 1] * P2 + rot[2, 2] * g.distance
    tth = numpy.arctan2(numpy.hypot(t1, t2), t3)
    wavelength_nm = g.wavelength * 1e9
    q = 4.0 * numpy.pi / wavelength_nm * numpy.sin(tth / 2.0)
    chi = numpy.degrees(numpy.arctan2(t1, t2))
    return q, chi


def make_q_edges(
    q_edges=None, n_bins: Optional[int] = None, q_range=None, q_map=None, log: bool = False
) -> numpy.ndarray:
    """q bin edges (n_q + 1,) nm⁻¹: given, or ``n_bins`` bins over ``q_range`` (default: the
    range of ``q_map``), equal in q (or in log q with ``log``)."""
    if q_edges is not None:
        if n_bins is not None or q_range is not None:
            raise ValueError("give either q_edges or n_bins/q_range, not both")
        edges = numpy.asarray(q_edges, dtype=numpy.float64).ravel()
        if (
            edges.size < 2
            or not numpy.all(numpy.diff(edges) > 0)
            or not numpy.all(numpy.isfinite(edges))
        ):
            raise ValueError(
                f"q_edges must be at least 2 increasing finite values (nm^-1), got {q_edges!r}"
            )
        return edges
    if n_bins is None:
        raise ValueError("give q_edges or n_bins (with an optional q_range) to bin in q")
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if q_range is None:
        if q_map is None:
            raise ValueError("q_range is required without a geometry")
        q_range = (float(numpy.min(q_map)), float(numpy.max(q_map)))
    if len(q_range) != 2 or not (0 <= float(q_range[0]) < float(q_range[1])):
        raise ValueError(
            f"q_range must be (q_min, q_max) with 0 <= q_min < q_max (nm^-1), got {q_range!r}"
        )
    qmin, qmax = float(q_range[0]), float(q_range[1])
    if log:
        if qmin <= 0:
            raise ValueError("log-spaced q bins need q_min > 0")
        return numpy.geomspace(qmin, qmax, int(n_bins) + 1)
    return numpy.linspace(qmin, qmax, int(n_bins) + 1)


def make_sectors(sectors=None, n_sectors: Optional[int] = None) -> Optional[numpy.ndarray]:
    """Azimuthal sectors as (n_s, 2) [χ_min, χ_max) in degrees, or None for full circles.

    ``n_sectors`` equal sectors from −180°; explicit sectors may wrap (e.g. [170, -170]).
    """
    if sectors is not None and n_sectors is not None:
        raise ValueError("give sectors or n_sectors, not both")
    if n_sectors is not None:
        n = int(n_sectors)
        if n < 1:
            raise ValueError(f"n_sectors must be >= 1, got {n_sectors}")
        if n == 1:
            return None
        edges = numpy.linspace(-180.0, 180.0, n + 1)
        return numpy.stack([edges[:-1], edges[1:]], axis=1)
    if sectors is None:
        return None
    s = numpy.asarray(sectors, dtype=numpy.float64)
    if s.ndim == 1 and s.size == 2:
        s = s[None, :]
    if s.ndim != 2 or s.shape[1] != 2 or not numpy.all(numpy.isfinite(s)):
        raise ValueError(
            f"sectors must be a list of [chi_min, chi_max] pairs in degrees, got {sectors!r}"
        )
    return s


def _in_sector(chi: numpy.ndarray, lo: float, hi: float) -> numpy.ndarray:
    width = (hi - lo) % 360.0
    if width == 0 and hi != lo:
        width = 360.0
    return ((chi - lo) % 360.0) < width


def label_image(q_map, q_edges, chi_map=None, sectors=None, mask=None) -> numpy.ndarray:
    """Label image (Ny, Nx) int32: ``1 + i_q + n_q·i_sector``, 0 outside bins or masked.

    Parameters
    ----------
    q_map : ndarray (Ny, Nx)
        nm⁻¹.
    q_edges : ndarray (n_q + 1,)
        nm⁻¹, increasing; the last bin includes its upper edge.
    chi_map : ndarray (Ny, Nx), optional
        Azimuth, degrees (needed with sectors).
    sectors : ndarray (n_s, 2), optional
        [χ_min, χ_max) degrees; a pixel in several sectors takes the first.
    mask : ndarray of bool (Ny, Nx), optional
        True = excluded.
    """
    q_map = numpy.asarray(q_map, dtype=numpy.float64)
    edges = numpy.asarray(q_edges, dtype=numpy.float64)
    n_q = edges.size - 1
    iq = numpy.searchsorted(edges, q_map, side="right") - 1
    iq[q_map == edges[-1]] = n_q - 1
    inside = (iq >= 0) & (iq < n_q)
    labels = numpy.where(inside, iq + 1, 0).astype(numpy.int32)
    if sectors is not None:
        if chi_map is None:
            raise ValueError("azimuthal sectors need the azimuth of every pixel (a geometry)")
        sector_of = numpy.full(q_map.shape, -1, dtype=numpy.int64)
        for i, (lo, hi) in enumerate(sectors):
            sel = (sector_of < 0) & _in_sector(numpy.asarray(chi_map), float(lo), float(hi))
            sector_of[sel] = i
        labels = numpy.where(inside & (sector_of >= 0), iq + 1 + n_q * sector_of, 0).astype(
            numpy.int32
        )
    if mask is not None:
        labels[numpy.asarray(mask, dtype=bool)] = 0
    return labels


# ------------------------------------------------------------------------------ masks
def combine_masks(shape, masks=None) -> numpy.ndarray:
    """OR of detector masks (arrays, ``.npy``/EDF files or HDF5 URLs; non-zero = bad).

    Returns
    -------
    ndarray of bool, (Ny, Nx)
    """
    from ..io.load import read_image

    out = numpy.zeros(tuple(shape), dtype=bool)
    if masks is None:
        return out
    if isinstance(masks, (str, os.PathLike)) or (hasattr(masks, "ndim") and numpy.ndim(masks) == 2):
        masks = [masks]
    for m in masks:
        image = read_image(m, name="mask")
        if image.shape != out.shape:
            raise ValueError(f"mask shape {image.shape} differs from the frame shape {out.shape}")
        out |= image != 0
    return out


def _sample_indices(n_frames: int, n_sample: int) -> numpy.ndarray:
    if n_frames <= n_sample:
        return numpy.arange(n_frames)
    return numpy.unique(numpy.linspace(0, n_frames - 1, n_sample).round().astype(numpy.int64))


#: Frames of the bad-pixel sample read at once (an Eiger 4M frame is 8.9 MB; their stored chunks
#: are read together, so that the scattered reads of a cold disk overlap).
SAMPLE_BATCH = 16


def pixel_totals(frames, n_sample: int = 100):
    """Per-pixel totals over a sample of frames and a flag of detector-flagged values.

    Returns
    -------
    totals : ndarray (Ny, Nx) float64
        Counts summed over the sampled frames.
    flagged : ndarray (Ny, Nx) bool
        A sampled value equals the 16/32-bit integer maximum, or is negative.
    n_used : int
        Number of frames sampled.
    """
    from ..engine.events import EventStack

    if isinstance(frames, EventStack):
        ny, nx = frames.frame_shape
        tot = numpy.zeros(ny * nx)
        owner = numpy.repeat(numpy.arange(frames.n_pixels), frames.events_per_pixel)
        tot[frames.pixel_index] = numpy.bincount(
            owner, weights=frames.values.astype(numpy.float64), minlength=frames.n_pixels
        )
        flagged = numpy.zeros(ny * nx, dtype=bool)
        if frames.dtype.kind in "iu" and frames.dtype.itemsize >= 2 and frames.n_events:
            bad_ev = frames.values == numpy.iinfo(frames.dtype).max
            if bad_ev.any():
                flagged[numpy.repeat(frames.pixel_index, frames.events_per_pixel)[bad_ev]] = True
        return tot.reshape(ny, nx), flagged.reshape(ny, nx), frames.n_frames
    from ..engine.frames import ArrayFrameSource

    source = frames
    n_frames = source.n_frames
    if n_frames is None:
        raise ValueError("the automatic bad-pixel mask needs a frame source of known length")
    idx = _sample_indices(n_frames, int(n_sample))
    if hasattr(source, "read_frames"):
        read = source.read_frames
    elif isinstance(source, ArrayFrameSource):
        r = source._range

        def read(some):
            return numpy.stack([numpy.asarray(source.array[r[int(i)]]) for i in some])
    else:
        raise TypeError(f"cannot sample frames from {type(source).__name__}")
    held = [read(idx[:SAMPLE_BATCH])]
    dtype, shape = held[0].dtype, tuple(held[0].shape[1:])  # the frames' own type

    def sample_batches():  # the first batch read above (then let go), the others as used
        yield held.pop()
        for b0 in range(SAMPLE_BATCH, idx.size, SAMPLE_BATCH):
            yield read(idx[b0:b0 + SAMPLE_BATCH])

    if dtype.kind == "u":
        # Unsigned (detector counts): read by batches (memory: a batch, not the sample),
        # summed exactly (chunk_sum: a 32-bit accumulator for 1-2 byte values), the flagged
        # values (the type's maximum) counted and taken out at the end: the same numbers as
        # float64 sums of the sample without them, 2x faster than a masked sum.
        top = int(numpy.iinfo(dtype).max) if dtype.itemsize >= 2 else None
        totals = numpy.zeros(shape, dtype=numpy.int64)
        n_bad = numpy.zeros(shape, dtype=numpy.int64)
        for block in sample_batches():
            totals += chunk_sum(block, numpy.int64)
            if top is not None:
                n_bad += (block == top).sum(axis=0, dtype=numpy.uint32)
        if top is not None:
            totals -= top * n_bad
        return totals.astype(numpy.float64), n_bad > 0, len(idx)
    if dtype.kind == "i":
        # Signed: exact int64 sums by batches, the flagged values (maximum, negative) left out.
        flagged = numpy.zeros(shape, dtype=bool)
        acc = numpy.zeros(shape, dtype=numpy.int64)
        top = numpy.iinfo(dtype).max if dtype.itemsize >= 2 else None
        for block in sample_batches():
            bad = block < 0 if top is None else (block == top) | (block < 0)
            flagged |= bad.any(axis=0)
            acc += block.sum(axis=0, dtype=numpy.int64, where=~bad)
        return acc.astype(numpy.float64), flagged, len(idx)
    sample = numpy.concatenate(list(sample_batches()))
    flag_values = numpy.zeros(sample.shape, dtype=bool)
    if dtype.kind == "f":
        flag_values |= sample < 0
    flagged = flag_values.any(axis=0)
    totals = numpy.where(flag_values, 0, sample).sum(axis=0, dtype=numpy.float64)
    return totals, flagged, len(idx)


def _ring_outliers(tot, groups, use, k: float) -> numpy.ndarray:
    """Pixels above their bin's median by more than k robust standard deviations (per-bin MAD
    test of the module docstring), (n_pix,) bool."""
    out = numpy.zeros(tot.size, dtype=bool)
    idx = numpy.flatnonzero(use & (groups > 0))
    if not idx.size:
        return out
    order = idx[numpy.argsort(groups[idx], kind="stable")]
    g_sorted = groups[order]
    starts = numpy.flatnonzero(numpy.r_[True, g_sorted[1:] != g_sorted[:-1]])
    med = numpy.zeros(int(groups.max()) + 1)
    sig = numpy.full(med.size, numpy.inf)
    for a, b in zip(starts, numpy.r_[starts[1:], order.size]):
        v = tot[order[a:b]]
        m = numpy.median(v)
        mad = numpy.median(numpy.abs(v - m))
        med[g_sorted[a]], sig[g_sorted[a]] = m, max(1.4826 * mad, math.sqrt(max(m, 0.0)), 1.0)
    return (groups > 0) & (tot - med[groups] > k * sig[groups])


def auto_bad_pixels(
    frames,
    labels=None,
    mask=None,
    n_sample: int = 100,
    hot_factor: float = 20.0,
    hot_min_counts: float = 10.0,
    dead_min_counts: float = 20.0,
    mad_threshold: Optional[float] = 15.0,
):
    """Hot, dead, ring-outlier and detector-flagged pixels, by the rule of the module docstring.

    Parameters
    ----------
    frames : FrameSource or EventStack
    labels : ndarray (Ny, Nx) of int, optional
        q bins: each pixel is compared with its bin (else with the whole detector).
    mask : ndarray of bool (Ny, Nx), optional
        Already excluded pixels (ignored in the statistics).
    n_sample : int
        Frames sampled, evenly spread.
    hot_factor, hot_min_counts, dead_min_counts : float
        Thresholds, see the module docstring (counts summed over the sampled frames).
    mad_threshold : float or None
        k of the per-bin outlier (MAD) test; None: no such test (also without ``labels``).

    Returns
    -------
    bad : ndarray of bool (Ny, Nx)
    stats : dict
        ``n_hot``, ``n_dead``, ``n_flagged``, ``n_sample`` and the rule's parameters.
    """
    totals, flagged, n_used = pixel_totals(frames, n_sample)
    shape = totals.shape
    excluded = numpy.zeros(shape, dtype=bool) if mask is None else numpy.asarray(mask, dtype=bool)
    groups = (
        numpy.zeros(shape, dtype=numpy.int64)
        if labels is None
        else numpy.asarray(labels, dtype=numpy.int64)
    )
    if groups.shape != shape:
        raise ValueError(f"label image shape {groups.shape} differs from the frame shape {shape}")
    if labels is not None:
        groups = numpy.where(groups > 0, groups, 0)
    usable = ~excluded & ~flagged
    if labels is not None:
        usable &= groups > 0
    flat_g = groups.ravel()
    n_groups = int(flat_g.max()) + 1 if flat_g.size else 1
    tot = totals.ravel()
    hot = numpy.zeros(tot.size, dtype=bool)
    for _ in range(2):  # second pass: expectation without the hot pixels of the first
        use = usable.ravel() & ~hot
        cnt = numpy.bincount(flat_g[use], minlength=n_groups)
        s = numpy.bincount(flat_g[use], weights=tot[use], minlength=n_groups)
        expected = numpy.where(cnt > 0, s / numpy.maximum(cnt, 1), 0.0)
        e = expected[flat_g]
        hot = tot > hot_factor * e + hot_min_counts
    dead = (tot == 0) & (e >= dead_min_counts)
    outlier = numpy.zeros(tot.size, dtype=bool)
    if labels is not None and mad_threshold is not None:
        outlier = _ring_outliers(tot, flat_g, usable.ravel() & ~hot, float(mad_threshold))
    considered = (~excluded).ravel()
    if labels is not None:
        considered &= flat_g > 0
    flag = flagged.ravel() & considered
    hot &= considered & ~flag
    dead &= considered & ~flag
    outlier &= considered & ~flag & ~hot
    bad = (hot | dead | flag | outlier).reshape(shape)
    stats = dict(
        n_hot=int(hot.sum()),
        n_outliers=int(outlier.sum()),
        mad_threshold=None if mad_threshold is None else float(mad_threshold),
        n_dead=int(dead.sum()),
        n_flagged=int(flag.sum()),
        n_sample=int(n_used),
        hot_factor=float(hot_factor),
        hot_min_counts=float(hot_min_counts),
        dead_min_counts=float(dead_min_counts),
    )
    return bad, stats


# ------------------------------------------------------------------------------ all together
@dataclass
class QBinning:
    """A q-mask with what describes its bins (output of :func:`build_qmask`).

    Attributes
    ----------
    qmask : ndarray (Ny, Nx) int32
        Label image, 0 = unused (bad pixels set to 0).
    labels : ndarray (n_bins,) int64
        Bin labels, sorted; every per-bin array follows this order.
    q : ndarray (n_bins,) float64
        q of each bin: mean q of its pixels (nm⁻¹), or values given; NaN when unknown.
    q_unit : str
        "nm^-1", or "" when q is unknown (then ``q`` holds the labels).
    q_edges : ndarray (n_q + 1,) or None
        nm⁻¹.
    chi : ndarray (n_bins,) float64 or None
        Centre of each bin's azimuthal sector, degrees.
    n_pixels : ndarray (n_bins,) int64
        Unmasked pixels per bin.
    bad_pixels : ndarray (Ny, Nx) bool
        Pixels excluded by the detector masks and the automatic rule.
    info : dict
        How it was built (geometry, mask statistics).
    """

    qmask: numpy.ndarray
    labels: numpy.ndarray
    q: numpy.ndarray
    q_unit: str
    q_edges: Optional[numpy.ndarray]
    chi: Optional[numpy.ndarray]
    n_pixels: numpy.ndarray
    bad_pixels: numpy.ndarray
    info: dict = field(default_factory=dict)


def build_qmask(
    frame_shape,
    qmask=None,
    q_values=None,
    poni=None,
    beam_center=None,
    distance=None,
    pixel_size=None,
    wavelength=None,
    energy=None,
    q_edges=None,
    n_bins=None,
    q_range=None,
    log_bins: bool = False,
    sectors=None,
    n_sectors=None,
    mask=None,
    frames=None,
    auto_mask: bool = False,
    auto_mask_options: Optional[dict] = None,
    file_mask: bool = True,
) -> QBinning:
    """Build the q-mask: from a label image or from geometry, with masks.

    Parameters
    ----------
    frame_shape : (int, int)
        (Ny, Nx) of the frames.
    qmask : array_like (Ny, Nx), str or os.PathLike, optional
        Label image (array, ``.npy``/EDF file, HDF5 URL). With a geometry too, q per bin is the
        mean q of its pixels.
    q_values : array_like (n_labels,) or URL, optional
        q of each label of ``qmask`` (nm⁻¹), in sorted label order.
    poni : str, optional
        pyFAI PONI file.
    beam_center, distance, pixel_size, wavelength, energy
        Geometry without a PONI file: (y0, x0) pixels, m, m, m, keV.
    q_edges, n_bins, q_range, log_bins
        q bins (nm⁻¹) for a geometry.
    sectors, n_sectors
        Azimuthal sectors (degrees), see :func:`make_sectors`.
    mask : array_like, str, or list of them, optional
        Detector masks, non-zero = bad.
    frames : FrameSource or EventStack, optional
        Data for the automatic bad-pixel mask.
    auto_mask : bool
        Apply :func:`auto_bad_pixels` (needs ``frames``).
    auto_mask_options : dict, optional
        Keyword arguments of :func:`auto_bad_pixels`.
    file_mask : bool
        Also mask the pixels of the detector's own mask stored with ``frames`` (NXdetector
        ``pixel_mask``, Eiger ``detectorSpecific/pixel_mask``; non-zero = bad), when present.
    """
    from ..io.load import read_image

    shape = tuple(int(n) for n in frame_shape)
    if len(shape) != 2:
        raise ValueError(f"frame_shape must be (Ny, Nx), got {frame_shape!r}")
    geometric = [
        n
        for n, v in (
            ("beam_center", beam_center),
            ("distance", distance),
            ("pixel_size", pixel_size),
            ("wavelength", wavelength),
            ("energy", energy),
        )
        if v is not None
    ]
    if poni is not None and geometric:
        raise ValueError(f"give a PONI file or {', '.join(geometric)}, not both")
    geometry = None
    if poni is not None:
        geometry = read_poni(poni)
    elif geometric:
        geometry = Geometry.from_beam_center(beam_center, distance, pixel_size, wavelength, energy)
    if qmask is None and geometry is None:
        raise ValueError(
            "no q-mask: give a label image (qmask), a PONI file, or the beam centre, "
            "distance, pixel size and wavelength"
        )
    q_map = chi_map = None
    if geometry is not None:
        q_map, chi_map = q_chi_maps(shape, geometry)
    bad = combine_masks(shape, mask)
    from ..engine.events import EventStack

    info: dict = {}
    if file_mask and frames is not None and hasattr(frames, "pixel_mask"):
        # The detector's own mask (module gaps, dead pixels) stored with the frames.
        own, where = frames.pixel_mask()
        if own is not None and own.shape == shape:
            bad |= own
            info["file_mask"] = {"source": where, "n_masked": int(own.sum())}

    if isinstance(frames, EventStack):
        # Pixels dropped at compaction have no events: they cannot be binned.
        kept = numpy.zeros(shape[0] * shape[1], dtype=bool)
        kept[frames.pixel_index] = True
        bad |= ~kept.reshape(shape)
    info["geometry"] = geometry.as_dict() if geometry else None
    edges = sector_array = None
    if qmask is not None:
        labels_img = read_image(qmask, name="qmask")
        if labels_img.shape != shape:
            raise ValueError(f"qmask shape {labels_img.shape} differs from the frame shape {shape}")
        labels_img = as_label_image(labels_img)  # int32 range, integer values
        if any(v is not None for v in (q_edges, n_bins, q_range, sectors, n_sectors)):
            raise ValueError("q bins and sectors apply to a geometry, not to a given label image")
        labels_img = numpy.maximum(labels_img, 0)  # int32
        info["qmask"] = qmask if isinstance(qmask, (str, os.PathLike)) else "array"
    else:
        edges = make_q_edges(q_edges, n_bins, q_range, q_map, log=log_bins)
        sector_array = make_sectors(sectors, n_sectors)
        labels_img = label_image(q_map, edges, chi_map, sector_array)
    labels = present_labels(labels_img)
    if qmask is None:
        n_q = edges.size - 1
        n_s = 1 if sector_array is None else sector_array.shape[0]
        labels = numpy.arange(1, n_q * n_s + 1, dtype=numpy.int64)
    if labels.size == 0:
        raise ValueError("the q-mask has no bin: no pixel falls in the q range")
    if auto_mask:
        if frames is None:
            raise ValueError("auto_mask needs the frames")
        auto_bad, stats = auto_bad_pixels(
            frames, labels=labels_img, mask=bad, **(auto_mask_options or {})
        )
        bad |= auto_bad
        info["auto_mask"] = stats
    info["n_masked"] = int(bad.sum())
    labels_img = numpy.where(bad, 0, labels_img).astype(numpy.int32, copy=False)
    if not (labels_img > 0).any():
        raise ValueError("every pixel of the q-mask is masked")
    # The Binning of Correlate, built here once (it sorts the pixels by bin) and kept with the
    # label image (pipeline.make_binning finds it).
    binning = Binning(labels_img, labels=labels)
    remember_binning(labels_img, binning)
    n_pixels = binning.n_pixels
    # q per bin.
    q_unit = "nm^-1"
    if q_values is not None:
        q = numpy.asarray(read_image_1d(q_values), dtype=numpy.float64)
        if q.shape != labels.shape:
            raise ValueError(
                f"q_values has {q.size} values for {labels.size} labels {labels.tolist()[:10]}"
            )
    elif q_map is not None:
        # Per bin, in raster order: the same sums as a bincount over the image.
        row = numpy.repeat(numpy.arange(labels.size), n_pixels)
        s = numpy.bincount(row, weights=q_map.ravel()[binning.pixel_index],
                           minlength=labels.size)
        with numpy.errstate(invalid="ignore", divide="ignore"):
            q = s / n_pixels
        if edges is not None:
            n_q = edges.size - 1
            centres = 0.5 * (edges[:-1] + edges[1:])
            empty = n_pixels == 0
            q[empty] = centres[(labels[empty] - 1) % n_q]
    else:
        q = labels.astype(numpy.float64)
        q_unit = ""
    chi = None
    if sector_array is not None:
        n_q = edges.size - 1
        lo, hi = sector_array[:, 0], sector_array[:, 1]
        width = (hi - lo) % 360.0
        width[width == 0] = 360.0
        centre = (lo + width / 2.0 + 180.0) % 360.0 - 180.0
        chi = centre[(labels - 1) // n_q]
    return QBinning(
        qmask=labels_img,
        labels=labels,
        q=q,
        q_unit=q_unit,
        q_edges=edges,
        chi=chi,
        n_pixels=n_pixels,
        bad_pixels=bad,
        info=info,
    )


def read_image_1d(source) -> numpy.ndarray:
    """A 1-D array from a sequence, a ``.npy`` file or an HDF5 URL."""
    if isinstance(source, (str, os.PathLike)):
        from ..io.load import _check_file, _import_hdf5, parse_url

        filename, data_path, _ = parse_url(source)
        _check_file(filename)
        if filename.endswith(".npy"):
            return numpy.load(filename).ravel()
        h5py = _import_hdf5()
        with h5py.File(filename, "r") as f:
            if not data_path or data_path not in f:
                raise ValueError(f"{filename!r} has no dataset {data_path!r}")
            return numpy.asarray(f[data_path][()]).ravel()
    return numpy.asarray(source).ravel()
