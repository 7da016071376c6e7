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
// One work-item per pixel (no write conflicts). Launch: global (>= P).
__kernel void tt_bin(__global const IN_T *in,
                     const long frame_pixels,
                     __global const int *pix,
                     const int P,
                     const int n,
                     const long t0,
                     const long b,
                     const long nT,
                     __global X_T *X)
{
    const int p = get_global_id(0);
    if (p >= P)
        return;
    const long src = pix[p];
    for (int i = 0; i < n; i++) {
        const long T = (t0 + i) / b;
        if (T >= nT)
            break;
        X[T * P + p] += (X_T)in[(long)i * frame_pixels + src];
    }
}

// Scatter events of the selected pixels into X: X[times / b, p] += value.
// offsets (P + 1) relative to the uploaded event arrays. Launch: global (>= P).
__kernel void tt_events(__global const IN_T *values,
                        __global const uint *times,
                        __global const long *offsets,
                        const int P,
                        const long b,
                        const long nT,
                        __global X_T *X)
{
    const int p = get_global_id(0);
    if (p >= P)
        return;
    for (long e = offsets[p]; e < offsets[p + 1]; e++) {
        const long T = (long)times[e] / b;
        if (T >= nT)
            break;  // times ascend within a pixel
        X[T * P + p] += (X_T)values[e];
    }
}

// Row sums over columns c0 .. c1-1. Launch: global (WG, nT), local (WG, 1).
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void tt_rowsums(__global const X_T *X,
                const int P,
                const int c0,
                const int c1,
                __global ACC_T *S)
{
    const int lid = get_local_id(0);
    const long T = get_global_id(1);
    __local ACC_T part[WG];
    ACC_T sum = 0;
    for (long q = c0 + lid; q < c1; q += WG)
        sum += (ACC_T)X[T * P + q];
    part[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int w = WG / 2; w > 0; w >>= 1) {
        if (lid < w)
            part[lid] += part[lid + w];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        S[T] = part[0];
}

#define TILE (TS * WPT)

// Band of the two-time maps of several bins: rows T1 = r0 + i (i < R), columns T2 = r0 + j
// (j < W), of C_z = N_z · X Xᵀ / (S_z S_zᵀ) over the columns col_off[z] .. col_off[z+1]-1 of X,
// z = get_group_id(2) (one launch for all bins of a group keeps the device busy for short
// series). Tiles entirely below the diagonal are skipped; with ``mirror`` (the whole map in one
// band) each value is also written at its transposed place, otherwise the host mirrors. Work-item (tx, ty) of a group owns rows ty + TS*i and columns tx + TS*j of the
// group's tile (conflict-free local reads).
// Launch: global (ceil(W/TILE)*TS, ceil(R/TILE)*TS, n_bins), local (TS, TS, 1);
// r0 a multiple of TILE. S (n_bins, nT), band (n_bins, R, W).
__kernel __attribute__((reqd_work_group_size(TS, TS, 1)))
void tt_gram(__global const X_T *X,
             const int P,
             __global const int *col_off,
             const long nT,
             const long r0,
             const int R,
             const int W,
             __global const float *S,
             const int mirror,
             __global float *band)
{
    const int tx = get_local_id(0);
    const int ty = get_local_id(1);
    const int gx = get_group_id(0);
    const int gy = get_group_id(1);
    const int z = get_group_id(2);
    if (gx < gy)
        return;  // below the diagonal (rows and columns start at the same r0)
    const int c0 = col_off[z];
    const int c1 = col_off[z + 1];
    const float nq = (float)(c1 - c0);
    S += z * nT;
    band += (long)z * R * W;
    const long row0 = r0 + (long)gy * TILE;
    const long col0 = r0 + (long)gx * TILE;
    __local float As[TK][TILE + 1];
    __local float Bs[TK][TILE + 1];
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
            As[kk][r] = (p < c1 && ra < nT) ? (float)X[ra * P + p] : 0.0f;
            Bs[kk][r] = (p < c1 && rb < nT) ? (float)X[rb * P + p] : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        // The micro-tile loops are unrolled so that a, bb and acc stay in registers.
        for (int kk = 0; kk < TK; kk++) {
            float a[WPT], bb[WPT];
#pragma unroll
            for (int i = 0; i < WPT; i++)
                a[i] = As[kk][ty + TS * i];
#pragma unroll
            for (int j = 0; j < WPT; j++)
                bb[j] = Bs[kk][tx + TS * j];
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
        const long T1 = row0 + ty + TS * i;
        if (T1 >= nT || T1 - r0 >= R)
            continue;
        const float s1 = S[T1];
#pragma unroll
        for (int j = 0; j < WPT; j++) {
            const long T2 = col0 + tx + TS * j;
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
