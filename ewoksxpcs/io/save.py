"""Results on disk: a NeXus HDF5 file (``silx view`` opens on g2) and a PNG of the g2 curves.

Layout of the result file (``n_q`` bins, ``n_τ`` delays, Nt frames, (Ny, Nx) detector)::

    /                        NXroot   @default=entry
    /entry                   NXentry  @default=xpcs   title, start_time
    /entry/xpcs              NXprocess @default=g2
        program, version, date, mode, method, device, auto_reason
        parameters           NXcollection: every workflow parameter, one group per step
        g2                   NXdata  signal g2 (n_q, n_τ) float64 with g2_errors,
                                     axes q (nm⁻¹) and tau (s); labels, n_pixels, lags (frames);
                                     expected_pairs (n_q, n_τ): photon pairs of uncorrelated
                                     light at each lag (g2 is NaN below 10, see normalise)
        fit                  NXdata  gamma (s⁻¹) vs q with errors; every parameter of the
                                     model (exp, kww, double: ewoksxpcs.engine.fit) with errors,
                                     chi2_red, status (0 = ok, meanings in status_meaning)
            power_law        NXcollection  gamma = D·q^n: D, n with errors, D2 (n = 2)
        excluded_frames      NXdata  1 for the frames excluded from every pair (bad frames)
        segments             NXdata  mean intensity per time segment and bin (stability),
            partial_g2       NXdata  g2 of each segment (n_seg, n_q, n_τ)
        qmask                NXdata  label image (Ny, Nx) int32 (0 = unused)
        mean_image           NXdata  mean counts per pixel per frame (Ny, Nx) float64
        intensity            NXdata  mean counts per pixel per frame of each bin vs time
                                     (n_q, Nt), axes q and time (s)
        pixels_per_bin       NXdata  n_pixels vs q
        sums                 NXcollection: n2, s2 (n_q, n_τ), frame_sums (Nt, n_q): the exact
                                     sums g2 was computed from (int64 for integer frames)

Mode ``multitau``: ``g2`` is the multi-tau g2 (log-spaced τ), with ``level`` and ``n_pairs``
per delay, ``normalisation`` and ``lags_per_level``; ``sums`` holds n2 and d2 (the
denominator: s2 of each level for the standard normalisation). Mode ``twotime``: ``g2`` is the
g2 derived from the two-time maps (diagonal means, standard error of the mean) of the selected
bins, ``intensity`` is per time bin, and::

        twotime              NXcollection  time_bin, n_frames
            maps             NXdata  signal C (n_sel, nT, nT) float32, @interpretation image
                                     (one map per bin: an image stack in ``silx view``), axes
                                     labels, t1, t2 (s); q, frame_sums, n_pixels
            g2               NXdata  derived g2 vs labels and tau (s)
            partial_g2       NXdata  g2 of successive age segments

Writing is atomic, and the result and its PNG are one commit: both are written as unnamed
files in their directories (``O_TMPFILE``: even SIGKILL leaves nothing), the PNG drawn
meanwhile in a helper process (:mod:`ewoksxpcs.io.pngproc`), then both are named and renamed
into place, SIGTERM/SIGINT held for those few system calls. A failure (a full disk), a
cancellation or a kill leaves the old pair or nothing; an existing file is replaced only with
``overwrite``; an input file never (see :mod:`ewoksxpcs.io.inputfiles`). Files get the umask's
mode.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import tempfile
import threading
import time
from typing import List, Optional, Sequence

import numpy

from .inputfiles import check_not_input

__all__ = [
    "check_output",
    "save_results",
    "plot_g2",
    "save_formats",
    "save_figure",
    "figure_png",
    "PendingFile",
    "LiveMapsFile",
    "commit",
    "atomic_output",
    "default_png",
    "current_umask",
    "warm_up_plotting",
]

MAX_PARAMETER_ELEMENTS = 4096


def check_output(filename, overwrite: bool = False) -> str:
    """Check that ``filename`` can be written; return its absolute path.

    Raises
    ------
    FileExistsError
        The file exists and ``overwrite`` is False.
    ValueError
        The directory does not exist, the name is a directory.
    PermissionError
        The directory is not writable (checked by creating a probe file).
    """
    if filename is None or not os.fspath(filename):
        raise ValueError("no output file name given")
    filename = os.path.abspath(os.fspath(filename))
    directory = os.path.dirname(filename)
    if not os.path.isdir(directory):
        raise ValueError(f"output directory {directory!r} does not exist")
    if os.path.isdir(filename):
        raise ValueError(f"output {filename!r} is a directory")
    if os.path.exists(filename) and not overwrite:
        raise FileExistsError(f"output file {filename!r} exists (use overwrite to replace it)")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".ewoksxpcs-probe-")
    except OSError as e:
        raise PermissionError(
            f"output directory {directory!r} is not writable ({e.strerror})"
        ) from None
    os.close(fd)
    os.remove(probe)
    return filename


def current_umask() -> int:
    """The process's umask (read from /proc where possible: setting it is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    """Mode of a new file as ``open()`` would create it: 0666 less the umask."""
    return 0o666 & ~current_umask()


_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000


def _link_fd(fd: int, name: str) -> None:
    """Give the unnamed (O_TMPFILE) file ``fd`` the name ``name`` (which must not exist)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.linkat(fd, b"", _AT_FDCWD, os.fsencode(name), _AT_EMPTY_PATH) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.link(f"/proc/self/fd/{fd}", name, follow_symlinks=True)


class PendingFile:
    """A new file for ``target``, written unnamed and given its name only by :func:`commit`.

    On Linux the content lives in an unnamed file (``O_TMPFILE``) in the target's directory:
    a process killed even with SIGKILL leaves nothing behind. Elsewhere (or on file systems
    without ``O_TMPFILE``) it is a hidden ``.<name>.<random>.tmp`` removed on any exception
    (SIGTERM and SIGINT included, see :func:`ewoksxpcs.app.cli.main`). Either way the file gets
    the mode ``open()`` gives (0666 less the umask), not mkstemp's 0600.

    Attributes
    ----------
    file : io.BufferedRandom
        Binary file object to write (``h5py.File(pending.file, "w")`` works).
    """

    def __init__(self, target, overwrite: bool = False):
        self.target = check_output(target, overwrite)
        self.overwrite = overwrite
        self.directory = os.path.dirname(self.target)
        self.tmpname: Optional[str] = None
        try:
            fd = os.open(self.directory, os.O_TMPFILE | os.O_RDWR, 0o666)
        except (AttributeError, OSError):  # no O_TMPFILE here
            fd, self.tmpname = tempfile.mkstemp(dir=self.directory, prefix=self._prefix(),
                                                suffix=".tmp")
            os.fchmod(fd, _file_mode())
        self.file = os.fdopen(fd, "w+b")

    def _prefix(self) -> str:
        return f".{os.path.basename(self.target)}."

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def name_temporarily(self) -> str:
        """Flush to disk and give the content a hidden temporary name; return it."""
        self.file.flush()
        os.fsync(self.file.fileno())
        if self.tmpname is None:
            for _ in range(100):
                name = os.path.join(
                    self.directory, f"{self._prefix()}{os.urandom(6).hex()}.tmp"
                )
                try:
                    _link_fd(self.file.fileno(), name)
                except FileExistsError:
                    continue
                except OSError:  # unnamed files cannot be linked here: copy the content
                    self.tmpname = self._copy_to_named_file()
                    break
                self.tmpname = name
                break
            else:  # pragma: no cover
                raise FileExistsError(f"no free temporary name in {self.directory!r}")
        return self.tmpname

    def _copy_to_named_file(self) -> str:
        fd, name = tempfile.mkstemp(dir=self.directory, prefix=self._prefix(), suffix=".tmp")
        try:
            os.fchmod(fd, _file_mode())
            with os.fdopen(fd, "wb") as out:
                self.file.seek(0)
                shutil.copyfileobj(self.file, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            _remove(name)
            raise
        return name

    def discard(self) -> None:
        """Forget the content (close, remove any temporary name)."""
        try:
            self.file.close()
        except OSError:
            pass
        if self.tmpname is not None:
            _remove(self.tmpname)
            self.tmpname = None

    def __enter__(self) -> "PendingFile":
        return self

    def __exit__(self, exc_type, exc, tb):
        self.discard()
        return False


class _DeferSignals:
    """Hold SIGTERM and SIGINT (main thread only) while files are renamed; deliver them after."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __enter__(self):
        import signal

        self.saved = {}
        self.caught = []
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in self.SIGNALS:
            sig = getattr(signal, name)
            try:
                self.saved[sig] = signal.signal(sig, lambda s, f: self.caught.append(s))
            except (ValueError, OSError):  # pragma: no cover
                pass
        return self

    def __exit__(self, *exc):
        import signal

        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        for sig in self.caught:
            os.kill(os.getpid(), sig)
        return False


class LiveMapsFile:
    """The final result file of a live two-time run, started while the scan runs: the maps are
    written into it stripe by stripe as their columns become final, so that the end of the scan
    writes only the last stripe and the small datasets (the maps are n_sel × nT² float32: 1 GB
    for 10 bins of 5000 time bins, ~5 s to write and flush at the end on the development
    machine's disk).

    The file is a :class:`PendingFile` (unnamed until the final :func:`save_results` commits
    it) opened by h5py; the maps are a dataset ``/_live_maps`` (n_sel, nT, nT) float32, chunks
    of ``tile``² values, diagonal NaN as :meth:`~ewoksxpcs.engine.twotime.TwoTimeResult.write_nexus`
    writes it, which moves it into place. Each stripe written is flushed to disk by a
    background thread (``fdatasync``), so that the final flush has little left to do.

    Parameters
    ----------
    target : str
        The result file.
    n_sel : int
        Maps (selected bins).
    tile : int
        Time bins per side of the chunks; a stripe is ``tile`` columns (and their rows).
    """

    def __init__(self, target, n_sel: int, tile: int = 128):
        import concurrent.futures

        import h5py

        self.pending = PendingFile(target, overwrite=True)  # its overwrite is set at the end
        try:
            self.h5 = h5py.File(self.pending.file, "w")
            self.tile = int(tile)
            self.maps = self.h5.create_dataset(
                "_live_maps", shape=(n_sel, 0, 0), maxshape=(n_sel, None, None),
                chunks=(1, self.tile, self.tile), dtype=numpy.float32)
        except BaseException:
            self.pending.discard()
            raise
        self.written = 0  # C[:, :written, :written] is on disk
        self._sync = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="live-maps")
        self._synced = None

    def update(self, C: numpy.ndarray, final: bool = False) -> None:
        """Write the stripes of ``C`` (n_sel, nT, nT) float32, final up to nT, not written yet:
        whole ``tile`` stripes only (all of it with ``final``)."""
        n_t = C.shape[-1]
        end = n_t if final else (n_t // self.tile) * self.tile
        w = self.written
        if end <= w:
            return
        self.maps.resize((C.shape[0], end, end))
        k = numpy.arange(w, end)
        for j in range(C.shape[0]):
            cols = numpy.array(C[j, :end, w:end])  # the new columns, then their rows
            cols[k, k - w] = numpy.nan  # the diagonal is written apart (C_diagonal)
            self.maps[j, :end, w:end] = cols
            if w:
                self.maps[j, w:end, :w] = C[j, w:end, :w]
        self.written = end
        if not final:
            self.h5.flush()
            self.pending.file.flush()
            if self._synced is None or self._synced.done():  # the disk catches up meanwhile
                self._synced = self._sync.submit(os.fdatasync, self.pending.file.fileno())

    def finish(self, C: numpy.ndarray):
        """Write what remains of ``C``; the maps dataset (for
        :meth:`~ewoksxpcs.engine.twotime.TwoTimeResult.write_nexus`)."""
        self.update(C, final=True)
        if self._synced is not None:
            self._synced.result()
        return self.maps

    def discard(self) -> None:
        """Close and forget the file (the run ended otherwise, or it was committed)."""
        self._sync.shutdown(wait=True)
        try:
            self.h5.close()
        except Exception:  # noqa: BLE001  (already closed by save_results)
            pass
        self.pending.discard()


def commit(pending: Sequence[PendingFile]) -> List[str]:
    """Give every pending file its name, together; return the names.

    Each content is first flushed and named under a temporary name in its directory (where a
    full disk shows up), then the temporaries are renamed in order — SIGTERM/SIGINT held
    meanwhile — so the old files stay until every new file is complete. Put the file whose
    presence means "done" (the result) last. Without ``overwrite``, a target that appeared
    meanwhile is not replaced: the files already placed are removed again and
    FileExistsError is raised.
    """
    try:
        for p in pending:
            p.name_temporarily()
        placed: List[PendingFile] = []
        with _DeferSignals():
            try:
                for p in pending:
                    _place(p.tmpname, p.target, p.overwrite)
                    p.tmpname = None
                    placed.append(p)
            except BaseException:
                for p in placed:
                    if not p.overwrite:
                        _remove(p.target)
                raise
    finally:
        for p in pending:
            p.discard()
    return [p.target for p in pending]


class atomic_output:
    """Context manager: a temporary file name in the target's directory, renamed on success.

    ``with atomic_output(filename, overwrite) as tmp: write(tmp)`` for writers that need a
    file name (:class:`PendingFile` is preferred: nothing is left even after SIGKILL). On an
    exception the temporary file is removed and the target is untouched; the file gets the
    umask's mode. Without ``overwrite`` the rename refuses to replace a file that appeared
    meanwhile.
    """

    def __init__(self, filename, overwrite: bool = False):
        self.filename = check_output(filename, overwrite)
        self.overwrite = overwrite

    def __enter__(self) -> str:
        base = os.path.basename(self.filename)
        fd, self.tmp = tempfile.mkstemp(
            dir=os.path.dirname(self.filename), prefix=f".{base}.", suffix=".tmp"
        )
        os.fchmod(fd, _file_mode())
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            _remove(self.tmp)
            return False
        try:
            _place(self.tmp, self.filename, self.overwrite)
        finally:
            _remove(self.tmp)
        return False


def _place(tmp: str, target: str, overwrite: bool) -> None:
    """Rename ``tmp`` to ``target``; without ``overwrite``, never replace an existing target
    (a hard link fails if the target exists, where a rename would replace it).

    A replaced file is held open across the rename and closed by a background thread: its
    blocks are freed there, not in the rename (0.8 s for 1 GB on the development machine's
    disk, mounted with ``discard``). A process that dies meanwhile leaves nothing: the kernel
    closes the file."""
    if overwrite:
        try:
            old = os.open(target, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block us
        except OSError:
            old = None
        try:
            os.replace(tmp, target)
        finally:
            if old is not None:
                threading.Thread(target=os.close, args=(old,), name="free-replaced-file",
                                 daemon=True).start()
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise FileExistsError(f"output file {target!r} exists (use overwrite to replace it)") from None
    except OSError:  # no hard links on this file system
        if os.path.exists(target):
            raise FileExistsError(
                f"output file {target!r} exists (use overwrite to replace it)"
            ) from None
        os.replace(tmp, target)
        return
    _remove(tmp)


def _remove(name):
    try:
        os.remove(name)
    except FileNotFoundError:
        pass


def default_png(filename) -> str:
    """PNG name next to a result file: ``result.h5`` → ``result_g2.png``."""
    return os.path.splitext(os.fspath(filename))[0] + "_g2.png"


# ------------------------------------------------------------------------------ HDF5 helpers
def _write_value(group, name: str, value) -> None:
    """Write a parameter: scalars, strings, small arrays, nested dicts (as groups)."""
    name = str(name).replace("/", "_") or "_"
    if isinstance(value, dict):
        sub = group.create_group(name)
        sub.attrs["NX_class"] = "NXcollection"
        for k, v in value.items():
            _write_value(sub, k, v)
        return
    if value is None:
        group[name] = "None"
        return
    if isinstance(value, (bool, numpy.bool_)):
        group[name] = bool(value)
        return
    if isinstance(value, (int, float, numpy.integer, numpy.floating)):
        group[name] = value
        return
    if isinstance(value, (str, bytes, os.PathLike)):
        group[name] = os.fspath(value) if isinstance(value, os.PathLike) else value
        return
    if isinstance(value, (list, tuple, numpy.ndarray)):
        try:
            arr = numpy.asarray(value)
        except ValueError:
            arr = None
        if arr is not None and arr.dtype.kind in "biuf" and arr.size <= MAX_PARAMETER_ELEMENTS:
            group[name] = arr
            return
        if arr is not None and arr.dtype.kind in "biuf":
            group[name] = f"array of shape {arr.shape}, dtype {arr.dtype}"
            return
        if all(isinstance(v, str) for v in value):
            group[name] = json.dumps(list(value))
            return
    group[name] = repr(value)[:1000]


def _nxdata(parent, name: str, signal: str, axes=None, title: str = ""):
    g = parent.create_group(name)
    g.attrs["NX_class"] = "NXdata"
    g.attrs["signal"] = signal
    if axes:
        g.attrs["axes"] = list(axes)
        for i, a in enumerate(axes):
            if a != ".":
                g.attrs[f"{a}_indices"] = i
    if title:
        g["title"] = title
    return g


def _dataset(
    group, name, data, units: Optional[str] = None, long_name: Optional[str] = None, **attrs
):
    d = group.create_dataset(name, data=data)
    if units:
        d.attrs["units"] = units
    if long_name:
        d.attrs["long_name"] = long_name
    for k, v in attrs.items():
        d.attrs[k] = v
    return d


def gzip_image(group, name: str, data, level: int = 1):
    """Write an image as a gzip-compressed dataset, its chunks compressed in threads.

    h5py compresses the chunks one after the other (0.5 s for a float64 Eiger 4M image); zlib
    releases the GIL, so the chunks (bands of rows, about 1 MiB) are compressed by a thread
    pool and written with ``write_direct_chunk``. The file is the same as with
    ``compression="gzip"`` (any HDF5 reader decodes it).

    Parameters
    ----------
    group : h5py.Group
    name : str
    data : ndarray, (Ny, Nx)
    level : int
        zlib level. 1 (the events files' level too): half the CPU time of h5py's default 4
        for an Eiger 4M mean image (0.25 s against 0.45 s of one core) for a file 10 % larger
        (4.1 MB against 3.7 MB at 0.01 counts over 10 000 frames; q-mask 0.19 MB against
        0.13 MB).

    Returns
    -------
    h5py.Dataset
    """
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    data = numpy.ascontiguousarray(data)
    if data.size == 0:
        return group.create_dataset(name, data=data)
    ny, nx = data.shape
    rows = int(min(ny, max(1, (1 << 20) // max(1, nx * data.itemsize))))
    d = group.create_dataset(name, shape=data.shape, dtype=data.dtype, chunks=(rows, nx),
                             compression="gzip", compression_opts=level)

    def band(y):
        block = data[y:y + rows]
        if block.shape[0] < rows:  # the last chunk is stored whole, padded with the fill value
            block = numpy.concatenate([block, numpy.zeros((rows - block.shape[0], nx),
                                                          dtype=data.dtype)])
        return y, zlib.compress(memoryview(block).cast("B"), level)

    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        for y, blob in pool.map(band, range(0, ny, rows)):
            d.id.write_direct_chunk((y, 0), blob)
    return d


_SUMS_DESCRIPTION = {
    "linear": "g2 = n_pixels * n2 / s2; n2 = sum_t sum_p I(t,p) I(t+tau,p); "
    "s2 = sum_t S(t) S(t+tau), S = frame_sums",
    "multitau": "g2 = n_pixels * n2 / d2 per level L of frames summed 2^L at a time; "
    "n2 = sum_t sum_p X_L(t,p) X_L(t+k,p); d2 = s2 of the level (standard normalisation) or "
    "past sum * future sum / pairs (symmetric); frame_sums of the unsummed frames",
    "twotime": "frame_sums: counts per time bin and bin; the maps are under twotime/maps",
}


_PLOT_TITLES = {"multitau": "{} (multi-tau)", "twotime": "{} (from the two-time maps)"}


def _g2_title(result, mode: str) -> str:
    if mode == "multitau":
        return f"multi-tau g2(q, tau), {result.normalisation} normalisation"
    if mode == "twotime":
        return "g2(q, tau) from the two-time maps"
    return "g2(q, tau)"


def save_results(
    filename,
    result,
    q,
    tau,
    q_unit: str = "nm^-1",
    tau_unit: str = "s",
    qmask=None,
    mean_image=None,
    frame_period: Optional[float] = None,
    parameters: Optional[dict] = None,
    fit=None,
    chi=None,
    overwrite: bool = False,
    png: Optional[str] = None,
    cancel_token=None,
    title: str = "XPCS g2",
    segments=None,
    power_law=None,
    q_edges=None,
    geometry: Optional[dict] = None,
    inputs: Optional[Sequence[str]] = None,
    compress_maps="auto",
    maps_file: Optional[LiveMapsFile] = None,
    write_maps: bool = True,
) -> dict:
    """Write a :class:`~ewoksxpcs.engine.result.CorrelationResult` as NeXus (layout in the module doc).

    Parameters
    ----------
    filename : str
        Result file (.h5).
    result : CorrelationResult, MultiTauResult or TwoTimeResult
        Its ``info["mode"]`` ("linear" by default) selects the layout.
    q : ndarray (n_q,)
        q of each row of ``result`` (``q_unit``).
    tau : ndarray (n_τ,)
        Delays (``tau_unit``: s, or "frame" when the frame period is unknown).
    qmask : ndarray (Ny, Nx), optional
        Label image.
    mean_image : ndarray (Ny, Nx), optional
        Mean counts per pixel per frame.
    frame_period : float, optional
        s, for the time axis of the intensity.
    parameters : dict, optional
        Workflow parameters (nested dicts), recorded under ``xpcs/parameters``.
    fit : G2Fit, optional
        Written as ``xpcs/fit`` and drawn on the PNG (bins of status ok).
    segments : SegmentResult, optional
        Stability: ``xpcs/segments`` and a ``_stability.png``.
    power_law : PowerLawFit, optional
        Γ(q) = D·q^n: ``xpcs/fit/power_law`` and a ``_gamma.png``.
    chi : ndarray (n_q,), optional
        Azimuthal sector centre of each row, degrees.
    overwrite : bool
        Replace existing files.
    png : str, optional
        Also draw the g2 curves into this PNG file.
    cancel_token : CancelToken, optional
        Checked before the files are renamed into place.
    q_edges : ndarray (n_q + 1,), optional
        q bin edges (``q_unit``): ``g2/q_nominal`` holds the centre of each bin's interval.
    geometry : dict, optional
        :meth:`ewoksxpcs.workflow.maskbin.Geometry.as_dict`, written as ``xpcs/geometry`` (default: the
        one recorded in ``parameters``; "unknown" when the q-mask was given directly).

    inputs : sequence of str, optional
        Files the run read (:func:`ewoksxpcs.io.inputfiles.input_files`): no output may be
        one of them, even with ``overwrite``.
    compress_maps : bool or "auto"
        gzip the two-time maps: True, False (what a live run's updates use) or "auto" (small
        maps only), see :meth:`~ewoksxpcs.engine.twotime.TwoTimeResult.write_nexus`.
    maps_file : LiveMapsFile, optional
        Two-time: the file of ``filename`` whose maps were written while a live scan ran; the
        result is completed in it and committed (it is closed and discarded after).
    write_maps : bool
        Two-time: False writes the maps' diagonal only (a live run's updates of large maps).

    Returns
    -------
    dict
        ``{"filename": ..., "png": ... or None, "png_wait_s": seconds the commit waited for the
        PNGs once the result file was written, "png_drawn_in": "process", "thread" or None}``.

    Raises
    ------
    ValueError
        An output is an input, or the PNG is the result file.
    FileExistsError
        An output exists and ``overwrite`` is False.
    OSError
        Writing failed (e.g. no space left): the old files are untouched.

    Notes
    -----
    The result and its PNGs are committed together (:func:`commit`): all are written unnamed,
    the PNGs drawn in the helper process of :mod:`ewoksxpcs.io.pngproc` while the HDF5 file is
    written, then all renamed into place
    (the PNGs first, the result last); the old files stay until the new ones are complete.
    The result and the g2 PNG carry the same random ``commit`` id (root attribute of the
    result, ``ewoksxpcs commit`` text of the PNG).
    """
    import h5py

    q = numpy.asarray(q, dtype=numpy.float64)
    tau = numpy.asarray(tau, dtype=numpy.float64)
    g2 = numpy.asarray(result.g2, dtype=numpy.float64)
    if g2.shape != (q.size, tau.size):
        raise ValueError(f"g2 has shape {g2.shape}, expected (n_q={q.size}, n_tau={tau.size})")
    filename = check_output(filename, overwrite)
    extra = {}
    if png is not None:
        png = check_output(png, overwrite)
        if png == filename:
            raise ValueError(f"the PNG and the result are the same file {png!r}")
        extra = extra_png_names(png, result, fit, power_law, segments)
        for name in extra.values():
            check_output(name, overwrite)
    for name in (filename, png, *extra.values()):
        check_not_input(name, inputs or (), "result file" if name == filename else "PNG")
    info = dict(getattr(result, "info", {}) or {})
    mode = info.get("mode", getattr(result, "mode", "linear"))
    commit_id = os.urandom(8).hex()
    plots = None
    if png is not None:  # drawn while the HDF5 file is written
        plots = _start_pngs(
            png, result, q, tau, g2, q_unit, tau_unit, frame_period, fit, chi,
            power_law, segments, _PLOT_TITLES.get(mode, "{}").format(title),
            {"ewoksxpcs commit": commit_id, "ewoksxpcs result": filename},
        )
    if maps_file is not None:
        if maps_file.pending.target != filename or mode != "twotime":
            raise ValueError(f"the maps written beforehand are for {maps_file.pending.target!r}"
                             f", not a two-time result of {filename!r}")
        maps_file.pending.overwrite = overwrite
        pending = [maps_file.pending]
    else:
        pending = [PendingFile(filename, overwrite)]
    flusher = None
    try:
        with (h5py.File(pending[0].file, "w") if maps_file is None else maps_file.h5) as f:
            maps_bytes = getattr(getattr(result, "C", None), "nbytes", 0)
            if maps_file is None and write_maps and maps_bytes > FLUSH_MAPS_BYTES:
                flusher = _BackgroundFlush(f, pending[0].file)
            _write_nexus(
                f, result, q, tau, g2, mode, info, q_unit, tau_unit, qmask, mean_image,
                frame_period, parameters, fit, chi, title, segments, power_law, q_edges,
                geometry, compress_maps,
                maps=(maps_file.finish(result.C) if maps_file is not None
                      else None if write_maps else False),
                map_written=flusher,
            )
            if flusher is not None:
                flusher.wait()  # what remains is flushed by the commit's fsync
            f.attrs["commit"] = commit_id
            if png is not None:
                f["entry/xpcs/plot"] = png
        if cancel_token is not None:
            cancel_token.check("saving the results")
        t_written = time.perf_counter()
        if plots is not None:
            for name, data in plots.result().items():  # the PNGs first, the result last
                pending.insert(len(pending) - 1, PendingFile(name, overwrite))
                pending[-2].write(data)
        png_wait_s = time.perf_counter() - t_written
        commit(pending)
    finally:
        if flusher is not None:
            flusher.close()
        for p in pending:
            p.discard()
        if maps_file is not None:
            maps_file.discard()
    return {"filename": filename, "png": png, "png_wait_s": png_wait_s,
            "png_drawn_in": None if plots is None else plots.where}


#: Two-time maps beyond this size are flushed to disk map by map while the next is written.
FLUSH_MAPS_BYTES = 256 << 20


class _BackgroundFlush:
    """Called after each two-time map is written (``map_written`` of
    :meth:`~ewoksxpcs.engine.twotime.TwoTimeResult.write_nexus`): flushes the HDF5 file and
    starts ``fdatasync`` in a thread, so that the disk takes the maps while the next ones are
    written and the commit's ``fsync`` has little left (4 GB of maps at 10 000 time bins)."""

    def __init__(self, h5file, fileobj):
        self.h5file, self.fileobj = h5file, fileobj
        self.future = None
        self.pool = None

    def __call__(self, j: int) -> None:
        import concurrent.futures

        if self.future is not None and not self.future.done():
            return  # the disk is still busy: a later map's call flushes more at once
        self.h5file.flush()
        self.fileobj.flush()
        if self.pool is None:
            self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="maps-sync")
        self.future = self.pool.submit(os.fdatasync, self.fileobj.fileno())

    def wait(self) -> None:
        """Wait for the last ``fdatasync`` (its error, if any, raised here)."""
        future, self.future = self.future, None
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
        if future is not None:
            future.result()

    def close(self) -> None:
        """Let a running ``fdatasync`` end (after an error elsewhere: its own is not raised)."""
        self.future = None
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


#: Two-time maps up to this size are sent to the PNG helper process (a pipe copies them).
SEND_MAPS_BYTES = 64 << 20


def _start_pngs(png, result, *args):
    """Start drawing the PNGs of :func:`_render_pngs` (same arguments) off the critical path:
    in the helper process of :mod:`ewoksxpcs.io.pngproc` (a thread for two-time maps beyond
    :data:`SEND_MAPS_BYTES`, cheaper to draw here than to send); a
    :class:`~ewoksxpcs.io.pngproc.Pending` of the bytes."""
    from . import pngproc

    maps = getattr(result, "C", None)
    if maps is not None and getattr(maps, "nbytes", 0) > SEND_MAPS_BYTES:
        return pngproc.Pending(f"{__name__}:_render_pngs", (png, result) + args, {}, remote=False)
    return pngproc.submit(f"{__name__}:_render_pngs", png, _light(result), *args)


def _light(result):
    """A shallow copy of ``result`` without its raw sums (not drawn; cheaper to send)."""
    import copy

    if getattr(result, "sums", None) is None:
        return result
    light = copy.copy(result)
    light.sums = None
    return light


def _write_nexus(
    f, result, q, tau, g2, mode, info, q_unit, tau_unit, qmask, mean_image, frame_period,
    parameters, fit, chi, title, segments=None, power_law=None, q_edges=None, geometry=None,
    compress_maps="auto", maps=None, map_written=None,
) -> None:
    """Write the layout of the module doc into the open h5py file ``f`` (``compress_maps``: as
    for :func:`save_results`; ``maps``: two-time maps already in ``f``, see
    :meth:`~ewoksxpcs.engine.twotime.TwoTimeResult.write_nexus`)."""
    from .. import __version__

    now = datetime.datetime.now().astimezone().isoformat()
    f.attrs["NX_class"] = "NXroot"
    f.attrs["creator"] = f"ewoksxpcs {__version__}"
    f.attrs["file_time"] = now
    f.attrs["default"] = "entry"
    entry = f.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    entry.attrs["default"] = "xpcs"
    entry["title"] = title
    entry["start_time"] = now
    proc = entry.create_group("xpcs")
    proc.attrs["NX_class"] = "NXprocess"
    proc.attrs["default"] = "g2"
    proc["program"] = "ewoksxpcs"
    proc["version"] = __version__
    proc["date"] = now
    proc["mode"] = mode
    proc["method"] = result.method
    proc["device"] = result.device
    proc["auto_reason"] = str(info.get("auto_reason", ""))
    proc["n_frames"] = int(getattr(result, "n_frames", 0) or 0)
    if frame_period is not None:
        _dataset(proc, "frame_period", float(frame_period), units="s")
    params = proc.create_group("parameters")
    params.attrs["NX_class"] = "NXcollection"
    for k, v in (parameters or {}).items():
        _write_value(params, k, v)

    q_label = f"q ({q_unit})" if q_unit else "bin"
    tau_label = f"tau ({tau_unit})"
    g = _nxdata(proc, "g2", "g2", ["q", "tau"], title=_g2_title(result, mode))
    g.attrs["SILX_style"] = json.dumps({"axes_scale_types": ["linear", "log"]})
    _dataset(g, "g2", g2, long_name="g2", interpretation="spectrum")
    _dataset(g, "g2_errors", numpy.asarray(result.g2_err, dtype=numpy.float64))
    _dataset(g, "q", q, units=q_unit or None, long_name=q_label)
    _dataset(g, "tau", tau, units=tau_unit, long_name=tau_label)
    _dataset(g, "lags", numpy.asarray(result.lags, dtype=numpy.int64), units="frame")
    _dataset(g, "labels", numpy.asarray(result.labels, dtype=numpy.int64))
    _dataset(g, "n_pixels", numpy.asarray(result.n_pixels, dtype=numpy.int64))
    pairs = getattr(result, "expected_pairs", None)
    if pairs is not None:
        _dataset(g, "expected_pairs", numpy.asarray(pairs, dtype=numpy.float64))
    if chi is not None:
        _dataset(g, "chi", numpy.asarray(chi, dtype=numpy.float64), units="deg")
    _write_geometry(proc, g, result, q_edges, geometry, parameters, q_unit)
    if mode == "multitau":
        _dataset(g, "level", numpy.asarray(result.level, dtype=numpy.int64))
        _dataset(g, "n_pairs", numpy.asarray(result.n_pairs, dtype=numpy.int64))
        g["normalisation"] = str(result.normalisation)
        g["lags_per_level"] = int(result.lags_per_level)
    if mode == "twotime":
        g["description"] = (
            "g2 = mean over t of C(q, t, t + tau) of the two-time maps; errors: "
            "standard error of that mean"
        )
        tt = result.write_nexus(proc, "twotime", compress=compress_maps, maps=maps,
                                map_written=map_written)
        for name in ("maps", "g2"):
            _dataset(tt[name], "q", q, units=q_unit or None, long_name=q_label)

    if fit is not None:
        write_fit(proc, fit, q, q_unit, tau_unit, power_law)
    write_science(proc, result, q, q_unit, tau_unit, frame_period, segments)

    if qmask is not None:
        mg = _nxdata(proc, "qmask", "labels", title="q-mask labels (0 = unused)")
        d = gzip_image(mg, "labels", numpy.asarray(qmask, dtype=numpy.int32))
        d.attrs["interpretation"] = "image"
    if mean_image is not None:
        ig = _nxdata(
            proc, "mean_image", "mean_image", title="mean counts per pixel per frame"
        )
        d = gzip_image(ig, "mean_image", numpy.asarray(mean_image, dtype=numpy.float64))
        d.attrs["interpretation"] = "image"
        d.attrs["units"] = "counts/frame"

    fs = getattr(result, "frame_sums", None)
    # Two-time frame sums are per time bin of time_bin frames.
    time_bin = int(getattr(result, "time_bin", 1) or 1)
    if fs is not None:
        fs = numpy.asarray(fs)
        n_pix = numpy.asarray(result.n_pixels, dtype=numpy.float64)
        with numpy.errstate(invalid="ignore", divide="ignore"):
            mean_t = (fs / (n_pix[None, :] * time_bin)).T  # (n_q, Nt)
        excluded = info.get("excluded_frames")
        if excluded is not None and time_bin == 1 and len(excluded) == mean_t.shape[1]:
            mean_t[:, numpy.asarray(excluded, dtype=bool)] = numpy.nan  # not measured
        tg = _nxdata(
            proc,
            "intensity",
            "intensity",
            ["q", "time"],
            title="mean counts per pixel per frame vs time",
        )
        _dataset(tg, "intensity", mean_t, units="counts/frame", interpretation="spectrum")
        _dataset(tg, "q", q, units=q_unit or None, long_name=q_label)
        # Time of each row: frame index, or centre of the time bin (two-time).
        t_frames = numpy.asarray(
            getattr(result, "times", numpy.arange(fs.shape[0])), dtype=numpy.float64
        )
        if frame_period is not None:
            _dataset(
                tg,
                "time",
                t_frames * float(frame_period),
                units="s",
                long_name="time (s)",
            )
        else:
            _dataset(tg, "time", t_frames, units="frame", long_name="time (frame)")

    pg = _nxdata(proc, "pixels_per_bin", "n_pixels", ["q"], title="pixels per bin")
    _dataset(pg, "n_pixels", numpy.asarray(result.n_pixels, dtype=numpy.int64))
    _dataset(pg, "q", q, units=q_unit or None, long_name=q_label)

    # The exact sums g2 was computed from (those the result carries).
    sums = proc.create_group("sums")
    sums.attrs["NX_class"] = "NXcollection"
    sums["description"] = _SUMS_DESCRIPTION.get(mode, _SUMS_DESCRIPTION["linear"])
    for name in ("n2", "s2", "d2"):
        value = getattr(result, name, None)
        if value is not None:
            _dataset(sums, name, numpy.asarray(value), units="counts^2")
    if fs is not None:
        _dataset(sums, "frame_sums", fs, units="counts")


def _drawn(result):
    from .plots import drawn_lags

    try:
        return drawn_lags(result)
    except (AttributeError, TypeError):  # a result without pair information: draw every lag
        return None


def write_fit(proc, fit, q, q_unit: str, tau_unit: str, power_law=None):
    """``xpcs/fit``: NXdata gamma vs q, every parameter with errors, status, reduced χ²;
    ``fit/power_law`` when given."""
    q_label = f"q ({q_unit})" if q_unit else "bin"
    fg = _nxdata(proc, "fit", "gamma", ["q"], title=f"g2 = {fit.formula}")
    _dataset(fg, "gamma", fit.gamma, units=f"{tau_unit}^-1", long_name=f"gamma ({tau_unit}^-1)")
    _dataset(fg, "gamma_errors", fit.gamma_err)
    _dataset(fg, "q", q, units=q_unit or None, long_name=q_label)
    for name, value in fit.params.items():
        if name != "gamma":
            _dataset(fg, name, value)
            _dataset(fg, f"{name}_errors", fit.errors[name])
    _dataset(fg, "chi2_red", fit.chi2_red)
    _dataset(fg, "status", fit.status.astype(numpy.int8))
    from ..engine.fit import STATUSES

    fg["status_meaning"] = json.dumps(dict(enumerate(STATUSES)))
    fg.attrs["auxiliary_signals"] = ["beta", "baseline"]
    fg["model"] = f"g2(q, tau) = {fit.formula}"
    fg["model_name"] = fit.model
    fg["tau_range"] = numpy.asarray(
        [numpy.nan if v is None else v for v in fit.tau_range], dtype=numpy.float64
    )
    if power_law is not None:
        pg = fg.create_group("power_law")
        pg.attrs["NX_class"] = "NXcollection"
        pg["model"] = "gamma = D * q**n (bins of status ok); D2: n fixed to 2"
        for name in ("D", "D_err", "n", "n_err", "D2", "D2_err", "chi2_red"):
            pg[name] = float(getattr(power_law, name))
        pg["used"] = numpy.asarray(power_law.used, dtype=bool)
        pg["D"].attrs["units"] = f"{tau_unit}^-1 ({q_unit})^-n"


def write_science(proc, result, q, q_unit, tau_unit, frame_period, segments=None):
    """``xpcs/excluded_frames`` (bad frames) and ``xpcs/segments`` (stability), when present."""
    excluded = (getattr(result, "info", None) or {}).get("excluded_frames")
    if excluded is not None:
        eg = _nxdata(proc, "excluded_frames", "excluded", ["frame"],
                     title="frames excluded from every pair (1 = excluded)")
        _dataset(eg, "excluded", numpy.asarray(excluded, dtype=numpy.int8))
        _dataset(eg, "frame", numpy.arange(len(excluded), dtype=numpy.int64), units="frame")
        _dataset(eg, "indices", numpy.flatnonzero(excluded).astype(numpy.int64), units="frame")
    if segments is not None:
        q_label = f"q ({q_unit})" if q_unit else "bin"
        sg = _nxdata(proc, "segments", "intensity", ["segment", "q"],
                     title="mean counts per pixel per frame per time segment")
        _dataset(sg, "intensity", segments.intensity, units="counts/frame",
                 interpretation="spectrum")
        _dataset(sg, "segment", numpy.arange(segments.n_segments, dtype=numpy.int64))
        q_rows = map_rows(q, getattr(result, "labels", None), segments.labels)
        _dataset(sg, "q", q_rows, units=q_unit or None, long_name=q_label)
        _dataset(sg, "edges", segments.edges, units="frame")
        pg = _nxdata(sg, "partial_g2", "g2", ["segment", "labels", "tau"],
                     title="g2 of each time segment")
        _dataset(pg, "g2", segments.g2)
        _dataset(pg, "g2_errors", segments.g2_err)
        _dataset(pg, "segment", numpy.arange(segments.n_segments, dtype=numpy.int64))
        _dataset(pg, "labels", segments.labels)
        lags = numpy.asarray(segments.lags, dtype=numpy.float64)
        _dataset(pg, "tau", lags * frame_period if frame_period else lags,
                 units=tau_unit if frame_period else "frame")


def map_rows(q, labels, to_labels):
    """q of the rows ``to_labels`` from q per ``labels`` (NaN where absent)."""
    q = numpy.asarray(q, dtype=numpy.float64)
    if labels is None or q.size != len(labels):
        return q if q.size == len(to_labels) else numpy.full(len(to_labels), numpy.nan)
    where = {int(k): i for i, k in enumerate(numpy.asarray(labels).tolist())}
    return numpy.array([q[where[int(k)]] if int(k) in where else numpy.nan for k in to_labels])


def _render_pngs(png, result, q, tau, g2, q_unit, tau_unit, frame_period, fit, chi, power_law,
                 segments, title, metadata) -> dict:
    """PNG bytes of every figure of a result, file name -> bytes: the figures beside the g2
    PNG (``_gamma.png`` with a power law, ``_stability.png`` with segments, ``_twotime.png`` in
    mode two-time), then the g2 PNG (``metadata``: its PNG text entries)."""
    from . import plots

    names = extra_png_names(png, result, fit, power_law, segments)
    out = {}
    if "gamma" in names:
        out[names["gamma"]] = figure_png(plots.gamma_figure(q, fit, power_law, q_unit, tau_unit),
                                         tight=False)
    if "stability" in names:
        fs = getattr(result, "frame_sums", None)
        inten = None
        if fs is not None and getattr(result, "mode", "linear") != "twotime":
            with numpy.errstate(invalid="ignore", divide="ignore"):
                inten = (numpy.asarray(fs, dtype=numpy.float64) / result.n_pixels[None, :]).T
        fig = plots.stability_figure(
            segments, map_rows(q, result.labels, segments.labels), tau_unit, frame_period, inten,
            (result.info or {}).get("excluded_frames"), q_unit)
        out[names["stability"]] = figure_png(fig)
    if "twotime" in names:
        out[names["twotime"]] = figure_png(plots.twotime_figure(result, q, q_unit))
    out[png] = figure_png(
        g2_figure(tau, g2, result.g2_err, q, q_unit=q_unit, tau_unit=tau_unit, fit=fit, chi=chi,
                  title=title, keep=_drawn(result)),
        metadata, tight=False,
    )
    return out


def figure_png(fig, metadata: Optional[dict] = None, tight: bool = True) -> bytes:
    """A matplotlib figure as PNG bytes (``metadata``: PNG text entries; ``tight``: apply
    ``tight_layout`` first, for figures without margins of their own).

    Rendered in memory, so that writing it is one ``write`` whose error (e.g. no space left)
    is the real one.
    """
    if tight:
        fig.tight_layout()
    buf = io.BytesIO()
    # Fast zlib level: plots compress well anyway, and encoding is a tenth of the time.
    fig.savefig(buf, format="png", metadata=metadata, pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def save_figure(fig, filename, overwrite: bool = False, tight: bool = True) -> str:
    """Write a matplotlib figure as PNG, atomically (see :class:`PendingFile`); the absolute
    file name (``tight``: see :func:`figure_png`)."""
    with PendingFile(filename, overwrite) as pending:
        pending.write(figure_png(fig, tight=tight))
        return commit([pending])[0]


def extra_png_names(png, result, fit, power_law, segments) -> dict:
    """Figure name -> file of :func:`extra_pngs`: ``<base>_gamma.png``, ``<base>_stability.png``,
    ``<base>_twotime.png`` beside ``<base>_g2.png`` (or ``<png stem>_…``)."""
    base = os.path.splitext(os.fspath(png))[0]
    base = base[:-3] if base.endswith("_g2") else base
    names = {}
    if fit is not None and power_law is not None:
        names["gamma"] = base + "_gamma.png"
    if segments is not None:
        names["stability"] = base + "_stability.png"
    if getattr(result, "mode", "") == "twotime":
        names["twotime"] = base + "_twotime.png"
    return names


def _write_events(f, events, frame_period) -> None:
    """``entry/xpcs/events`` of the open h5py file ``f``: the per-pixel time series."""
    g = f.create_group("entry/xpcs/events")
    events.write_group(g)
    period = frame_period or getattr(events, "frame_period", None)
    if period:
        g.attrs["frame_period"] = float(period)
    g.attrs["description"] = ("per-pixel time series of every kept pixel (ewoksxpcs "
                              "events layout): 'ewoksxpcs rebin' re-bins from them")


def _mode(result) -> str:
    return (getattr(result, "info", None) or {}).get("mode", getattr(result, "mode", "linear"))


def _write_geometry(proc, g, result, q_edges, geometry, parameters, q_unit) -> None:
    """``g2/q_nominal`` (centre of each bin's q interval) and ``xpcs/geometry``."""
    from .formats import nominal_centres, geometry_from_parameters

    nominal = nominal_centres(q_edges, result.labels) if q_unit else None
    if nominal is not None:
        _dataset(g, "q_nominal", nominal, units=q_unit,
                 long_name=f"q ({q_unit}), centre of the bin's interval")
        g["q"].attrs["description"] = "mean q of the bin's pixels"
    geometry = geometry if geometry is not None else geometry_from_parameters(parameters)
    if geometry is None:
        proc["geometry"] = "unknown (q-mask given directly)"
        return
    geo = proc.create_group("geometry")
    geo.attrs["NX_class"] = "NXcollection"
    geo["convention"] = "pyFAI (SI units: m, radians)"
    for k, v in geometry.items():
        _write_value(geo, k, v)


def save_formats(filename, result, q, tau, formats=("nexus",), q_edges=None,
                 geometry: Optional[dict] = None, bad_pixels=None, png: Optional[str] = None,
                 events=None, keep_events: bool = False, pixel_g2: bool = False,
                 inputs: Optional[Sequence[str]] = None, **kwargs) -> dict:
    """Write a result in one or more layouts (:data:`ewoksxpcs.io.formats.FORMATS`).

    The first format writes ``filename``, the others files next to it
    (:func:`ewoksxpcs.io.formats.format_filenames`). Every file is written to a temporary file
    first and all are renamed together at the end, with the PNGs (drawn meanwhile by
    :mod:`ewoksxpcs.io.pngproc`):
    on any error none is left and no existing file was replaced. The NeXus file and the PNGs
    are unnamed until then (:class:`PendingFile`: nothing left even after SIGKILL); the other
    layouts' writers need a name, a hidden ``.<name>.<random>.tmp``. ``inputs``: files the run
    read, which no output may be. ``kwargs`` are those of :func:`save_results`; ``bad_pixels`` (Ny, Nx)
    bool gives the APS mask. ``events`` (an :class:`~ewoksxpcs.engine.events.EventStack`): with
    ``keep_events`` kept in the NeXus file as ``entry/xpcs/events`` (events-file layout), the
    per-pixel time series that ``ewoksxpcs rebin`` re-bins exactly (:mod:`ewoksxpcs.io.rebin`);
    with ``pixel_g2`` the pixel-level G2/IP/IF of the APS layout (:mod:`ewoksxpcs.engine.pixelcorr`).

    Returns
    -------
    dict
        ``{"filename": first file, "png": ... or None, "files": {format: file}, "png_wait_s",
        "png_drawn_in"}`` (see :func:`save_results`).
    """
    import contextlib

    import h5py

    from .formats import format_filenames, result_view
    from .save_aps import write_aps
    from .save_id02 import write_id02

    overwrite = bool(kwargs.get("overwrite", False))
    names = format_filenames(filename, formats)
    if keep_events and "nexus" not in names:
        raise ValueError("the per-pixel time series (events) are kept in the nexus file: "
                         "add the nexus format")
    if pixel_g2 and "aps" not in names:
        raise ValueError("pixel-level G2 is written in the aps layout: add the aps format")
    if (keep_events or pixel_g2) and events is None:
        raise ValueError("keeping the events or pixel-level G2 needs the events")
    for name in list(names.values()) + ([png] if png else []):
        check_output(name, overwrite)
    extra = {}
    if png:
        png = os.path.abspath(png)
        extra = extra_png_names(png, result, kwargs.get("fit"), kwargs.get("power_law"),
                                kwargs.get("segments"))
        for name in extra.values():
            check_output(name, overwrite)
    for name in list(names.values()) + ([png] if png else []) + list(extra.values()):
        check_not_input(name, inputs or (), "PNG" if name.endswith(".png") else "result file")
    q = numpy.asarray(q, dtype=numpy.float64)
    tau = numpy.asarray(tau, dtype=numpy.float64)
    mode = _mode(result)
    title = kwargs.get("title", "XPCS g2")
    commit_id = os.urandom(8).hex()
    plots = None
    if png:  # drawn while the files are written
        plots = _start_pngs(
            png, result, q, tau, numpy.asarray(result.g2, dtype=numpy.float64),
            kwargs.get("q_unit", "nm^-1"), kwargs.get("tau_unit", "s"),
            kwargs.get("frame_period"), kwargs.get("fit"), kwargs.get("chi"),
            kwargs.get("power_law"), kwargs.get("segments"),
            _PLOT_TITLES.get(mode, "{}").format(title),
            {"ewoksxpcs commit": commit_id,
             "ewoksxpcs result": os.path.abspath(next(iter(names.values())))},
        )
    pending: List[PendingFile] = []
    view = None
    try:
        with contextlib.ExitStack() as stack:  # the named temporaries, renamed at its exit
            for fmt, name in names.items():
                if fmt == "nexus":
                    pending.append(PendingFile(name, overwrite))
                    with h5py.File(pending[-1].file, "w") as f:
                        _write_nexus(
                            f, result, q, tau, numpy.asarray(result.g2, dtype=numpy.float64),
                            mode, dict(getattr(result, "info", {}) or {}),
                            kwargs.get("q_unit", "nm^-1"), kwargs.get("tau_unit", "s"),
                            kwargs.get("qmask"), kwargs.get("mean_image"),
                            kwargs.get("frame_period"), kwargs.get("parameters"),
                            kwargs.get("fit"), kwargs.get("chi"), title, kwargs.get("segments"),
                            kwargs.get("power_law"), q_edges, geometry,
                        )
                        f.attrs["commit"] = commit_id
                        if png:
                            f["entry/xpcs/plot"] = png
                        if keep_events:
                            _write_events(f, events, kwargs.get("frame_period"))
                    continue
                tmp = stack.enter_context(atomic_output(name, overwrite))
                if view is None:
                    view = result_view(result, q, q_unit=kwargs.get("q_unit", "nm^-1"),
                                       qmask=kwargs.get("qmask"),
                                       mean_image=kwargs.get("mean_image"),
                                       frame_period=kwargs.get("frame_period"),
                                       chi=kwargs.get("chi"), q_edges=q_edges,
                                       geometry=geometry, parameters=kwargs.get("parameters"))
                if fmt == "aps":
                    write_aps(tmp, view, q_edges=q_edges, bad_pixels=bad_pixels, title=title,
                              events=events if pixel_g2 else None,
                              segments=kwargs.get("segments"))
                else:
                    write_id02(tmp, view, title=title)
            if kwargs.get("cancel_token") is not None:
                kwargs["cancel_token"].check("saving the results")
            t_written = time.perf_counter()
            figures = []
            if plots is not None:
                for name, data in plots.result().items():
                    figures.append(PendingFile(name, overwrite))
                    figures[-1].write(data)
            png_wait_s = time.perf_counter() - t_written
            pending[:0] = figures
            commit(pending)  # the PNGs first, the NeXus file last
    finally:
        for p in pending:
            p.discard()
    return {"filename": next(iter(names.values())), "png": png, "files": names,
            "png_wait_s": png_wait_s, "png_drawn_in": None if plots is None else plots.where}


def g2_figure(tau, g2, g2_err, q, q_unit: str = "nm^-1", tau_unit: str = "s", fit=None,
              chi=None, title: str = "XPCS g2", keep=None):
    """The g2 curves (log τ, error bars, fits of status ok if given) as a matplotlib figure
    (:func:`ewoksxpcs.io.plots.draw_g2`; ``keep``: (n_τ,) bool, the lags to draw)."""
    from .plots import draw_g2, new_figure

    fig = new_figure()
    # Fixed margins instead of tight_layout, which draws the figure once more (a third of
    # the PNG's cost); the colour bar of more than 6 curves needs room for its label.
    n = numpy.atleast_2d(g2).shape[0]
    # Beyond 6 curves a colour bar, or the legend beside the axes (longer labels with chi).
    right = 0.97 if n <= 6 else 0.86 if q_unit else 0.80 if chi is None else 0.74
    fig.subplots_adjust(left=0.1, right=right, bottom=0.11, top=0.93)
    ax = fig.add_subplot(1, 1, 1)
    draw_g2(ax, tau, g2, g2_err, q, q_unit=q_unit, fit=fit, chi=chi, keep=keep, fig=fig)
    ax.set_xlabel(f"τ ({tau_unit})")
    ax.set_title(title, y=1.0)  # fixed height: no tick measured to place it (see gamma_figure)
    return fig


def plot_g2(filename, tau, g2, g2_err, q, overwrite: bool = False, **options) -> str:
    """Draw g2 curves into a PNG file; ``options``: those of :func:`g2_figure`. Returns the
    absolute file name; the file appears complete or not at all."""
    return save_figure(g2_figure(tau, g2, g2_err, q, **options), filename, overwrite,
                       tight=False)


def warm_up_plotting() -> None:
    """Start the PNG helper process (:mod:`ewoksxpcs.io.pngproc`) when a run will draw a PNG.

    It imports matplotlib's Agg machinery in its own process while the run reads and
    correlates; this process never imports matplotlib (nor shares its GIL with the drawing).
    """
    from . import pngproc

    pngproc.start(preload=(f"{__package__}.plots", __name__, f"{__package__}.plots:warm_up"))
