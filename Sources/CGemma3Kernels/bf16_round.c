// Rounding float32 values to bfloat16 values kept as float32 (the inputs of bf16 mixed-precision
// training products). Memory-bound: one pass, vectorised for the widest instructions the CPU has.
#include "CGemma3Kernels.h"

#include <string.h>

// Round to nearest even on the upper 16 bits; a NaN stays a quiet NaN (rounding could carry it into inf).
#define GEMMA3_ROUND_BF16_BODY                                                        \
    for (long i = 0; i < n; i++) {                                                    \
        uint32_t u;                                                                   \
        memcpy(&u, src + i, 4);                                                       \
        uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;                  \
        if ((u & 0x7fffffffu) > 0x7f800000u) r = (u & 0xffff0000u) | 0x00400000u;    \
        memcpy(dst + i, &r, 4);                                                       \
    }

// The same rounding, keeping only the upper 16 bits (bfloat16 storage for native bf16 products).
#define GEMMA3_TO_BF16_BODY                                                           \
    for (long i = 0; i < n; i++) {                                                    \
        uint32_t u;                                                                   \
        memcpy(&u, src + i, 4);                                                       \
        uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;                          \
        if ((u & 0x7fffffffu) > 0x7f800000u) r = (u >> 16) | 0x0040u;                 \
        dst[i] = (uint16_t)r;                                                         \
    }

static void round_generic(const float *src, float *dst, long n) { GEMMA3_ROUND_BF16_BODY }
static void to_bf16_generic(const float *src, uint16_t *dst, long n) { GEMMA3_TO_BF16_BODY }

#if defined(__x86_64__)
__attribute__((target("avx512f")))
static void round_avx512(const float *src, float *dst, long n) { GEMMA3_ROUND_BF16_BODY }
__attribute__((target("avx2")))
static void round_avx2(const float *src, float *dst, long n) { GEMMA3_ROUND_BF16_BODY }
__attribute__((target("avx512f,avx512bw")))
static void to_bf16_avx512(const float *src, uint16_t *dst, long n) { GEMMA3_TO_BF16_BODY }
__attribute__((target("avx2")))
static void to_bf16_avx2(const float *src, uint16_t *dst, long n) { GEMMA3_TO_BF16_BODY }
#endif

static int vector_level(void) {
#if defined(__x86_64__)
    static int level = -1;
    if (level < 0) {
        __builtin_cpu_init();
        level = __builtin_cpu_supports("avx512bw") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return level;
#else
    return 0;
#endif
}

void gemma3_to_bf16(const float *src, uint16_t *dst, long n) {
#if defined(__x86_64__)
    int level = vector_level();
    if (level == 2) { to_bf16_avx512(src, dst, n); return; }
    if (level == 1) { to_bf16_avx2(src, dst, n); return; }
#endif
    to_bf16_generic(src, dst, n);
}

void gemma3_round_to_bf16(const float *src, float *dst, long n) {
#if defined(__x86_64__)
    static int level = -1;
    if (level < 0) {
        __builtin_cpu_init();
        level = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    if (level == 2) { round_avx512(src, dst, n); return; }
    if (level == 1) { round_avx2(src, dst, n); return; }
#endif
    round_generic(src, dst, n);
}
