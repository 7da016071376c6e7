// Gram matrix of 8-bit counts on NVIDIA tensor cores (host side:
// ewoksxpcs/correlators/opencl_twotime.py). Only built for NVIDIA GPUs of compute capability
// 8.0 or more: the products are PTX `mma.sync` instructions (inline assembly, which NVIDIA's
// OpenCL compiler accepts), u8 × u8 → s32, exact.
//
// X (nT, pitch) uchar holds the time-binned counts of the selected pixels, one row per time
// bin; the columns of bin z are col_off[z] .. col_off[z+1]-1, a multiple of BK wide and
// starting at a multiple of BK (zero columns pad each bin: they add nothing), pitch a multiple
// of 16. For bin z:
//   C(T1, T2) = NQ[z] · Σ_p X(T1, p) X(T2, p) / (S(T1) S(T2))
// The pixel sums are exact 32-bit integers when (max X)² × (columns of the bin) < 2³¹
// (tt_xmax gives max X). Otherwise the host defines KCHUNK, a multiple of BK with
// (max X)² × KCHUNK < 2³¹: the exact sums of every KCHUNK pixels are added into float
// accumulators (the maps are float32: a relative error of a few 1e-8 per KCHUNK pixels).
//
// Work decomposition: a work-group of 256 work-items (8 warps) computes a 128 × 128 tile of C;
// warp w owns rows 64·(w / 4) … +63 and columns 32·(w % 4) … +31 of it, as 4 × 4 mma tiles of
// 16 × 8. Each step stages 128 rows × BK pixels of both operands in local memory, rows of
// BK + 16 bytes (80: the 32-bit fragment loads of a warp hit 32 different banks).

#define BM 128
#define BK 64
#define LDW ((BK + 16) / 4)  // local row pitch in 32-bit words

// d += a · b for one m16n8k32 tile (fragment layouts: PTX ISA, "Matrix fragments for
// mma.m16n8k32", .u8 types).
#define MMA_U8(d, a0, a1, a2, a3, b0, b1)                                                    \
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32 "                          \
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"            \
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])                            \
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1))

// Band of the maps: rows T1 = r0 + i (i < R), columns T2 = r0 + j (j < W), as tt_gram in
// twotime.cl (tiles below the diagonal skipped; ``mirror``: also write the transposed value;
// the launch starts at column tile ``gx0``).
// Launch: global ((ceil(W/BM) - gx0)*256 or less, ceil(R/BM), n_bins), local (256, 1, 1); r0 a
// multiple of BM.
__kernel __attribute__((reqd_work_group_size(256, 1, 1)))
void tt_gram_mma(__global const uchar *X,
                 const long pitch,
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
    const int gx = get_group_id(0) + gx0;
    const int gy = get_group_id(1);
    const int z = get_group_id(2);
    if (gx < gy)
        return;
    const int lid = get_local_id(0);
    const int warp = lid >> 5;
    const int lane = lid & 31;
    const int g = lane >> 2;  // PTX "groupID"
    const int t = lane & 3;   // PTX "threadID_in_group"
    const int wm = (warp >> 2) * 64;
    const int wn = (warp & 3) * 32;
    const int c0 = col_off[z];
    const int c1 = col_off[z + 1];
    const float nq = NQ[z];
    S += z * nT;
    band += (long)z * R * W;
    const long row0 = r0 + (long)gy * BM;
    const long col0 = r0 + (long)gx * BM;

    // uint4 arrays: 16-byte aligned for the vector stores
    __local uint4 As4[BM * LDW / 4];
    __local uint4 Bs4[BM * LDW / 4];
    __local uint *As = (__local uint *)As4;
    __local uint *Bs = (__local uint *)Bs4;
    int acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc[i][j][e] = 0;

#ifdef KCHUNK
    float accf[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                accf[i][j][e] = 0.0f;
    int kc = 0;
#define FLUSH()                                                                               \
    _Pragma("unroll") for (int i = 0; i < 4; i++)                                             \
        _Pragma("unroll") for (int j = 0; j < 4; j++)                                         \
            _Pragma("unroll") for (int e = 0; e < 4; e++) {                                   \
                accf[i][j][e] += (float)acc[i][j][e];                                         \
                acc[i][j][e] = 0;                                                             \
            }
#define RESULT(i, j, e) accf[i][j][e]
#else
#define RESULT(i, j, e) ((float)acc[i][j][e])
#endif

    for (int p0 = c0; p0 < c1; p0 += BK) {
        // 128 rows x BK bytes of each operand: 16-byte loads, 4 per row.
#pragma unroll
        for (int e = lid; e < BM * BK / 16; e += 256) {
            const int r = e >> 2;
            const int q = e & 3;
            const long ra = row0 + r;
            const long rb = col0 + r;
            const uint4 va = ra < nT ? *(__global const uint4 *)(X + ra * pitch + p0 + 16 * q)
                                     : (uint4)(0u);
            const uint4 vb = rb < nT ? *(__global const uint4 *)(X + rb * pitch + p0 + 16 * q)
                                     : (uint4)(0u);
            *(__local uint4 *)(As + r * LDW + 4 * q) = va;
            *(__local uint4 *)(Bs + r * LDW + 4 * q) = vb;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
        for (int kw = 0; kw < BK / 4; kw += 8) {  // k steps of 32 bytes = 8 words
            uint a[4][4], b[4][2];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int ra = (wm + 16 * i + g) * LDW + kw + t;
                a[i][0] = As[ra];
                a[i][1] = As[ra + 8 * LDW];
                a[i][2] = As[ra + 4];
                a[i][3] = As[ra + 8 * LDW + 4];
            }
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int rb = (wn + 8 * j + g) * LDW + kw + t;
                b[j][0] = Bs[rb];
                b[j][1] = Bs[rb + 4];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    MMA_U8(acc[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b[j][0], b[j][1]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
#ifdef KCHUNK
        kc += BK;
        if (kc >= KCHUNK) {  // the same for the whole work-group
            FLUSH();
            kc = 0;
        }
#endif
    }
#ifdef KCHUNK
    FLUSH();
#endif

#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const long T1 = row0 + wm + 16 * i + g + 8 * h;
            if (T1 >= nT || T1 - r0 >= R)
                continue;
            const float s1 = S[T1];
#pragma unroll
            for (int j = 0; j < 4; j++) {
#pragma unroll
                for (int u = 0; u < 2; u++) {
                    const long T2 = col0 + wn + 8 * j + 2 * t + u;
                    if (T2 >= nT || T2 - r0 >= W)
                        continue;
                    const float den = s1 * S[T2];
                    const float c = den != 0.0f ? nq * RESULT(i, j, 2 * h + u) / den : NAN;
                    band[(T1 - r0) * W + (T2 - r0)] = c;
                    if (mirror)
                        band[T2 * W + T1] = c;
                }
            }
        }
    }
}

// Largest byte of X[0 .. n_words*4): *out = max(*out, ...). Launch: global (any multiple of
// 256), local (256, 1, 1); *out zeroed by the host.
__kernel __attribute__((reqd_work_group_size(256, 1, 1)))
void tt_xmax(__global const uint *X, const long n_words, __global uint *out)
{
    uint m = 0;
    for (long i = get_global_id(0); i < n_words; i += get_global_size(0)) {
        const uint w = X[i];
        m = max(m, max(max(w & 0xffu, (w >> 8) & 0xffu), max((w >> 16) & 0xffu, w >> 24)));
    }
    __local uint part[256];
    const int lid = get_local_id(0);
    part[lid] = m;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = 128; s > 0; s >>= 1) {
        if (lid < s)
            part[lid] = max(part[lid], part[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        atomic_max(out, part[0]);
}
