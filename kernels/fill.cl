// Zeroing of buffer ranges, used by ewoksxpcs.opencl.zero_buffer where clEnqueueFillBuffer is
// not safe: NVIDIA's OpenCL hangs or fails on fills of 2^31 bytes or more (pyopencl issue #395).
// Grid-stride loops with 64-bit indices, so any launch size covers any range.

// Zero the 64-bit words first … first + n - 1.
__kernel void zero_words(__global ulong *buf, const ulong first, const ulong n)
{
    for (ulong i = get_global_id(0); i < n; i += get_global_size(0))
        buf[first + i] = 0;
}

// Zero the bytes first … first + n - 1 (the unaligned ends of a range).
__kernel void zero_bytes(__global uchar *buf, const ulong first, const ulong n)
{
    for (ulong i = get_global_id(0); i < n; i += get_global_size(0))
        buf[first + i] = 0;
}
