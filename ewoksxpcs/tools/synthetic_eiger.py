"""Fast writer of large synthetic Eiger scans (Bliss/Lima layout) with a known g2.

:func:`write_eiger_scan` writes ``data_000000.h5, data_000001.h5, ...`` (each
``/entry/data/data`` (k, Ny, Nx), one bitshuffle+LZ4 chunk per frame, like Lima) and a master
``scan.h5`` whose ``/1.1/measurement/<detector>`` is a virtual dataset over them, with the frame
period where :func:`ewoksxpcs.io.load.read_frame_period` finds it and the truth in
``/1.1/simulation``. It is meant for end-to-end benchmarks at full Eiger 4M size (2162 x 2068,
10 000 frames): files are written by parallel processes.

Model
-----
A circular complex Gaussian field ``E`` (``<|E|^2> = 1``) lives on a coarse grid of cells of
``speckle_px`` x ``speckle_px`` pixels (the pixels of a cell share it). It evolves as an AR(1)
process, ``E(t) = rho E(t-1) + sqrt(1 - rho^2) w(t)``, ``E(0)`` stationary. The intensity of a
pixel is ``I = mu ((1 - a) + a |E|^2)`` with ``a = sqrt(beta)``, ``mu = counts``, and its counts
are Poisson(I), independently given ``I`` (same model as :mod:`ewoksxpcs.tools.synthetic`). Hence,
for the ensemble average over the pixels of a ring (ring ``b`` has ``rho_b``)::

    g2(tau) = 1 + beta rho_b^(2 tau)              tau >= 1 frame
    g2(0)   = 1 + beta + 1 / mu                    (Poisson shot noise)

Pixels of one cell are correlated: this does not change the ensemble g2, only its variance
(about ``speckle_px**2`` fewer independent speckles than pixels).

Rings: ``rho`` may give one value per ring; ring ``b`` holds the cells whose centre lies at a
distance from the detector centre in ``[b, b + 1) * r_max / n_rings`` (equal widths, ``r_max``
the farthest cell centre). The truth stores the label image (ring + 1 per pixel, 0 on gaps).

Photons: for every frame, the number of photons on the detector is drawn as
``N ~ Poisson(sum_cells I_c n_c)`` (``n_c`` non-gap pixels of cell ``c``), each photon falls in
cell ``c`` with probability ``I_c n_c / sum`` (inverse CDF of sorted uniforms) and then on a
uniform non-gap pixel of the cell: an exact Poisson process given ``I``, far cheaper than one
Poisson draw per pixel at low counts. Counts are clipped to the dtype maximum minus one.

Gaps: with ``gaps=True`` the module gaps hold the dtype maximum (65535 for uint16) in every
frame, like real Eiger data (:func:`eiger_gap_mask`).

Files and random numbers
------------------------
``numpy.random.SeedSequence(seed)`` is spawned into one child for the field at the file
boundaries and one per file. The boundary fields ``B_i = E(t_i)`` (``t_i`` the first frame of
file ``i``) form the exact AR(1) chain ``B_{i+1} = rho^k_i B_i + sqrt(1 - rho^(2 k_i)) w'``. A
file's frames are an AR(1) path from ``B_i`` conditioned to reach ``B_{i+1}`` (an AR(1) bridge:
the free path ``X`` corrected by ``c(t) (B_{i+1} - X(t_{i+1}))``,
``c = rho^(T-t) (1 - rho^(2(t-s))) / (1 - rho^(2(T-s)))``), so each file is written
independently, the field is continuous across files and the whole scan has exactly the AR(1)
statistics. The output depends only on the parameters and ``seed``, not on the number of
processes.
"""

from __future__ import annotations

import math
import os
import time
from typing import Optional, Sequence, Tuple, Union

import numpy

from ..io.save import atomic_output

__all__ = [
    "EIGER_GEOMETRIES",
    "DEFAULT_RHO",
    "eiger_module_layout",
    "eiger_gap_mask",
    "write_eiger_scan",
    "read_eiger_truth",
    "eiger_g2",
]

#: Known Eiger detectors: frame shape (Ny, Nx) -> (module (rows, cols), gap (rows, cols)).
#: Eiger2 modules are 512 x 1028 pixels with 38-row and 12-column gaps (Eiger2 4M: 4 x 2
#: modules, 4*512 + 3*38 = 2162 rows, 2*1028 + 12 = 2068 columns); Eiger (1) modules are
#: 514 x 1030 with 37-row and 10-column gaps (Eiger 4M: 2167 x 2070).
EIGER_GEOMETRIES = {
    (512, 1028): ((512, 1028), (38, 12)),  # Eiger2 500K
    (1062, 1028): ((512, 1028), (38, 12)),  # Eiger2 1M
    (2162, 2068): ((512, 1028), (38, 12)),  # Eiger2 4M
    (3262, 3108): ((512, 1028), (38, 12)),  # Eiger2 9M
    (4362, 4148): ((512, 1028), (38, 12)),  # Eiger2 16M
    (1065, 1030): ((514, 1030), (37, 10)),  # Eiger 1M
    (2167, 2070): ((514, 1030), (37, 10)),  # Eiger 4M
    (3269, 3110): ((514, 1030), (37, 10)),  # Eiger 9M
    (4371, 4150): ((514, 1030), (37, 10)),  # Eiger 16M
}

#: Default AR(1) field factor per frame of 8 rings, ``exp(-0.002 (b + 1)^2)`` (relaxation rate
#: growing as q^2, ring index ~ q): intensity correlation times 1 / (2 Gamma) from 250 frames
#: (inner ring) to 4 frames (outer ring).
DEFAULT_RHO = tuple(math.exp(-0.002 * (b + 1) ** 2) for b in range(8))

_DETECTOR = "eiger"
_SCAN = "1.1"
_DATA_PATH = "/entry/data/data"


# ---------------------------------------------------------------------------------- geometry
def _split(n: int, parts: int, gap: int):
    """(start, stop) of ``parts`` modules separated by ``gap`` filling ``n`` pixels."""
    free = n - (parts - 1) * gap
    if free < parts:
        raise ValueError(f"{n} pixels cannot hold {parts} modules with gaps of {gap}")
    sizes = [free // parts + (1 if i < free % parts else 0) for i in range(parts)]
    spans, pos = [], 0
    for s in sizes:
        spans.append((pos, pos + s))
        pos += s + gap
    return spans


def eiger_module_layout(shape) -> Tuple[list, list]:
    """Row and column spans of the detector modules of an Eiger frame of ``shape``.

    Known detectors (:data:`EIGER_GEOMETRIES`) use their real module and gap sizes. Any other
    shape gets an Eiger2 4M-like layout: 4 x 2 modules, gaps of the same relative size (at least
    one pixel), module sizes as equal as possible.

    Returns
    -------
    (rows, cols) : lists of (start, stop)
        Pixel index spans of the module rows and columns; the rest are gaps.
    """
    ny, nx = (int(n) for n in shape)
    known = EIGER_GEOMETRIES.get((ny, nx))
    if known is not None:
        (my, mx), (gy, gx) = known
        rows = [(i * (my + gy), i * (my + gy) + my) for i in range((ny + gy) // (my + gy))]
        cols = [(j * (mx + gx), j * (mx + gx) + mx) for j in range((nx + gx) // (mx + gx))]
        return rows, cols
    gy = max(1, round(ny * 38 / 2162))
    gx = max(1, round(nx * 12 / 2068))
    return _split(ny, 4, gy), _split(nx, 2, gx)


def eiger_gap_mask(shape) -> numpy.ndarray:
    """(Ny, Nx) bool image, True on the gaps between the modules (see
    :func:`eiger_module_layout`)."""
    ny, nx = (int(n) for n in shape)
    rows, cols = eiger_module_layout((ny, nx))
    in_row = numpy.zeros(ny, bool)
    in_col = numpy.zeros(nx, bool)
    for a, b in rows:
        in_row[a:b] = True
    for a, b in cols:
        in_col[a:b] = True
    return ~(in_row[:, None] & in_col[None, :])


class _Geometry:
    """Cells, rings and non-gap pixels of a detector."""

    def __init__(self, shape, speckle_px: int, n_rings: int, gaps: bool):
        ny, nx = shape
        s = speckle_px
        self.shape = (ny, nx)
        self.cy, self.cx = -(-ny // s), -(-nx // s)
        self.n_cells = self.cy * self.cx
        self.gap = eiger_gap_mask(shape) if gaps else numpy.zeros(shape, bool)
        cell = (numpy.arange(ny)[:, None] // s) * self.cx + (numpy.arange(nx)[None, :] // s)
        cell = cell.ravel()
        valid = numpy.flatnonzero(~self.gap.ravel())
        cell_of = cell[valid]
        order = numpy.argsort(cell_of, kind="stable")
        self.cell_pix = valid[order].astype(numpy.int64)
        self.n_valid = numpy.bincount(cell_of, minlength=self.n_cells).astype(numpy.int64)
        self.ptr = numpy.concatenate([[0], numpy.cumsum(self.n_valid)[:-1]])
        # ring of every cell from the distance of its centre to the detector centre
        y0, x0 = (ny - 1) / 2.0, (nx - 1) / 2.0
        first_y, first_x = numpy.arange(self.cy) * s, numpy.arange(self.cx) * s
        yc = (first_y + numpy.minimum(first_y + s, ny) - 1) / 2.0  # cell centres
        xc = (first_x + numpy.minimum(first_x + s, nx) - 1) / 2.0
        r = numpy.hypot(yc[:, None] - y0, xc[None, :] - x0).ravel()
        rmax = float(r.max()) if r.size else 0.0
        self.ring_edges = numpy.linspace(0.0, rmax, n_rings + 1)
        ring = numpy.floor(r / max(rmax, 1e-300) * n_rings).astype(numpy.int64)
        self.ring = numpy.clip(ring, 0, n_rings - 1)
        labels = (self.ring[cell] + 1).astype(numpy.int32)
        labels[self.gap.ravel()] = 0
        self.labels = labels.reshape(ny, nx)
        self.beam_center = (y0, x0)


# ---------------------------------------------------------------------------------- simulation
def _normals(rng, n: int) -> numpy.ndarray:
    """n circular complex Gaussians with <|w|^2> = 1."""
    w = rng.standard_normal((2, n), dtype=numpy.float32)
    out = numpy.empty(n, numpy.complex128)
    out.real = w[0]
    out.imag = w[1]
    out *= math.sqrt(0.5)
    return out


def _boundary_fields(ss, rho_cell, frames_per_file, upto: int):
    """B_0 .. B_upto, the field at the first frame of files 0 .. upto (exact AR(1) chain)."""
    rng = numpy.random.Generator(numpy.random.SFC64(ss))
    b = _normals(rng, rho_cell.size)
    out = [b]
    for j in range(upto):
        k = frames_per_file[j]
        decay = rho_cell**k
        b = decay * b + numpy.sqrt(1.0 - decay**2) * _normals(rng, rho_cell.size)
        out.append(b)
    return out


def _field_frames(task: dict, geo: "_Geometry"):
    """Yield the field of every cell, (n_cells,) complex128, for the frames of file
    ``task['index']``: an AR(1) bridge between the boundary fields (module docstring)."""
    rho = numpy.asarray(task["rho"], dtype=numpy.float64)
    rho_cell = rho[geo.ring]
    s_cell = numpy.sqrt(1.0 - rho_cell**2)
    i, n_files = task["index"], task["n_files"]
    ks = task["frames_per_file"]
    k = ks[i]
    last = i == n_files - 1
    children = numpy.random.SeedSequence(task["seed"]).spawn(1 + n_files)
    bounds = _boundary_fields(children[0], rho_cell, ks, i if last else i + 1)
    field_ss = children[1 + i].spawn(2)[0]
    correction = delta = None
    if not last:
        # pass 1: the free path's field at the next file's first frame
        rng = numpy.random.Generator(numpy.random.SFC64(field_ss))
        x = bounds[i].copy()
        for _ in range(k):
            x *= rho_cell
            x += s_cell * _normals(rng, geo.n_cells)
        delta = bounds[i + 1] - x
        j = numpy.arange(k, dtype=numpy.float64)[:, None]
        # bridge coefficients c(t) per frame of the file and ring
        correction = rho[None, :] ** (k - j) * (1.0 - rho[None, :] ** (2 * j)) / (
            1.0 - rho[None, :] ** (2 * k)
        )
    # pass 2: the same innovations again, corrected
    rng = numpy.random.Generator(numpy.random.SFC64(field_ss))
    x = bounds[i].copy()
    e = numpy.empty_like(x)
    for jf in range(k):
        if jf:
            x *= rho_cell
            x += s_cell * _normals(rng, geo.n_cells)
        if correction is None:
            e[...] = x
        else:
            numpy.multiply(correction[jf][geo.ring], delta, out=e)
            e += x
        yield e


def _write_data_file(task: dict) -> dict:
    """Simulate and write data file ``task['index']`` (runs in a worker process)."""
    import h5py
    import hdf5plugin

    t_start = time.perf_counter()
    geo = _Geometry(task["shape"], task["speckle_px"], len(task["rho"]), task["gaps"])
    i = task["index"]
    k = task["frames_per_file"][i]
    file_ss = numpy.random.SeedSequence(task["seed"]).spawn(1 + task["n_files"])[1 + i]
    photon_ss = file_ss.spawn(2)[1]  # [0]: the field (_field_frames)
    mu = float(task["counts"])
    a = math.sqrt(float(task["beta"]))
    dtype = numpy.dtype(task["dtype"])
    maxval = int(numpy.iinfo(dtype).max)
    ny, nx = geo.shape
    npix = ny * nx
    gap_flat = numpy.flatnonzero(geo.gap.ravel())
    weight_pix = geo.n_valid.astype(numpy.float64)
    has = numpy.flatnonzero(geo.n_valid)
    last_cell = int(has[-1]) if has.size else 0

    rng_ph = numpy.random.Generator(numpy.random.SFC64(photon_ss))
    n_photons = 0
    # Overwriting was checked by write_eiger_scan; a failure leaves no partial file.
    with atomic_output(task["filename"], overwrite=True) as tmpname:
        with h5py.File(tmpname, "w") as f:
            f.attrs["NX_class"] = "NXroot"
            f.attrs["creator"] = "ewoksxpcs.tools.synthetic_eiger"
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            grp = entry.create_group("data")
            grp.attrs["NX_class"] = "NXdata"
            grp.attrs["signal"] = "data"
            dset = grp.create_dataset(
                "data",
                shape=(k, ny, nx),
                dtype=dtype,
                chunks=(1, ny, nx),
                **hdf5plugin.Bitshuffle(cname="lz4"),
            )
            dset.attrs["interpretation"] = "image"
            jf = 0
            for e in _field_frames(task, geo):
                inten = e.real**2 + e.imag**2
                inten *= a
                inten += 1.0 - a
                inten *= mu  # I per pixel of the cell
                cum = numpy.cumsum(inten * weight_pix)
                total = float(cum[-1]) if cum.size else 0.0
                n = int(rng_ph.poisson(total)) if total > 0 else 0
                frame = numpy.zeros(npix, dtype)
                if n:
                    # sorted uniforms (exponential spacings): fast sorted searchsorted
                    sp = numpy.cumsum(rng_ph.standard_exponential(n + 1))
                    u = sp[:-1] * (total / sp[-1])
                    cells = numpy.minimum(numpy.searchsorted(cum, u, side="right"), last_cell)
                    nv = geo.n_valid[cells]
                    off = (rng_ph.random(n) * nv).astype(numpy.int64)
                    numpy.minimum(off, nv - 1, out=off)
                    pix = geo.cell_pix[geo.ptr[cells] + off]
                    where, cnt = numpy.unique(pix, return_counts=True)
                    frame[where] = numpy.minimum(cnt, maxval - 1)
                    n_photons += n
                frame[gap_flat] = maxval
                dset[jf] = frame.reshape(ny, nx)
                jf += 1
            if jf != k:
                raise RuntimeError(f"generated {jf} frames instead of {k}")
    return {
        "index": i,
        "frames": k,
        "photons": n_photons,
        "seconds": time.perf_counter() - t_start,
        "bytes": os.path.getsize(task["filename"]),
    }


# ---------------------------------------------------------------------------------- writer
def write_eiger_scan(
    directory,
    n_frames: int = 10000,
    shape: Tuple[int, int] = (2162, 2068),
    counts: float = 0.01,
    frames_per_file: int = 1000,
    speckle_px: int = 4,
    beta: float = 0.3,
    rho: Union[float, Sequence[float], None] = None,
    dtype="uint16",
    processes: int = 0,
    seed: int = 0,
    gaps: bool = True,
    frame_period: float = 1e-3,
    detector: str = _DETECTOR,
    overwrite: bool = False,
    stats: Optional[dict] = None,
) -> str:
    """Write a synthetic Eiger scan (data files + Bliss-like master) with a known g2.

    Parameters
    ----------
    directory : str or os.PathLike
        Output directory (created if needed): ``scan.h5`` and ``data_000000.h5``, ...
    n_frames : int
        Frames of the scan.
    shape : (int, int)
        Frame shape (Ny, Nx); (2162, 2068) is an Eiger2 4M.
    counts : float
        Mean photons per non-gap pixel per frame, ``mu`` (> 0).
    frames_per_file : int
        Frames per data file (the last file may hold fewer).
    speckle_px : int
        Side of the square cells (pixels) sharing one field value.
    beta : float
        Speckle contrast, ``0 < beta <= 1``.
    rho : float or sequence of float, optional
        Field correlation factor per frame, ``0 <= rho < 1``, one per ring (default
        :data:`DEFAULT_RHO`, 8 rings).
    dtype : str or numpy.dtype
        uint8, uint16 (default) or uint32.
    processes : int
        Writer processes (spawned); 0: one per CPU, at most one per file; 1: this process.
        Does not change the output.
    seed : int
        Seed of the random numbers.
    gaps : bool
        Module gaps (value: dtype maximum) as on a real Eiger (:func:`eiger_gap_mask`).
    frame_period : float
        Seconds, stored as the detector's frame period and exposure time.
    detector : str
        Detector name in the master file.
    overwrite : bool
        Replace existing files (default: FileExistsError).
    stats : dict, optional
        Filled with ``per_file`` (list of dicts: frames, photons, seconds, bytes) and
        ``seconds`` (wall time).

    Returns
    -------
    str
        Absolute name of the master file; frames at ``<master>::/1.1/measurement/<detector>``,
        truth in ``/1.1/simulation`` (:func:`read_eiger_truth`).
    """
    import h5py

    from .synthetic import write_bliss_scan_header

    t_start = time.perf_counter()
    n_frames, frames_per_file, speckle_px = int(n_frames), int(frames_per_file), int(speckle_px)
    shape = tuple(int(n) for n in shape)
    if n_frames < 1 or frames_per_file < 1 or speckle_px < 1:
        raise ValueError("n_frames, frames_per_file and speckle_px must be >= 1")
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (Ny, Nx) with Ny, Nx >= 1, got {shape}")
    if not counts > 0:
        raise ValueError(f"counts must be > 0, got {counts}")
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    rho = DEFAULT_RHO if rho is None else rho
    rho = numpy.atleast_1d(numpy.asarray(rho, dtype=numpy.float64))
    if rho.ndim != 1 or rho.size < 1 or not numpy.all((rho >= 0) & (rho < 1)):
        raise ValueError(f"rho must be one or more values in [0, 1), got {rho}")
    dtype = numpy.dtype(dtype)
    if dtype not in (numpy.dtype("uint8"), numpy.dtype("uint16"), numpy.dtype("uint32")):
        raise ValueError(f"dtype must be uint8, uint16 or uint32, got {dtype}")
    if not frame_period > 0:
        raise ValueError(f"frame_period must be > 0 s, got {frame_period}")
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    master = os.path.join(directory, "scan.h5")
    n_files = -(-n_frames // frames_per_file)
    ks = [min(frames_per_file, n_frames - i * frames_per_file) for i in range(n_files)]
    names = [f"data_{i:06d}.h5" for i in range(n_files)]
    if not overwrite:
        for name in [master] + [os.path.join(directory, n) for n in names]:
            if os.path.exists(name):
                raise FileExistsError(f"File exists (use overwrite=True): {name!r}")
    geo = _Geometry(shape, speckle_px, rho.size, gaps)  # validates the shape early
    tasks = [
        dict(
            index=i,
            n_files=n_files,
            frames_per_file=ks,
            filename=os.path.join(directory, names[i]),
            shape=shape,
            counts=float(counts),
            speckle_px=speckle_px,
            beta=float(beta),
            rho=rho.tolist(),
            dtype=dtype.str,
            seed=int(seed),
            gaps=bool(gaps),
        )
        for i in range(n_files)
    ]
    processes = int(processes) or (os.cpu_count() or 1)
    processes = max(1, min(processes, n_files))
    if processes == 1:
        results = [_write_data_file(t) for t in tasks]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: safe with threads in this process; a pool of futures reports a worker that
        # dies (BrokenProcessPool) instead of waiting for it forever
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
            results = list(pool.map(_write_data_file, tasks))

    ny, nx = shape
    with atomic_output(master, overwrite=True) as tmpname:
        with h5py.File(tmpname, "w") as f:
            entry, det = write_bliss_scan_header(
                f,
                _SCAN,
                detector,
                f"eiger_scan {detector} {n_frames} frames {frame_period:g} s",
                n_frames,
                frame_period,
                frame_period,
                creator="ewoksxpcs.tools.synthetic_eiger",
            )
            layout = h5py.VirtualLayout((n_frames, ny, nx), dtype)
            t0 = 0
            for name, k in zip(names, ks):
                # relative names: HDF5 finds them next to the master
                layout[t0 : t0 + k] = h5py.VirtualSource(name, _DATA_PATH, shape=(k, ny, nx))
                t0 += k
            dset = det.create_virtual_dataset("data", layout, fillvalue=0)
            dset.attrs["interpretation"] = "image"
            if geo.gap.any():  # the detector's own mask, as NXdetector has it (non-zero = bad)
                det.create_dataset("pixel_mask", data=geo.gap.astype(numpy.uint32),
                                   compression="gzip")
            meas = entry.create_group("measurement")
            meas.attrs["NX_class"] = "NXcollection"
            meas[detector] = dset  # hard link
            _write_truth(entry.create_group("simulation"), geo, rho, beta, counts, speckle_px,
                         seed, n_frames, frames_per_file, frame_period, dtype)
            entry["end_time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if stats is not None:
        stats["per_file"] = sorted(results, key=lambda r: r["index"])
        stats["seconds"] = time.perf_counter() - t_start
    return master


def _write_truth(grp, geo, rho, beta, counts, speckle_px, seed, n_frames, frames_per_file,
                 frame_period, dtype):
    from .synthetic import write_quantities

    grp.attrs["NX_class"] = "NXcollection"
    grp["model"] = (
        "g2(ring b, tau) = 1 + beta*rho[b]**(2*tau) for tau >= 1 frame, 1 + beta + 1/counts at "
        "tau = 0; AR(1) complex Gaussian field on cells of speckle_px**2 pixels, "
        "I = counts*((1-a)+a*|E|^2), a = sqrt(beta), counts ~ Poisson(I); labels = ring + 1, "
        "0 on module gaps (value = dtype max)"
    )
    grp.create_dataset("labels", data=geo.labels, compression="gzip")
    grp.create_dataset("gap_mask", data=geo.gap.astype(numpy.uint8), compression="gzip")
    write_quantities(grp, (
        ("beta", float(beta), None),
        ("rho", rho, "per frame"),
        ("counts", float(counts), "counts/pixel/frame"),
        ("ring_edges", geo.ring_edges, "pixel"),
        ("beam_center", numpy.asarray(geo.beam_center), "pixel"),
        ("speckle_px", numpy.int64(speckle_px), "pixel"),
        ("seed", numpy.int64(seed), None),
        ("n_frames", numpy.int64(n_frames), None),
        ("frames_per_file", numpy.int64(frames_per_file), None),
        ("frame_period", float(frame_period), "s"),
        ("gap_value", numpy.int64(numpy.iinfo(dtype).max), None),
    ))


def read_eiger_truth(master, scan: str = _SCAN) -> dict:
    """The truth stored by :func:`write_eiger_scan`: labels (Ny, Nx) int32 (ring + 1, 0 on
    gaps), gap_mask (Ny, Nx) bool, rho (n_rings,), beta, counts, ring_edges, beam_center,
    speckle_px, seed, n_frames, frames_per_file, frame_period (s), gap_value."""
    import h5py

    with h5py.File(master, "r") as f:
        grp = f[f"{scan}/simulation"]
        out = {}
        for name, node in grp.items():
            value = node[()]
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, numpy.generic):
                value = value.item()
            out[name] = value
    out["gap_mask"] = numpy.asarray(out["gap_mask"], bool)
    out["rho"] = numpy.atleast_1d(out["rho"])
    return out


def eiger_g2(beta: float, rho, lags, counts: Optional[float] = None) -> numpy.ndarray:
    """Ensemble g2 of every ring: ``1 + beta rho^(2 lag)``, plus ``1/counts`` at lag 0 when
    ``counts`` is given.

    Returns
    -------
    numpy.ndarray
        (n_rings, n_lags) float64; lags in frames.
    """
    rho = numpy.atleast_1d(numpy.asarray(rho, dtype=numpy.float64))
    lags = numpy.atleast_1d(numpy.asarray(lags, dtype=numpy.float64))
    g2 = 1.0 + beta * rho[:, None] ** (2.0 * lags[None, :])
    if counts is not None:
        g2 = g2 + (lags[None, :] == 0) / counts
    return g2
