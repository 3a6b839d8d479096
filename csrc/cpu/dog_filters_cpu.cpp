// DoG-jet filter synthesis and its chain rule on CPU: the C++ twin of
// dsconv_ext/families/dog.py (dog_filters, dog_filters_vjp), which stays the reference and the
// documentation of the maths. One call per op call: taps are computed once per channel, never
// per pixel, and in fp64 whatever the parameter dtype. fp32 synthesis saved a fifth of a call
// that costs microseconds, and cost filters that differ from the fp64 truth in the last fp32
// bits; through a 50-layer network those differences reach 1e-4 of the output.
//
// The per-channel work is special functions (erf, exp at every profile edge), so channels go
// through it a vector of lanes at a time (at::vec::Vectorized, SLEEF's vector erf/exp): the same
// template runs on the scalar type for the channels left over. The forward also checks that the
// parameters are finite, which costs less here than a separate pass in Python.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "finite_check.h"

namespace dsconv_ext {
namespace cpu {
namespace {

// Constants shared with dsconv_ext/families/dog.py.
constexpr double kSigmaMin = 0.1, kGammaMin = 0.1, kGammaMax = 0.95;
constexpr int kNumParams = 10, kRho = 8, kTau = 9;
constexpr int kOrderY[6] = {0, 0, 1, 0, 1, 2};
constexpr int kOrderX[6] = {0, 1, 0, 2, 1, 0};
const double kInvSqrt2Pi = 1.0 / std::sqrt(2.0 * M_PI);
const double kInvSqrt2 = 1.0 / std::sqrt(2.0);

// The few functions the synthesis needs, for one channel (a scalar) or a vector of channels.
template <typename S>
using Vec = at::vec::Vectorized<S>;
template <typename S>
inline S fn_exp(S v) { return std::exp(v); }
template <typename S>
inline Vec<S> fn_exp(const Vec<S>& v) { return v.exp(); }
template <typename S>
inline S fn_erf(S v) { return std::erf(v); }
template <typename S>
inline Vec<S> fn_erf(const Vec<S>& v) { return v.erf(); }
// torch.nn.functional.softplus (threshold 20), so both twins agree to the last bit there.
template <typename S>
inline S softplus(S v) { return v > 20 ? v : std::log1p(std::exp(v)); }
template <typename S>
inline Vec<S> softplus(const Vec<S>& v) { return Vec<S>::blendv(v.exp().log1p(), v, v > Vec<S>(20.0)); }

template <typename T>
inline T sigmoid(const T& v) { return T(1.0) / (T(1.0) + fn_exp(T(0.0) - v)); }
template <typename T>
inline T pdf(const T& u) { return fn_exp(T(-0.5) * u * u) * T(kInvSqrt2Pi); }
// phi^(order)(u) / phi(u)
template <typename T>
inline T hermite(int order, const T& u) {
  switch (order) {
    case 0: return T(1.0);
    case 1: return T(0.0) - u;
    case 2: return u * u - T(1.0);
    default: return u * (T(3.0) - u * u);
  }
}

// Profiles p_m(t; s) for m = 0..orders-1 at the `size` taps, and d/ds of them (see dog.py), in
// buffers that live across channels: the per-channel cost is the special functions, not
// allocations. The integrated profile at tap n is Q_m(upper) - Q_m(lower) (Q_0 = Phi,
// Q_m = phi^(m-1)), and neighbouring taps share an edge, so Phi and phi are evaluated once per
// edge (size + 1 times).
template <typename T>
struct Profiles {
  std::vector<T> value[3], dscale[3];
  std::vector<T> edge_u, edge_cdf, edge_pdf;

  Profiles(int64_t size, int orders, bool with_dscale) : size_(size), orders_(orders), with_dscale_(with_dscale) {
    for (int m = 0; m < orders; ++m) {
      value[m].resize(size);
      if (with_dscale) dscale[m].resize(size);
    }
    edge_u.resize(size + 1);
    edge_cdf.resize(size + 1);
    edge_pdf.resize(size + 1);
  }

  // Taps mirror about the centre (u -> -u), and so do the special functions: phi is even and erf
  // odd, so each |u| is evaluated once and the mirror half is written from it. The results are
  // the same numbers a direct evaluation at -u gives.
  void compute(const T& s, bool integrated) {
    const T inv_s = T(1.0) / s;
    if (integrated) {
      for (int64_t e = (size_ + 1) / 2; e <= size_; ++e) {  // u >= 0 at these edges
        const T u = T(e - (size_ - 1) / 2.0 - 0.5) * inv_s;
        const T erf_u = fn_erf(u * T(kInvSqrt2)), pdf_u = pdf(u);
        const int64_t mirror = size_ - e;
        edge_u[e] = u;
        edge_cdf[e] = T(0.5) * (T(1.0) + erf_u);
        edge_pdf[e] = pdf_u;
        edge_u[mirror] = T(0.0) - u;
        edge_cdf[mirror] = T(0.5) * (T(1.0) - erf_u);
        edge_pdf[mirror] = pdf_u;
      }
      for (int64_t n = 0; n < size_; ++n) {
        const T lower = edge_u[n], upper = edge_u[n + 1];
        const T p_lo = edge_pdf[n], p_hi = edge_pdf[n + 1];
        for (int m = 0; m < orders_; ++m) {
          value[m][n] = m == 0 ? edge_cdf[n + 1] - edge_cdf[n]
                               : hermite(m - 1, upper) * p_hi - hermite(m - 1, lower) * p_lo;
          if (with_dscale_)
            dscale[m][n] = (T(0.0) - (upper * hermite(m, upper) * p_hi - lower * hermite(m, lower) * p_lo)) * inv_s;
        }
      }
    } else {
      for (int64_t n = size_ / 2; n < size_; ++n) {  // u >= 0 at these taps
        const T u = T(n - (size_ - 1) / 2.0) * inv_s, p = pdf(u);
        sampled_tap(n, u, p, inv_s);
        if (size_ - 1 - n != n) sampled_tap(size_ - 1 - n, T(0.0) - u, p, inv_s);
      }
    }
  }

 private:
  void sampled_tap(int64_t n, const T& u, const T& p, const T& inv_s) {
    for (int m = 0; m < orders_; ++m) {
      value[m][n] = hermite(m, u) * p * inv_s;
      if (with_dscale_) dscale[m][n] = (T(0.0) - (u * hermite(m + 1, u) + hermite(m, u))) * p * inv_s * inv_s;
    }
  }

  int64_t size_;
  int orders_;
  bool with_dscale_;
};

// The four profiles of a channel: the jet (orders 0..2 at sigma) and the surround (order 0 at
// sigma / gamma), along y and x. A square filter's x profiles are its y profiles, so they are
// computed once.
template <typename T>
struct ChannelProfiles {
  Profiles<T> py, sy;
  T sigma, gamma, sig_tau;

  ChannelProfiles(int64_t kh, int64_t kw, bool with_dscale)
      : py(kh, 3, with_dscale), sy(kh, 1, with_dscale), square_(kh == kw),
        px_own_(square_ ? 0 : kw, 3, with_dscale), sx_own_(square_ ? 0 : kw, 1, with_dscale) {}

  const Profiles<T>& px() const { return square_ ? py : px_own_; }
  const Profiles<T>& sx() const { return square_ ? sy : sx_own_; }

  void compute(const T* a, bool integrated) {
    sigma = T(kSigmaMin) + softplus(a[kRho]);
    sig_tau = sigmoid(a[kTau]);
    gamma = T(kGammaMin) + T(kGammaMax - kGammaMin) * sig_tau;
    py.compute(sigma, integrated);
    sy.compute(sigma / gamma, integrated);
    if (!square_) {
      px_own_.compute(sigma, integrated);
      sx_own_.compute(sigma / gamma, integrated);
    }
  }

 private:
  bool square_;
  Profiles<T> px_own_, sx_own_;
};

// Filter taps f[y * kw + x] of one channel (or one vector of channels) with parameters a[10].
template <typename T>
void synthesize(const T* a, ChannelProfiles<T>& pr, int64_t kh, int64_t kw, bool integrated, T* f) {
  pr.compute(a, integrated);
  for (int64_t y = 0; y < kh; ++y) {
    // Per row, the jet collapses to three x-profile coefficients.
    T row[3] = {T(0.0), T(0.0), T(0.0)};
    for (int b = 0; b < 6; ++b) row[kOrderX[b]] = row[kOrderX[b]] + a[b] * pr.py.value[kOrderY[b]][y];
    const T surround = a[6] * pr.sy.value[0][y];
    for (int64_t x = 0; x < kw; ++x)
      f[y * kw + x] = a[7] + surround * pr.sx().value[0][x] + row[0] * pr.px().value[0][x] + row[1] * pr.px().value[1][x] +
                      row[2] * pr.px().value[2][x];
  }
}

// grad[10] of one channel (or vector of channels) from the filter gradient g[y * kw + x].
template <typename T>
void chain_rule(const T* a, const T* g, ChannelProfiles<T>& pr, int64_t kh, int64_t kw, bool integrated, T* grad) {
  pr.compute(a, integrated);
  T grad_jet[6], dgrad_jet[6];
  for (int b = 0; b < 6; ++b) grad_jet[b] = dgrad_jet[b] = T(0.0);
  T grad_surround(0.0), dgrad_surround(0.0), total(0.0);
  for (int64_t y = 0; y < kh; ++y)
    for (int64_t x = 0; x < kw; ++x) {
      const T gv = g[y * kw + x];
      total = total + gv;
      grad_surround = grad_surround + gv * pr.sy.value[0][y] * pr.sx().value[0][x];
      dgrad_surround = dgrad_surround + gv * (pr.sy.dscale[0][y] * pr.sx().value[0][x] +
                                              pr.sy.value[0][y] * pr.sx().dscale[0][x]);
      for (int b = 0; b < 6; ++b) {
        const int i = kOrderY[b], j = kOrderX[b];
        grad_jet[b] = grad_jet[b] + gv * pr.py.value[i][y] * pr.px().value[j][x];
        dgrad_jet[b] = dgrad_jet[b] + gv * (pr.py.dscale[i][y] * pr.px().value[j][x] +
                                            pr.py.value[i][y] * pr.px().dscale[j][x]);
      }
    }
  T grad_sigma = a[6] * dgrad_surround / pr.gamma;
  for (int b = 0; b < 6; ++b) {
    grad[b] = grad_jet[b];
    grad_sigma = grad_sigma + a[b] * dgrad_jet[b];
  }
  grad[6] = grad_surround;
  grad[7] = total;
  grad[kRho] = grad_sigma * sigmoid(a[kRho]);
  const T grad_gamma = T(0.0) - a[6] * dgrad_surround * pr.sigma / (pr.gamma * pr.gamma);
  grad[kTau] = grad_gamma * T(kGammaMax - kGammaMin) * pr.sig_tau * (T(1.0) - pr.sig_tau);
}

// Lanes <-> channels: element k of channel c0 + l is src[(c0 + l) * row + k]; as vectors, lane l.
// Both directions are a [lanes, count] <-> [count, lanes] transpose through `scratch` (at least
// lanes * count values); ATen's AVX-512 fp32 transpose moves 16x16 blocks in registers, where
// lane-by-lane copies cost more than the synthesis itself.
template <typename S>
inline void gather_lanes(const S* src, int64_t row, int64_t count, S* scratch, Vec<S>* out) {
  constexpr int L = Vec<S>::size();
  at::vec::transpose_mxn<S>(src, row, scratch, L, L, static_cast<int>(count));
  for (int64_t k = 0; k < count; ++k) out[k] = Vec<S>::loadu(scratch + k * L);
}

template <typename S>
inline void scatter_lanes(const Vec<S>* in, int64_t count, S* scratch, S* dst, int64_t row) {
  constexpr int L = Vec<S>::size();
  for (int64_t k = 0; k < count; ++k) in[k].store(scratch + k * L);
  at::vec::transpose_mxn<S>(scratch, L, dst, row, static_cast<int>(count), L);
}

bool is_integrated(const std::string& profile) {
  TORCH_CHECK(profile == "integrated" || profile == "sampled",
              "dsconv_ext: profile must be 'integrated' or 'sampled', got ", profile);
  return profile == "integrated";
}

void check_params(const at::Tensor& params, at::IntArrayRef kernel_size) {
  TORCH_CHECK(params.dim() == 2 && params.size(1) == kNumParams, "dsconv_ext: params must be [C, 10]");
  TORCH_CHECK(kernel_size.size() == 2, "dsconv_ext: kernel_size must have 2 entries");
}

// Runs body(begin, end) over channel ranges whose starts are multiples of the vector width L, so
// every range but the last splits into whole vectors plus a scalar tail. A vector of channels
// costs about a microsecond, and waking the other threads costs tens (more on a virtual machine,
// where a sleeping vCPU needs an interrupt): threads only start where each gets 64 vectors.
template <int64_t L, typename Body>
void for_channel_ranges(int64_t channels, const Body& body) {
  constexpr int64_t kVectorsPerThread = 64;
  at::parallel_for(0, (channels + L - 1) / L, kVectorsPerThread, [&](int64_t begin, int64_t end) {
    body(begin * L, std::min(channels, end * L));
  });
}

template <typename S>
void synthesize_channels(const S* pp, int64_t channels, int64_t kh, int64_t kw, bool integrated, S* op) {
  constexpr int64_t L = Vec<S>::size();
  const int64_t taps = kh * kw;
  for_channel_ranges<L>(channels, [&](int64_t begin, int64_t end) {
    ChannelProfiles<Vec<S>> vec_profiles(kh, kw, false);
    ChannelProfiles<S> profiles(kh, kw, false);
    std::vector<Vec<S>> taps_v(taps);
    std::vector<S> scratch(L * std::max<int64_t>(taps, kNumParams));
    Vec<S> a_v[kNumParams];
    int64_t c = begin;
    for (; c + L <= end; c += L) {
      gather_lanes(pp + c * kNumParams, kNumParams, kNumParams, scratch.data(), a_v);
      synthesize(a_v, vec_profiles, kh, kw, integrated, taps_v.data());
      scatter_lanes(taps_v.data(), taps, scratch.data(), op + c * taps, taps);
    }
    for (; c < end; ++c) synthesize(pp + c * kNumParams, profiles, kh, kw, integrated, op + c * taps);
  });
}

template <typename S>
void chain_rule_channels(const S* pp, const S* gp, int64_t channels, int64_t kh, int64_t kw, bool integrated,
                         S* op) {
  constexpr int64_t L = Vec<S>::size();
  const int64_t taps = kh * kw;
  for_channel_ranges<L>(channels, [&](int64_t begin, int64_t end) {
    ChannelProfiles<Vec<S>> vec_profiles(kh, kw, true);
    ChannelProfiles<S> profiles(kh, kw, true);
    std::vector<Vec<S>> g_v(taps);
    std::vector<S> scratch(L * std::max<int64_t>(taps, kNumParams));
    Vec<S> a_v[kNumParams], grad_v[kNumParams];
    int64_t c = begin;
    for (; c + L <= end; c += L) {
      gather_lanes(pp + c * kNumParams, kNumParams, kNumParams, scratch.data(), a_v);
      gather_lanes(gp + c * taps, taps, taps, scratch.data(), g_v.data());
      chain_rule(a_v, g_v.data(), vec_profiles, kh, kw, integrated, grad_v);
      scatter_lanes(grad_v, kNumParams, scratch.data(), op + c * kNumParams, kNumParams);
    }
    for (; c < end; ++c)
      chain_rule(pp + c * kNumParams, gp + c * taps, profiles, kh, kw, integrated, op + c * kNumParams);
  });
}

}  // namespace

// params [C, 10] -> filters [C, kh, kw] in the parameters' accumulation dtype (fp32, or fp64 for
// fp64 params). Non-finite parameters raise ValueError, as the Python check the other backends
// run does.
at::Tensor dog_filters(const at::Tensor& params, at::IntArrayRef kernel_size, std::string profile) {
  check_params(params, kernel_size);
  const bool integrated = is_integrated(profile);
  const int64_t kh = kernel_size[0], kw = kernel_size[1], channels = params.size(0);
  const at::Tensor p = params.to(at::kDouble).contiguous();
  check_finite(p, "params");
  at::Tensor out = at::empty({channels, kh, kw}, p.options());
  synthesize_channels(p.const_data_ptr<double>(), channels, kh, kw, integrated, out.data_ptr<double>());
  return out.to(params.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
}

// (params [C, 10], grad_filters [C, kh, kw]) -> grad_params [C, 10] in params' dtype.
at::Tensor dog_filters_backward(const at::Tensor& params, const at::Tensor& grad_filters,
                                at::IntArrayRef kernel_size, std::string profile) {
  check_params(params, kernel_size);
  const bool integrated = is_integrated(profile);
  const int64_t kh = kernel_size[0], kw = kernel_size[1], channels = params.size(0);
  TORCH_CHECK(grad_filters.numel() == channels * kh * kw, "dsconv_ext: grad_filters must be [C, kh, kw]");
  const at::Tensor p = params.to(at::kDouble).contiguous();
  const at::Tensor g = grad_filters.to(at::kDouble).contiguous();
  at::Tensor out = at::empty({channels, kNumParams}, p.options());
  chain_rule_channels(p.const_data_ptr<double>(), g.const_data_ptr<double>(), channels, kh, kw, integrated,
                      out.data_ptr<double>());
  return out.to(params.scalar_type());
}

}  // namespace cpu
}  // namespace dsconv_ext

TORCH_LIBRARY_FRAGMENT(dsconv_ext, m) {
  m.def("_cpu_dog_filters(Tensor params, int[2] kernel_size, str profile) -> Tensor");
  m.def("_cpu_dog_filters_backward(Tensor params, Tensor grad_filters, int[2] kernel_size, str profile) -> Tensor");
}

TORCH_LIBRARY_IMPL(dsconv_ext, CPU, m) {
  m.impl("_cpu_dog_filters", &dsconv_ext::cpu::dog_filters);
  m.impl("_cpu_dog_filters_backward", &dsconv_ext::cpu::dog_filters_backward);
}
