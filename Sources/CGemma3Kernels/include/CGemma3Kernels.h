// Kernels that need instructions Swift cannot request per function: AVX-512 BF16 (vdpbf16ps) for
// prefill, AVX-512 VNNI (vpdpbusd) for decoding. Each is compiled for its instruction set with a
// function attribute and may only be called after its check (`gemma3_has_avx512_bf16()`,
// `gemma3_has_avx512_vnni()`) returned 1; the checks and `gemma3_bf16_pack_panel` run anywhere, so
// the package still runs on any x86-64.
#ifndef CGEMMA3KERNELS_H
#define CGEMMA3KERNELS_H

#include <stdint.h>

/// Rows per panel of packed weights (two 16-lane float32 vectors of outputs).
#define GEMMA3_BF16_PANEL_ROWS 32
/// Tokens per call of the inner kernel; activation buffers are padded to a multiple of it.
#define GEMMA3_BF16_TOKEN_BLOCK 12

/// 1 when the CPU executes AVX-512 BF16 instructions and the OS saves the AVX-512 state, else 0.
int gemma3_has_avx512_bf16(void);

/// The FLOP rate of bfloat16 dot products (vdpbf16ps) over that of float32 FMA on this core, measured
/// now (about 6 ms); 0 without AVX-512 BF16. Above 1 the bfloat16 kernels can outrun float32 ones.
double gemma3_bf16_dot_speedup(void);

/// Rounds `rows` rows of `count` float32 values (row stride `ldx`) to bfloat16, round to nearest
/// even, into rows of `padded_count` values (row stride `padded_count`), zero past `count`.
/// Requires AVX-512 BF16.
void gemma3_bf16_round_rows(const float *x, long ldx, long rows, long count,
                            uint16_t *out, long padded_count);

/// dst[i] = src[i] rounded to the nearest bfloat16 value (ties to even), kept as float32; NaN stays
/// NaN. `dst` may equal `src`. Runs on any x86-64 (vectorised for AVX-512 or AVX2 where present).
void gemma3_round_to_bf16(const float *src, float *dst, long n);
/// The same rounding as `gemma3_round_to_bf16`, storing the bfloat16 bits (any x86-64 or other CPU).
void gemma3_to_bf16(const float *src, uint16_t *dst, long n);

/// Packs `count` ≤ 32 float32 rows of `k` values (row stride `ld`) into one panel of
/// `gemma3_bf16_gemm`'s layout (k_pairs = ⌈k/2⌉ groups of 32 rows × 2 values), rounded to bfloat16
/// (nearest even); rows past `count` and the odd k's partner are zero. Runs on any x86-64.
void gemma3_bf16_pack_panel(const float *rows, long ld, long count, long k, uint16_t *panel);

/// Y[t][r] = Σ_k X[t][k] · W[r][k] for tokens t < `tokens` and the rows r of panels
/// [`panel_begin`, `panel_end`), accumulated in float32. Requires AVX-512 BF16.
///
/// - `packed`: W in panels of 32 rows; a panel holds `k_pairs` groups of 32 rows × 2 consecutive
///   k values (bfloat16), i.e. element (r, k) of panel p is at
///   p·k_pairs·64 + (k/2)·64 + (r mod 32)·2 + k mod 2. Rows past `out_features` are zero.
/// - `x`: bfloat16 activations, row stride 2·k_pairs, with at least `tokens` rounded up
///   to a multiple of GEMMA3_BF16_TOKEN_BLOCK rows readable (the padding rows are read, not used).
/// - `y`: float32 outputs, row stride `ldy`; only columns < `out_features` are written.
void gemma3_bf16_gemm(const uint16_t *packed, long k_pairs, long panel_begin, long panel_end,
                      long out_features, const uint16_t *x, long tokens, float *y, long ldy);

// MARK: - 8-bit decode kernels (AVX-512 VNNI)

/// 1 when the CPU executes AVX-512 VNNI (vpdpbusd on 256-bit vectors), AVX-512 BW/VL and F16C,
/// and the OS saves the AVX-512 state, else 0.
int gemma3_has_avx512_vnni(void);

/// Activations quantized to 8 bits per block of 32 (as llama.cpp's Q8_0): for block b,
/// x[32b + j] ≈ scale[b] · qs[32b + j], |qs| ≤ 127, round to nearest even. Also, already times
/// scale[b]: `block_sums[b]` = scale[b] · Σ_j qs, and `half_sums[2b]`, `half_sums[2b + 1]` the same
/// over its first and last 16 values (for Q6_K's 16-value scales); the kernels apply the formats'
/// offsets and minimums through them. `count` must be a multiple of 32. Requires AVX-512 VNNI
/// support as above.
void gemma3_quantize_q8_blocks(const float *x, long count, int8_t *qs, float *scale,
                               float *block_sums, float *half_sums);

/// y[r] = Σ_k W[r, k] · x[k] for rows r in [row_begin, row_end) of a matrix in a ggml block
/// format (`type`: the GGML type id, 2 = Q4_0, 6 = Q5_0, 8 = Q8_0, 12 = Q4_K, 14 = Q6_K), rows
/// `row_bytes` apart, against activations from `gemma3_quantize_q8_blocks` (`blocks` = k / 32).
/// Returns 0, or -1 for an unsupported type (nothing written). Requires AVX-512 VNNI support.
int gemma3_q8_gemv(int type, const void *data, long row_bytes, long row_begin, long row_end,
                   const int8_t *qs, const float *scale, const float *block_sums, const float *half_sums,
                   long blocks, float *y);

// MARK: - CPU features

/// The widest float32 vector instruction set the CPU executes and the OS saves the state of:
/// 2 = AVX-512 (F, BW, VL, DQ), 1 = AVX2 with FMA, 0 = neither.
int gemma3_cpu_vector_level(void);

/// 1 on AMD processors (CPUID vendor "AuthenticAMD"), else 0.
int gemma3_cpu_is_amd(void);

#endif
