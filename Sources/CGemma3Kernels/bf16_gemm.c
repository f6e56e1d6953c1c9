// bfloat16 matrix product for batched prefill on AVX-512 BF16 CPUs (e.g. AMD Zen 4, Intel
// Cooper Lake and later): vdpbf16ps multiplies 32 bfloat16 pairs and accumulates 16 float32 sums
// per instruction, twice the multiply-adds of a float32 FMA of the same width.
#include "CGemma3Kernels.h"

#include <string.h>

// Portable parts.
static uint16_t round_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static void pack_panel_scalar(const float *rows, long ld, long count, long k, uint16_t *panel) {
    const long pairs = (k + 1) / 2;
    for (long kp = 0; kp < pairs; kp++) {
        uint16_t *group = panel + kp * 2 * GEMMA3_BF16_PANEL_ROWS;
        for (long r = 0; r < GEMMA3_BF16_PANEL_ROWS; r++) {
            uint16_t lo = 0, hi = 0;
            if (r < count) {
                lo = round_to_bf16(rows[r * ld + 2 * kp]);
                if (2 * kp + 1 < k) hi = round_to_bf16(rows[r * ld + 2 * kp + 1]);
            }
            group[2 * r] = lo;
            group[2 * r + 1] = hi;
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>
#define GEMMA3_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

int gemma3_has_avx512_bf16(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

GEMMA3_BF16_TARGET
static void pack_panel_bf16(const float *rows, long ld, long count, long k, uint16_t *panel) {
    const long pairs = (k + 1) / 2;
    memset(panel, 0, (size_t)pairs * 2 * GEMMA3_BF16_PANEL_ROWS * sizeof(uint16_t));
    uint32_t *groups = (uint32_t *)panel;  // (pair kp, row r) at kp·32 + r
    for (long r = 0; r < count; r++) {
        const float *row = rows + r * ld;
        long j = 0;
        for (; j + 32 <= k; j += 32) {
            // 16 pairs of this row: (2i, 2i+1) rounded side by side in one 32-bit lane each.
            uint32_t lanes[16];
            __m512bh both = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + j + 16), _mm512_loadu_ps(row + j));
            _mm512_storeu_si512((void *)lanes, (__m512i)both);
            for (int i = 0; i < 16; i++) groups[(j / 2 + i) * GEMMA3_BF16_PANEL_ROWS + r] = lanes[i];
        }
        for (; j < k; j += 2) {
            uint32_t lo = round_to_bf16(row[j]), hi = j + 1 < k ? round_to_bf16(row[j + 1]) : 0;
            groups[(j / 2) * GEMMA3_BF16_PANEL_ROWS + r] = lo | (hi << 16);
        }
    }
}

// Not compiled for AVX-512: it only chooses (the CPU check once; a racing first call is harmless).
void gemma3_bf16_pack_panel(const float *rows, long ld, long count, long k, uint16_t *panel) {
    static int supported = -1;
    if (supported < 0) supported = gemma3_has_avx512_bf16();
    if (supported) pack_panel_bf16(rows, ld, count, k, panel);
    else pack_panel_scalar(rows, ld, count, k, panel);
}

GEMMA3_BF16_TARGET
void gemma3_bf16_round_rows(const float *x, long ldx, long rows, long count,
                            uint16_t *out, long padded_count) {
    for (long t = 0; t < rows; t++) {
        const float *src = x + t * ldx;
        uint16_t *dst = out + t * padded_count;
        long j = 0;
        for (; j + 32 <= count; j += 32) {
            // cvtne2ps: the second operand fills the low 16 lanes.
            __m512bh pair = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + j + 16), _mm512_loadu_ps(src + j));
            _mm512_storeu_si512((void *)(dst + j), (__m512i)pair);
        }
        for (; j < count; j++) dst[j] = round_to_bf16(src[j]);
        for (; j < padded_count; j++) dst[j] = 0;
    }
}

// One panel (32 rows) × one block of GEMMA3_BF16_TOKEN_BLOCK tokens over all of k:
// 24 accumulators, two weight loads and twelve broadcasts per pair of k.
GEMMA3_BF16_TARGET
static void panel_block(const uint16_t *panel, long k_pairs, const uint16_t *x, long tokens_here,
                        float *y, long ldy, __mmask16 mask_lo, __mmask16 mask_hi) {
    enum { TB = GEMMA3_BF16_TOKEN_BLOCK };
    __m512 acc_lo[TB], acc_hi[TB];
    for (int i = 0; i < TB; i++) { acc_lo[i] = _mm512_setzero_ps(); acc_hi[i] = _mm512_setzero_ps(); }
    const uint32_t *xp = (const uint32_t *)x;  // one k pair of one token = 32 bits
    for (long kp = 0; kp < k_pairs; kp++) {
        __m512bh w_lo = (__m512bh)_mm512_loadu_si512((const void *)(panel + kp * 64));
        __m512bh w_hi = (__m512bh)_mm512_loadu_si512((const void *)(panel + kp * 64 + 32));
#pragma clang loop unroll(full)
        for (int i = 0; i < TB; i++) {
            __m512bh b = (__m512bh)_mm512_set1_epi32((int)xp[i * k_pairs + kp]);
            acc_lo[i] = _mm512_dpbf16_ps(acc_lo[i], w_lo, b);
            acc_hi[i] = _mm512_dpbf16_ps(acc_hi[i], w_hi, b);
        }
    }
    for (long i = 0; i < tokens_here; i++) {
        _mm512_mask_storeu_ps(y + i * ldy, mask_lo, acc_lo[i]);
        _mm512_mask_storeu_ps(y + i * ldy + 16, mask_hi, acc_hi[i]);
    }
}

GEMMA3_BF16_TARGET
void gemma3_bf16_gemm(const uint16_t *packed, long k_pairs, long panel_begin, long panel_end,
                      long out_features, const uint16_t *x, long tokens, float *y, long ldy) {
    enum { TB = GEMMA3_BF16_TOKEN_BLOCK, PR = GEMMA3_BF16_PANEL_ROWS };
    for (long p = panel_begin; p < panel_end; p++) {
        long valid = out_features - p * PR;
        if (valid > PR) valid = PR;
        __mmask16 lo = valid >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << valid) - 1u);
        __mmask16 hi = valid >= 32 ? (__mmask16)0xffff : valid <= 16 ? 0 : (__mmask16)((1u << (valid - 16)) - 1u);
        const uint16_t *panel = packed + p * k_pairs * 64;
        for (long t = 0; t < tokens; t += TB) {
            long here = tokens - t < TB ? tokens - t : TB;
            panel_block(panel, k_pairs, x + t * 2 * k_pairs, here, y + t * ldy + p * PR, ldy, lo, hi);
        }
    }
}

#else  // not x86-64: never supported, the callers use float32.

int gemma3_has_avx512_bf16(void) { return 0; }
void gemma3_bf16_pack_panel(const float *rows, long ld, long count, long k, uint16_t *panel) {
    pack_panel_scalar(rows, ld, count, k, panel);
}
void gemma3_bf16_round_rows(const float *x, long ldx, long rows, long count, uint16_t *out, long padded_count) {
    (void)x; (void)ldx; (void)rows; (void)count; (void)out; (void)padded_count;
}
void gemma3_bf16_gemm(const uint16_t *packed, long k_pairs, long panel_begin, long panel_end,
                      long out_features, const uint16_t *x, long tokens, float *y, long ldy) {
    (void)packed; (void)k_pairs; (void)panel_begin; (void)panel_end; (void)out_features;
    (void)x; (void)tokens; (void)y; (void)ldy;
}

#endif

// How many times the float32 FLOP rate of a float32 FMA a bfloat16 dot product (vdpbf16ps) reaches on
// this core: 10 independent accumulator chains of each instruction, best of 3 short runs (~1 ms each).
// On the Intel Xeon (Sapphire Rapids class) of this project's machines it is 1.0: vdpbf16ps does twice
// the multiply-adds per instruction but issues half as often. Returns 0 without AVX-512 BF16.
#include <time.h>

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#if defined(__x86_64__)
GEMMA3_BF16_TARGET
static float probe_bf16(long iterations) {
    __m512 a[10];
    for (int j = 0; j < 10; j++) a[j] = _mm512_setzero_ps();
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3c00), y = x;
    for (long i = 0; i < iterations; i++) {
        __asm__ volatile("" : "+v"(x));
        for (int j = 0; j < 10; j++) a[j] = _mm512_dpbf16_ps(a[j], x, y);
    }
    __m512 s = a[0];
    for (int j = 1; j < 10; j++) s = _mm512_add_ps(s, a[j]);
    return _mm512_reduce_add_ps(s);
}

GEMMA3_BF16_TARGET
static float probe_fma(long iterations) {
    __m512 a[10];
    for (int j = 0; j < 10; j++) a[j] = _mm512_setzero_ps();
    __m512 x = _mm512_set1_ps(1e-3f), y = x;
    for (long i = 0; i < iterations; i++) {
        __asm__ volatile("" : "+v"(x));
        for (int j = 0; j < 10; j++) a[j] = _mm512_fmadd_ps(x, y, a[j]);
    }
    __m512 s = a[0];
    for (int j = 1; j < 10; j++) s = _mm512_add_ps(s, a[j]);
    return _mm512_reduce_add_ps(s);
}
#endif

double gemma3_bf16_dot_speedup(void) {
#if defined(__x86_64__)
    if (!gemma3_has_avx512_bf16()) return 0;
    const long iterations = 100000;  // 1M instructions of each kind per run
    double best_bf16 = 1e9, best_fma = 1e9;
    volatile float sink = 0;
    for (int run = 0; run < 3; run++) {
        double t0 = seconds_now();
        sink += probe_bf16(iterations);
        double t1 = seconds_now();
        sink += probe_fma(iterations);
        double t2 = seconds_now();
        if (t1 - t0 < best_bf16) best_bf16 = t1 - t0;
        if (t2 - t1 < best_fma) best_fma = t2 - t1;
    }
    (void)sink;
    // vdpbf16ps: 32 multiply-adds per instruction; vfmadd231ps: 16.
    return (32.0 / best_bf16) / (16.0 / best_fma);
#else
    return 0;
#endif
}
