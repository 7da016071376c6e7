// Frames of a live scan in device memory (ewoksxpcs.opencl.live_frames).
//
// Compile-time constant: VAL_T, the frames' type.

// Launch: global (npix,). sums[p] += the values of pixel p over n frames (int64: the sum image
// of the frames landed on the device, for the mean image of a snapshot).
__kernel void sum_frames(__global const VAL_T *frames, const int n, const long npix,
                         __global long *sums)
{
    const long p = get_global_id(0);
    if (p >= npix)
        return;
    long s = 0;
    for (int t = 0; t < n; t++)
        s += (long)frames[(long)t * npix + p];
    sums[p] += s;
}
