// Live linear correlation (ewoksxpcs.opencl.live_pairs): the pairs of a chunk's events
// with themselves and with those of an earlier segment of the same pixel, added to n2 (int64,
// 64-bit atomics: integer sums are exact in any order). One work-item per pixel with new events.
__kernel void live_pairs(__global const long *values, __global const int *times,
                         __global const long *offsets, __global const long *active,
                         __global const int *active_sub, const long n_active,
                         __global const long *a_values, __global const int *a_times,
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
            const int ti = times[i];
            const long vi = values[i];
            for (long j = i; j < e1; j++)
                atomic_add_u64_global(row + (times[j] - ti), (ulong)(vi * values[j]));
        }
    }
    if (has_a) {
        const long a1 = a_offsets[q + 1];
        for (long i = a_offsets[q]; i < a1; i++) {
            const int ti = a_times[i];
            const long vi = a_values[i];
            for (long j = e0; j < e1; j++)
                atomic_add_u64_global(row + (times[j] - ti), (ulong)(vi * values[j]));
        }
    }
}
