// Measures this machine's fused multiply-add throughput with the same vector type and threads
// the kernels use, so benchmarks can report each kernel's share of the peak.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <chrono>
#include <vector>

#include "depthwise_cpu.h"

namespace dsconv_ext {
namespace cpu {

double fma_throughput(int64_t iterations) {
  using Vec = at::vec::Vectorized<float>;
  constexpr int kChains = 16;  // independent accumulators: enough to hide FMA latency
  const int64_t threads = at::get_num_threads();
  std::vector<float> sink(threads, 0.f);
  const auto start = std::chrono::steady_clock::now();
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      Vec acc[kChains];
      for (int k = 0; k < kChains; ++k) acc[k] = Vec(1.0f + 1e-3f * k);
      const Vec a(0.999999f), b(1e-7f);
      for (int64_t it = 0; it < iterations; ++it)
        for (int k = 0; k < kChains; ++k) acc[k] = at::vec::fmadd(acc[k], a, b);
      Vec total(0.f);
      for (int k = 0; k < kChains; ++k) total = total + acc[k];
      float lanes[Vec::size()];
      total.store(lanes);
      sink[t] = lanes[0];
    }
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  volatile float keep = sink[0];
  (void)keep;
  return static_cast<double>(threads) * iterations * kChains * Vec::size() / seconds;
}

}  // namespace cpu
}  // namespace dsconv_ext
