// Matrix-vector products on ggml quantized blocks for decoding, on AVX-512 VNNI CPUs (e.g. AMD
// Zen 4, Intel Ice Lake and later). Activations are quantized to 8 bits per block of 32, as
// llama.cpp does; vpdpbusd then multiplies 32 unsigned weight bytes by 32 signed activation bytes
// and adds groups of four into eight 32-bit sums in one instruction, so a block of 32 weights
// costs a handful of instructions and the kernels run at memory speed on the packed blocks.
//
// Weights enter vpdpbusd unsigned: Q4_0/Q5_0/Q4_K/Q6_K as their stored non-negative integers,
// with the format's offset (8, 16, the Q4_K minimum, 32) applied afterwards through the sums of
// the activations; Q8_0 as |w| with w's sign moved onto the activation.
#include "CGemma3Kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define VNNI_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

int gemma3_has_avx512_vnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")
        && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

VNNI_TARGET
static inline float half_to_float(const void *p) {
    return _cvtsh_ss(*(const uint16_t *)p);
}

VNNI_TARGET
static inline float horizontal_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

VNNI_TARGET
void gemma3_quantize_q8_blocks(const float *x, long count, int8_t *qs, float *scale,
                               float *block_sums, float *half_sums) {
    for (long b = 0; b < count / 32; b++) {
        __m512 lo = _mm512_loadu_ps(x + 32 * b), hi = _mm512_loadu_ps(x + 32 * b + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
        float d = amax / 127.0f;
        float inv = amax > 0 ? 127.0f / amax : 0.0f;
        __m512i qlo = _mm512_cvtps_epi32(_mm512_mul_ps(lo, _mm512_set1_ps(inv)));  // round to nearest even
        __m512i qhi = _mm512_cvtps_epi32(_mm512_mul_ps(hi, _mm512_set1_ps(inv)));
        // |x·inv| ≤ 127 up to rounding of the product; clamp so the bytes stay in range.
        qlo = _mm512_max_epi32(_mm512_min_epi32(qlo, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
        qhi = _mm512_max_epi32(_mm512_min_epi32(qhi, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
        _mm_storeu_si128((__m128i *)(qs + 32 * b), _mm512_cvtepi32_epi8(qlo));
        _mm_storeu_si128((__m128i *)(qs + 32 * b + 16), _mm512_cvtepi32_epi8(qhi));
        scale[b] = d;
        int32_t low = _mm512_reduce_add_epi32(qlo), high = _mm512_reduce_add_epi32(qhi);
        half_sums[2 * b] = d * (float)low;
        half_sums[2 * b + 1] = d * (float)high;
        block_sums[b] = d * (float)(low + high);
    }
}

// Q8_0: [fp16 d][32 × int8]. Rows one after another (one forward stream for the prefetcher),
// two blocks per step into two accumulators (independent add chains).
VNNI_TARGET
static inline __m256 q8_0_block(const uint8_t *blk, const int8_t *qs, float sa, __m256 acc) {
    __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));
    __m256i a = _mm256_loadu_si256((const __m256i *)qs);
    __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(w), _mm256_sign_epi8(a, w));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(half_to_float(blk) * sa), acc);
}

VNNI_TARGET
static void gemv_q8_0(const uint8_t *data, long row_bytes, long r0, long r1, const int8_t *qs,
                      const float *scale, long blocks, float *y) {
    for (long r = r0; r < r1; r++) {
        const uint8_t *row = data + r * row_bytes;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        long b = 0;
        for (; b + 2 <= blocks; b += 2) {
            acc0 = q8_0_block(row + 34 * b, qs + 32 * b, scale[b], acc0);
            acc1 = q8_0_block(row + 34 * (b + 1), qs + 32 * (b + 1), scale[b + 1], acc1);
        }
        if (b < blocks) acc0 = q8_0_block(row + 34 * b, qs + 32 * b, scale[b], acc0);
        y[r] = horizontal_sum(_mm256_add_ps(acc0, acc1));
    }
}

// Q4_0: [fp16 d][16 bytes: low nibbles = values 0–15, high nibbles = 16–31], value = (q − 8)·d.
// Q5_0: [fp16 d][32 high bits][16 bytes as Q4_0], value = (q + 16·high − 16)·d.
// As Q8_0: two blocks per step into two accumulators; the offsets go through the activation sums.
VNNI_TARGET
static inline __m256 q4_q5_0_block(int five, const uint8_t *blk, const int8_t *qs, float ds, __m256 acc) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), bit4 = _mm256_set1_epi8(0x10);
    __m128i packed = _mm_loadu_si128((const __m128i *)(blk + (five ? 6 : 2)));
    __m256i w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low4);
    if (five) {
        uint32_t high;
        __builtin_memcpy(&high, blk + 2, 4);
        w = _mm256_or_si256(w, _mm256_maskz_mov_epi8((__mmask32)high, bit4));
    }
    __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, _mm256_loadu_si256((const __m256i *)qs));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(ds), acc);
}

VNNI_TARGET
static void gemv_q4_q5_0(int five, const uint8_t *data, long row_bytes, long r0, long r1, const int8_t *qs,
                         const float *scale, const float *block_sums, long blocks, float *y) {
    const long block_bytes = five ? 22 : 18;
    const float offset = five ? 16.0f : 8.0f;
    for (long r = r0; r < r1; r++) {
        const uint8_t *row = data + r * row_bytes;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        float correction0 = 0, correction1 = 0;
        long b = 0;
        for (; b + 2 <= blocks; b += 2) {
            const uint8_t *blk0 = row + block_bytes * b, *blk1 = blk0 + block_bytes;
            const float d0 = half_to_float(blk0), d1 = half_to_float(blk1);
            acc0 = q4_q5_0_block(five, blk0, qs + 32 * b, d0 * scale[b], acc0);
            acc1 = q4_q5_0_block(five, blk1, qs + 32 * (b + 1), d1 * scale[b + 1], acc1);
            correction0 += d0 * block_sums[b];
            correction1 += d1 * block_sums[b + 1];
        }
        if (b < blocks) {
            const uint8_t *blk = row + block_bytes * b;
            const float d = half_to_float(blk);
            acc0 = q4_q5_0_block(five, blk, qs + 32 * b, d * scale[b], acc0);
            correction0 += d * block_sums[b];
        }
        y[r] = horizontal_sum(_mm256_add_ps(acc0, acc1)) - offset * (correction0 + correction1);
    }
}

// Q4_K: 256 values in 144 bytes: [fp16 d][fp16 dmin][12 bytes of 6-bit scales and minimums]
// [128 bytes of nibbles]; sub-block j (32 values) is d·sc_j·q − dmin·m_j. The eight scales and
// minimums are unpacked with 32-bit masks and turned into float vectors once per 256 values.
VNNI_TARGET
static void gemv_q4_K(const uint8_t *data, long row_bytes, long r0, long r1, const int8_t *qs,
                      const float *scale, const float *block_sums, long blocks, float *y) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const uint32_t mask6 = 0x3f3f3f3f, mask4 = 0x0f0f0f0f, mask2 = 0x03030303;
    const long supers = blocks / 8;
    for (long r = r0; r < r1; r++) {
        const uint8_t *row = data + r * row_bytes;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), minimums = _mm256_setzero_ps();
        for (long s = 0; s < supers; s++) {
            const uint8_t *blk = row + 144 * s;
            const float d = half_to_float(blk), dmin = half_to_float(blk + 2);
            uint32_t u[3];
            __builtin_memcpy(u, blk + 4, 12);
            // Bytes 0–7: the scales of sub-blocks 0–7; bytes 8–15: their minimums.
            const uint32_t sc_lo = u[0] & mask6;
            const uint32_t sc_hi = (u[2] & mask4) | (((u[0] >> 6) & mask2) << 4);
            const uint32_t mn_lo = u[1] & mask6;
            const uint32_t mn_hi = ((u[2] >> 4) & mask4) | (((u[1] >> 6) & mask2) << 4);
            const __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)sc_hi, (int)sc_lo)));
            const __m256 mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)mn_hi, (int)mn_lo)));
            const long b0 = 8 * s;
            float factor[8];
            _mm256_storeu_ps(factor, _mm256_mul_ps(_mm256_mul_ps(sc, _mm256_set1_ps(d)), _mm256_loadu_ps(scale + b0)));
            minimums = _mm256_fmadd_ps(_mm256_mul_ps(mn, _mm256_set1_ps(dmin)), _mm256_loadu_ps(block_sums + b0), minimums);
            const uint8_t *q = blk + 16;
            for (int c = 0; c < 4; c++) {
                __m256i bytes = _mm256_loadu_si256((const __m256i *)(q + 32 * c));
                __m256i wlo = _mm256_and_si256(bytes, low4);
                __m256i whi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
                const int8_t *a = qs + 32 * (b0 + 2 * c);
                __m256i dlo = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wlo, _mm256_loadu_si256((const __m256i *)a));
                __m256i dhi = _mm256_dpbusd_epi32(_mm256_setzero_si256(), whi, _mm256_loadu_si256((const __m256i *)(a + 32)));
                acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dlo), _mm256_broadcast_ss(factor + 2 * c), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dhi), _mm256_broadcast_ss(factor + 2 * c + 1), acc1);
            }
        }
        y[r] = horizontal_sum(_mm256_add_ps(acc0, acc1)) - horizontal_sum(minimums);
    }
}

// Q6_K: 256 values in 210 bytes: [128 bytes low nibbles][64 bytes of 2-bit highs][16 × int8
// scales][fp16 d]; value = d·sc_g·(q − 32) with one scale per 16 values. The 16 scales times the
// activation scales become one float vector per 256 values; the −32 goes through the half sums.
VNNI_TARGET
static void gemv_q6_K(const uint8_t *data, long row_bytes, long r0, long r1, const int8_t *qs,
                      const float *scale, const float *half_sums, long blocks, float *y) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), low2 = _mm256_set1_epi8(0x03);
    const __m512i pairs = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const long supers = blocks / 8;
    for (long r = r0; r < r1; r++) {
        const uint8_t *row = data + r * row_bytes;
        __m256 accs[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};  // two add chains
        __m512 offsets = _mm512_setzero_ps();
        for (long s = 0; s < supers; s++) {
            const uint8_t *blk = row + 210 * s;
            const uint8_t *ql = blk, *qh = blk + 128;
            const float d = half_to_float(blk + 208);
            const __m512 sc = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 192)))),
                                            _mm512_set1_ps(d));
            // Group g (16 values) belongs to activation block 8s + g/2.
            const __m512 activation = _mm512_permutexvar_ps(pairs, _mm512_castps256_ps512(_mm256_loadu_ps(scale + 8 * s)));
            float factor[16];
            _mm512_storeu_ps(factor, _mm512_mul_ps(sc, activation));
            offsets = _mm512_fmadd_ps(sc, _mm512_loadu_ps(half_sums + 16 * s), offsets);
            for (int half = 0; half < 2; half++) {
                __m256i l0 = _mm256_loadu_si256((const __m256i *)(ql + 64 * half));
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 64 * half + 32));
                __m256i h = _mm256_loadu_si256((const __m256i *)(qh + 32 * half));
                __m256i w[4];
                w[0] = _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_slli_epi16(_mm256_and_si256(h, low2), 4));
                w[1] = _mm256_or_si256(_mm256_and_si256(l1, low4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), low2), 4));
                w[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), low2), 4));
                w[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), low2), 4));
                for (int c = 0; c < 4; c++) {
                    const long b = 8 * s + 4 * half + c;
                    const int g = 8 * half + 2 * c;  // scales of values 0–15 and 16–31 of this chunk
                    __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w[c], _mm256_loadu_si256((const __m256i *)(qs + 32 * b)));
                    __m256 lane_scales = _mm256_set_m128(_mm_broadcast_ss(factor + g + 1), _mm_broadcast_ss(factor + g));
                    accs[c & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), lane_scales, accs[c & 1]);
                }
            }
        }
        y[r] = horizontal_sum(_mm256_add_ps(accs[0], accs[1])) - 32.0f * _mm512_reduce_add_ps(offsets);
    }
}

VNNI_TARGET
int gemma3_q8_gemv(int type, const void *data, long row_bytes, long row_begin, long row_end,
                   const int8_t *qs, const float *scale, const float *block_sums, const float *half_sums,
                   long blocks, float *y) {
    const uint8_t *bytes = (const uint8_t *)data;
    switch (type) {
    case 2: gemv_q4_q5_0(0, bytes, row_bytes, row_begin, row_end, qs, scale, block_sums, blocks, y); return 0;
    case 6: gemv_q4_q5_0(1, bytes, row_bytes, row_begin, row_end, qs, scale, block_sums, blocks, y); return 0;
    case 8: gemv_q8_0(bytes, row_bytes, row_begin, row_end, qs, scale, blocks, y); return 0;
    case 12: gemv_q4_K(bytes, row_bytes, row_begin, row_end, qs, scale, block_sums, blocks, y); return 0;
    case 14: gemv_q6_K(bytes, row_bytes, row_begin, row_end, qs, scale, half_sums, blocks, y); return 0;
    default: return -1;
    }
}

#else  // not x86-64: never supported.

int gemma3_has_avx512_vnni(void) { return 0; }
void gemma3_quantize_q8_blocks(const float *x, long count, int8_t *qs, float *scale, float *block_sums, float *half_sums) {
    (void)x; (void)count; (void)qs; (void)scale; (void)block_sums; (void)half_sums;
}
int gemma3_q8_gemv(int type, const void *data, long row_bytes, long row_begin, long row_end,
                   const int8_t *qs, const float *scale, const float *block_sums, const float *half_sums,
                   long blocks, float *y) {
    (void)type; (void)data; (void)row_bytes; (void)row_begin; (void)row_end; (void)qs; (void)scale;
    (void)block_sums; (void)half_sums; (void)blocks; (void)y;
    return -1;
}

#endif
