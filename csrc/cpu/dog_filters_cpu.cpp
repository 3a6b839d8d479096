// DoG-jet filter synthesis and its chain rule on CPU: the C++ twin of
// dsconv_ext/families/dog.py (dog_filters, dog_filters_vjp), which stays the reference and the
// documentation of the maths. One call per op call: taps are computed once per channel, never
// per pixel, and in fp64 whatever the parameter dtype.
//
// The per-channel work is special functions (erf, exp at every profile edge), so channels go
// through it a vector of lanes at a time (at::vec::Vectorized<double>, SLEEF's vector erf/exp):
// the same template runs on `double` for the channels left over.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <cmath>
#include <string>
#include <vector>

namespace dsconv_ext {
namespace cpu {
namespace {

using VecD = at::vec::Vectorized<double>;

// Constants shared with dsconv_ext/families/dog.py.
constexpr double kSigmaMin = 0.1, kGammaMin = 0.1, kGammaMax = 0.95;
constexpr int kNumParams = 10, kRho = 8, kTau = 9;
constexpr int kOrderY[6] = {0, 0, 1, 0, 1, 2};
constexpr int kOrderX[6] = {0, 1, 0, 2, 1, 0};
const double kInvSqrt2Pi = 1.0 / std::sqrt(2.0 * M_PI);
const double kInvSqrt2 = 1.0 / std::sqrt(2.0);

// The few functions the synthesis needs, for one channel (double) or a vector of channels.
inline double fn_exp(double v) { return std::exp(v); }
inline VecD fn_exp(const VecD& v) { return v.exp(); }
inline double fn_erf(double v) { return std::erf(v); }
inline VecD fn_erf(const VecD& v) { return v.erf(); }
inline double fn_log1p(double v) { return std::log1p(v); }
inline VecD fn_log1p(const VecD& v) { return v.log1p(); }
// torch.nn.functional.softplus (threshold 20), so both twins agree to the last bit there.
inline double softplus(double v) { return v > 20 ? v : std::log1p(std::exp(v)); }
inline VecD softplus(const VecD& v) { return VecD::blendv(v.exp().log1p(), v, v > VecD(20.0)); }

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

  void compute(const T& s, bool integrated) {
    const T inv_s = T(1.0) / s;
    if (integrated) {
      for (int64_t e = 0; e <= size_; ++e) {
        const T u = T(e - (size_ - 1) / 2.0 - 0.5) * inv_s;
        edge_u[e] = u;
        edge_cdf[e] = T(0.5) * (T(1.0) + fn_erf(u * T(kInvSqrt2)));
        edge_pdf[e] = pdf(u);
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
      for (int64_t n = 0; n < size_; ++n) {
        const T u = T(n - (size_ - 1) / 2.0) * inv_s, p = pdf(u);
        for (int m = 0; m < orders_; ++m) {
          value[m][n] = hermite(m, u) * p * inv_s;
          if (with_dscale_)
            dscale[m][n] = (T(0.0) - (u * hermite(m + 1, u) + hermite(m, u))) * p * inv_s * inv_s;
        }
      }
    }
  }

 private:
  int64_t size_;
  int orders_;
  bool with_dscale_;
};

// The four profiles of a channel: the jet (orders 0..2 at sigma) and the surround (order 0 at
// sigma / gamma), along y and x.
template <typename T>
struct ChannelProfiles {
  Profiles<T> py, px, sy, sx;
  T sigma, gamma, sig_tau;

  ChannelProfiles(int64_t kh, int64_t kw, bool with_dscale)
      : py(kh, 3, with_dscale), px(kw, 3, with_dscale), sy(kh, 1, with_dscale), sx(kw, 1, with_dscale) {}

  void compute(const T* a, bool integrated) {
    sigma = T(kSigmaMin) + softplus(a[kRho]);
    sig_tau = sigmoid(a[kTau]);
    gamma = T(kGammaMin) + T(kGammaMax - kGammaMin) * sig_tau;
    py.compute(sigma, integrated);
    px.compute(sigma, integrated);
    sy.compute(sigma / gamma, integrated);
    sx.compute(sigma / gamma, integrated);
  }
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
      f[y * kw + x] = a[7] + surround * pr.sx.value[0][x] + row[0] * pr.px.value[0][x] + row[1] * pr.px.value[1][x] +
                      row[2] * pr.px.value[2][x];
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
      grad_surround = grad_surround + gv * pr.sy.value[0][y] * pr.sx.value[0][x];
      dgrad_surround = dgrad_surround + gv * (pr.sy.dscale[0][y] * pr.sx.value[0][x] +
                                              pr.sy.value[0][y] * pr.sx.dscale[0][x]);
      for (int b = 0; b < 6; ++b) {
        const int i = kOrderY[b], j = kOrderX[b];
        grad_jet[b] = grad_jet[b] + gv * pr.py.value[i][y] * pr.px.value[j][x];
        dgrad_jet[b] = dgrad_jet[b] + gv * (pr.py.dscale[i][y] * pr.px.value[j][x] +
                                            pr.py.value[i][y] * pr.px.dscale[j][x]);
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
inline void gather_lanes(const double* src, int64_t row, int64_t count, VecD* out) {
  alignas(64) double lanes[VecD::size()];
  for (int64_t k = 0; k < count; ++k) {
    for (int64_t l = 0; l < VecD::size(); ++l) lanes[l] = src[l * row + k];
    out[k] = VecD::loadu(lanes);
  }
}

inline void scatter_lanes(const VecD* in, int64_t count, double* dst, int64_t row) {
  alignas(64) double lanes[VecD::size()];
  for (int64_t k = 0; k < count; ++k) {
    in[k].store(lanes);
    for (int64_t l = 0; l < VecD::size(); ++l) dst[l * row + k] = lanes[l];
  }
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

// Runs body(begin, end) over channel ranges whose starts are multiples of the vector width, so
// every range but the last splits into whole vectors plus a scalar tail.
template <typename Body>
void for_channel_ranges(int64_t channels, const Body& body) {
  constexpr int64_t L = VecD::size();
  at::parallel_for(0, (channels + L - 1) / L, 8, [&](int64_t begin, int64_t end) {
    body(begin * L, std::min(channels, end * L));
  });
}

}  // namespace

// params [C, 10] -> filters [C, kh, kw] in the parameters' accumulation dtype.
at::Tensor dog_filters(const at::Tensor& params, at::IntArrayRef kernel_size, std::string profile) {
  check_params(params, kernel_size);
  const bool integrated = is_integrated(profile);
  const int64_t kh = kernel_size[0], kw = kernel_size[1], channels = params.size(0), taps = kh * kw;
  const at::Tensor p = params.to(at::kDouble).contiguous();
  at::Tensor out = at::empty({channels, kh, kw}, p.options());
  const double* pp = p.data_ptr<double>();
  double* op = out.data_ptr<double>();
  constexpr int64_t L = VecD::size();
  for_channel_ranges(channels, [&](int64_t begin, int64_t end) {
    ChannelProfiles<VecD> vec_profiles(kh, kw, false);
    ChannelProfiles<double> profiles(kh, kw, false);
    std::vector<VecD> taps_v(taps);
    VecD a_v[kNumParams];
    int64_t c = begin;
    for (; c + L <= end; c += L) {
      gather_lanes(pp + c * kNumParams, kNumParams, kNumParams, a_v);
      synthesize(a_v, vec_profiles, kh, kw, integrated, taps_v.data());
      scatter_lanes(taps_v.data(), taps, op + c * taps, taps);
    }
    for (; c < end; ++c) synthesize(pp + c * kNumParams, profiles, kh, kw, integrated, op + c * taps);
  });
  return out.to(at::toOpMathType(params.scalar_type()));
}

// (params [C, 10], grad_filters [C, kh, kw]) -> grad_params [C, 10] in params' dtype.
at::Tensor dog_filters_backward(const at::Tensor& params, const at::Tensor& grad_filters,
                                at::IntArrayRef kernel_size, std::string profile) {
  check_params(params, kernel_size);
  const bool integrated = is_integrated(profile);
  const int64_t kh = kernel_size[0], kw = kernel_size[1], channels = params.size(0), taps = kh * kw;
  TORCH_CHECK(grad_filters.numel() == channels * kh * kw, "dsconv_ext: grad_filters must be [C, kh, kw]");
  const at::Tensor p = params.to(at::kDouble).contiguous();
  const at::Tensor g = grad_filters.to(at::kDouble).contiguous();
  at::Tensor out = at::empty({channels, kNumParams}, p.options());
  const double* pp = p.data_ptr<double>();
  const double* gp = g.data_ptr<double>();
  double* op = out.data_ptr<double>();
  constexpr int64_t L = VecD::size();
  for_channel_ranges(channels, [&](int64_t begin, int64_t end) {
    ChannelProfiles<VecD> vec_profiles(kh, kw, true);
    ChannelProfiles<double> profiles(kh, kw, true);
    std::vector<VecD> g_v(taps);
    VecD a_v[kNumParams], grad_v[kNumParams];
    int64_t c = begin;
    for (; c + L <= end; c += L) {
      gather_lanes(pp + c * kNumParams, kNumParams, kNumParams, a_v);
      gather_lanes(gp + c * taps, taps, taps, g_v.data());
      chain_rule(a_v, g_v.data(), vec_profiles, kh, kw, integrated, grad_v);
      scatter_lanes(grad_v, kNumParams, op + c * kNumParams, kNumParams);
    }
    for (; c < end; ++c)
      chain_rule(pp + c * kNumParams, gp + c * taps, profiles, kh, kw, integrated, op + c * kNumParams);
  });
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
