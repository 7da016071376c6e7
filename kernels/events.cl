// Event (sparse) correlation numerator n2 on OpenCL (host side: ewoksxpcs/correlators/opencl_events.py).
//
// Events are pixel-major: the events of one pixel are consecutive, their frame indices
// ("times") ascending. For every pair of events i <= j of one pixel, v_i * v_j is added to
// n2[k][t_j - t_i], k being the pixel's sub-bin.
//
// Work decomposition: a *segment* is a range [i0, i0 + n) of first events i of one pixel, whose
// partner events j run up to the pixel's end (a pixel with many events is split into several
// segments, so no work-item or work-group ever handles an unbounded number of events). A *task*
// is a run of segments of one sub-bin. The lag axis is cut into tiles of L lags. A work-group
// handles one (task, lag tile): it accumulates into a local-memory histogram of L lags, walking
// from each event i over the later events of its pixel while their lag is inside the tile
// (found by binary search for the tiles beyond the first), then adds the histogram into n2 in
// global memory. Integer products and sums are exact 64-bit (wrapping like NumPy's int64).
//
// Compile-time constants:
//   VAL_T        C type of the values
//   L            lags per tile (local histogram length)
//   WG           work-items per work-group
//   ACC_FLOAT    float values: double products and sums. The host then makes one task per
//                sub-bin and WG == 1, so that each n2 element has one writer and a fixed
//                summation order (reproducible results).
//   DIRECT       integer values only: no local histogram and a single lag tile; every product
//                is added to n2 in global memory with a 64-bit atomic (GPUs, whose atomics in
//                their L2 cache are fast, may prefer it).
//   HIST32       integer values of at most 16 bits (every product < 2^32): 32-bit local
//                histograms, twice the lags of 64-bit ones in the same local memory (one tile of
//                12 032 lags in 48 KB). Exact: the work-item whose add wraps a bin (the old value
//                plus its product passes 2^32, which the atomic's returned old value shows) adds
//                the lost 2^32 to n2 itself with a 64-bit global atomic; the flush adds the bin's
//                low 32 bits. n2 therefore needs no bound on the pairs of a task.
//   TIME_T       C type of the times (default uint): ushort for scans of at most 65 536 frames
//                whose events come from host memory, 2 bytes an event less on the bus.
//   S2_NARROW    s2_autocorr: every frame sum of a bin is below 2^31 (see there).
//   RB           "rows": consecutive first events of a pixel per work-item (default 1).

#ifndef RB
#define RB 1
#endif

#ifndef TIME_T
#define TIME_T uint
#endif

#ifdef ACC_FLOAT
typedef double acc_t;
#define CONV(x) ((double)(x))
#else
typedef ulong acc_t;
#define CONV(x) ((ulong)(long)(x))
#endif

#if defined(DIRECT)
#define HIST_ADD(p, v) atomic_add_u64_global((volatile __global ulong *)(p), v)
#elif WG > 1
#define HIST_ADD(p, v) atomic_add_u64_local((volatile __local ulong *)(p), v)
#else
#define HIST_ADD(p, v) (*(p) += (v))
#endif

#ifdef HIST32
typedef uint hist_t;
#define PROD(a, b) ((uint)(a) * (uint)(b))  // values of at most 16 bits: < 2^32
// hist[x] += v modulo 2^32; the 2^32 lost by a wrap goes to n2 (*carry) at once.
inline void hist32_add(__local uint *h, const uint v, __global ulong *carry)
{
#if WG > 1
    const uint old = atomic_add((volatile __local uint *)h, v);
#else
    const uint old = *h;
    *h = old + v;
#endif
    if (old + v < old) atomic_add_u64_global((volatile __global ulong *)carry, 1UL << 32);
}
#define LAG_ADD(x, v) hist32_add(&hist[x], v, out + (x))
// Where no bin of a task's histogram can pass 2^32 (event_corr_planned's carry_free): the add
// without its old value.
#if WG > 1
#define HIST32_ADD_NO_CARRY(x, v) atomic_add((volatile __local uint *)&hist[x], v)
#else
#define HIST32_ADD_NO_CARRY(x, v) (hist[x] += (v))
#endif
#else
typedef acc_t hist_t;
#define PROD(a, b) (CONV(a) * CONV(b))
#define LAG_ADD(x, v) HIST_ADD(&hist[x], v)
#endif

// Segment in s_lo .. s_hi holding first event f: the last s with seg_cum[s] <= f (binary
// search: segments may hold a single event).
inline int segment_of(__global const long *seg_cum, int s_lo, int s_hi, const long f)
{
    while (s_lo < s_hi) {
        const int mid = (s_lo + s_hi + 1) >> 1;
        if (seg_cum[mid] <= f) s_lo = mid; else s_hi = mid - 1;
    }
    return s_lo;
}

// Launch: global (n * WG, n_tiles), local (WG, 1) for tasks task0 … task0 + n − 1.
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void event_corr(__global const VAL_T *values,
                __global const TIME_T *times,
                __global const long *seg_i0,    // (n_seg,) first event of the segment
                __global const long *seg_end,   // (n_seg,) end of the segment's pixel
                __global const long *seg_cum,   // (n_seg + 1,) running count of first events
                __global const int *task_seg,   // (n_tasks + 1,) segments of each task
                __global const int *task_sub,   // (n_tasks,) sub-bin of each task
                const int task0,                // first task of this launch
                const int tile0,
                const int n_frames,
                __global acc_t *n2)             // (n_sub, n_frames)
{
    const int task = task0 + get_group_id(0);
    const int lid = get_local_id(0);
    const int k = task_sub[task];
#ifdef DIRECT
    const uint tau0 = 0;
    const uint tau1 = (uint)n_frames;
    __global acc_t *hist = n2 + (long)k * n_frames;
#else
    const uint tau0 = (uint)(tile0 + get_group_id(1)) * (uint)L;
    const uint tau1 = min(tau0 + (uint)L, (uint)n_frames);
    __local hist_t hist[L];
    for (int x = lid; x < L; x += WG) hist[x] = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    __global acc_t *out = n2 + (long)k * n_frames + tau0;
#endif

    int s = task_seg[task];
    const int s_last = task_seg[task + 1] - 1;
    const long f1 = seg_cum[s_last + 1];
    for (long f = seg_cum[s] + lid; f < f1; f += WG) {
        if (f >= seg_cum[s + 1]) s = segment_of(seg_cum, s + 1, s_last, f);
        const long i = seg_i0[s] + (f - seg_cum[s]);
        const long pe = seg_end[s];
        const uint ti = times[i];
        if (times[pe - 1] - ti < tau0) continue;  // no partner that far
        long j = i;
        if (tau0 > 0) {
            // First j with t_j - t_i >= tau0 (it exists: checked above).
            long lo = i + 1, hi = pe - 1;
            while (lo < hi) {
                const long mid = (lo + hi) >> 1;
                if (times[mid] - ti >= tau0) hi = mid; else lo = mid + 1;
            }
            j = lo;
        }
        const VAL_T vi = values[i];
        for (; j < pe; j++) {
            const uint lag = times[j] - ti;
            if (lag >= tau1) break;
#ifdef DIRECT
            HIST_ADD(&hist[lag], PROD(vi, values[j]));
#else
            LAG_ADD(lag - tau0, PROD(vi, values[j]));
#endif
        }
    }
#ifndef DIRECT
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint x = lid; x < tau1 - tau0; x += WG) {
        const acc_t v = hist[x];
#ifdef ACC_FLOAT
        out[x] += v;  // sole writer of this (sub-bin, tile) in the launch; launches in turn
#else
        if (v != 0) atomic_add_u64_global((volatile __global ulong *)(out + x), v);
#endif
    }
#endif
}

// Per-frame sums S[t][k] of integer events, with the tasks of event_corr: a work-group sums the
// values of its task's events whose frame falls in its tile of L frames into a local histogram,
// then adds the histogram to S. Launch: global (n_tasks * WG, n_tiles), local (WG, 1).
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void frame_sums(__global const VAL_T *values,
                __global const TIME_T *times,
                __global const long *seg_i0,
                __global const long *seg_cum,
                __global const int *task_seg,
                __global const int *task_sub,
                const int task0,
                const int tile0,
                const int n_frames,
                const int n_sub,
                __global ulong *sums)           // (n_frames, n_sub)
{
    const int task = task0 + get_group_id(0);
    const int lid = get_local_id(0);
    const int k = task_sub[task];
#ifdef DIRECT
    const uint t0 = 0;
    const uint t1 = (uint)n_frames;
#else
    const uint t0 = (uint)(tile0 + get_group_id(1)) * (uint)L;
    const uint t1 = min(t0 + (uint)L, (uint)n_frames);
#ifdef HIST32
    __local uint hist[L];  // values of at most 16 bits; a wrap carries into S at once
#else
    __local ulong hist[L];
#endif
    for (int x = lid; x < L; x += WG) hist[x] = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
#endif
    int s = task_seg[task];
    const int s_last = task_seg[task + 1] - 1;
    const long f1 = seg_cum[s_last + 1];
    for (long f = seg_cum[s] + lid; f < f1; f += WG) {
        if (f >= seg_cum[s + 1]) s = segment_of(seg_cum, s + 1, s_last, f);
        const long i = seg_i0[s] + (f - seg_cum[s]);
        const uint t = times[i];
#ifdef DIRECT
        atomic_add_u64_global((volatile __global ulong *)(sums + (long)t * n_sub + k),
                              (ulong)(long)values[i]);
#else
#ifdef HIST32
        if (t >= t0 && t < t1)
            hist32_add(&hist[t - t0], (uint)values[i], sums + (long)t * n_sub + k);
#else
        if (t >= t0 && t < t1) HIST_ADD(&hist[t - t0], (ulong)(long)values[i]);
#endif
#endif
    }
#ifndef DIRECT
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint x = lid; x < t1 - t0; x += WG) {
        const ulong v = hist[x];
        if (v != 0)
            atomic_add_u64_global((volatile __global ulong *)(sums + (long)(t0 + x) * n_sub + k), v);
    }
#endif
}

#if !defined(ACC_FLOAT) && !defined(DIRECT)
// ---------------------------------------------------------------------------------------------
// Device-planned variants ("fold", "rows", "local32"; host side: _fold_and_launch in
// opencl_events.py), one kernel, event_corr_planned, below.
//
// "fold": pair-balanced. A binned pixel of n events has n·(⌊n/2⌋ + 1) *slots*; slot
// r = d·n + i (0 ≤ i < n, 0 ≤ d ≤ ⌊n/2⌋) is the pair of its events i and (i + d) mod n, skipped
// when n is even, d = n/2 and the index wraps (that pair is also slot d·n + i − n/2). So every pair i ≤ j is one slot, and the work-items of a group
// stride the *slots*: consecutive work-items take consecutive events at the same distance d
// (coalesced reads), and a pixel of many events costs its pairs, not its first events.
// Binned pixels are taken in binning order (sub-bin after sub-bin) and their slots counted on
// the device (fold_slots, then a prefix sum); a task is a run of task_slots slots of one sub-bin.
// Every event is slot d = 0 of its pixel once: the frame sums are taken there (first lag tile).

// Sub-bin of a task of the device plan, its slots q_lo … q_hi − 1 and pixels s_lo … s_hi.
inline int plan_task(__global const long *task_cum, __global const long *sub_first,
                     __global const long *cum, const int task, const long task_slots,
                     const int n_sub, int *s_lo, int *s_hi, long *q_lo, long *q_hi)
{
    const int k = segment_of(task_cum, 0, n_sub - 1, task);
    *s_lo = (int)sub_first[k];
    *s_hi = (int)sub_first[k + 1] - 1;
    *q_lo = cum[*s_lo] + (task - task_cum[k]) * task_slots;
    *q_hi = min(*q_lo + task_slots, cum[*s_hi + 1]);
    return k;
}

// Adds a work-group's histogram of lags tau0 … tau0 + len − 1 into n2 (out = its row at tau0).
inline void flush_hist(__local hist_t *hist, __global acc_t *out, const uint len, const int lid)
{
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint x = lid; x < len; x += WG) {
        const acc_t v = hist[x];
        if (v != 0) atomic_add_u64_global((volatile __global ulong *)(out + x), v);
    }
}

// The pixel s of s … s_hi holding item f of the running counts cum (slots or rows): its items
// *c0 … *c1 − 1, first event *e0 (from ev_base) and event count *n.
inline int next_pixel(__global const long *cum, __global const long *rows,
                      __global const long *offsets, const long ev_base, int s, const int s_hi,
                      const long f, long *c0, long *c1, long *e0, uint *n)
{
    s = segment_of(cum, s, s_hi, f);
    *c0 = cum[s];
    *c1 = cum[s + 1];
    const long p = rows[s];
    *e0 = offsets[p] - ev_base;
    *n = (uint)(offsets[p + 1] - offsets[p]);
    return s;
}

// First row (first event, counted as in row_cum) of pixels s_lo … s_hi whose first slot is at or
// after slot q: row i of a pixel of n events starts at slot i·(⌊n/2⌋ + 1) in "rows" order.
inline long row_at(__global const long *cum, __global const long *rcum,
                   __global const long *offsets, __global const long *rows,
                   const int s_lo, const int s_hi, const long q)
{
    const int s = segment_of(cum, s_lo, s_hi, q);
    const long p = rows[s];
    const long n = offsets[p + 1] - offsets[p];
    const long w = (n / 2 + 1) * RB;  // slots of a block of RB rows
    return rcum[s] + min((q - cum[s] + w - 1) / w, (n + RB - 1) / RB);
}

// "rows" with blocks of RB rows: the partners u = 0 … u_end − 1 of the block i0 … i0 + nr − 1
// (distance d = u − r from row i0 + r, cnt[r] distances), each partner's time and value read
// once for the RB rows; ADD(x, product) adds to the histogram.
#define RB_PARTNERS(ADD)                                                                    \
    for (uint u = 0; u < u_end; u++) {                                                      \
        uint j = i0 + u;                                                                    \
        const bool wrapped = j >= n;                                                        \
        if (wrapped) j -= n;                                                                \
        const uint tb = times[e0 + j];                                                      \
        const VAL_T vb = values[e0 + j];                                                    \
        for (int r = 0; r < RB; r++) {                                                      \
            const uint d = u - (uint)r;  /* wraps past cnt when u < r */                    \
            const uint x = (wrapped ? tr[r] - tb : tb - tr[r]) - tau0;                      \
            if (d < cnt[r] && x < tau1 - tau0) ADD(x, PROD(vr[r], vb));                     \
        }                                                                                   \
    }

// "rows": the folded pairs again, a work-item per *row*: event i of a pixel of n events pairs
// with events (i + d) mod n for d = 0 … ⌊n/2⌋ (without d = n/2 wrapped when n is even), the same
// count for every event of the pixel, so the work-items of a warp (consecutive events) loop the
// same number of times; per pair the loop of the first-event walk (two loads, one add). A task
// is a run of rows whose first slots lie in its slot range (slots counted as for "fold", the
// balance of pairs); rows are counted by a second prefix sum (row_cum).
// "local32" (WALK): the same plan and rows, each walking its pixel's later events instead (the
// first-event walk of event_corr, binary search to the tile included).
// "fold" (FOLD): the work-items stride the task's slots instead of its rows; row_cum unread.
// The frame sums of integer events are taken in the first lag tile, once per event.
// Launch: global (n_tasks * WG, n_tiles), local (WG, 1), for tasks task0 … task0 + n − 1.
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void event_corr_planned(__global const VAL_T *values,
                        __global const TIME_T *times,
                        __global const long *offsets,
                        const long ev_base,
                        __global const long *rows,
                        __global const long *slot_cum,
                        __global const long *row_cum,   // running event counts, as slot_cum (rows)
                        const long slot_base,
                        __global const long *sub_first,
                        __global const long *task_cum,  // (n_chunks, n_sub + 1)
                        const long task_base,           // this chunk's row of task_cum
                        const long task_slots,
                        const int task0,
                        const int tile0,
                        const int n_frames,
                        const int n_sub,
                        __global acc_t *n2,
                        __global ulong *sums)
{
    const int lid = get_local_id(0);
    __global const long *cum = slot_cum + slot_base;
    __global const long *rcum = row_cum + slot_base;
    int s_lo, s_hi;
    long q_lo, q_hi;
    const int k = plan_task(task_cum + task_base, sub_first, cum, task0 + get_group_id(0),
                            task_slots, n_sub,
                            &s_lo, &s_hi, &q_lo, &q_hi);
    const uint tile = (uint)(tile0 + get_group_id(1));
    const uint tau0 = tile * (uint)L;
    const uint tau1 = min(tau0 + (uint)L, (uint)n_frames);
    __local hist_t hist[L];
    for (int x = lid; x < L; x += WG) hist[x] = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    __global acc_t *out = n2 + (long)k * n_frames + tau0;
#ifdef FOLD
    int s = s_lo;
    long c0 = 0, c1 = q_lo;  // slots of the current pixel: c0 … c1 − 1 (none yet)
    long e0 = 0;
    uint n = 1, d = 0, i = 0, step_d = 0, step_i = 0;
    for (long q = q_lo + lid; q < q_hi; q += WG) {
        if (q >= c1) {  // the next pixel holding slot q (pixels without events have no slot)
            s = next_pixel(cum, rows, offsets, ev_base, s, s_hi, q, &c0, &c1, &e0, &n);
            const ulong r = (ulong)(q - c0);
            if ((r >> 32) == 0) {
                d = (uint)r / n;
                i = (uint)r - d * n;
            } else {
                const ulong dd = r / n;
                d = (uint)dd;
                i = (uint)(r - dd * n);
            }
            step_d = (uint)WG / n;  // slot q + WG of the same pixel: no division per slot
            step_i = (uint)WG - step_d * n;
        } else {
            i += step_i;
            d += step_d;
            if (i >= n) {
                i -= n;
                d++;
            }
        }
        uint j = i + d;
        if (j >= n) {
            if (2 * d == n) continue;  // the other half of distance n/2: taken unwrapped
            j -= n;
        }
        const long a = e0 + min(i, j);
        const long b = e0 + max(i, j);
        const uint ta = times[a];
        const uint x = times[b] - ta - tau0;  // wraps past L below the tile
        if (x < tau1 - tau0) LAG_ADD(x, PROD(values[a], values[b]));
        if (d == 0 && tile == 0)
            atomic_add_u64_global((volatile __global ulong *)(sums + (long)ta * n_sub + k),
                                  (ulong)(long)values[a]);
    }
#else
    const long f_lo = row_at(cum, rcum, offsets, rows, s_lo, s_hi, q_lo);
    const long f_hi = row_at(cum, rcum, offsets, rows, s_lo, s_hi, q_hi);
#if RB > 1 && defined(HIST32)
    // The task's pairs are at most its blocks · RB · (⌊n_max/2⌋ + 1), n_max the most events of
    // its pixels, each product at most v_max²: where that bound stays below 2^31 no bin of the
    // histogram can pass 2^32, and the adds skip the carry check (an atomic add without its
    // old value: 17 % of the kernel on the H200 at 0.01 counts). One pass over the task's
    // pixels' values finds v_max and n_max.
    __local uint task_vmax, task_nmax;
    if (lid == 0) task_vmax = task_nmax = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (f_hi > f_lo) {
        const int sa = segment_of(rcum, s_lo, s_hi, f_lo);
        const int sb = segment_of(rcum, sa, s_hi, f_hi - 1);
        uint vm = 0, nm = 0;
        for (int sp = sa + lid; sp <= sb; sp += WG) {
            const long p = rows[sp];
            const long a = offsets[p] - ev_base, b = offsets[p + 1] - ev_base;
            nm = max(nm, (uint)min(b - a, (long)UINT_MAX));
            for (long e = a; e < b; e++) vm = max(vm, (uint)values[e]);  // events are >= 0
        }
        atomic_max(&task_vmax, vm);
        atomic_max(&task_nmax, nm);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const bool carry_free = (float)(f_hi - f_lo) * (float)RB * (float)(task_nmax / 2 + 1)
                            * (float)task_vmax * (float)task_vmax < 2147483648.0f;
#endif
    int s = s_lo;
    long r0 = 0, r1 = f_lo, e0 = 0;
    uint n = 1;
    for (long f = f_lo + lid; f < f_hi; f += WG) {
        if (f >= r1) {  // the pixel holding row (block) f
            s = next_pixel(rcum, rows, offsets, ev_base, s, s_hi, f, &r0, &r1, &e0, &n);
        }
#if RB > 1
        // A block of RB consecutive rows i0 … i0 + nr − 1: each partner's time and value, read
        // once, serve the RB rows (distance d = u − r from row i0 + r).
        const uint i0 = (uint)(f - r0) * RB;
        const uint nr = min((uint)RB, n - i0);
        const uint h = n / 2;
        uint tr[RB], cnt[RB];
        VAL_T vr[RB];
        for (int r = 0; r < RB; r++) {
            const uint i = min(i0 + r, n - 1);
            tr[r] = times[e0 + i];
            vr[r] = values[e0 + i];
            // Distances 0 … h; n even: distance h wraps for i ≥ h (taken by row i − h).
            cnt[r] = (uint)r >= nr ? 0 : (((n & 1) == 0 && i0 + r >= h) ? h : h + 1);
            if (tile == 0 && (uint)r < nr)
                atomic_add_u64_global((volatile __global ulong *)(sums + (long)tr[r] * n_sub + k),
                                      (ulong)(long)vr[r]);
        }
        const uint u_end = nr - 1 + h + 1;
#ifdef HIST32
        if (carry_free) {
            RB_PARTNERS(HIST32_ADD_NO_CARRY)
        } else
#endif
        {
            RB_PARTNERS(LAG_ADD)
        }
#else
        const uint i = (uint)(f - r0);
        const uint ta = times[e0 + i];
        const VAL_T va = values[e0 + i];
        if (tile == 0)
            atomic_add_u64_global((volatile __global ulong *)(sums + (long)ta * n_sub + k),
                                  (ulong)(long)va);
#ifdef WALK
        // The first-event walk ("local32"): partners i … n − 1 while their lag is in the tile.
        const long pe = e0 + n;
        if (times[pe - 1] - ta < tau0) continue;  // no partner that far
        long b = e0 + i;
        if (tau0 > 0) {  // first partner at lag >= tau0 (it exists: checked above)
            long hi = pe - 1;
            b++;
            while (b < hi) {
                const long mid = (b + hi) >> 1;
                if (times[mid] - ta >= tau0) hi = mid; else b = mid + 1;
            }
        }
        for (; b < pe; b++) {
            const uint lag = times[b] - ta;
            if (lag >= tau1) break;
            LAG_ADD(lag - tau0, PROD(va, values[b]));
        }
#else
        const uint h = n / 2;
        // Distances 0 … h; n even: distance h wraps for i ≥ h (taken by row i − h unwrapped).
        const uint count = ((n & 1) == 0 && i >= h) ? h : h + 1;
        for (uint d = 0; d < count; d++) {
            uint j = i + d;
            const bool wrapped = j >= n;
            if (wrapped) j -= n;
            const uint tb = times[e0 + j];
            const uint x = (wrapped ? ta - tb : tb - ta) - tau0;  // wraps past L below the tile
            if (x < tau1 - tau0) LAG_ADD(x, PROD(va, values[e0 + j]));
        }
#endif
#endif  // RB
    }
#endif
    flush_hist(hist, out, tau1 - tau0, lid);
}

// Slots of the binned pixels of each chunk (pixels p0 ≤ p < p1 of the stack; none elsewhere),
// chunk-major for one prefix sum: slots[c · n_binned + s]. Launch: global (n_binned, n_chunks).
__kernel void fold_slots(__global const long *offsets,
                         __global const long *rows,
                         const long n_binned,
                         __global const long *pix_edges,  // (n_chunks + 1,)
                         __global long *slots,
                         __global long *counts)           // events ("rows"), same layout
{
    const long s = get_global_id(0);
    const int c = get_global_id(1);
    if (s >= n_binned) return;
    const long p = rows[s];
    const long n = (p >= pix_edges[c] && p < pix_edges[c + 1]) ? offsets[p + 1] - offsets[p] : 0;
    slots[c * n_binned + s] = n * (n / 2 + 1);
    counts[c * n_binned + s] = (n + RB - 1) / RB;  // blocks of RB rows ("rows")
}

// The running slot counts at the sub-bins' first pixels: out[c][k] = cum[c · n_binned +
// sub_first[k]] (k ≤ n_sub). Launch: global (n_sub + 1, n_chunks).
__kernel void fold_sub_slots(__global const long *cum,
                             const long n_binned,
                             __global const long *sub_first,
                             const int n_sub,
                             __global long *out)
{
    const int k = get_global_id(0);
    const int c = get_global_id(1);
    if (k > n_sub) return;
    out[c * (n_sub + 1) + k] = cum[c * n_binned + sub_first[k]];
}

// Running task counts of each chunk: task_cum[c][k] = Σ_{k' < k} ⌈slots of sub-bin k' / task
// slots⌉ (the host's rule, from the same sub_slots), written on the device so that no copy
// follows the events' upload. Launch: global (n_chunks,).
__kernel void fold_task_cum(__global const long *sub_slots,  // (n_chunks, n_sub + 1)
                            const int n_sub,
                            const long task_slots,
                            __global long *task_cum)         // (n_chunks, n_sub + 1)
{
    const long c = get_global_id(0);
    __global const long *in = sub_slots + c * (n_sub + 1);
    __global long *out = task_cum + c * (n_sub + 1);
    long acc = 0;
    out[0] = 0;
    for (int k = 0; k < n_sub; k++) {
        acc += (in[k + 1] - in[k] + task_slots - 1) / task_slots;
        out[k + 1] = acc;
    }
}
#endif  // !ACC_FLOAT && !DIRECT

// ---------------------------------------------------------------------------------------------
// The denominator's autocorrelations on the device (integer events; host side: _s2_device in
// opencl_events.py). Row r of the series is a bin's frame sum minus, for the jackknife, one of
// its groups: X[r][t] = Σ_{k0_r <= k < k1_r} S[t][k] − (ex_r >= 0 ? S[t][ex_r] : 0); *xmax
// becomes the largest X, saturated at 2^32 − 1 (X >= 0: events are >= 0), which s2_autocorr
// and the host's int64 range check read. Launch: global (n_frames, n_rows).
__kernel void s2_series(__global const long *S,          // (n_frames, n_sub) frame sums
                        const int n_frames,
                        const int n_sub,
                        __global const int *row_k0,      // (n_rows,) first sub-bin of the bin
                        __global const int *row_k1,      // (n_rows,) end sub-bin of the bin
                        __global const int *row_ex,      // (n_rows,) group left out, or -1
                        __global long *X,                // (n_rows, n_frames)
                        __global uint *xmax)             // zeroed by the host
{
    const int t = get_global_id(0);
    const int r = get_global_id(1);
    if (t >= n_frames) return;
    __global const long *st = S + (long)t * n_sub;
    long v = 0;
    for (int k = row_k0[r]; k < row_k1[r]; k++) v += st[k];
    if (row_ex[r] >= 0) v -= st[row_ex[r]];
    X[(long)r * n_frames + t] = v;
    const uint m = (uint)min(v, (long)0xFFFFFFFF);
    // The plain read skips most atomics: the maximum rarely grows.
    if (m > *xmax) atomic_max((volatile __global uint *)xmax, m);
}

#ifndef SL
#define SL 64
#endif
#ifndef S2R
#define S2R 16  // the host's S2_LAGS_PER_ITEM
#endif
#define S2_PAD(u) ((u) + ((u) >> 5))

// Direct autocorrelation of each row, all lags: C[r][τ] = Σ_t X[r][t]·X[r][t+τ], exact int64
// (the host checks with *xmax that no sum can overflow). A work-group takes SL·S2R consecutive
// lags of one row, a work-item S2R consecutive lags; the row passes through local memory in
// tiles of SL frames, with its shifted copy (SL·(S2R + 1) frames, one padding word per 32 so
// that the work-items' reads S2R words apart fall in different banks). Per frame, two local
// reads (x[t], broadcast, and the next value of the work-item's window, the others kept in
// registers) feed S2R multiply-adds.
// S2_NARROW: every X below 2^31 (the host's bound: largest value x binned pixels), held in
// 32 bits in local memory. Then, where max X < 16 384, runs of `run` frames (the largest power
// of two up to SL with run·(max X)² < 2^31) are summed in 32 bits and added to the 64-bit sums:
// one 32-bit multiply-add per product, exact. Otherwise products widen into 64 bits.
// Launch: global (ceil(n_frames / (SL·S2R)) · SL, n_rows), local (SL, 1).
#ifdef S2_NARROW
typedef int s2_t;
#else
typedef long s2_t;
#endif
__kernel __attribute__((reqd_work_group_size(SL, 1, 1)))
void s2_autocorr(__global const long *X, const int n_frames, __global const uint *xmax,
                 __global long *C)
{
    const int r = get_group_id(1);
    const int lid = get_local_id(0);
    const int tau0 = get_group_id(0) * SL * S2R;
    const int lag0 = tau0 + lid * S2R;  // this work-item's first lag
    __global const long *x = X + (long)r * n_frames;
    __local s2_t a[SL];
    __local s2_t b[S2_PAD(SL * (S2R + 1))];
    int run = 0;
#ifdef S2_NARROW
    const ulong m = *xmax;
    if (m < 16384) {
        run = SL;
        while ((ulong)run * m * m >= (1UL << 31)) run >>= 1;
    }
#endif
    long acc[S2R];
    for (int k = 0; k < S2R; k++) acc[k] = 0;
    for (int t0 = 0; t0 < n_frames - tau0; t0 += SL) {
        // a[s] = x[t0 + s]; b[v] = x[t0 + tau0 + v]; zero past the end.
        int u = t0 + lid;
        a[lid] = u < n_frames ? (s2_t)x[u] : 0;
        for (int v = lid; v < SL * (S2R + 1); v += SL) {
            u = t0 + tau0 + v;
            b[S2_PAD(v)] = u < n_frames ? (s2_t)x[u] : 0;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        // Lag lag0 + k adds a[s]·b[s + lid·S2R + k] over s: w holds b[s + lid·S2R …].
        s2_t w[S2R];
        for (int k = 0; k < S2R; k++) w[k] = b[S2_PAD(lid * S2R + k)];
        if (run) {
            for (int s0 = 0; s0 < SL; s0 += run) {
                int part[S2R];
                for (int k = 0; k < S2R; k++) part[k] = 0;
#pragma unroll 8
                for (int s = s0; s < s0 + run; s++) {
                    const int as = (int)a[s];
                    for (int k = 0; k < S2R; k++) part[k] += as * (int)w[k];
                    for (int k = 0; k < S2R - 1; k++) w[k] = w[k + 1];
                    w[S2R - 1] = b[S2_PAD(s + lid * S2R + S2R)];
                }
                for (int k = 0; k < S2R; k++) acc[k] += (long)part[k];
            }
        } else {
#pragma unroll 8
            for (int s = 0; s < SL; s++) {
                const long as = (long)a[s];
                for (int k = 0; k < S2R; k++) acc[k] += as * (long)w[k];
                for (int k = 0; k < S2R - 1; k++) w[k] = w[k + 1];
                w[S2R - 1] = b[S2_PAD(s + lid * S2R + S2R)];
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int k = 0; k < S2R; k++)
        if (lag0 + k < n_frames) C[(long)r * n_frames + lag0 + k] = acc[k];
}
