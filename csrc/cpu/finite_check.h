// Whether a buffer holds only finite values, in one vectorised pass: the check the C++ DoG and
// bank synthesis run on their inputs (so it also runs in compiled graphs, where Python's is
// skipped), raising ValueError with the message of Python's check_finite.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cpu/vec/vec.h>

#include "vec_io.h"

namespace dsconv_ext {
namespace cpu {

// x * 0 is 0 for finite x and NaN for NaN or Inf, so one sum of them tells all values apart.
template <typename S>
bool all_finite(const S* data, int64_t count) {
  using Vec = at::vec::Vectorized<S>;
  constexpr int64_t L = Vec::size();
  const Vec zero(S(0));
  Vec acc[4] = {zero, zero, zero, zero};  // four chains hide the add latency
  int64_t i = 0;
  for (; i + 4 * L <= count; i += 4 * L)
    for (int j = 0; j < 4; ++j) acc[j] = at::vec::fmadd(Vec::loadu(data + i + j * L), zero, acc[j]);
  S tail = S(0);
  for (; i < count; ++i) tail += data[i] * S(0);
  return tail + lane_sum((acc[0] + acc[1]) + (acc[2] + acc[3])) == S(0);
}

// Raises ValueError "<name>: expected finite values, got NaN or Inf" unless the fp32 or fp64
// tensor `t` (contiguous) is all finite.
inline void check_finite(const at::Tensor& t, const char* name) {
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "dsconv_ext_check_finite", [&] {
    TORCH_CHECK_VALUE(all_finite(t.const_data_ptr<scalar_t>(), t.numel()), name,
                      ": expected finite values, got NaN or Inf");
  });
}

}  // namespace cpu
}  // namespace dsconv_ext
