"""Pixel-level correlation from events: G2, IP, IF of every pixel at chosen delays.

For pixel p and delay τ (frames), over the Nt − τ pairs (t, t + τ)::

    G2(τ, p) = Σ_t I(t,p)·I(t+τ,p) / (Nt − τ)      IP(τ, p) = Σ_{t<Nt−τ} I(t,p) / (Nt − τ)
                                                   IF(τ, p) = Σ_{t≥τ} I(t,p) / (Nt − τ)

the APS 8-ID-I ``unnormalized_G2`` channels (xpcs-viewer's G2 map and its re-grouping, which
gives G2/(IP·IF) averaged as the symmetric normalisation). At multi-tau delays the frames are
not summed per level as in APS's multi-tau: these are the linear-lag means at those delays.
Computed from the pixel-major events
without densifying: for each delay, each event looks up its pixel's event τ frames later in the
sorted (pixel, time) keys; sums are exact integers (float64 below 2**53) before the division.
"""

from __future__ import annotations

import numpy

__all__ = ["pixel_G2"]


def pixel_G2(events, lags) -> numpy.ndarray:
    """G2, IP, IF of every kept pixel of ``events`` at ``lags``.

    Parameters
    ----------
    events : EventStack
    lags : array_like (n_τ,)
        Delays in frames (integers, 0 <= τ < Nt).

    Returns
    -------
    ndarray (n_τ, 3, n_pix) float64
        Channels G2, IP, IF (module docstring) of ``events.pixel_index`` order.
    """
    lags = numpy.asarray(lags)
    if lags.size and (numpy.any(lags != numpy.round(lags)) or lags.min() < 0
                      or lags.max() >= events.n_frames):
        raise ValueError("pixel-level G2 needs integer delays 0 <= tau < n_frames")
    lags = lags.astype(numpy.int64)
    nt = int(events.n_frames)
    counts = events.events_per_pixel
    pix = numpy.repeat(numpy.arange(events.n_pixels, dtype=numpy.int64), counts)
    t = events.times.astype(numpy.int64)
    v = events.values.astype(numpy.float64)
    key = pix * nt + t  # ascending: pixel-major, times ascending within a pixel
    csum = numpy.concatenate([[0.0], numpy.cumsum(v)])
    start = events.offsets[:-1]
    total = csum[events.offsets[1:]] - csum[start]
    out = numpy.empty((lags.size, 3, events.n_pixels))
    base = numpy.arange(events.n_pixels, dtype=numpy.int64) * nt
    for i, tau in enumerate(lags):
        j = numpy.searchsorted(key, key + tau)
        j = numpy.minimum(j, key.size - 1)
        # Same pixel only: t + τ past the end would reach the next pixel's keys.
        hit = (key[j] == key + tau) & (t + tau < nt) if key.size else numpy.zeros(0, bool)
        n2 = numpy.bincount(pix[hit], weights=v[hit] * v[j[hit]], minlength=events.n_pixels)
        # IP: events at t <= Nt-1-τ; IF: total minus events at t < τ.
        ip = csum[numpy.searchsorted(key, base + (nt - 1 - tau), side="right")] - csum[start]
        head = csum[numpy.searchsorted(key, base + tau, side="left")] - csum[start]
        pairs = nt - tau
        out[i, 0] = n2 / pairs
        out[i, 1] = ip / pairs
        out[i, 2] = (total - head) / pairs
    return out
