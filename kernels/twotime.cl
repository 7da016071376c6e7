// Two-time correlation on OpenCL (host side: ewoksxpcs/correlators/opencl_twotime.py).
//
// X (nT, P) holds the time-binned frames of the selected pixels, one row per time bin, the
// pixels of each selected bin in a contiguous column range. For a bin (columns c0 .. c1-1):
//   S(T)       = Σ_p X(T, p)                                  (tt_rowsums)
//   C(T1, T2)  = N_q · Σ_p X(T1, p) X(T2, p) / (S(T1) S(T2))   (tt_gram, tiled, float sums)
//
// Compile-time constants:
//   IN_T    input values (frames, events, or X rows when re-binning)
//   X_T     stored binned values
//   ACC_T   exact row sums: long (integers) or double (floats); float without fp64
//   TS, WPT tt_gram: a work-group computes a (TS*WPT)^2 tile with TS x TS work-items
//   TK      pixels per local-memory step of tt_gram

// Time-bin frames into X: X[(t / b) - T_base, p] += in[i, pix[p]] for frames t = t0 + i.
// With X_MAX defined (unsigned input, X narrower than any sum of b inputs, chosen to save
// memory), a partial sum above X_MAX sets *ovf and the host redoes the pass with a wider X:
// partial sums of unsigned values only grow, so no overflow goes unseen.
// One work-item per pixel (no write conflicts). Launch: global (>= P).
__kernel void tt_bin(__global const IN_T *in,
                     const long frame_pixels,
                     __global const int *pix,
                     const int P,
                     const int n,
                     const long t0,
                     const long b,
                     const long nT,
                     __global X_T *X,
                     __global int *ovf)
{
    const int p = get_global_id(0);
    if (p >= P)
        return;
    const long src = pix[p];
    if (src < 0)
        return;  // padding column (tt_gram_mma's layout): stays zero
#ifdef X_MAX
    int over = 0;
#endif
    for (int i = 0; i < n; i++) {
        const long T = (t0 + i) / b;
        if (T >= nT)
            break;
#ifdef X_MAX
        const ulong v = (ulong)X[T * P + p] + (ulong)in[(long)i * frame_pixels + src];
        over |= v > X_MAX;
        X[T * P + p] = (X_T)v;
#else
        X[T * P + p] += (X_T)in[(long)i * frame_pixels + src];
#endif
    }
#ifdef X_MAX
    if (over)
        *ovf = 1;
#endif
}

// Scatter events of the selected pixels into X: X[times / b, p] += value (X_MAX: as tt_bin).
// Events of selected pixel p are starts[p] … ends[p]-1 of values/times (the device buffers of
// the compaction, or a host gather of the selected pixels). Launch: global (>= P).
__kernel void tt_events(__global const IN_T *values,
                        __global const uint *times,
                        __global const long *starts,
                        __global const long *ends,
                        const int P,
                        const long b,
                        const long nT,
                        __global X_T *X,
                        __global int *ovf)
{
    const int p = get_global_id(0);
    if (p >= P)
        return;
#ifdef X_MAX
    int over = 0;
#endif
    for (long e = starts[p]; e < ends[p]; e++) {
        const long T = (long)times[e] / b;
        if (T >= nT)
            break;  // times ascend within a pixel
#ifdef X_MAX
        const ulong v = (ulong)X[T * P + p] + (ulong)values[e];
        over |= v > X_MAX;
        X[T * P + p] = (X_T)v;
#else
        X[T * P + p] += (X_T)values[e];
#endif
    }
#ifdef X_MAX
    if (over)
        *ovf = 1;
#endif
}

// Row sums over columns c0 .. c1-1: S[T] exact, Sf[T] the same rounded to float (the gram
// kernels' operand). Launch: global (WG, rows), local (WG, 1), global offset (0, first row).
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void tt_rowsums(__global const X_T *X,
                const int P,
                const int c0,
                const int c1,
                __global ACC_T *S,
                __global float *Sf)
{
    const int lid = get_local_id(0);
    const long T = get_global_id(1);
    __local ACC_T part[WG];
    ACC_T sum = 0;
    for (long q = c0 + lid; q < c1; q += WG)
        sum += (ACC_T)X[T * P + q];
    part[lid] = sum;
    WORK_GROUP_SUM(part, lid);
    if (lid == 0) {
        S[T] = part[0];
        Sf[T] = (float)part[0];
    }
}

#define TILE (TS * WPT)
#define V4 (WPT / 4)  // float4 vectors of a work-item's rows (and columns); WPT % 4 == 0

// Band of the two-time maps of several bins: rows T1 = r0 + i (i < R), columns T2 = r0 + j
// (j < W), of C_z = NQ[z] · X Xᵀ / (S_z S_zᵀ) over the columns col_off[z] .. col_off[z+1]-1 of X,
// z = get_group_id(2) (one launch for all bins of a group keeps the device busy for short
// series). Tiles entirely below the diagonal are skipped; with ``mirror`` (the whole map in one
// band) each value is also written at its transposed place, otherwise the host mirrors.
// ``gx0``: the launch starts at column tile gx0 (the strips of opencl_twotime_strips: rows
// 0 … R-1 and columns gx0·TILE … of whole maps, r0 = 0, W = nT).
// Work-item (tx, ty) owns rows 4·ty + 4·TS·v + u and columns 4·tx + 4·TS·v + u (v < WPT/4,
// u < 4) of the group's tile: its operands are read from local memory as float4 (a quarter of
// the local loads of scalar reads; consecutive tx, consecutive 16-byte words: no conflicts).
// Launch: global ((ceil(W/TILE) - gx0)*TS or less, ceil(R/TILE)*TS, n_bins), local (TS, TS, 1);
// r0 a multiple of TILE. S (n_bins, nT), band (n_bins, R, W).
__kernel __attribute__((reqd_work_group_size(TS, TS, 1)))
void tt_gram(__global const X_T *X,
             const int P,
             __global const int *col_off,
             __global const float *NQ,
             const long nT,
             const long r0,
             const int R,
             const int W,
             __global const float *S,
             const int mirror,
             __global float *band,
             const int gx0)
{
    const int tx = get_local_id(0);
    const int ty = get_local_id(1);
    const int gx = get_group_id(0) + gx0;
    const int gy = get_group_id(1);
    const int z = get_group_id(2);
    if (gx < gy)
        return;  // below the diagonal (rows and columns start at the same r0)
    const int c0 = col_off[z];
    const int c1 = col_off[z + 1];
    const float nq = NQ[z];  // pixels of the bin (columns may be padded with zeros)
    S += z * nT;
    band += (long)z * R * W;
    const long row0 = r0 + (long)gy * TILE;
    const long col0 = r0 + (long)gx * TILE;
    // Rows of TILE floats padded by one float4: 16-byte aligned, fewer bank conflicts on stores.
    __local float4 As[TK][TILE / 4 + 1];
    __local float4 Bs[TK][TILE / 4 + 1];
    float acc[WPT][WPT];
#pragma unroll
    for (int i = 0; i < WPT; i++)
#pragma unroll
        for (int j = 0; j < WPT; j++)
            acc[i][j] = 0.0f;
    const int lid = ty * TS + tx;
    for (int p0 = c0; p0 < c1; p0 += TK) {
        // Load TILE rows x TK pixels of each operand: consecutive work-items, consecutive pixels.
        for (int e = lid; e < TILE * TK; e += TS * TS) {
            const int kk = e % TK;
            const int r = e / TK;
            const int p = p0 + kk;
            const long ra = row0 + r;
            const long rb = col0 + r;
            ((__local float *)As[kk])[r] = (p < c1 && ra < nT) ? (float)X[ra * P + p] : 0.0f;
            ((__local float *)Bs[kk])[r] = (p < c1 && rb < nT) ? (float)X[rb * P + p] : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        // The micro-tile loops are unrolled so that a, bb and acc stay in registers.
        for (int kk = 0; kk < TK; kk++) {
            float a[WPT], bb[WPT];
#pragma unroll
            for (int v = 0; v < V4; v++) {
                const float4 fa = As[kk][ty + TS * v];
                const float4 fb = Bs[kk][tx + TS * v];
                a[4 * v] = fa.x; a[4 * v + 1] = fa.y; a[4 * v + 2] = fa.z; a[4 * v + 3] = fa.w;
                bb[4 * v] = fb.x; bb[4 * v + 1] = fb.y; bb[4 * v + 2] = fb.z; bb[4 * v + 3] = fb.w;
            }
#pragma unroll
            for (int i = 0; i < WPT; i++)
#pragma unroll
                for (int j = 0; j < WPT; j++)
                    acc[i][j] = fma(a[i], bb[j], acc[i][j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
#pragma unroll
    for (int i = 0; i < WPT; i++) {
        const long T1 = row0 + 4 * ty + 4 * TS * (i / 4) + (i % 4);
        if (T1 >= nT || T1 - r0 >= R)
            continue;
        const float s1 = S[T1];
#pragma unroll
        for (int j = 0; j < WPT; j++) {
            const long T2 = col0 + 4 * tx + 4 * TS * (j / 4) + (j % 4);
            if (T2 >= nT || T2 - r0 >= W)
                continue;
            const float den = s1 * S[T2];
            const float c = den != 0.0f ? nq * acc[i][j] / den : NAN;
            band[(T1 - r0) * W + (T2 - r0)] = c;
            if (mirror)  // whole map in one band (r0 = 0, R = W = nT): write the lower half too
                band[T2 * W + T1] = c;
        }
    }
}

#ifdef HAS_FP64
// Moments of the upper diagonals of whole maps (the g2 of a two-time map and of its age
// segments, without reading the maps back for it): for row range s, [bounds[2s], bounds[2s+1]),
// and lag tau, over T in the range with T + tau in it and C[T, T+tau] finite:
//   s1 = Σ C,  s2 = Σ C²,  cnt = number of terms   (double: as the host's float64 sums).
// Consecutive work-items take consecutive lags: consecutive addresses of a row.
// Launch: global (>= nT, n_ranges, n_maps). maps (n_maps, nT, nT); out (n_maps, n_ranges, nT).
__kernel void tt_diag(__global const float *maps,
                      const long nT,
                      __global const long *bounds,
                      __global double *s1,
                      __global double *s2,
                      __global long *cnt)
{
    const long tau = get_global_id(0);
    const int s = get_global_id(1);
    const int z = get_global_id(2);
    if (tau >= nT)
        return;
    const long a = bounds[2 * s];
    const long b = bounds[2 * s + 1];
    __global const float *C = maps + (long)z * nT * nT;
    double m1 = 0.0, m2 = 0.0;
    long c = 0;
    for (long T = a; T + tau < b; T++) {
        const float v = C[T * nT + T + tau];
        if (isfinite(v)) {
            const double d = (double)v;
            m1 += d;
            m2 += d * d;
            c++;
        }
    }
    const long o = ((long)z * get_global_size(1) + s) * nT + tau;
    s1[o] = m1;
    s2[o] = m2;
    cnt[o] = c;
}
#endif
