"""Results in the APS 8-ID-I layout, as ``xpcs-viewer`` (pyXpcsViewer) reads them.

Paths, shapes and conventions follow the reader's source (``pyxpcsviewer.core.file_io.
aps_8idi.key["nexus"]``, ``qmap_utils.QMap``, ``xpcs_file.XpcsFile``, ``twotime_utils``),
``n_c`` columns = bins with pixels ("compressed" bins) in q-major grid order (that of
``dynamic_index_mapping``, which the reader assumes), τ > 0 only::

    /entry/start_time
    /entry/instrument/detector_1/frame_time, count_time   s (1.0 with units "frame" when the
                                                           frame period is unknown)
    /entry/instrument/incident_beam/incident_energy         keV (NaN: geometry unknown)
    /xpcs/qmap                 @hash
        mask                   (Ny, Nx) int32, 1 = good pixel
        dynamic_roi_map, static_roi_map   (Ny, Nx) int32: column + 1 of each pixel, 0 = unused
        dynamic_v_list_dim0 (n_q,), dynamic_v_list_dim1 (n_phi,)   q in Å⁻¹ (nominal centres
                               when the q edges are known, else mean q of the bin), φ degrees
        dynamic_num_pts (2,) [n_q, n_phi]; dynamic_index_mapping (n_c,) q_i·n_phi + φ_j
        static_* the same partition; map_names ["q", "phi"], map_units ["1/A", "deg"]
        beam_center_x/y (pixels), detector_distance, pixel_size (mm): NaN when unknown
        dynamic_mean_q (n_c,) Å⁻¹: mean q of each column's pixels (ewoksxpcs's q)
    /xpcs/temporal_mean/scattering_2d (1, Ny, Nx), scattering_1d (1, n_c),
                        scattering_1d_segments (n_seg, n_c)    counts per pixel per frame
    /xpcs/spatial_mean/intensity_vs_time (2, n_t)   [time (s), mean counts per pixel]
    /xpcs/multitau/normalized_g2, normalized_g2_err (n_τ, n_c); delay_list (n_τ,) frames;
                   normalized_g2_partial(_err) (n_seg, n_τ, n_c), _labels (with segments);
                   config/stride_frame = 1, config/avg_frame = 1           (linear, multitau)
    /xpcs/twotime/correlation_map/c2_%05d (nT, nT) upper triangle of C (the reader mirrors it),
                  named by column + 1; processed_bins (n_sel,) column + 1; normalized_g2 (n_τ, n_sel);
                  normalized_g2_segments (n_τs, n_seg, n_sel); delay_list (n_τ,) frames;
                  config/stride_frame = 1, config/avg_frame = time bin      (two-time)
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Optional

import numpy

from ..engine.twotime import GZIP_MAPS_MAX_BYTES
from .formats import ResultView, sector_grid

__all__ = ["write_aps"]

#: keV·Å: the viewer's k0 = 2π / (12.398 / E).
_HC_KEV_A = 12.398


def _column_map(qmask, labels, cols) -> numpy.ndarray:
    """(Ny, Nx) int32: column + 1 of each pixel in a kept bin, 0 elsewhere."""
    qmask = numpy.asarray(qmask, dtype=numpy.int64)
    lut = numpy.zeros(int(max(qmask.max(), labels.max())) + 1, dtype=numpy.int32)
    lut[labels[cols]] = numpy.arange(1, cols.size + 1, dtype=numpy.int32)
    return lut[numpy.clip(qmask, 0, None)]


def write_aps(filename: str, view: ResultView, q_edges=None, bad_pixels=None,
              title: str = "XPCS g2", events=None, segments=None) -> None:
    """Write ``view`` to ``filename`` (a new or temporary file) in the APS 8-ID-I layout.

    Parameters
    ----------
    filename : str
        HDF5 file to create.
    view : ResultView
        The result (see :func:`ewoksxpcs.io.formats.result_view`); ``qmask`` is required.
    q_edges : ndarray (n_q + 1,), optional
        nm⁻¹; gives the nominal bin centres and the q × φ grid of sectors.
    bad_pixels : ndarray (Ny, Nx) bool, optional
        Excluded pixels (the mask is 1 elsewhere); default: pixels outside every bin.
    events : EventStack, optional
        Also write the pixel-level ``unnormalized_G2`` (G2, IP, IF at every delay; linear and
        multi-tau), computed from the events one delay at a time.
    segments : SegmentResult, optional
        Partial g2 of time segments (:mod:`ewoksxpcs.workflow.segments`), written as
        ``normalized_g2_partial`` (n_seg, n_τ, n_c) on the full delay list (NaN where a
        segment has no such delay), with errors and labels (xpcs-viewer's *g2 stability*).
    """
    import h5py

    if view.qmask is None:
        raise ValueError("the APS layout needs the q-mask (label image)")
    cols = numpy.flatnonzero(view.n_pixels > 0)
    labels = view.labels
    qi, si, n_q, n_phi = sector_grid(view.chi, labels, q_edges)
    to_a = 0.1  # nm⁻¹ → Å⁻¹
    if view.q_known and view.q_nominal is not None and n_phi > 1:
        edges = numpy.asarray(q_edges, dtype=numpy.float64)
        dq = 0.5 * (edges[:-1] + edges[1:]) * to_a
        dp = numpy.full(n_phi, numpy.nan)
        dp[si] = view.chi
        index = qi * n_phi + si
    elif view.q_known:
        dq = (view.q_nominal if view.q_nominal is not None else view.q) * to_a
        dp, n_q, n_phi = numpy.zeros(1), labels.size, 1
        index = numpy.arange(labels.size)
    else:
        dq = labels.astype(numpy.float64)  # no q: the labels, named "label"
        dp, n_q, n_phi = numpy.zeros(1), labels.size, 1
        index = numpy.arange(labels.size)
    # Columns in grid order (q-major), as the reader pairs them with its q list.
    cols = cols[numpy.argsort(index[cols], kind="stable")]
    index = index[cols]
    roi = _column_map(view.qmask, labels, cols)
    if bad_pixels is not None:
        mask = (~numpy.asarray(bad_pixels, dtype=bool)).astype(numpy.int32)
    else:
        mask = (view.qmask > 0).astype(numpy.int32)
    geo = view.geometry or {}
    wavelength = geo.get("wavelength")
    energy = _HC_KEV_A / (float(wavelength) * 1e10) if wavelength else numpy.nan
    if geo:
        y0 = float(geo["poni1"]) / float(geo["pixel1"]) - 0.5
        x0 = float(geo["poni2"]) / float(geo["pixel2"]) - 0.5
        distance_mm, pixel_mm = float(geo["distance"]) * 1e3, float(geo["pixel2"]) * 1e3
    else:
        y0 = x0 = distance_mm = pixel_mm = numpy.nan
    period = view.frame_period
    now = datetime.datetime.now().astimezone().isoformat()
    with h5py.File(filename, "w") as f:
        f.attrs["creator"] = "ewoksxpcs (APS 8-ID-I layout for xpcs-viewer)"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["start_time"] = now
        entry["title"] = title
        det = entry.create_group("instrument/detector_1")
        for name in ("frame_time", "count_time"):
            d = det.create_dataset(name, data=float(period) if period else 1.0)
            d.attrs["units"] = "s" if period else "frame"
            if not period:
                d.attrs["note"] = "frame period unknown: times are in frames"
        det["x_pixel_size"] = pixel_mm
        det["y_pixel_size"] = pixel_mm
        beam = entry.create_group("instrument/incident_beam")
        beam.create_dataset("incident_energy", data=energy).attrs["units"] = "keV"

        qg = f.create_group("xpcs/qmap")
        qg.create_dataset("mask", data=mask, compression="gzip")
        for kind in ("dynamic", "static"):
            qg.create_dataset(f"{kind}_roi_map", data=roi, compression="gzip")
            qg.create_dataset(f"{kind}_v_list_dim0", data=numpy.asarray(dq, numpy.float64))
            qg.create_dataset(f"{kind}_v_list_dim1", data=numpy.asarray(dp, numpy.float64))
            qg.create_dataset(f"{kind}_num_pts", data=numpy.asarray([n_q, n_phi], numpy.int64))
            qg.create_dataset(f"{kind}_index_mapping", data=index.astype(numpy.int64))
        qg["dynamic_v_list_dim0"].attrs["description"] = (
            "nominal centre of each q interval" if view.q_nominal is not None
            else ("mean q of each bin's pixels" if view.q_known else "q unknown: bin labels"))
        if view.q_known:
            qg.create_dataset("dynamic_mean_q", data=view.q[cols] * to_a).attrs["units"] = "1/A"
        qg["map_names"] = numpy.asarray([b"q" if view.q_known else b"label", b"phi"])
        qg["map_units"] = numpy.asarray([b"1/A" if view.q_known else b"", b"deg"])
        qg["beam_center_x"], qg["beam_center_y"] = x0, y0
        qg["detector_distance"], qg["pixel_size"] = distance_mm, pixel_mm
        qg["detector_distance"].attrs["units"] = qg["pixel_size"].attrs["units"] = "mm"
        qg["energy"] = energy
        if not geo:
            qg.attrs["geometry"] = "unknown (q-mask given directly)"
        # The viewer caches q-maps by this attribute: a digest of the partition.
        digest = hashlib.sha1(roi.tobytes() + mask.tobytes() + dq.tobytes())
        qg.attrs["hash"] = digest.hexdigest()

        tm = f.create_group("xpcs/temporal_mean")
        image = (view.mean_image if view.mean_image is not None
                 else numpy.full(view.qmask.shape, numpy.nan))
        tm.create_dataset("scattering_2d", data=image[None].astype(numpy.float32),
                          compression="gzip")
        tm.create_dataset("scattering_1d", data=view.mean_intensity[cols][None])
        if view.frame_sums is not None:
            tm.create_dataset("scattering_1d_segments",
                              data=view.intensity_segments()[:, cols])
            sm = f.create_group("xpcs/spatial_mean")
            sm.create_dataset("intensity_vs_time",
                              data=numpy.stack([view.times, view.mean_per_frame]))

        lags = view.lags
        if view.mode == "twotime":
            _write_twotime(f, view, cols)
        else:
            mt = f.create_group("xpcs/multitau")
            mt.create_dataset("normalized_g2", data=view.g2[cols].T)
            mt.create_dataset("normalized_g2_err", data=view.g2_err[cols].T)
            mt.create_dataset("delay_list", data=lags).attrs["units"] = "frame"
            mt["config/stride_frame"] = 1
            mt["config/avg_frame"] = 1
            mt["config/mode"] = view.mode
            if events is not None:
                _write_pixel_G2(mt, events, lags)
            if segments is not None:
                _write_partial(mt, segments, view, cols)


def _write_partial(group, segments, view: ResultView, cols: numpy.ndarray) -> None:
    """Segments' g2 on the result's delays and columns: (n_seg, n_τ, n_c), NaN if absent."""
    seg_lags = numpy.asarray(segments.lags, dtype=numpy.float64)
    where = {float(v): i for i, v in enumerate(seg_lags)}
    rows = numpy.searchsorted(numpy.asarray(segments.labels), view.labels[cols])
    shape = (segments.n_segments, view.lags.size, cols.size)
    out = {"": numpy.full(shape, numpy.nan), "_err": numpy.full(shape, numpy.nan)}
    for k, lag in enumerate(view.lags):
        i = where.get(float(lag))
        if i is not None:
            out[""][:, k, :] = segments.g2[:, rows, i]
            out["_err"][:, k, :] = segments.g2_err[:, rows, i]
    group.create_dataset("normalized_g2_partial", data=out[""])
    group.create_dataset("normalized_g2_partial_err", data=out["_err"])
    edges = numpy.asarray(segments.edges)
    group["normalized_g2_partial_labels"] = numpy.asarray(
        [f"frames {a}-{b - 1}".encode() for a, b in zip(edges[:-1], edges[1:])])


def _write_pixel_G2(group, events, lags) -> None:
    """``unnormalized_G2`` (n_τ, 3, Ny, Nx) float32: G2, IP, IF per pixel (0 for pixels without
    events: masked), one delay at a time."""
    from ..engine.pixelcorr import pixel_G2

    ny, nx = events.frame_shape
    d = group.create_dataset("unnormalized_G2", shape=(lags.size, 3, ny, nx), dtype=numpy.float32,
                             chunks=(1, 1, ny, nx), compression="gzip", fillvalue=0)
    d.attrs["channels"] = "G2 = <I(t) I(t+tau)>, IP = <I(t)>, IF = <I(t+tau)> over the pairs"
    rows, cols = numpy.divmod(events.pixel_index, nx)
    for i, tau in enumerate(lags):
        values = pixel_G2(events, [tau])[0]  # (3, n_pix)
        plane = numpy.zeros((3, ny, nx), dtype=numpy.float32)
        plane[:, rows, cols] = values
        d[i] = plane


def _write_twotime(f, view: ResultView, cols: numpy.ndarray) -> None:
    r = view.result
    tt = f.create_group("xpcs/twotime")
    maps = tt.create_group("correlation_map")
    for k, c in enumerate(cols):
        # Named by column (the q-map value of its pixels), in the columns' grid order. Upper
        # triangle: the reader adds the transpose and halves the diagonal.
        # gzip only for small maps, as the NeXus result (GZIP_MAPS_MAX_BYTES: HDF5's one
        # thread gzips noisy float32 at 20-40 MB/s).
        small = r.C[c].nbytes <= GZIP_MAPS_MAX_BYTES
        maps.create_dataset(f"c2_{k + 1:05d}", data=numpy.triu(r.C[c]).astype(numpy.float32),
                            compression="gzip" if small else None)
    tt.create_dataset("processed_bins", data=numpy.arange(1, cols.size + 1, dtype=numpy.int64))
    tt.create_dataset("normalized_g2", data=view.g2[cols].T)
    tt.create_dataset("normalized_g2_err", data=view.g2_err[cols].T)
    tt.create_dataset("delay_list", data=view.lags).attrs["units"] = "frame"
    plags = numpy.asarray(r.partial_lags, dtype=numpy.float64)
    keep = plags > 0
    part = numpy.asarray(r.partial_g2, dtype=numpy.float64)[cols][:, :, keep]  # (c, seg, τ)
    tt.create_dataset("normalized_g2_segments", data=numpy.transpose(part, (2, 1, 0)))
    tt["config/stride_frame"] = 1
    tt["config/avg_frame"] = int(view.time_bin)
