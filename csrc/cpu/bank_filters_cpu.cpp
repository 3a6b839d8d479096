// Filter-bank synthesis on CPU: w_c = sum_m coeffs[c, m] bank[m] (+ offset[c]), the C++ twin of
// dsconv_ext/families/bank.py (bank_filters), for the cpu backend's _cpu_bank_conv2d.
//
// Why not at::matmul: a [C, M] x [M, taps] product is a few hundred thousand FMAs, and BLAS wakes
// its own thread pool for it, whose spinning threads then compete with the convolution's OpenMP
// threads for the cores. One pass over the channels here costs microseconds, and the same pass
// checks that coeffs, bank and offset are finite, which the Python check costs more than.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "finite_check.h"

namespace dsconv_ext {
namespace cpu {
namespace {

template <typename S>
using Vec = at::vec::Vectorized<S>;

// filters[c, :] = offset[c] + sum_m coeffs[c, m] * bank[m, :], vectorised along the taps; the
// sum runs over m in order, as the reference's einsum does for these sizes.
template <typename S>
void synthesize(const S* bank, const S* coeffs, const S* offset, int64_t channels, int64_t members, int64_t taps,
                S* filters) {
  constexpr int64_t L = Vec<S>::size();
  // Threads only where each gets tens of microseconds of work: waking them costs more below that.
  const int64_t grain = std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(1, members * taps));
  at::parallel_for(0, channels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const S* a = coeffs + c * members;
      S* f = filters + c * taps;
      const S base = offset ? offset[c] : S(0);
      int64_t t = 0;
      for (; t + L <= taps; t += L) {
        Vec<S> acc(base);
        for (int64_t m = 0; m < members; ++m) acc = at::vec::fmadd(Vec<S>(a[m]), Vec<S>::loadu(bank + m * taps + t), acc);
        acc.store(f + t);
      }
      for (; t < taps; ++t) {
        S acc = base;
        for (int64_t m = 0; m < members; ++m) acc += a[m] * bank[m * taps + t];
        f[t] = acc;
      }
    }
  });
}

// grad_coeffs[c, m] = <grad_filters[c, :], bank[m, :]> and grad_bank[m, :] = sum_c coeffs[c, m]
// grad_filters[c, :], each summed in one fixed order whatever the thread count (deterministic).
template <typename S>
void chain_rule(const S* bank, const S* coeffs, const S* grad, int64_t channels, int64_t members, int64_t taps,
                S* grad_coeffs, S* grad_bank) {
  constexpr int64_t L = Vec<S>::size();
  const int64_t grain = std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(1, members * taps));
  at::parallel_for(0, channels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c)
      for (int64_t m = 0; m < members; ++m) {
        const S *g = grad + c * taps, *b = bank + m * taps;
        Vec<S> acc(S(0));
        int64_t t = 0;
        for (; t + L <= taps; t += L) acc = at::vec::fmadd(Vec<S>::loadu(g + t), Vec<S>::loadu(b + t), acc);
        S total = lane_sum(acc);
        for (; t < taps; ++t) total += g[t] * b[t];
        grad_coeffs[c * members + m] = total;
      }
  });
  at::parallel_for(0, members, std::max<int64_t>(1, grain / std::max<int64_t>(1, channels)), [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      S* out = grad_bank + m * taps;
      std::fill(out, out + taps, S(0));
      for (int64_t c = 0; c < channels; ++c) {
        const S a = coeffs[c * members + m];
        const S* g = grad + c * taps;
        int64_t t = 0;
        for (; t + L <= taps; t += L) at::vec::fmadd(Vec<S>(a), Vec<S>::loadu(g + t), Vec<S>::loadu(out + t)).store(out + t);
        for (; t < taps; ++t) out[t] += a * g[t];
      }
    }
  });
}

void check_bank_and_coeffs(const at::Tensor& bank, const at::Tensor& coeffs) {
  TORCH_CHECK(bank.dim() == 3, "dsconv_ext: bank must be [M, kh, kw]");
  TORCH_CHECK(coeffs.dim() == 2 && coeffs.size(1) == bank.size(0), "dsconv_ext: coeffs must be [C, M]");
}

}  // namespace

// (bank [M, kh, kw], coeffs [C, M], offset [C] or None) -> filters [C, kh * kw] in the promoted
// dtype of bank, coeffs and fp32. Non-finite inputs raise ValueError naming the argument, as the
// Python checks of the other backends do (coeffs first, then bank, then offset).
at::Tensor bank_filters(const at::Tensor& bank, const at::Tensor& coeffs, const c10::optional<at::Tensor>& offset) {
  check_bank_and_coeffs(bank, coeffs);
  const bool has_offset = offset.has_value() && offset->defined();
  if (has_offset) TORCH_CHECK(offset->numel() == coeffs.size(0), "dsconv_ext: offset must be [C]");
  const auto dtype = at::promote_types(at::promote_types(bank.scalar_type(), coeffs.scalar_type()), at::kFloat);
  const at::Tensor b = bank.to(dtype).contiguous(), a = coeffs.to(dtype).contiguous();
  const at::Tensor o = has_offset ? offset->to(dtype).contiguous() : at::Tensor();
  check_finite(a, "coeffs");
  check_finite(b, "bank");
  if (has_offset) check_finite(o, "offset");
  const int64_t channels = a.size(0), members = b.size(0), taps = b.size(1) * b.size(2);
  at::Tensor out = at::empty({channels, taps}, a.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "bank_filters", [&] {
    synthesize(b.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), has_offset ? o.data_ptr<scalar_t>() : nullptr,
               channels, members, taps, out.data_ptr<scalar_t>());
  });
  return out;
}

// (bank [M, kh, kw], coeffs [C, M], grad_filters [C, kh * kw]) -> (grad_coeffs [C, M],
// grad_bank [M, kh, kw]) in grad_filters' dtype (the filters' accumulation dtype).
std::tuple<at::Tensor, at::Tensor> bank_filters_backward(const at::Tensor& bank, const at::Tensor& coeffs,
                                                         const at::Tensor& grad_filters) {
  check_bank_and_coeffs(bank, coeffs);
  const int64_t channels = coeffs.size(0), members = bank.size(0), taps = bank.size(1) * bank.size(2);
  TORCH_CHECK(grad_filters.numel() == channels * taps, "dsconv_ext: grad_filters must be [C, kh * kw]");
  const auto dtype = grad_filters.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "dsconv_ext: grad_filters must be fp32 or fp64");
  const at::Tensor g = grad_filters.contiguous(), b = bank.to(dtype).contiguous(), a = coeffs.to(dtype).contiguous();
  at::Tensor grad_coeffs = at::empty({channels, members}, g.options());
  at::Tensor grad_bank = at::empty(bank.sizes(), g.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "bank_filters_backward", [&] {
    chain_rule(b.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), channels, members, taps,
               grad_coeffs.data_ptr<scalar_t>(), grad_bank.data_ptr<scalar_t>());
  });
  return {grad_coeffs, grad_bank};
}

}  // namespace cpu
}  // namespace dsconv_ext

TORCH_LIBRARY_FRAGMENT(dsconv_ext, m) {
  m.def("_cpu_bank_filters(Tensor bank, Tensor coeffs, Tensor? offset) -> Tensor");
  m.def("_cpu_bank_filters_backward(Tensor bank, Tensor coeffs, Tensor grad_filters) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(dsconv_ext, CPU, m) {
  m.impl("_cpu_bank_filters", &dsconv_ext::cpu::bank_filters);
  m.impl("_cpu_bank_filters_backward", &dsconv_ext::cpu::bank_filters_backward);
}
