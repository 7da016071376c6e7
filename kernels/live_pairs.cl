// Live linear correlation (ewoksxpcs.opencl.live_pairs): the pairs of a chunk's events
// with themselves and with those of an earlier segment of the same pixel, added to n2 (int64,
// 64-bit atomics: integer sums are exact in any order). One work-item per pixel with new events.
//
// Compile-time constants: VAL_T, TIME_T, the types of the events' values and times: int64 and
// int32 for the events compacted on the host (default), the frames' type and uint32 for those
// compacted on the device (kernels/compact.cl), whose segments are merged with add_offsets and
// compact.cl's merge_part.
#ifndef VAL_T
#define VAL_T long
#endif
#ifndef TIME_T
#define TIME_T int
#endif

__kernel void live_pairs(__global const VAL_T *values, __global const TIME_T *times,
                         __global const long *offsets, __global const long *active,
                         __global const int *active_sub, const long n_active,
                         __global const VAL_T *a_values, __global const TIME_T *a_times,
                         __global const long *a_offsets, const int has_a, const int within,
                         __global ulong *n2, const long stride)
{
    const long k = get_global_id(0);
    if (k >= n_active)
        return;
    const long q = active[k];
    volatile __global ulong *row = n2 + (long)active_sub[k] * stride;
    const long e0 = offsets[q], e1 = offsets[q + 1];
    if (within) {
        for (long i = e0; i < e1; i++) {
            const long ti = (long)times[i];
            const long vi = (long)values[i];
            for (long j = i; j < e1; j++)
                atomic_add_u64_global(row + ((long)times[j] - ti), (ulong)(vi * (long)values[j]));
        }
    }
    if (has_a) {
        const long a1 = a_offsets[q + 1];
        for (long i = a_offsets[q]; i < a1; i++) {
            const long ti = (long)a_times[i];
            const long vi = (long)a_values[i];
            for (long j = e0; j < e1; j++)
                atomic_add_u64_global(row + ((long)times[j] - ti), (ulong)(vi * (long)values[j]));
        }
    }
}

// Launch: global (n,). out = a + b: the offsets of two segments of events merged pixel by pixel.
__kernel void add_offsets(__global const long *a, __global const long *b, __global long *out,
                          const long n)
{
    const long i = get_global_id(0);
    if (i < n)
        out[i] = a[i] + b[i];
}
