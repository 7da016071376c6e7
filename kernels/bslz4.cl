// Bitshuffle-LZ4 decompression of HDF5 chunks (filter 32008, host side: ewoksxpcs/bslz4_opencl.py).
//
// Chunk layout (bitshuffle's bshuf_h5filter.c / bitshuffle.c):
//   uint64 big-endian  uncompressed bytes of the chunk
//   uint32 big-endian  block size in bytes (block elements * ES)
//   per block: int32 big-endian compressed size, then a raw LZ4 block (no frame)
//   the last (n % 8) elements, uncompressed
// Full blocks hold BLOCK_BYTES / ES elements; the last block holds (n % block) elements rounded
// down to a multiple of 8. A decompressed block of m elements is bit-shuffled: 8 * ES bit planes of
// m / 8 bytes; bit p of element i is bit (i % 8) of byte i / 8 of plane p (p = 8 * byte + bit,
// little-endian element bytes).
//
// Three launches over a pre-zeroed output (decompressed and unshuffled blocks occupy the same
// byte range, so everything happens in place):
//   bslz4_blocks     one work-item per chunk: validate the header, walk the block sizes into the
//                    block table, copy the trailing raw elements;
//   bslz4_decode     one work-item per LZ4 block: decode into the block's bytes of the output,
//                    writing only non-zero bytes and skipping matches that copy zeros;
//   bslz4_unshuffle  one work-group per block: bit planes into local memory, elements back out.
//
// Compile-time constants:
//   ES            element size in bytes (1, 2, 4 or 8)
//   CHUNK_BYTES   uncompressed bytes of a chunk (chunk elements * ES)
//   BLOCK_BYTES   bytes of a full block;  NB_FULL  full blocks per chunk
//   LAST_BYTES    bytes of the last, partial block (0: none);  NB  blocks per chunk
//   REM_BYTES     trailing uncompressed bytes ((n % 8) * ES)
//   WG            work-items per work-group of bslz4_unshuffle
//   VEC_ALIGNED   every chunk starts at a multiple of 8 * ES bytes of the output buffer
//   GLOBAL_SRC    bslz4_unshuffle reads the planes from a copy (blocks too big for local memory)

// Error word: min over errors of (chunk << 4) | code, so the host learns the first bad chunk;
// status[chunk] holds each chunk's code (0: fine), read by the host only after an error.
#define ERR_TRUNCATED 1u   // stream ends inside the header, a block size or a block
#define ERR_SIZE      2u   // header's uncompressed size is not CHUNK_BYTES
#define ERR_BLOCKSIZE 3u   // header's block size is not BLOCK_BYTES
#define ERR_BLOCK     4u   // negative compressed block size
#define ERR_LZ4       5u   // malformed LZ4 block (bad offset, overrun, wrong decoded size)
#define ERR_TRAILING  6u   // bytes left after the last block and the raw elements

// Block table entry of a chunk that must not be decoded (bad or raw): its blocks are skipped.
#define NO_BLOCK 0xFFFFFFFFu

#if ES == 1
typedef uchar elem_t;
typedef uchar8 elem8_t;
#elif ES == 2
typedef ushort elem_t;
typedef ushort8 elem8_t;
#elif ES == 4
typedef uint elem_t;
typedef uint8 elem8_t;
#elif ES == 8
typedef ulong elem_t;
typedef ulong8 elem8_t;
#else
#error "ES must be 1, 2, 4 or 8"
#endif

#define BLOCK_OF(c, b) ((ulong)(c) * NB + (b))

inline void set_error(volatile __global uint *err, const uint chunk, const uint code)
{
    atomic_min(err, (chunk << 4) | code);
}

inline uint read_be32(__global const uchar *p)
{
    return ((uint)p[0] << 24) | ((uint)p[1] << 16) | ((uint)p[2] << 8) | (uint)p[3];
}

// Launch: global >= n_chunks (1-D). raw[c] != 0 (when has_raw): chunk c is stored unfiltered and
// copied by the host; its blocks are marked NO_BLOCK here.
__kernel void bslz4_blocks(__global const uchar *src,
                           __global const ulong *chunk_offsets,  // (n_chunks + 1,) bytes in src
                           __global const uchar *raw,
                           const int has_raw,
                           const uint n_chunks,
                           __global uint *table,                 // (n_chunks, NB) block offsets
                           __global uint *lnz,                   // (n_chunks, NB) zeroed here
                           __global uchar *out,
                           const ulong out_offset,
                           __global uint *status,                // (n_chunks,) error code or 0
                           volatile __global uint *err)
{
    const uint c = get_global_id(0);
    if (c >= n_chunks) return;
    const ulong start = chunk_offsets[c];
    const ulong size = chunk_offsets[c + 1] - start;   // host checked: < 2^32, offsets ascending
    __global const uchar *s = src + start;
    uint code = 0;
    if (has_raw && raw[c]) {
        code = NO_BLOCK;  // not an error: skip the blocks
    } else if (size < 12) {
        code = ERR_TRUNCATED;
    } else {
        const ulong nbytes = ((ulong)read_be32(s) << 32) | read_be32(s + 4);
        const uint bbytes = read_be32(s + 8);
        if (nbytes != (ulong)CHUNK_BYTES) code = ERR_SIZE;
        else if (bbytes != BLOCK_BYTES) code = ERR_BLOCKSIZE;
    }
    ulong pos = 12;
    for (uint b = 0; b < NB && code == 0; b++) {
        if (pos + 4 > size) { code = ERR_TRUNCATED; break; }
        const uint cs = read_be32(s + pos);
        if (cs & 0x80000000u) { code = ERR_BLOCK; break; }
        table[BLOCK_OF(c, b)] = (uint)pos;
        pos += 4 + (ulong)cs;
        if (pos > size) { code = ERR_TRUNCATED; break; }
    }
    if (code == 0) {
        if (pos + REM_BYTES > size) code = ERR_TRUNCATED;
        else if (pos + REM_BYTES != size) code = ERR_TRAILING;
    }
    if (code != 0) {
        for (uint b = 0; b < NB; b++) {
            table[BLOCK_OF(c, b)] = NO_BLOCK;
            lnz[BLOCK_OF(c, b)] = 0;
        }
        status[c] = (code != NO_BLOCK) ? code : 0u;
        if (code != NO_BLOCK) set_error(err, c, code);
        return;
    }
    status[c] = 0;
#if REM_BYTES > 0
    __global uchar *o = out + out_offset + (ulong)c * CHUNK_BYTES + (CHUNK_BYTES - REM_BYTES);
    for (uint i = 0; i < REM_BYTES; i++) o[i] = s[pos + i];
#endif
}

// Read an LZ4 length extension (bytes while 255) onto *len; false when the input ends first or
// the length exceeds limit (which also keeps *len from overflowing).
inline bool lz4_length(__global const uchar *in, uint *ip, const uint in_size, uint *len,
                       const uint limit)
{
    uint v;
    do {
        if (*ip >= in_size) return false;
        v = in[(*ip)++];
        *len += v;
        if (*len > limit) return false;
    } while (v == 255);
    return true;
}

// Launch: global >= n_chunks * NB (1-D), any local size. Decodes block b of chunk c into its byte
// range of out (zeros already there); lnz[block] receives the end of its last non-zero byte.
__kernel void bslz4_decode(__global const uchar *src,
                           __global const ulong *chunk_offsets,
                           const uint n_chunks,
                           __global const uint *table,
                           __global uint *lnz,
                           __global uchar *out,
                           const ulong out_offset,
                           __global uint *status,
                           volatile __global uint *err)
{
    const ulong gid = get_global_id(0);
    if (gid >= (ulong)n_chunks * NB) return;
    const uint c = (uint)(gid / NB);
    const uint b = (uint)(gid - (ulong)c * NB);
    const uint pos = table[gid];
    if (pos == NO_BLOCK) return;  // bad or raw chunk: lnz already 0

    __global const uchar *blk = src + chunk_offsets[c] + pos;
    const uint in_size = read_be32(blk);  // block table checked it fits the chunk
    __global const uchar *in = blk + 4;
    const uint out_size = (b < NB_FULL) ? BLOCK_BYTES : LAST_BYTES;
    __global uchar *dst = out + out_offset + (ulong)c * CHUNK_BYTES + (ulong)b * BLOCK_BYTES;

    uint ip = 0, op = 0;
    uint last = 0;  // end of the last non-zero byte written: bytes from here on are zero
    bool ok = false;
    while (ip < in_size) {
        const uint token = in[ip++];
        uint len = token >> 4;
        if (len == 15 && !lz4_length(in, &ip, in_size, &len, out_size)) break;
        if (len > in_size - ip || len > out_size - op) break;
        for (uint i = 0; i < len; i++) {
            const uchar v = in[ip + i];
            if (v) { dst[op + i] = v; last = op + i + 1; }
        }
        ip += len;
        op += len;
        if (ip == in_size) { ok = (op == out_size); break; }  // last sequence: literals only
        if (in_size - ip < 2) break;
        const uint offset = (uint)in[ip] | ((uint)in[ip + 1] << 8);
        ip += 2;
        if (offset == 0 || offset > op) break;
        len = token & 15;
        if (len == 15 && !lz4_length(in, &ip, in_size, &len, out_size)) break;
        len += 4;
        if (len > out_size - op) break;
        const uint from = op - offset;
        if (from < last) {
            // Non-zero source. Without overlap only [from, last) can be non-zero.
            if (offset >= len) {
                const uint n = min(len, last - from);
                for (uint i = 0; i < n; i++) {
                    const uchar v = dst[from + i];
                    if (v) { dst[op + i] = v; last = op + i + 1; }
                }
            } else if (offset == 1) {
                // A run of one byte (an Eiger's gap rows at 65535: whole blocks of 0xFF planes):
                // stored by words, never read back (LZ4's byte-by-byte copy reads each byte it
                // has just written, one global memory round trip per byte).
                const uchar v = dst[from];
                if (v) {
                    __global uchar *p = dst + op;
                    uint i = 0;
                    for (; i < len && (((ulong)(p + i)) & 3); i++) p[i] = v;
                    const uint w = (uint)v * 0x01010101u;
                    for (; i + 4 <= len; i += 4) *(__global uint *)(p + i) = w;
                    for (; i < len; i++) p[i] = v;
                    last = op + len;
                }
            } else {
                // Overlap: byte i repeats byte i - offset, that is byte from + i % offset of
                // the period, already final: read from there, not from what was just written.
                uint j = 0;
                for (uint i = 0; i < len; i++) {
                    const uchar v = dst[from + j];
                    if (v) { dst[op + i] = v; last = op + i + 1; }
                    if (++j == offset) j = 0;
                }
            }
        }
        op += len;
    }
    if (!ok) {
        for (uint i = 0; i < last; i++) dst[i] = 0;  // leave zeros, not half a block
        last = 0;
        status[c] = ERR_LZ4;  // the host zeroes the whole chunk
        set_error(err, c, ERR_LZ4);
    }
    lnz[gid] = last;
}

// Transpose the 8x8 bit matrix packed in x (bitshuffle's TRANS_BIT_8X8, little-endian):
// bit j of byte i goes to bit i of byte j.
inline ulong trans_bit_8x8(ulong x)
{
    ulong t;
    t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAUL;
    x = x ^ t ^ (t << 7);
    t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCUL;
    x = x ^ t ^ (t << 14);
    t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0UL;
    x = x ^ t ^ (t << 28);
    return x;
}

// Unshuffle group g of 8 elements of a block whose bit planes are bytes LB[p * G + g] (planes of
// byte rows >= ROWS are zero), and store the 8 elements at O (a __global uchar pointer).
#ifdef VEC_ALIGNED
#define STORE_ELEM8(v, O) (*(__global elem8_t *)(O) = (v))
#else
#define STORE_ELEM8(v, O) vstore8((v), 0, (__global elem_t *)(O))
#endif
#define UNSHUFFLE_GROUP(LB, G, g, ROWS, O)                                                      \
    do {                                                                                        \
        ulong t_[ES];                                                                           \
        ulong any_ = 0;                                                                         \
        for (uint r_ = 0; r_ < ES; r_++) {                                                      \
            ulong x_ = 0;                                                                       \
            if (r_ < (ROWS)) {                                                                  \
                for (uint k_ = 0; k_ < 8; k_++)                                                 \
                    x_ |= (ulong)(LB)[(8 * r_ + k_) * (G) + (g)] << (8 * k_);                   \
            }                                                                                   \
            any_ |= x_;                                                                         \
            t_[r_] = x_;                                                                        \
        }                                                                                       \
        elem8_t v_ = (elem8_t)(0);                                                              \
        if (any_) {                                                                             \
            elem_t e_[8];                                                                       \
            for (uint k_ = 0; k_ < 8; k_++) e_[k_] = 0;                                         \
            for (uint r_ = 0; r_ < ES; r_++) {                                                  \
                const ulong x_ = trans_bit_8x8(t_[r_]); /* byte k: byte r_ of element k */      \
                for (uint k_ = 0; k_ < 8; k_++)                                                 \
                    e_[k_] |= (elem_t)(((x_ >> (8 * k_)) & 0xFF)) << (8 * r_);                  \
            }                                                                                   \
            v_ = (elem8_t)(e_[0], e_[1], e_[2], e_[3], e_[4], e_[5], e_[6], e_[7]);             \
        }                                                                                       \
        STORE_ELEM8(v_, O);                                                                     \
    } while (0)

#define MAX_WORDS ((BLOCK_BYTES + 3) / 4)

// Launch: global (n_chunks * NB * WG), local (WG). Work-group = one block. Without GLOBAL_SRC the
// planes are read from out itself (in place, through local memory); with it from planes, a copy
// of out's bytes out_offset ... out_offset + n_chunks * CHUNK_BYTES - 1.
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void bslz4_unshuffle(__global uchar *out,
                     const ulong out_offset,
                     __global const uint *lnz,
                     __global const uchar *planes)
{
    const ulong blk = get_group_id(0);
    const uint lid = get_local_id(0);
    const uint nz = lnz[blk];
    if (nz == 0) return;  // all zero: the output is already zeros
    const uint c = (uint)(blk / NB);
    const uint b = (uint)(blk - (ulong)c * NB);
    const uint bytes = (b < NB_FULL) ? BLOCK_BYTES : LAST_BYTES;
    const uint G = bytes / (8 * ES);            // groups of 8 elements = bytes per bit plane
    const ulong base = out_offset + (ulong)c * CHUNK_BYTES + (ulong)b * BLOCK_BYTES;
    // Byte rows (element bytes) whose planes hold non-zero bits; the others are all zero.
    const uint nz_planes = (nz + G - 1) / G;
    const uint rows = min((uint)ES, (nz_planes + 7) / 8);

#ifdef GLOBAL_SRC
    __global const uchar *lb = planes + (base - out_offset);
#else
    __local uint words[MAX_WORDS];
    __local uchar *lb = (__local uchar *)words;
    const uint used = (rows * 8 * G + 3) / 4;   // words of the planes read below
#ifdef VEC_ALIGNED
    {
        __global const uint *gw = (__global const uint *)(out + base);
        const uint nzw = (nz + 3) / 4;          // bytes past nz are zero, inside the block
        for (uint i = lid; i < used; i += WG) words[i] = (i < nzw) ? gw[i] : 0u;
    }
#else
    {
        __global const uchar *gb = out + base;
        for (uint i = lid; i < used; i += WG) words[i] = 0u;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint i = lid; i < nz; i += WG) lb[i] = gb[i];
    }
#endif
    barrier(CLK_LOCAL_MEM_FENCE);
#endif

    for (uint g = lid; g < G; g += WG)
        UNSHUFFLE_GROUP(lb, G, g, rows, out + base + (ulong)g * (8 * ES));
}

// ------------------------------------------------------------------------------------------------
// bslz4_decode_local: LZ4 decoding and unshuffle of one block per work-group, in local memory.
//
// One work-item per block (bslz4_decode) walks its block alone, reads back bytes it has just
// written to global memory for every match that copies non-zero bytes (one round trip per byte:
// an Eiger's gap columns make every bit plane of every block such a match), and its warp waits
// for the slowest of its 32 blocks. Here the work-group decodes one block into local memory:
//   1. work-item 0 walks up to SEQ_CAP sequences and records their literal runs and the matches
//      whose source may hold non-zero bytes (a bitmap of the bytes written from literals or by
//      such matches: a match whose source has no such byte copies zeros and is dropped, the
//      block being zero-filled first);
//   2. every work-item copies literals (short runs one per work-item, long runs together);
//   3. the recorded matches are copied together (by words where source and destination share
//      their alignment), in batches: a match joins the current batch when its source ends before
//      the batch's first destination byte, so that no match of a batch writes what another
//      reads; a barrier between batches;
//   4. repeat from 1 until the block ends; then unshuffle from local memory and write every
//      element of the block (zeros included: no zero fill of the output is needed).
// On an H200, 10 000 Eiger 4M frames at 0.01 counts: 0.25 s, against 0.96 s for bslz4_decode,
// bslz4_unshuffle and the zero fill (doc/benchmarks/h200_bslz4_kernels_session5.json).
//
// Extra compile-time constants: LWG (work-items per work-group), SEQ_CAP (sequences per round).
// BLOCK_BYTES must fit local memory. For measurements only (ewoksxpcs.tools.bench_bslz4_kernels;
// the output is then wrong): DBG_NO_WALK, DBG_NO_MATCH, DBG_NO_UNSHUFFLE switch a step off.
#ifdef LOCAL_DECODE

#define OB_WORDS ((BLOCK_BYTES + 3) / 4)
#define NZ_WORDS ((BLOCK_BYTES + 31) / 32)
#define NEW_BATCH 0x80000000u
#define SHORT_LITERAL 16u
#define ST_GOING 0u
#define ST_DONE 1u
#define ST_ERROR 2u

// Set the bits of bytes [a, b) in the bitmap nz.
inline void nz_mark(__local uint *nz, const uint a, const uint b)
{
    if (a >= b) return;
    const uint wa = a >> 5, wb = (b - 1) >> 5;
    const uint ma = 0xFFFFFFFFu << (a & 31);
    const uint mb = 0xFFFFFFFFu >> (31 - ((b - 1) & 31));
    if (wa == wb) { nz[wa] |= ma & mb; return; }
    nz[wa] |= ma;
    for (uint w = wa + 1; w < wb; w++) nz[w] = 0xFFFFFFFFu;
    nz[wb] |= mb;
}

// Whether any byte of [a, b) is marked in nz.
inline bool nz_any(__local const uint *nz, const uint a, const uint b)
{
    if (a >= b) return false;
    const uint wa = a >> 5, wb = (b - 1) >> 5;
    const uint ma = 0xFFFFFFFFu << (a & 31);
    const uint mb = 0xFFFFFFFFu >> (31 - ((b - 1) & 31));
    if (wa == wb) return (nz[wa] & ma & mb) != 0;
    if (nz[wa] & ma) return true;
    for (uint w = wa + 1; w < wb; w++)
        if (nz[w]) return true;
    return (nz[wb] & mb) != 0;
}

// Step 1 (work-item 0). st: 0 ip, 1 op, 2 literal runs, 3 matches, 4 state, 5 end of the last
// possibly non-zero byte. Same checks as bslz4_decode.
inline void lz4_walk(__global const uchar *in, const uint in_size, const uint out_size,
                     __local uint *st, __local uint *nz,
                     __local uint *lit_ip, __local uint *lit_op, __local uint *lit_len,
                     __local uint *m_from, __local uint *m_op, __local uint *m_len,
                     __local uint *m_off)
{
    uint ip = st[0], op = st[1], hi = st[5];
    uint nl = 0, nm = 0, state = ST_GOING, bstart = 0;
    while (nl < SEQ_CAP && nm < SEQ_CAP) {
        if (ip >= in_size) { state = ST_ERROR; break; }
        const uint token = in[ip++];
        uint len = token >> 4;
        if (len == 15 && !lz4_length(in, &ip, in_size, &len, out_size)) { state = ST_ERROR; break; }
        if (len > in_size - ip || len > out_size - op) { state = ST_ERROR; break; }
        if (len) {
            lit_ip[nl] = ip; lit_op[nl] = op; lit_len[nl] = len; nl++;
            nz_mark(nz, op, op + len);
            hi = op + len;
        }
        ip += len;
        op += len;
        if (ip == in_size) { state = (op == out_size) ? ST_DONE : ST_ERROR; break; }
        if (in_size - ip < 2) { state = ST_ERROR; break; }
        const uint offset = (uint)in[ip] | ((uint)in[ip + 1] << 8);
        ip += 2;
        if (offset == 0 || offset > op) { state = ST_ERROR; break; }
        len = token & 15;
        if (len == 15 && !lz4_length(in, &ip, in_size, &len, out_size)) { state = ST_ERROR; break; }
        len += 4;
        if (len > out_size - op) { state = ST_ERROR; break; }
        const uint from = op - offset;
        const uint src_end = from + min(len, offset);
        if (nz_any(nz, from, src_end)) {
            const bool join = nm > 0 && src_end <= bstart;
            if (!join) bstart = op;
            m_from[nm] = from; m_op[nm] = op; m_off[nm] = offset;
            m_len[nm] = len | (join ? 0u : NEW_BATCH);
            nm++;
            nz_mark(nz, op, op + len);
            hi = op + len;
        }
        op += len;
    }
    st[0] = ip; st[1] = op; st[2] = nl; st[3] = nm; st[4] = state; st[5] = hi;
}

// Step 3 for one match, by the whole work-group: ob[o + i] = ob[f + i % off], i < len (the
// period off is final: it lies before o). Index i % off is stepped, not divided.
inline void copy_match(__local uchar *ob, const uint f, const uint o, const uint len,
                       const uint off, const uint lid)
{
    uint i0 = 0;
    if ((off & 3) == 0 && len >= 8) {
        // source and destination share their alignment: head bytes, words, tail bytes
        const uint head = (4 - (o & 3)) & 3;  // < 4 <= off: byte i of the head is byte f + i
        if (lid < head) ob[o + lid] = ob[f + lid];
        const uint nw = (len - head) / 4, pw = off / 4;
        __local uint *dw = (__local uint *)(ob + o + head);
        __local const uint *sw = (__local const uint *)(ob + f + head);
        if (off >= len) {
            for (uint w = lid; w < nw; w += LWG) dw[w] = sw[w];
        } else {
            // Destination word w repeats word w % pw of [f + head, o + head); that period's last
            // word holds the head bytes [o, o + head), being written now: assembled from their
            // sources, bytes [f, f + head).
            uint last = 0;
            for (uint k = 0; k < 4; k++) {
                const uint p = o + head - 4 + k;
                last |= (uint)ob[(p < o) ? p : p - off] << (8 * k);
            }
            const uint step = LWG % pw;
            uint j = lid % pw;
            for (uint w = lid; w < nw; w += LWG) {
                dw[w] = (j == pw - 1) ? last : sw[j];
                j += step;
                if (j >= pw) j -= pw;
            }
        }
        i0 = head + 4 * nw;
    }
    if (off >= len) {
        for (uint i = i0 + lid; i < len; i += LWG) ob[o + i] = ob[f + i];
    } else {
        const uint step = LWG % off;
        uint j = (i0 + lid) % off;
        for (uint i = i0 + lid; i < len; i += LWG) {
            ob[o + i] = ob[f + j];
            j += step;
            if (j >= off) j -= off;
        }
    }
}

// Launch: global (n_chunks * NB * LWG), local (LWG). Writes every byte of each decoded block
// (zeros for a block with an LZ4 error); chunks marked NO_BLOCK in the table are not touched.
__kernel __attribute__((reqd_work_group_size(LWG, 1, 1)))
void bslz4_decode_local(__global const uchar *src,
                        __global const ulong *chunk_offsets,
                        __global const uint *table,
                        __global uchar *out,
                        const ulong out_offset,
                        __global uint *status,
                        volatile __global uint *err)
{
    __local uint obuf[OB_WORDS];
    __local uint nz[NZ_WORDS];
    __local uint lit_ip[SEQ_CAP], lit_op[SEQ_CAP], lit_len[SEQ_CAP];
    __local uint m_from[SEQ_CAP], m_op[SEQ_CAP], m_len[SEQ_CAP], m_off[SEQ_CAP];
    __local uint st[8];
    const ulong blk = get_group_id(0);
    const uint lid = get_local_id(0);
    const uint pos = table[blk];
    if (pos == NO_BLOCK) return;  // bad or raw chunk (uniform over the work-group)
    const uint c = (uint)(blk / NB);
    const uint b = (uint)(blk - (ulong)c * NB);
    __global const uchar *bp = src + chunk_offsets[c] + pos;
    const uint in_size = read_be32(bp);  // the block table checked it fits the chunk
    __global const uchar *in = bp + 4;
    const uint out_size = (b < NB_FULL) ? BLOCK_BYTES : LAST_BYTES;
    __local uchar *ob = (__local uchar *)obuf;

    for (uint i = lid; i < OB_WORDS; i += LWG) obuf[i] = 0u;
    for (uint i = lid; i < NZ_WORDS; i += LWG) nz[i] = 0u;
    if (lid == 0) { st[0] = 0; st[1] = 0; st[4] = ST_GOING; st[5] = 0; }
    barrier(CLK_LOCAL_MEM_FENCE);

    uint state = ST_GOING;
    while (state == ST_GOING) {
#ifndef DBG_NO_WALK
        if (lid == 0)
            lz4_walk(in, in_size, out_size, st, nz, lit_ip, lit_op, lit_len, m_from, m_op,
                     m_len, m_off);
#else
        if (lid == 0) { st[2] = 0; st[3] = 0; st[4] = ST_DONE; st[5] = out_size; }
#endif
        barrier(CLK_LOCAL_MEM_FENCE);
        const uint nl = st[2], nm = st[3];
        state = st[4];
        if (state == ST_ERROR) break;
        // 2. literals: short runs one per work-item, long runs by the whole work-group
        for (uint r = lid; r < nl; r += LWG) {
            const uint len = lit_len[r];
            if (len <= SHORT_LITERAL) {
                const uint o = lit_op[r], s = lit_ip[r];
                for (uint i = 0; i < len; i++) ob[o + i] = in[s + i];
            }
        }
        for (uint r = 0; r < nl; r++) {
            const uint len = lit_len[r];
            if (len > SHORT_LITERAL) {
                const uint o = lit_op[r], s = lit_ip[r];
                for (uint i = lid; i < len; i += LWG) ob[o + i] = in[s + i];
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        // 3. matches, batch by batch
        uint r = 0;
        while (r < nm) {
            uint e = r + 1;
            while (e < nm && !(m_len[e] & NEW_BATCH)) e++;
#ifndef DBG_NO_MATCH
            for (uint q = r; q < e; q++)
                copy_match(ob, m_from[q], m_op[q], m_len[q] & ~NEW_BATCH, m_off[q], lid);
#endif
            barrier(CLK_LOCAL_MEM_FENCE);
            r = e;
        }
    }

    // 4. unshuffle from local memory, every element of the block written
    const uint G = out_size / (8 * ES);
    const ulong base = out_offset + (ulong)c * CHUNK_BYTES + (ulong)b * BLOCK_BYTES;
    uint rows = 0;
    if (state == ST_DONE) {
        const uint nz_planes = (st[5] + G - 1) / G;
        rows = min((uint)ES, (nz_planes + 7) / 8);
    } else if (lid == 0) {
        status[c] = ERR_LZ4;  // the host zeroes the whole chunk
        set_error(err, c, ERR_LZ4);
    }
#ifdef DBG_NO_UNSHUFFLE
    rows = 0;
#endif
    for (uint g = lid; g < G; g += LWG)
        UNSHUFFLE_GROUP(ob, G, g, rows, out + base + (ulong)g * (8 * ES));
}

#endif  // LOCAL_DECODE
