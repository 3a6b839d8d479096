// How the filter-gradient kernels split a filter's taps into passes.
#pragma once

#include <cstdint>

namespace dsconv_ext {
namespace cpu {

// Taps per weight-gradient pass: each pass re-reads g and keeps one accumulator per tap, so
// passes should be few and wide; but a chain of FMAs into one accumulator waits on the
// previous one, so fewer than ~8 accumulators leaves the FMA units idle (a 3x3 filter done
// one kernel row at a time ran at a third of the rate). 12 accumulators + g + a load fit
// in the 16 registers of AVX2.
constexpr int64_t kMaxWeightGradTaps = 12;

// The filter's taps, in order, split into the fewest groups of at most kMaxWeightGradTaps,
// of nearly equal size: calls visit(first_tap, count) per group.
template <typename Visit>
inline void for_each_tap_group(int64_t taps, Visit&& visit) {
  const int64_t groups = (taps + kMaxWeightGradTaps - 1) / kMaxWeightGradTaps;
  for (int64_t k = 0; k < groups; ++k) {
    const int64_t first = taps * k / groups, last = taps * (k + 1) / groups;
    visit(first, last - first);
  }
}

}  // namespace cpu
}  // namespace dsconv_ext
