// g2 and its jackknife error per bin and lag, from exact integer sums already on the device
// (host side: ewoksxpcs/opencl/normalise.py; reference: ewoksxpcs/engine/normalise.py).
//
// The same floating-point operations in the same order as the host's NumPy path (and its numba
// kernel), so the bits are the same: g2 = (N_q · n2_bin) / s2_0; without group g,
// g2_g = ((N_q − N_g) · (n2_bin − n2_g)) / s2_g; mean = (((g2_0 + g2_1) + …) / G;
// σ = sqrt((G − 1)/G · (((d_0·d_0) + d_1·d_1) + …)), d_g = g2_g − mean. Contraction into fused
// multiply-adds is off: it would round differently from the host.
//
// Launch: global (n_lags rounded up, n_bins).

#pragma OPENCL FP_CONTRACT OFF

#ifdef HAS_FP64
// The results of bin i at lag t, one buffer read back at once: res[q][i][t] for q = 0 g2,
// 1 σ (doubles), 2 the bin's n2, 3 its own s2 row, 4 its own series X (int64 bits, as_double).
#define RES(q) res[((long)(q) * n_bins + i) * n_lags + t]
__kernel void g2_jackknife(__global const long *n2,      // (n_sub, n_lags) sums per sub-bin
                           __global const long *c,       // (n_rows, n_lags) s2 rows
                           __global const long *x,       // (n_rows, n_lags) their series X
                           __global const int *sub0,     // (n_bins + 1,) first sub-bin of each bin
                           __global const int *row0,     // (n_bins,) the bin's s2 row, then its groups'
                           __global const double *npix,  // (n_bins,) N_q
                           __global const double *factor,// (n_sub,) N_q − N_g of each group
                           const int n_lags,
                           const int n_bins,
                           __global double *res)         // (5, n_bins, n_lags), above
{
    const int t = get_global_id(0);
    const int i = get_global_id(1);
    if (t >= n_lags) return;
    const int s0 = sub0[i], n_groups = sub0[i + 1] - s0;
    if (n_groups == 0) {  // an empty bin
        RES(0) = NAN;
        RES(1) = NAN;
        RES(2) = RES(3) = RES(4) = as_double(0L);
        return;
    }
    const long own = (long)row0[i] * n_lags + t;
    __global const long *ci = c + own;
    RES(3) = as_double(ci[0]);
    RES(4) = as_double(x[own]);
    long whole = 0;
    for (int g = 0; g < n_groups; g++) whole += n2[(long)(s0 + g) * n_lags + t];
    RES(2) = as_double(whole);
    const double nb = (double)whole;
    RES(0) = (npix[i] * nb) / (double)ci[0];
    if (n_groups < 2) {  // no error from one group
        RES(1) = NAN;
        return;
    }
    double mean = 0.0;
    for (int g = 0; g < n_groups; g++) {
        const double loo = (factor[s0 + g] * (nb - (double)n2[(long)(s0 + g) * n_lags + t]))
                           / (double)ci[(long)(1 + g) * n_lags];
        mean = g == 0 ? loo : mean + loo;
    }
    mean = mean / (double)n_groups;
    double ss = 0.0;
    for (int g = 0; g < n_groups; g++) {
        const double loo = (factor[s0 + g] * (nb - (double)n2[(long)(s0 + g) * n_lags + t]))
                           / (double)ci[(long)(1 + g) * n_lags];
        const double d = loo - mean;
        const double dd = d * d;
        ss = g == 0 ? dd : ss + dd;
    }
    RES(1) = sqrt(((double)(n_groups - 1) / (double)n_groups) * ss);
}
#endif
