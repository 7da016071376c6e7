// Exclusive prefix sums of int (or long) counts into long offsets (host side:
// ewoksxpcs/opencl/prefix_sum.py).
//
// Two launches over groups of SPAN = WG * ITEMS consecutive elements:
//   scan_partials: each group's total (the host turns the few totals into group prefixes),
//   scan_apply:    each group scans its elements, ITEMS rounds of a WG-wide scan in local memory
//                  (coalesced reads), starting from the group's prefix.
// Compile-time constants: WG (power of two), ITEMS, COUNT_T (type of the counts; default int).

#ifndef COUNT_T
#define COUNT_T int
#endif

// Inclusive scan (Hillis-Steele) of each work-item's v over the work-group, in buf: returns
// the item's sum up to and with its own v, *total the group's; buf is free again on return.
inline long group_inclusive_scan(__local long *buf, const int lid, const long v, long *total)
{
    buf[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int d = 1; d < WG; d <<= 1) {
        const long a = (lid >= d) ? buf[lid - d] : 0;
        barrier(CLK_LOCAL_MEM_FENCE);
        buf[lid] += a;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const long upto = buf[lid];
    *total = buf[WG - 1];
    barrier(CLK_LOCAL_MEM_FENCE);
    return upto;
}

// Launch: global (n_groups * WG,), local (WG,).
__kernel void scan_partials(__global const COUNT_T *x, const long n, __global long *partial)
{
    __local long part[WG];
    const int lid = get_local_id(0);
    const long g0 = (long)get_group_id(0) * WG * ITEMS;
    long s = 0;
    for (int i = 0; i < ITEMS; i++) {
        const long k = g0 + (long)i * WG + lid;
        if (k < n) s += x[k];
    }
    part[lid] = s;
    WORK_GROUP_SUM(part, lid);
    if (lid == 0) partial[get_group_id(0)] = part[0];
}

// Launch: global (n_groups * WG,), local (WG,). out[k] = prefix[group] + sum of the group's
// x before k.
__kernel void scan_apply(__global const COUNT_T *x, const long n, __global const long *prefix,
                         __global long *out)
{
    __local long buf[WG];
    const int lid = get_local_id(0);
    const long g0 = (long)get_group_id(0) * WG * ITEMS;
    long carry = prefix[get_group_id(0)];
    for (int i = 0; i < ITEMS; i++) {
        const long k = g0 + (long)i * WG + lid;
        const long v = (k < n) ? x[k] : 0;
        long total;
        const long upto = group_inclusive_scan(buf, lid, v, &total);
        if (k < n) out[k] = carry + upto - v;
        carry += total;
    }
}

// The group prefixes on the device (no host step): prefix[g] = partial[0] + … + partial[g − 1]
// for the n_groups groups, and out[n] = the total. One work-group; launch: global (WG,),
// local (WG,).
__kernel void scan_groups(__global const long *partial, const int n_groups,
                          __global long *prefix, __global long *out, const long n)
{
    __local long buf[WG];
    const int lid = get_local_id(0);
    long carry = 0;
    for (int g0 = 0; g0 < n_groups; g0 += WG) {
        const int g = g0 + lid;
        const long v = (g < n_groups) ? partial[g] : 0;
        long total;
        const long upto = group_inclusive_scan(buf, lid, v, &total);
        if (g < n_groups) prefix[g] = carry + upto - v;
        carry += total;
    }
    if (lid == 0) out[n] = carry;
}
