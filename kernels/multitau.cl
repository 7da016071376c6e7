// Multi-tau correlation on OpenCL (host side: ewoksxpcs/correlators/opencl_multitau.py).
//
// One work-item per binned pixel walks the frames of one level in time order, keeping the last
// M-1 level values of its pixel in registers: each value is read from global memory once, its
// products with the M-1 previous values (lags 1 .. M-1) and itself (lag 0, level 0 only) are
// summed in private accumulators, and on every odd level time t the pair sum
// X_{L+1}(t >> 1) = X_L(t-1) + X_L(t) is written for the next level. The ring and the sums
// persist in global memory between launches (one launch per level per chunk of frames), so
// frames stream through in chunks of any length.
//
// Compile-time constants:
//   IN_T     C type of the input of the launch (frames: char … float; levels >= 1: VAL_T)
//   VAL_T    level values: int (integer frames whose level sums fit), long, or double (float32)
//   ACC_T    accumulators: long (integer frames, wrapping like NumPy's int64) or double
//   PROD32   defined when |level value|^2 < 2^31: 32-bit products (values are ints)
//   M        lags per level
//   KMIN     first lag of the level: 0 (level 0) or M/2
//   GATHER   defined for level 0: the input is whole frames, read at pixel_index[p]

#if defined(PROD32)
#define MUL(a, b) ((ACC_T)((a) * (b)))
#else
#define MUL(a, b) ((ACC_T)(a) * (ACC_T)(b))
#endif

// Launch: global (>= P), any local size.
//   in        GATHER: frames (n, frame_pixels) IN_T; else level values (n, P) IN_T
//   pix       GATHER: flat pixel index of each binned pixel (P) in Binning order
//   n         frames of this level in this launch
//   t0        absolute level time of the first one
//   ring      (M-1, P): ring[j*P + p] = X_L(t0 - 1 - j, p) (zeros before t = 0)
//   acc       (n_slots, P): acc[(slot0 + k - KMIN)*P + p] += Σ_t X_L(t, p) X_L(t - k, p)
//   out       next level values (⌈n/2⌉ + 1, P), row (t >> 1) - (t0 >> 1); NULL-safe via write_out
//   vmax      GATHER and integer frames: running max |value| per pixel (for the overflow bound)
__kernel void mt_level(__global const IN_T *in,
                       const long frame_pixels,
                       __global const int *pix,
                       const int P,
                       const int n,
                       const long t0,
                       __global VAL_T *ring,
                       __global ACC_T *acc,
                       const long slot0,
                       __global VAL_T *out,
                       const int write_out,
                       __global uint *vmax)
{
    const int p = get_global_id(0);
    if (p >= P)
        return;
    VAL_T r[M];
    ACC_T a[M];
#pragma unroll
    for (int j = 0; j < M - 1; j++)
        r[j] = ring[(long)j * P + p];
    r[M - 1] = 0;
#pragma unroll
    for (int k = 0; k < M; k++)
        a[k] = 0;
#ifdef GATHER
    const long src = (long)pix[p];
    const long stride = frame_pixels;
#else
    const long src = p;
    const long stride = P;
#endif
    const long out0 = t0 >> 1;
#if defined(GATHER) && !defined(FLOAT_FRAMES)
    uint vm = 0;
#endif
    for (int i = 0; i < n; i++) {
        const VAL_T x = (VAL_T)in[(long)i * stride + src];
#if defined(GATHER) && !defined(FLOAT_FRAMES)
        vm = max(vm, (uint)abs(x));
#endif
#if KMIN == 0
        a[0] += MUL(x, x);
#endif
#pragma unroll
        for (int k = (KMIN > 0 ? KMIN : 1); k < M; k++)
            a[k] += MUL(x, r[k - 1]);
        const long t = t0 + i;
        if (write_out && (t & 1))
            out[((t >> 1) - out0) * P + p] = r[0] + x;
#pragma unroll
        for (int j = M - 2; j > 0; j--)
            r[j] = r[j - 1];
        r[0] = x;
    }
#pragma unroll
    for (int j = 0; j < M - 1; j++)
        ring[(long)j * P + p] = r[j];
#pragma unroll
    for (int k = KMIN; k < M; k++)
        acc[(slot0 + k - KMIN) * P + p] += a[k];
#if defined(GATHER) && !defined(FLOAT_FRAMES)
    vmax[p] = max(vmax[p], vm);
#endif
}

// Per-frame sums of each sub-bin, S(t, s) = Σ_{p ∈ s} frames[t, pixel_index[p]].
// Launch: global (n_sub * WG, n), local (WG, 1). out (n, n_sub) ACC_T.
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void mt_frame_sums(__global const IN_T *in,
                   const long frame_pixels,
                   __global const int *pix,
                   __global const long *sub_off,
                   const int n_sub,
                   __global ACC_T *out)
{
    const int lid = get_local_id(0);
    const int s = get_group_id(0);
    const long t = get_global_id(1);
    __local ACC_T part[WG];
    ACC_T sum = 0;
    const long row = t * frame_pixels;
    for (long q = sub_off[s] + lid; q < sub_off[s + 1]; q += WG)
        sum += (ACC_T)in[row + pix[q]];
    part[lid] = sum;
    WORK_GROUP_SUM(part, lid);
    if (lid == 0)
        out[t * n_sub + s] = part[0];
}

// Sum per-pixel accumulators over each sub-bin: n2[s, c] = Σ_{p ∈ s} acc[c, pos(p)].
// pos: column of the accumulators of binned pixel p (identity when NULL-equivalent: use_pos = 0).
// Launch: global (n_sub * WG, n_cols), local (WG, 1).
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void mt_reduce(__global const ACC_T *acc,
               const int P,
               __global const long *sub_off,
               const int n_sub,
               __global const int *pos,
               const int use_pos,
               __global ACC_T *n2)
{
    const int lid = get_local_id(0);
    const int s = get_group_id(0);
    const long c = get_global_id(1);
    __local ACC_T part[WG];
    ACC_T sum = 0;
    for (long q = sub_off[s] + lid; q < sub_off[s + 1]; q += WG)
        sum += acc[c * P + (use_pos ? pos[q] : q)];
    part[lid] = sum;
    WORK_GROUP_SUM(part, lid);
    if (lid == 0)
        n2[(long)s * get_global_size(1) + c] = part[0];
}

// Multi-tau sums of every level from events (pixel-major CSR, times ascending per pixel).
// One work-item per event row; events of one level time are summed (X_L(t) = Σ of the events
// with time >> L == t), and each coalesced value multiplies the previous ones of its pixel
// within M-1 level frames. Rows whose pos < 0 (not binned) are skipped.
//   values, times  events of rows row0 … row0 + n_rows - 1, offsets relative to ev0
//   pos            accumulator column of each row (-1: not binned)
//   acc            (n_slots, P_acc): level L, lag k at slot base_L + k - kmin_L
// Launch: global (>= n_rows). KMIN is unused here.
__kernel void mt_events(__global const IN_T *values,
                        __global const uint *times,
                        __global const long *offsets,
                        const long ev0,
                        __global const int *pos,
                        const int n_rows,
                        const long n_frames,
                        const int n_levels,
                        const int P_acc,
                        __global ACC_T *acc)
{
    const int row = get_global_id(0);
    if (row >= n_rows)
        return;
    const int col = pos[row];
    if (col < 0)
        return;
    const long e0 = offsets[row] - ev0;
    const long e1 = offsets[row + 1] - ev0;
    long slot = 0;
    for (int L = 0; L < n_levels; L++) {
        const long nl = n_frames >> L;
        const int kmin = L ? M / 2 : 0;
        ACC_T a[M];
        long wt[M];
        VAL_T wv[M];
        for (int k = 0; k < M; k++) {
            a[k] = 0;
            wt[k] = -(long)M - 1;
            wv[k] = 0;
        }
        int head = 0;  // window: ring of the last M-1 coalesced events (distinct times)
        long cur_t = -1;
        VAL_T cur_v = 0;
        for (long e = e0; e <= e1; e++) {
            long tl = nl;  // sentinel: flush the last value
            VAL_T v = 0;
            if (e < e1) {
                tl = (long)(times[e] >> L);
                v = (VAL_T)values[e];
            }
            if (tl == cur_t && e < e1) {
                cur_v += v;
                continue;
            }
            if (cur_t >= 0) {
                if (kmin == 0)
                    a[0] += MUL(cur_v, cur_v);
                for (int j = 0; j < M - 1; j++) {
                    const long d = cur_t - wt[j];
                    if (d >= kmin && d < M)
                        a[d] += MUL(cur_v, wv[j]);
                }
                wt[head] = cur_t;
                wv[head] = cur_v;
                head = (head + 1) % (M - 1);
            }
            if (tl >= nl)
                break;  // frames of an incomplete last group are dropped
            cur_t = tl;
            cur_v = v;
        }
        for (int k = kmin; k < M; k++)
            acc[(slot + k - kmin) * P_acc + col] += a[k];
        slot += M - kmin;
    }
}

// Per-frame sub-bin sums S_0(t, s) of integer events, exact (wrapping ulong atomics read back
// as int64): one work-item per event row, rows whose sub < 0 (not binned) skipped.
//   sums  (n_frames, n_sub), zeroed by the host
// Launch: global (>= n_rows).
__kernel void mt_event_frame_sums(__global const IN_T *values,
                                  __global const uint *times,
                                  __global const long *offsets,
                                  __global const int *sub,
                                  const int n_rows,
                                  const int n_sub,
                                  __global ulong *sums)
{
    const int row = get_global_id(0);
    if (row >= n_rows)
        return;
    const int s = sub[row];
    if (s < 0)
        return;
    for (long e = offsets[row]; e < offsets[row + 1]; e++)
        atomic_add_u64_global((volatile __global ulong *)(sums + (long)times[e] * n_sub + s),
                              (ulong)(long)values[e]);
}
