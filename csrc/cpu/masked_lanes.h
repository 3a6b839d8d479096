// fp32 vector loads and stores of a run of lanes, the others read as zero / left untouched.
// Masked-off lanes never fault, so a load may start before a row or run past its end: the
// NCHW direct kernels (direct_rows.h) read zero padding this way instead of copying planes.
// Only the AVX-512 and AVX2 builds have them (kHasMaskedLanes); other builds use the plane path.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

namespace dsconv_ext {
namespace cpu {

#if defined(CPU_CAPABILITY_AVX512)

constexpr bool kHasMaskedLanes = true;
using LaneMask = __mmask16;

// Lanes [lo, hi) of a 16-lane vector, clamped to it.
inline LaneMask lane_mask(int64_t lo, int64_t hi) {
  lo = std::max<int64_t>(lo, 0);
  hi = std::min<int64_t>(hi, 16);
  if (hi <= lo) return 0;
  return static_cast<LaneMask>((uint32_t(1) << hi) - (uint32_t(1) << lo));
}

inline at::vec::Vectorized<float> masked_load(const float* p, LaneMask m) { return _mm512_maskz_loadu_ps(m, p); }

inline void masked_store(float* p, const at::vec::Vectorized<float>& v, LaneMask m) {
  _mm512_mask_storeu_ps(p, m, v);
}

#elif defined(CPU_CAPABILITY_AVX2)

constexpr bool kHasMaskedLanes = true;
struct LaneMask {
  __m256i lanes;  // all ones in the lanes taken
};

inline LaneMask lane_mask(int64_t lo, int64_t hi) {
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i from = _mm256_set1_epi32(static_cast<int>(std::max<int64_t>(std::min<int64_t>(lo, 8), -1)));
  const __m256i to = _mm256_set1_epi32(static_cast<int>(std::max<int64_t>(std::min<int64_t>(hi, 8), -1)));
  // lo <= index < hi  <=>  index > lo - 1 and hi > index
  const __m256i above = _mm256_cmpgt_epi32(index, _mm256_sub_epi32(from, _mm256_set1_epi32(1)));
  return {_mm256_and_si256(above, _mm256_cmpgt_epi32(to, index))};
}

inline at::vec::Vectorized<float> masked_load(const float* p, const LaneMask& m) {
  return _mm256_maskload_ps(p, m.lanes);
}

inline void masked_store(float* p, const at::vec::Vectorized<float>& v, const LaneMask& m) {
  _mm256_maskstore_ps(p, m.lanes, v);
}

#else

constexpr bool kHasMaskedLanes = false;

#endif

}  // namespace cpu
}  // namespace dsconv_ext
