// Shared helpers of the ewoksxpcs kernels (prepended to every program by ewoksxpcs.opencl).
//
// Integer sums are accumulated in ulong: unsigned overflow wraps (defined behaviour), so the
// result read back as int64 equals NumPy's int64 arithmetic bit for bit.

#ifdef HAS_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

// 64-bit additions from 32-bit atomics: add the low word atomically and carry into the high
// word. Only the final value is exact (after all additions), which is all an accumulation needs.
// Little-endian devices (every GPU and CPU OpenCL targets).
inline void atomic_add_u64_global_w32(volatile __global ulong *p, ulong v)
{
    volatile __global uint *w = (volatile __global uint *)p;
    uint lo = (uint)v;
    uint hi = (uint)(v >> 32);
    uint old = atomic_add(w, lo);
    if (old + lo < old) hi += 1u;
    if (hi) atomic_add(w + 1, hi);
}

inline void atomic_add_u64_local_w32(volatile __local ulong *p, ulong v)
{
    volatile __local uint *w = (volatile __local uint *)p;
    uint lo = (uint)v;
    uint hi = (uint)(v >> 32);
    uint old = atomic_add(w, lo);
    if (old + lo < old) hi += 1u;
    if (hi) atomic_add(w + 1, hi);
}

#ifdef HAS_INT64_ATOMICS
#pragma OPENCL EXTENSION cl_khr_int64_base_atomics : enable

inline void atomic_add_u64_global(volatile __global ulong *p, ulong v)
{
    atom_add(p, v);
}

#else
#define atomic_add_u64_global atomic_add_u64_global_w32
#endif

// LOCAL_ATOMICS_32: native 32-bit local atomics with a carry word are faster than 64-bit local
// atomics on GPUs whose 64-bit shared-memory atomics are slow (NVIDIA).
#if defined(HAS_INT64_ATOMICS) && !defined(LOCAL_ATOMICS_32)
inline void atomic_add_u64_local(volatile __local ulong *p, ulong v)
{
    atom_add(p, v);
}
#else
#define atomic_add_u64_local atomic_add_u64_local_w32
#endif

// Tree sum of part[0 .. WG-1] in local memory (WG a power of two): the total ends in part[0].
// Every work-item of the group must reach it.
#define WORK_GROUP_SUM(part, lid)                                   \
    do {                                                            \
        barrier(CLK_LOCAL_MEM_FENCE);                               \
        for (int w_ = WG / 2; w_ > 0; w_ >>= 1) {                   \
            if ((lid) < w_)                                         \
                (part)[lid] += (part)[(lid) + w_];                  \
            barrier(CLK_LOCAL_MEM_FENCE);                           \
        }                                                           \
    } while (0)
