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
__kernel void g2_jackknife(__global const long *n2,      // (n_sub, n_lags) sums per sub-bin
                           __global const long *c,       // (n_rows, n_lags) s2 rows
                           __global const int *sub0,     // (n_bins + 1,) first sub-bin of each bin
                           __global const int *row0,     // (n_bins,) the bin's s2 row, then its groups'
                           __global const double *npix,  // (n_bins,) N_q
                           __global const double *factor,// (n_sub,) N_q − N_g of each group
                           const int n_lags,
                           __global double *g2,          // (n_bins, n_lags)
                           __global double *err,         // (n_bins, n_lags)
                           __global long *n2_bin)        // (n_bins, n_lags) n2 of each bin
{
    const int t = get_global_id(0);
    const int i = get_global_id(1);
    if (t >= n_lags) return;
    const int s0 = sub0[i], n_groups = sub0[i + 1] - s0;
    const long at = (long)i * n_lags + t;
    if (n_groups == 0) {  // an empty bin
        g2[at] = NAN;
        err[at] = NAN;
        n2_bin[at] = 0;
        return;
    }
    __global const long *ci = c + (long)row0[i] * n_lags + t;
    long whole = 0;
    for (int g = 0; g < n_groups; g++) whole += n2[(long)(s0 + g) * n_lags + t];
    n2_bin[at] = whole;
    const double nb = (double)whole;
    g2[at] = (npix[i] * nb) / (double)ci[0];
    if (n_groups < 2) {  // no error from one group
        err[at] = NAN;
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
    err[at] = sqrt(((double)(n_groups - 1) / (double)n_groups) * ss);
}
#endif
