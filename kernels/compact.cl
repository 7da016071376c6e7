// Compaction of dense frames into pixel-major events (host side: ewoksxpcs/compact_opencl.py).
//
// Per chunk of n frames (t, pixel) in the native dtype VAL_T:
//   count_events:  one work-item per kept pixel counts its non-zero values (and flags negatives),
//   scatter_events: after the host's prefix sum of the counts, the same work-item writes its
//                   (value, frame) pairs in frame order at its offset: pixel-major, times ascending,
//   bin_sums:      one work-item per (frame, bin) adds the bin's pixels in raster order
//                  (64-bit integers, or doubles in the same order as NumPy's bincount).
//
// Compile-time constants: VAL_T; IS_FLOAT for float32 frames.

#ifdef IS_FLOAT
typedef double sum_t;
#else
typedef long sum_t;
#endif

// Launch: global (n_kept,).
__kernel void count_events(__global const VAL_T *chunk,
                           const int n,
                           const long npix,
                           __global const long *kept,
                           const int n_kept,
                           __global int *counts,
                           __global int *negative)
{
    const int q = get_global_id(0);
    if (q >= n_kept) return;
    const long p = kept[q];
    int c = 0;
    int neg = 0;
    for (int t = 0; t < n; t++) {
        const VAL_T v = chunk[t * npix + p];
        c += (v != 0);
        neg |= (v < 0);
    }
    counts[q] = c;
    if (neg) *negative = 1;
}

// Launch: global (n_kept,).
__kernel void scatter_events(__global const VAL_T *chunk,
                             const int n,
                             const long npix,
                             __global const long *kept,
                             const int n_kept,
                             __global const long *offsets,  // (n_kept + 1,) chunk-local
                             const uint t0,
                             __global VAL_T *values,
                             __global uint *times)
{
    const int q = get_global_id(0);
    if (q >= n_kept) return;
    const long p = kept[q];
    long pos = offsets[q];
    for (int t = 0; t < n; t++) {
        const VAL_T v = chunk[t * npix + p];
        if (v != 0) {
            values[pos] = v;
            times[pos] = t0 + (uint)t;
            pos++;
        }
    }
}

// Launch: global (n, n_bins).
__kernel void bin_sums(__global const VAL_T *chunk,
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
    __global const VAL_T *frame = chunk + t * npix;
    sum_t s = 0;
    for (long e = bin_offsets[b]; e < bin_offsets[b + 1]; e++) s += (sum_t)frame[pixel_index[e]];
    sums[(long)t * n_bins + b] = s;
}
