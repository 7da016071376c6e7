"""``reference``: a direct NumPy transcription of the definition — the oracle of the tests.

n2[k, τ] = Σ_{t=0}^{Nt-1-τ} Σ_{p∈k} I(t, p)·I(t+τ, p), one dot product per lag and sub-bin;
O(Nt²·N_pixels) work and the whole gathered stack in memory: small data only. Its s2 is computed
by direct sums too, independently of the FFT path the other backends share. Integer frames whose
Σ I² of a sub-bin reaches 2⁶³ are refused (:mod:`ewoksxpcs.engine.intrange`).
"""

from __future__ import annotations

import numpy

from ..engine.intrange import check_int64_bound, square_sums
from .base import DenseCorrelator
from .registry import register

__all__ = ["ReferenceCorrelator"]


@register
class ReferenceCorrelator(DenseCorrelator):
    name = "reference"
    description = "direct NumPy sums of the definition (oracle; small data)"
    s2_method = "direct"

    def _start(self, source):
        self._blocks = []

    def _feed(self, t0, block):
        self._blocks.append(block.astype(self.acc_dtype))

    def _finish(self, n_frames):
        b = self.binning
        n2 = numpy.zeros((b.n_sub, n_frames), dtype=self.acc_dtype)
        if not self._blocks:
            return n2
        a = numpy.concatenate(self._blocks, axis=0)  # (Nt, n_pixels)
        self._blocks = []
        if a.dtype.kind == "i":  # int64 sums would wrap beyond 2**63: refuse instead
            check_int64_bound(square_sums(a, b.sub_offsets), b)
        for k in range(b.n_sub):
            ak = a[:, b.sub_offsets[k] : b.sub_offsets[k + 1]]
            for tau in range(n_frames):
                n2[k, tau] = numpy.einsum("tp,tp->", ak[: n_frames - tau], ak[tau:])
        return n2
