// Transposes between 16 NCHW planes and pixels of 16 channels, 16 pixels at a time, for the
// plane blocks (depthwise_plane_blocks.cpp). With AVX-512, fp32 and the 16-bit types (widened
// to 32 bits) are transposed in registers; at::vec::transpose_mxn, which takes its sizes at run
// time, kept its 16 vectors on the stack and zeroed and copied them with `rep stos` / `rep movs`
// on every call: on 7x7 and 14x14 planes its transposes took longer than the convolution.
#pragma once

#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <type_traits>

#if defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

namespace dsconv_ext {
namespace cpu {

constexpr int kTransposeBlock = 16;

#if defined(CPU_CAPABILITY_AVX512)
namespace detail {

// rows[i][j] -> rows[j][i] for a 16x16 block of 32-bit lanes.
inline void transpose_16x16(__m512 rows[16]) {
  __m512 a[16], b[16];
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a0 = _mm512_castps_pd(a[4 * i]), a1 = _mm512_castps_pd(a[4 * i + 1]);
    const __m512d a2 = _mm512_castps_pd(a[4 * i + 2]), a3 = _mm512_castps_pd(a[4 * i + 3]);
    b[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
    b[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
    b[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
    b[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      a[8 * i + j] = _mm512_shuffle_f32x4(b[8 * i + j], b[8 * i + 4 + j], 0x88);
      a[8 * i + 4 + j] = _mm512_shuffle_f32x4(b[8 * i + j], b[8 * i + 4 + j], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    rows[j] = _mm512_shuffle_f32x4(a[j], a[8 + j], 0x88);
    rows[8 + j] = _mm512_shuffle_f32x4(a[j], a[8 + j], 0xdd);
  }
}

// The first `count` of 16 elements at p as 32-bit lanes, the rest zero.
template <typename scalar_t>
inline __m512 load_lanes(const scalar_t* p, int count) {
  const __mmask16 mask = static_cast<__mmask16>((1u << count) - 1);
  if constexpr (std::is_same_v<scalar_t, float>) {
    return _mm512_maskz_loadu_ps(mask, p);
  } else {
    const __m256i half = _mm256_maskz_loadu_epi16(mask, p);
    return _mm512_castsi512_ps(_mm512_cvtepu16_epi32(half));
  }
}

// The first `count` lanes of v stored at p (narrowed back for 16-bit types).
template <typename scalar_t>
inline void store_lanes(scalar_t* p, __m512 v, int count) {
  const __mmask16 mask = static_cast<__mmask16>((1u << count) - 1);
  if constexpr (std::is_same_v<scalar_t, float>) {
    _mm512_mask_storeu_ps(p, mask, v);
  } else {
    _mm256_mask_storeu_epi16(p, mask, _mm512_cvtepi32_epi16(_mm512_castps_si512(v)));
  }
}

template <typename scalar_t>
constexpr bool kRegisterTranspose = std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, c10::BFloat16> ||
                                    std::is_same_v<scalar_t, c10::Half>;

}  // namespace detail
#endif

// Pixels [0, pixel_count <= 16) of `count <= 16` planes, `plane_stride` apart, stored as pixels
// of 16 channels: pixel i's channels go to pixel_at[i][0 .. 16), channels past `count` zero.
// (Destinations come as an array, not a callback: a stateful callback kept its state in memory
// and the stores waited on it.)
template <typename scalar_t>
inline void planes_to_pixel_vectors(const scalar_t* planes, int64_t plane_stride, int count, int pixel_count,
                                    scalar_t* const* pixel_at) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (detail::kRegisterTranspose<scalar_t>) {
    __m512 rows[16];
    for (int c = 0; c < 16; ++c)
      rows[c] = c < count ? detail::load_lanes(planes + c * plane_stride, pixel_count) : _mm512_setzero_ps();
    detail::transpose_16x16(rows);
    for (int i = 0; i < pixel_count; ++i) detail::store_lanes(pixel_at[i], rows[i], 16);
    return;
  }
#endif
  alignas(64) scalar_t tile[kTransposeBlock * kTransposeBlock] = {};
  at::vec::transpose_mxn<scalar_t>(planes, plane_stride, tile, kTransposeBlock, count, pixel_count);
  for (int i = 0; i < pixel_count; ++i) std::copy_n(tile + i * kTransposeBlock, kTransposeBlock, pixel_at[i]);
}

// The inverse for `pixel_count <= 16` pixels of 16 channels, kTransposeBlock elements apart:
// planes[c][i] = pixels[i][c] for c < count.
template <typename scalar_t>
inline void pixel_vectors_to_planes(const scalar_t* pixels, int pixel_count, int count, scalar_t* planes,
                                    int64_t plane_stride) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (detail::kRegisterTranspose<scalar_t>) {
    __m512 rows[16];
    for (int i = 0; i < 16; ++i)
      rows[i] = i < pixel_count ? detail::load_lanes(pixels + i * kTransposeBlock, 16) : _mm512_setzero_ps();
    detail::transpose_16x16(rows);
    for (int c = 0; c < count; ++c) detail::store_lanes(planes + c * plane_stride, rows[c], pixel_count);
    return;
  }
#endif
  at::vec::transpose_mxn<scalar_t>(pixels, kTransposeBlock, planes, plane_stride, pixel_count, count);
}

}  // namespace cpu
}  // namespace dsconv_ext
