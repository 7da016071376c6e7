// g2 and its jackknife error per bin and lag, from exact integer sums already on the device
// (host side: ewoksxpcs/opencl/normalise.py; reference: ewoksxpcs/engine/normalise.py).
//
// The same floating-point operations in the same order as the host's NumPy path (and its numba
// kernel), so the bits are the same: g2 = (N_q · n2_bin) / s2_0; without group g,
// g2_g = ((N_q − N_g) · (n2_bin − n2_g)) / s2_g; mean = (((g2_0 + g2_1) + …) / G;
// σ = sqrt((G − 1)/G · (((d_0·d_0) + d_1·d_1) + …)), d_g = g2_g − mean. Contraction into fused
// multiply-adds is off: it would round differently from the host.
//
// Then the few-pairs rule (undefined_lags, integer counts): E = s2_0 / N_q photon pairs of
// uncorrelated light; where n2_bin = 0 or E < MIN_PAIRS (-D, MIN_EXPECTED_PAIRS) g2 and σ are
// NaN; elsewhere σ is at least the counting floor sqrt(max(n2_bin, E)) / E.
//
// Launch: global (n_lags rounded up, n_bins).

#pragma OPENCL FP_CONTRACT OFF

// NumPy's NaN (the bits the host writes): results compare equal byte for byte.
#define HOST_NAN as_double(0x7FF8000000000000L)

#ifdef HAS_FP64
// The results of bin i at lag t, one buffer read back at once: res[q][i][t] for q = 0 g2,
// 1 σ (doubles, the few-pairs rule applied), 2 the bin's n2, 3 its own s2 row, 4 its own
// series X (int64 bits, as_double), 5 the expected pairs E (double).
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
                           __global double *res)         // (6, n_bins, n_lags), above
{
    const int t = get_global_id(0);
    const int i = get_global_id(1);
    if (t >= n_lags) return;
    const int s0 = sub0[i], n_groups = sub0[i + 1] - s0;
    if (n_groups == 0) {  // an empty bin
        RES(0) = HOST_NAN;
        RES(1) = HOST_NAN;
        RES(2) = RES(3) = RES(4) = as_double(0L);
        RES(5) = HOST_NAN;  // no pixel: E undefined
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
    const double g2 = (npix[i] * nb) / (double)ci[0];
    const double pairs = (double)ci[0] / npix[i];
    RES(5) = pairs;
    // The few-pairs rule: NaN where no pair was counted or too few were expected.
    const int undefined = whole == 0 || !(pairs >= MIN_PAIRS);
    RES(0) = undefined ? HOST_NAN : g2;
    if (n_groups < 2 || undefined) {  // no error from one group
        RES(1) = HOST_NAN;
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
    const double err = sqrt(((double)(n_groups - 1) / (double)n_groups) * ss);
    // σ below the counting floor is raised to it (NaN stays NaN, as the host's fmax keeps it).
    const double floor_ = sqrt(nb > pairs ? nb : pairs) / pairs;
    RES(1) = isnan(err) ? err : fmax(err, floor_);
}
#endif
