// Dense correlation numerator n2 on OpenCL: tiled Gram products of time blocks, summed along
// their diagonals (see ewoksxpcs/correlators/opencl_dense.py for the host side).
//
// Frames are gathered pixel rows (time, pixel) of the binned pixels, native dtype, sub-bin k
// being the columns sub_off[k] .. sub_off[k+1]-1. Time is cut into blocks of T frames. For two
// blocks i <= j (j - i = d) the Gram tile G[r][c] = sum_p A[iT+r, p] * A[jT+c, p] holds the
// products at lag d*T + c - r; its diagonal sums, for a given d, all land in the same row
// D[d][k][0 .. 2T-2] (index c - r + T - 1). A work-group owns one (d, k) of one launch and sums
// the Gram tiles of every block pair with that d over all pixels of k before one diagonal
// reduction: no atomics, a fixed summation order (reproducible floating point results).
//
// Compile-time constants:
//   VAL_T   C type of the frames (char, uchar, short, ushort, int, uint, float)
//   TS, MT  a work-group is TS x TS work-items, each owning an MT x MT micro-tile: T = TS*MT
//   PC      pixels per local-memory chunk
//   MODE_FLOAT   float32 frames: double products and sums
//   MODE_INT32   integer frames: 32-bit multiply-adds, flushed to 64-bit sums every `flush`
//                chunks, with VMAX^2 * PC * flush < 2^31 for VMAX the largest |value| of the
//                two windows (read from vmax[] on the device)
//   (neither)    integer frames: 64-bit multiply-adds (wrapping like NumPy's int64)
// For integer frames the host launches both integer variants; each returns at once unless the
// windows' value bound selects it, so the host never waits for the bound.

#define T (TS * MT)
#define NDIAG (2 * T - 1)
#define WG (TS * TS)

#if defined(MODE_FLOAT)
typedef float lval_t;
typedef double acc_t;
typedef double pacc_t;
#define MULADD(s, a, b) s += (double)(a) * (double)(b)
#define FLUSH_TO(acc, p) acc += p
#elif defined(MODE_INT32)
typedef int lval_t;
typedef ulong acc_t;
typedef int pacc_t;
#define MULADD(s, a, b) s += (a) * (b)
#define FLUSH_TO(acc, p) acc += (ulong)(long)(p)
#else
typedef long lval_t;
typedef ulong acc_t;
typedef ulong pacc_t;
#define MULADD(s, a, b) s += (ulong)(a) * (ulong)(b)
#define FLUSH_TO(acc, p) acc += p
#endif

// Launch: global (n_d * TS, n_sub * TS), local (TS, TS); group (g, k) handles d = dmin + g.
// A holds blocks sA .. sA+mA-1, B blocks sB .. sB+mB-1 (row = frame within the buffer);
// A == B for the pairs inside one window.
__kernel __attribute__((reqd_work_group_size(TS, TS, 1)))
void gram_diag(__global const VAL_T *A,
               __global const VAL_T *B,
               const int mA,
               const int mB,
               const long sA,
               const long sB,
               const long dmin,
               __global const long *sub_off,
               const int npix,
               const int n_sub,
               __global const uint *vmax,  // largest |value| of each window
               const int wA,
               const int wB,
               __global acc_t *D)
{
#ifndef MODE_FLOAT
    // Value bound, rounded up to 2^b - 1 (as the host does).
    const uint vm = max(vmax[wA], vmax[wB]);
    const ulong vq = vm ? ((2UL << (31 - clz(vm))) - 1UL) : 0UL;
    const ulong chunk_max = vq > 46340UL ? 0xffffffffUL : vq * vq * (ulong)PC;  // no overflow
#ifdef MODE_INT32
    if (chunk_max > 0x7fffffffUL) return;  // the 64-bit variant handles these windows
    const int flush = (int)min(0x7fffffffUL / max(chunk_max, 1UL), (ulong)(1 << 20));
#else
    if (chunk_max <= 0x7fffffffUL) return;  // the 32-bit variant handles these windows
#endif
#endif
    const int tx = get_local_id(0);
    const int ty = get_local_id(1);
    const int lid = ty * TS + tx;
    const long d = dmin + get_group_id(0);
    const int k = get_group_id(1);
    const long off = d - (sB - sA);  // block b of B pairs with block a = b - off of A
    const int a0 = (int)max(0L, -off);
    const int a1 = (int)min((long)mA, (long)mB - off);
    const long p_begin = sub_off[k];
    const long p_end = sub_off[k + 1];

    // One padding element per row: the stores below (consecutive work-items, consecutive pp)
    // then fall in different local-memory banks.
    __local lval_t As[PC][T + 1];
    __local lval_t Bs[PC][T + 1];
    __local acc_t Ls[WG][2 * MT - 1];

    acc_t acc[MT][MT];
    pacc_t part[MT][MT];
    for (int i = 0; i < MT; i++)
        for (int j = 0; j < MT; j++) {
            acc[i][j] = 0;
            part[i][j] = 0;
        }
    int n_chunks = 0;

    for (int a = a0; a < a1; a++) {
        const long rowA = (long)a * T;
        const long rowB = (long)(a + off) * T;
        for (long p0 = p_begin; p0 < p_end; p0 += PC) {
            for (int e = lid; e < T * PC; e += WG) {
                const int r = e / PC;
                const int pp = e - r * PC;
                const long p = p0 + pp;
                lval_t x = 0, y = 0;
                if (p < p_end) {
                    x = (lval_t)A[(rowA + r) * npix + p];
                    y = (lval_t)B[(rowB + r) * npix + p];
                }
                As[pp][r] = x;
                Bs[pp][r] = y;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            for (int pp = 0; pp < PC; pp++) {
                lval_t av[MT], bv[MT];
                for (int i = 0; i < MT; i++) av[i] = As[pp][ty + TS * i];
                for (int j = 0; j < MT; j++) bv[j] = Bs[pp][tx + TS * j];
                for (int i = 0; i < MT; i++)
                    for (int j = 0; j < MT; j++) MULADD(part[i][j], av[i], bv[j]);
            }
            barrier(CLK_LOCAL_MEM_FENCE);
#ifdef MODE_INT32
            if (++n_chunks == flush) {
                n_chunks = 0;
                for (int i = 0; i < MT; i++)
                    for (int j = 0; j < MT; j++) {
                        FLUSH_TO(acc[i][j], part[i][j]);
                        part[i][j] = 0;
                    }
            }
#endif
        }
    }
    for (int i = 0; i < MT; i++)
        for (int j = 0; j < MT; j++) FLUSH_TO(acc[i][j], part[i][j]);

    // Micro-tile element (i, j) is G[ty + TS*i][tx + TS*j]: lag offset (tx - ty) + TS*(j - i).
    for (int q = 0; q < 2 * MT - 1; q++) {
        acc_t s = 0;
        for (int i = 0; i < MT; i++) {
            const int j = i + q - (MT - 1);
            if (j >= 0 && j < MT) s += acc[i][j];
        }
        Ls[lid][q] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int o = lid; o < NDIAG; o += WG) {
        const int c_r = o - (T - 1);
        acc_t s = 0;
        for (int q = 0; q < 2 * MT - 1; q++) {
            const int e = c_r - TS * (q - (MT - 1));  // tx - ty
            if (e <= -TS || e >= TS) continue;
            const int y0 = max(0, -e);
            const int y1 = min(TS, TS - e);
            for (int y = y0; y < y1; y++) s += Ls[y * TS + y + e][q];
        }
        D[(d * n_sub + k) * NDIAG + o] += s;
    }
}

// n2[k][tau] from the diagonal sums: lag tau = d*T + r gets D[d][k][r + T - 1] (offset r) and,
// for r > 0, D[d+1][k][r - 1] (offset r - T). Launch: global (n_frames, n_sub).
__kernel void diag_to_n2(__global const acc_t *D,
                         const int n_sub,
                         const long n_blocks,
                         const long n_frames,
                         __global acc_t *n2)
{
    const long tau = get_global_id(0);
    const int k = get_global_id(1);
    if (tau >= n_frames || k >= n_sub) return;
    const long d = tau / T;
    const int r = (int)(tau - d * T);
    acc_t v = D[(d * n_sub + k) * NDIAG + r + T - 1];
    if (r > 0 && d + 1 < n_blocks) v += D[((d + 1) * n_sub + k) * NDIAG + r - 1];
    n2[k * n_frames + tau] = v;
}

// Gather the binned pixels of n raw frames into rows of a window, and the largest |value|.
// Launch: global (ceil(npix / GWG) * GWG, n), local (GWG, 1).
__kernel void gather(__global const VAL_T *raw,        // (frames, frame_pix)
                     const long raw_row0,               // first frame to take
                     const long frame_pix,
                     __global const long *pixel_index,  // (npix,) flat pixel of each column
                     const int npix,
                     __global VAL_T *win,               // window rows (row, npix)
                     const long row0,
                     __global uint *vmax,
                     const int w)
{
    const int q = get_global_id(0);
    const long t = get_global_id(1);
#ifndef MODE_FLOAT
    __local uint m;
    if (get_local_id(0) == 0) m = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
#endif
    if (q < npix) {
        const VAL_T v = raw[(raw_row0 + t) * frame_pix + pixel_index[q]];
        win[(row0 + t) * npix + q] = v;
#ifndef MODE_FLOAT
        const long a = (long)v;
        atomic_max(&m, (uint)(a < 0 ? -a : a));
#endif
    }
#ifndef MODE_FLOAT
    barrier(CLK_LOCAL_MEM_FENCE);
    if (get_local_id(0) == 0 && m) atomic_max(vmax + w, m);
#endif
}

// Per-frame sums of each sub-bin over window rows row0 .. row0+n-1, summed in column order.
// Launch: global (n, n_sub).
#ifdef MODE_FLOAT
typedef double sum_t;
#else
typedef long sum_t;
#endif
__kernel void sub_sums(__global const VAL_T *win,
                       const long row0,
                       const int npix,
                       const int n,
                       __global const long *sub_off,
                       const int n_sub,
                       __global sum_t *sums)  // (n, n_sub)
{
    const int t = get_global_id(0);
    const int k = get_global_id(1);
    if (t >= n || k >= n_sub) return;
    __global const VAL_T *row = win + (row0 + t) * npix;
    sum_t s = 0;
    for (long q = sub_off[k]; q < sub_off[k + 1]; q++) s += (sum_t)row[q];
    sums[(long)t * n_sub + k] = s;
}
