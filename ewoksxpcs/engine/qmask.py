"""Pixel binning: the q-mask label image, and its split of each bin into pixel groups.

A *qmask* is an integer label image (Ny, Nx): 0 (or negative) marks unused pixels, each positive
value is a bin. Values need not be contiguous (1, 4, 9): result rows follow the sorted values,
exposed as :attr:`Binning.labels`.

For the error bars every bin is split into ``n_groups`` groups of pixels that are contiguous in
raster order (so neighbouring pixels, which may share a speckle, mostly fall in the same group).
A (bin, group) pair is a *sub-bin*. Correlators compute their additive sums (n2, frame sums) per
sub-bin; bins and the jackknife error bars are derived from those (see :mod:`ewoksxpcs.engine.normalise`).
"""

from __future__ import annotations

import warnings
import weakref
from typing import Optional, Sequence

import numpy

from .options import positive_int

__all__ = ["Binning", "DEFAULT_GROUPS", "as_label_image", "cached_binning", "check_label_range",
           "label_rows", "present_labels", "remember_binning"]

#: Default number of pixel groups per bin for the jackknife error bars.
DEFAULT_GROUPS = 16


class Binning:
    """Pixels of each q bin, in the order every correlator uses.

    Parameters
    ----------
    qmask : array_like of int, shape (Ny, Nx)
        Label image: 0 or negative = unused, positive values = bins.
    labels : sequence of int, optional
        Bin labels to use (sorted on input). Default: the positive values present in ``qmask``.
        A label with no pixel gives an empty bin (a NaN row in the results, and a warning).
    bad_pixels : array_like of bool, shape (Ny, Nx), optional
        True where a pixel must be ignored (detector gaps, hot or dead pixels).
    n_groups : int
        Pixel groups per bin for the error bars (a bin of N pixels gets min(N, n_groups)).

    Attributes
    ----------
    shape : (int, int)
        (Ny, Nx).
    labels : ndarray, (n_bins,) int64
        Sorted bin labels; row ``i`` of every result is bin ``labels[i]``.
    pixel_index : ndarray, (n_pixels,) int64
        Flat pixel indices (y·Nx + x) of the binned pixels, sorted by bin, then group, then
        raster order.
    bin_offsets : ndarray, (n_bins + 1,) int64
        Pixels of bin ``i`` are ``pixel_index[bin_offsets[i]:bin_offsets[i + 1]]``.
    sub_offsets : ndarray, (n_sub + 1,) int64
        Pixels of sub-bin ``k`` are ``pixel_index[sub_offsets[k]:sub_offsets[k + 1]]``.
    sub_bin : ndarray, (n_sub,) int64
        Bin row of each sub-bin.
    bin_sub_offsets : ndarray, (n_bins + 1,) int64
        Sub-bins of bin ``i`` are ``bin_sub_offsets[i]:bin_sub_offsets[i + 1]``.
    """

    def __init__(self, qmask, labels: Optional[Sequence[int]] = None, bad_pixels=None,
                 n_groups: int = DEFAULT_GROUPS):
        qmask = numpy.asarray(qmask)
        if qmask.ndim != 2:
            raise ValueError(f"qmask must be a 2-D label image (Ny, Nx); got shape {qmask.shape}")
        qmask = as_label_image(qmask)
        positive_int(n_groups, "n_groups")
        self.shape = tuple(int(n) for n in qmask.shape)
        self.n_groups = int(n_groups)
        flat = qmask.ravel()  # int32 (a full-size int64 copy costs 0.1 s of page faults)
        any_binned = bool((flat > 0).any())
        if bad_pixels is not None:
            bad_pixels = numpy.asarray(bad_pixels, dtype=bool)
            if bad_pixels.shape != self.shape:
                raise ValueError(
                    f"bad-pixel mask shape {bad_pixels.shape} differs from qmask shape {self.shape}"
                )
            flat = numpy.where(bad_pixels.ravel(), 0, flat)
        if labels is None:
            labels = present_labels(flat)
        labels = numpy.asarray(labels)
        if labels.size and labels.dtype.kind not in "iu":
            raise TypeError(f"bin labels must be integers; got dtype {labels.dtype}")
        check_label_range(labels, what="bin labels")
        labels = numpy.unique(labels.astype(numpy.int64))
        if labels.size and (labels <= 0).any():
            raise ValueError(f"bin labels must be positive; got {labels[labels <= 0].tolist()}")
        if labels.size == 0:
            if any_binned:  # the image has bins, but the bad-pixel mask covers all their pixels
                raise ValueError("no pixel in any bin: every binned pixel is masked as bad")
            raise ValueError("qmask has no bin: bins are the positive labels of the label image")
        self.labels = labels
        row = label_rows(flat, labels)  # row of each pixel's bin, -1: not binned
        pixels = numpy.flatnonzero(row >= 0)
        if pixels.size == 0:
            raise ValueError(
                f"no pixel in any bin: none of the qmask labels {labels.tolist()[:10]} "
                "has an unmasked pixel"
            )
        rows = row[pixels]
        # Raster order kept within a bin (stable); rows in the narrowest integer type, which
        # NumPy sorts by radix (a third of the time of a merge sort of int64 for 9 M pixels).
        narrow = numpy.min_scalar_type(max(labels.size - 1, 0))
        order = numpy.argsort(rows.astype(narrow), kind="stable")
        self.pixel_index = pixels[order].astype(numpy.int64, copy=False)
        counts = numpy.bincount(rows, minlength=labels.size).astype(numpy.int64)
        self.bin_offsets = numpy.concatenate([[0], numpy.cumsum(counts)]).astype(numpy.int64)
        self.n_pixels = counts
        empty = labels[counts == 0]
        if empty.size:
            warnings.warn(
                f"qmask bins {empty.tolist()} have no pixel: their results are NaN",
                RuntimeWarning,
                stacklevel=2,
            )
        # Split each bin into min(N, n_groups) groups of near-equal size, contiguous in raster order.
        groups = numpy.minimum(counts, self.n_groups)
        self.n_groups_per_bin = groups
        self.bin_sub_offsets = numpy.concatenate([[0], numpy.cumsum(groups)]).astype(numpy.int64)
        sub_offsets = [numpy.zeros(1, dtype=numpy.int64)]
        for i in range(labels.size):
            g = int(groups[i])
            if g == 0:
                continue
            edges = self.bin_offsets[i] + (numpy.arange(1, g + 1) * counts[i]) // g
            sub_offsets.append(edges.astype(numpy.int64))
        self.sub_offsets = numpy.concatenate(sub_offsets)
        self.sub_bin = numpy.repeat(numpy.arange(labels.size), groups).astype(numpy.int64)
        self.sub_n_pixels = numpy.diff(self.sub_offsets)

    # ------------------------------------------------------------------ derived views
    @property
    def n_bins(self) -> int:
        return int(self.labels.size)

    @property
    def n_sub(self) -> int:
        return int(self.sub_bin.size)

    @property
    def n_binned_pixels(self) -> int:
        return int(self.pixel_index.size)

    def sub_of_pixel(self) -> numpy.ndarray:
        """Sub-bin of every binned pixel, aligned with :attr:`pixel_index`, (n_pixels,) int64."""
        return numpy.repeat(numpy.arange(self.n_sub, dtype=numpy.int64), self.sub_n_pixels)

    def sub_image(self) -> numpy.ndarray:
        """Flat image (Ny·Nx,) int64 of sub-bin indices, -1 for pixels outside every bin."""
        image = numpy.full(self.shape[0] * self.shape[1], -1, dtype=numpy.int64)
        image[self.pixel_index] = self.sub_of_pixel()
        return image

    def bin_image(self) -> numpy.ndarray:
        """Flat image (Ny·Nx,) int64 of bin rows, -1 for pixels outside every bin."""
        image = numpy.full(self.shape[0] * self.shape[1], -1, dtype=numpy.int64)
        image[self.pixel_index] = numpy.repeat(numpy.arange(self.n_bins), self.n_pixels)
        return image

    def check_frame_shape(self, frame_shape) -> None:
        """Raise ValueError if frames of ``frame_shape`` (Ny, Nx) do not match the qmask."""
        if tuple(frame_shape) != self.shape:
            raise ValueError(
                f"qmask shape {self.shape} differs from the frame shape {tuple(frame_shape)}"
            )

    def sum_sub_bins(self, values: numpy.ndarray) -> numpy.ndarray:
        """Sum gathered pixel values over each sub-bin.

        Parameters
        ----------
        values : ndarray, (..., n_pixels)
            Values in :attr:`pixel_index` order.

        Returns
        -------
        ndarray, (..., n_sub)
            int64 for integer input, float64 otherwise.
        """
        acc = numpy.int64 if values.dtype.kind in "iub" else numpy.float64
        if self.n_sub == 0:
            return numpy.zeros(values.shape[:-1] + (0,), dtype=acc)
        # One sum per sub-bin: reduceat(dtype=int64) would first copy the whole block to int64.
        out = numpy.empty(values.shape[:-1] + (self.n_sub,), dtype=acc)
        for k in range(self.n_sub):
            out[..., k] = values[..., self.sub_offsets[k] : self.sub_offsets[k + 1]].sum(
                axis=-1, dtype=acc)
        return out

    def __repr__(self) -> str:
        return (
            f"Binning(shape={self.shape}, n_bins={self.n_bins}, "
            f"n_pixels={self.n_binned_pixels}, n_groups={self.n_groups})"
        )


#: Largest label for which :func:`label_rows` and :func:`present_labels` index a table (8 MiB
#: of int64) instead of sorting; q-masks have labels 1 … a few thousand.
_TABLE_LABELS = 1 << 20


def present_labels(flat) -> numpy.ndarray:
    """Sorted positive values of an integer label array, (n,) int64 (``numpy.unique`` of the
    positive values, by counting where the labels are small)."""
    flat = numpy.asarray(flat)
    positive = flat[flat > 0]
    if positive.size and int(positive.max()) <= _TABLE_LABELS:
        return numpy.flatnonzero(numpy.bincount(positive)).astype(numpy.int64)
    return numpy.unique(positive).astype(numpy.int64)


def label_rows(flat, labels) -> numpy.ndarray:
    """Row of each pixel's label in ``labels``, -1 where it is not one of them (or <= 0).

    Parameters
    ----------
    flat : ndarray of int
        Labels of the pixels.
    labels : ndarray, (n,) int64
        Sorted, unique, positive labels.

    Returns
    -------
    ndarray, same shape as ``flat``, int32 (int64 beyond 2³¹ − 1 labels)
    """
    flat = numpy.asarray(flat)
    labels = numpy.asarray(labels, dtype=numpy.int64)
    # Rows in int32: half the memory to touch (page faults dominate in a new process).
    kind = numpy.int32 if labels.size < 2**31 - 1 else numpy.int64
    if labels.size == 0:
        return numpy.full(flat.shape, -1, dtype=kind)
    top = int(labels[-1])
    if top <= _TABLE_LABELS:  # a lookup table: one gather instead of a binary search
        table = numpy.full(top + 2, -1, dtype=kind)
        table[labels] = numpy.arange(labels.size, dtype=kind)
        return table[numpy.clip(flat, 0, top + 1)]
    row = numpy.searchsorted(labels, flat)
    row[row == labels.size] = 0
    return numpy.where((flat > 0) & (labels[row] == flat), row, -1).astype(kind, copy=False)


#: Range of q-mask labels (int32: beyond it labels would be lost or merged in casts).
LABEL_MIN, LABEL_MAX = -(2**31), 2**31 - 1


def check_label_range(qmask, what: str = "qmask labels") -> None:
    """Raise ValueError if a label of ``qmask`` (any numeric dtype) is outside the int32 range,
    naming the first such pixel (y, x) (or entry) and its value."""
    a = numpy.asarray(qmask)
    if not a.size or a.dtype.kind not in "iuf":
        return
    if a.dtype.kind in "iu":
        info = numpy.iinfo(a.dtype)
        if info.min >= LABEL_MIN and info.max <= LABEL_MAX:
            return
        # Python ints: exact for uint64 values beyond 2**63 too.
        if int(a.max()) <= LABEL_MAX and int(a.min()) >= LABEL_MIN:
            return
    else:
        with numpy.errstate(invalid="ignore"):
            if float(numpy.nanmax(a)) <= LABEL_MAX and float(numpy.nanmin(a)) >= LABEL_MIN:
                return
    with numpy.errstate(invalid="ignore"):
        out = (a > LABEL_MAX) | (a < LABEL_MIN)
    idx = tuple(int(i) for i in numpy.argwhere(out)[0])
    at = f"pixel (y={idx[0]}, x={idx[1]})" if len(idx) == 2 else f"entry {idx}"
    raise ValueError(f"{what} must fit int32 ({LABEL_MIN} … {LABEL_MAX}); {at} holds "
                     f"{a[idx].item()!r} ({a.dtype})")


def as_label_image(qmask, what: str = "qmask") -> numpy.ndarray:
    """A label image as int32 (no copy when it already is), refusing what a cast would change
    silently.

    Parameters
    ----------
    qmask : array_like, (Ny, Nx)
        Integer labels; a float image is taken when every value is an integer.

    Returns
    -------
    ndarray, (Ny, Nx) int32

    Raises
    ------
    TypeError
        Boolean or non-numeric dtype, or a float value that is not an integer (NaN included).
    ValueError
        A label outside the int32 range (see :func:`check_label_range`).
    """
    a = numpy.asarray(qmask)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{what} must hold integer labels; got dtype {a.dtype}")
    check_label_range(a, what=f"{what} labels")
    if a.dtype.kind == "f":
        fraction = numpy.mod(a, 1) != 0  # NaN too
        if fraction.any():
            idx = tuple(int(i) for i in numpy.argwhere(fraction)[0])
            at = f"pixel (y={idx[0]}, x={idx[1]})" if len(idx) == 2 else f"entry {idx}"
            raise TypeError(f"{what} must hold integer labels; {at} holds "
                            f"{a[idx].item()!r} ({a.dtype})")
    return a.astype(numpy.int32, copy=False)


#: id(label image) -> (weak reference to it, its Binning): see :func:`remember_binning`.
_BINNINGS: dict = {}


def remember_binning(qmask: numpy.ndarray, binning: Binning) -> None:
    """Keep ``binning`` (built from ``qmask``) for :func:`cached_binning`, while ``qmask`` lives.

    Lets the BuildQMask step hand its Binning on to Correlate with the label image, so that a
    run sorts the pixels of a large q-mask once (0.1-2 s for an Eiger 4M). ``qmask`` is made
    read-only, so that the Binning cannot go stale.
    """
    qmask.flags.writeable = False
    key = id(qmask)

    def forget(ref, key=key):
        if _BINNINGS.get(key, (None,))[0] is ref:
            del _BINNINGS[key]

    _BINNINGS[key] = (weakref.ref(qmask, forget), binning)


def cached_binning(qmask, labels=None, bad_pixels=None,
                   n_groups: int = DEFAULT_GROUPS) -> Optional[Binning]:
    """The Binning remembered for this very label image, if it is the one
    ``Binning(qmask, labels, bad_pixels, n_groups)`` would build; else None."""
    ref, binning = _BINNINGS.get(id(qmask), (None, None))
    if ref is None or ref() is not qmask or qmask.flags.writeable:
        return None
    if int(n_groups) != binning.n_groups:
        return None
    if labels is not None and not numpy.array_equal(numpy.unique(labels), binning.labels):
        return None
    if bad_pixels is not None:  # the remembered Binning has them zeroed in the image already
        bad_pixels = numpy.asarray(bad_pixels, dtype=bool)
        if bad_pixels.shape != binning.shape or (qmask[bad_pixels] > 0).any():
            return None
    return binning


def as_binning(qmask, **kwargs) -> Binning:
    """Return ``qmask`` if it already is a :class:`Binning`, else build one from the label image."""
    if isinstance(qmask, Binning):
        return qmask
    return Binning(qmask, **kwargs)
