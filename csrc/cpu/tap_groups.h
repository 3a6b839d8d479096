// How the filter-gradient kernels split a filter's taps into passes.
#pragma once

#include <cstdint>
#include <type_traits>

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

// for_each_tap_group with each group's size as a compile-time constant, for kernels that keep
// one register accumulator per tap: calls visit(first_tap, std::integral_constant<int, K>{}).
template <typename Visit>
inline void with_tap_count(int64_t count, Visit&& visit) {
  static_assert(kMaxWeightGradTaps == 12, "with_tap_count lists the counts 1 .. 12");
#define DSCONV_TAP_COUNT_CASE(K) \
  case K: visit(std::integral_constant<int, K>{}); break;
  switch (count) {
    DSCONV_TAP_COUNT_CASE(1) DSCONV_TAP_COUNT_CASE(2) DSCONV_TAP_COUNT_CASE(3) DSCONV_TAP_COUNT_CASE(4)
    DSCONV_TAP_COUNT_CASE(5) DSCONV_TAP_COUNT_CASE(6) DSCONV_TAP_COUNT_CASE(7) DSCONV_TAP_COUNT_CASE(8)
    DSCONV_TAP_COUNT_CASE(9) DSCONV_TAP_COUNT_CASE(10) DSCONV_TAP_COUNT_CASE(11) default: DSCONV_TAP_COUNT_CASE(12)
  }
#undef DSCONV_TAP_COUNT_CASE
}

template <typename Visit>
inline void for_each_sized_tap_group(int64_t taps, Visit&& visit) {
  for_each_tap_group(taps, [&](int64_t first, int64_t count) {
    with_tap_count(count, [&](auto taps_c) { visit(first, taps_c); });
  });
}

}  // namespace cpu
}  // namespace dsconv_ext
