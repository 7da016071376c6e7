// Compaction of dense frames into pixel-major events (host side: ewoksxpcs/compact_opencl.py).
//
// Per batch of n frames (t, pixel) in the native dtype VAL_T, starting at element `base` of a
// device buffer (uploaded frames, or chunks decompressed on the device):
//   count_events:   one work-item per kept pixel counts its non-zero values (flags negatives) and
//                   adds them to the pixel's running total over the batches (and, for integer
//                   frames, its values to the pixel's running sum),
//   scatter_events: after the device scan of the counts, the same work-item writes its
//                   (value, frame) pairs in frame order at its offset: pixel-major, times ascending,
//   bin_sums:       one work-item per (frame, bin) adds the bin's pixels in raster order
//                   (doubles in the same order as NumPy's bincount: float32 frames),
//   bin_sums_wg:    one work-group per (bin, frame), 64-bit integer sums (coalesced reads),
//   scatter_range:  the same for a range of pixels, at their final places (events beyond the
//                   device budget: one pass over the frames per range),
//   merge_part:     after the last batch, copies one batch's events of a pixel range to their
//                   final place (the batches' events of a pixel follow each other in time).
//
// Compile-time constants: VAL_T; IS_FLOAT for float32 frames; WG for bin_sums_wg.

#ifdef IS_FLOAT
typedef double sum_t;
#else
typedef long sum_t;
#endif

// Writes the non-zero values of pixel p over n frames (frame t at chunk[t * npix + p]) and
// their frame numbers t0 + t from position pos on; returns the position after the last.
inline long write_pixel_events(__global const VAL_T *chunk, const int n, const long npix,
                               const long p, long pos, const uint t0,
                               __global VAL_T *values, __global uint *times)
{
    for (int t = 0; t < n; t++) {
        const VAL_T v = chunk[t * npix + p];
        if (v != 0) {
            values[pos] = v;
            times[pos] = t0 + (uint)t;
            pos++;
        }
    }
    return pos;
}

// Launch: global (n_kept,).
__kernel void count_events(__global const VAL_T *frames,
                           const long base,
                           const int n,
                           const long npix,
                           __global const long *kept,
                           const int n_kept,
                           __global int *counts,
                           __global int *total,
                           __global long *pixel_sums,  // integer frames: running sum per pixel
                           __global int *negative)
{
    const int q = get_global_id(0);
    if (q >= n_kept) return;
    __global const VAL_T *chunk = frames + base;
    const long p = kept[q];
    int c = 0;
    int neg = 0;
    long sum = 0;
    for (int t = 0; t < n; t++) {
        const VAL_T v = chunk[t * npix + p];
        c += (v != 0);
        neg |= (v < 0);
#ifndef IS_FLOAT
        sum += (long)v;
#endif
    }
    counts[q] = c;
    total[q] += c;
#ifndef IS_FLOAT
    pixel_sums[q] += sum;
#endif
    if (neg) *negative = 1;
}

// Launch: global (n_kept,).
__kernel void scatter_events(__global const VAL_T *frames,
                             const long base,
                             const int n,
                             const long npix,
                             __global const long *kept,
                             const int n_kept,
                             __global const long *offsets,  // (n_kept + 1,) batch-local
                             const long out_base,
                             const uint t0,
                             __global VAL_T *values,
                             __global uint *times)
{
    const int q = get_global_id(0);
    if (q >= n_kept) return;
    write_pixel_events(frames + base, n, npix, kept[q], out_base + offsets[q], t0, values, times);
}

// Launch: global (q1 - q0,). Events of pixels q0 … q1-1 only, written at their final place
// relative to the range (final_off[q] - range_base), after the pixel's events of the earlier
// batches (before[q], updated): compaction in pixel ranges when the events outgrow the device.
__kernel void scatter_range(__global const VAL_T *frames,
                            const long base,
                            const int n,
                            const long npix,
                            __global const long *kept,
                            const int q0,
                            const int q1,
                            __global const long *final_off,  // (n_kept + 1,)
                            const long range_base,
                            __global long *before,           // (n_kept,)
                            const uint t0,
                            __global VAL_T *values,
                            __global uint *times)
{
    const int q = q0 + get_global_id(0);
    if (q >= q1) return;
    const long start = final_off[q] - range_base + before[q];
    before[q] += write_pixel_events(frames + base, n, npix, kept[q], start, t0, values, times)
                 - start;
}

// Launch: global (n, n_bins).
__kernel void bin_sums(__global const VAL_T *frames,
                       const long base,
                       const int n,
                       const long npix,
                       __global const long *pixel_index,  // binned pixels, by bin then raster
                       __global const long *bin_offsets,  // (n_bins + 1,)
                       const int n_bins,
                       __global sum_t *sums)              // (n, n_bins)
{
    const int t = get_global_id(0);
    const int b = get_global_id(1);
    if (t >= n || b >= n_bins) return;
    __global const VAL_T *frame = frames + base + t * npix;
    sum_t s = 0;
    for (long e = bin_offsets[b]; e < bin_offsets[b + 1]; e++) s += (sum_t)frame[pixel_index[e]];
    sums[(long)t * n_bins + b] = s;
}

#ifdef WG
// Launch: global (n_bins * WG, n), local (WG, 1). Integer frames only (any summation order).
__kernel void bin_sums_wg(__global const VAL_T *frames,
                          const long base,
                          const int n,
                          const long npix,
                          __global const long *pixel_index,
                          __global const long *bin_offsets,
                          const int n_bins,
                          __global long *sums)              // (n, n_bins)
{
    __local long part[WG];
    const int lid = get_local_id(0);
    const int b = get_group_id(0);
    const int t = get_global_id(1);
    __global const VAL_T *frame = frames + base + (long)t * npix;
    long s = 0;
    for (long e = bin_offsets[b] + lid; e < bin_offsets[b + 1]; e += WG)
        s += (long)frame[pixel_index[e]];
    part[lid] = s;
    WORK_GROUP_SUM(part, lid);
    if (lid == 0) sums[(long)t * n_bins + b] = part[0];
}
#endif

// Launch: global (q1 - q0,). Events of pixels q0 … q1-1 of one batch (stored at part_base +
// part_off[q]) go to the staging arrays at final_off[q] + before[q] - stage_base; before[q]
// counts the pixel's events of the batches merged so far.
__kernel void merge_part(__global const VAL_T *pvalues,
                         __global const uint *ptimes,
                         const long part_base,
                         __global const long *part_off,   // (n_kept + 1,) batch-local
                         __global const long *final_off,  // (n_kept + 1,)
                         __global long *before,           // (n_kept,)
                         const int q0,
                         const int q1,
                         const long stage_base,
                         __global VAL_T *svalues,
                         __global uint *stimes)
{
    const int q = q0 + get_global_id(0);
    if (q >= q1) return;
    const long src = part_base + part_off[q];
    const long cnt = part_off[q + 1] - part_off[q];
    const long dst = final_off[q] + before[q] - stage_base;
    for (long k = 0; k < cnt; k++) {
        svalues[dst + k] = pvalues[src + k];
        stimes[dst + k] = ptimes[src + k];
    }
    before[q] += cnt;
}
