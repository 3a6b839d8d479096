// Vector loads and stores that widen the storage type to the accumulation type:
// fp32 -> fp32, fp64 -> fp64, bf16/fp16 -> fp32. Built on at::vec::Vectorized, so the same
// source compiles to AVX2 or AVX-512 according to the build's CPU_CAPABILITY.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>

namespace dsconv_ext {
namespace cpu {

template <typename scalar_t>
struct VecIO {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<acc_t>;
  static constexpr int64_t kWidth = Vec::size();

  static Vec load(const scalar_t* p) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      return Vec::loadu(p);
    } else {
      Vec out;
      at::vec::load_to_float<scalar_t>(p, out);
      return out;
    }
  }

  static void store(scalar_t* p, const Vec& v) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      v.store(p);
    } else {
      at::vec::convert_from_float<scalar_t>(v, v).store(p, kWidth);
    }
  }

  // The first `count` (< kWidth) lanes; the rest read as zero. Masked loads and stores where
  // the build has them: a lane-by-lane copy through a buffer ran partial channel vectors
  // 2.5-6x slower than full ones (a store-to-load stall on every tap).
  static Vec load_partial(const scalar_t* p, int64_t count) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      return Vec::loadu(p, count);
    } else {
      return std::get<0>(at::vec::convert_to_float<scalar_t>(at::vec::Vectorized<scalar_t>::loadu(p, count)));
    }
  }

  static void store_partial(scalar_t* p, const Vec& v, int64_t count) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      v.store(p, count);
    } else {
      at::vec::convert_from_float<scalar_t>(v, v).store(p, count);
    }
  }
};

// A full vector stored around the caches (a non-temporal store) when p is vector-aligned:
// writing a layer's output that way saves the read of each line before it is overwritten.
// Needs a store fence before another thread reads the data (stream_fence).
inline void stream_store(float* p, const at::vec::Vectorized<float>& v) {
#if defined(CPU_CAPABILITY_AVX512)
  if ((reinterpret_cast<uintptr_t>(p) & 63) == 0) return _mm512_stream_ps(p, v);
#elif defined(CPU_CAPABILITY_AVX2)
  if ((reinterpret_cast<uintptr_t>(p) & 31) == 0) return _mm256_stream_ps(p, v);
#endif
  v.store(p);
}

inline void stream_fence() {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  _mm_sfence();
#endif
}

// Sum of the lanes in a fixed order (so reductions are bitwise repeatable).
template <typename acc_t>
inline acc_t lane_sum(const at::vec::Vectorized<acc_t>& v) {
  acc_t buffer[at::vec::Vectorized<acc_t>::size()];
  v.store(buffer);
  acc_t total = 0;
  for (int64_t k = 0; k < at::vec::Vectorized<acc_t>::size(); ++k) total += buffer[k];
  return total;
}

inline int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

}  // namespace cpu
}  // namespace dsconv_ext
