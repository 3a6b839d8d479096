// DoG-jet filter synthesis and its chain rule on CPU: the C++ twin of
// dsconv_ext/families/dog.py (dog_filters, dog_filters_vjp), which stays the reference and the
// documentation of the maths. One call per op call: taps are computed once per channel, never
// per pixel, and in fp64 whatever the parameter dtype.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <string>
#include <vector>

namespace dsconv_ext {
namespace cpu {
namespace {

// Constants shared with dsconv_ext/families/dog.py.
constexpr double kSigmaMin = 0.1, kGammaMin = 0.1, kGammaMax = 0.95;
constexpr int kNumParams = 10, kNumCoeffs = 8, kRho = 8, kTau = 9;
constexpr int kOrderY[6] = {0, 0, 1, 0, 1, 2};
constexpr int kOrderX[6] = {0, 1, 0, 2, 1, 0};
const double kInvSqrt2Pi = 1.0 / std::sqrt(2.0 * M_PI);

inline double softplus(double v) { return v > 20 ? v : std::log1p(std::exp(v)); }
inline double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }
inline double pdf(double u) { return std::exp(-0.5 * u * u) * kInvSqrt2Pi; }
// phi^(order)(u) / phi(u)
inline double hermite(int order, double u) {
  switch (order) {
    case 0: return 1.0;
    case 1: return -u;
    case 2: return u * u - 1.0;
    default: return u * (3.0 - u * u);
  }
}
// Q_order: Phi for order 0, phi^(order-1) otherwise.
inline double antiderivative(int order, double u) {
  if (order == 0) return 0.5 * (1.0 + std::erf(u / std::sqrt(2.0)));
  return hermite(order - 1, u) * pdf(u);
}

// Profiles p_m(t; s) for m = 0..2 at the `size` taps, and d/ds of them (see dog.py).
struct Profiles {
  std::vector<double> value[3], dscale[3];
  Profiles(int64_t size, double s, bool integrated) {
    for (int m = 0; m < 3; ++m) {
      value[m].resize(size);
      dscale[m].resize(size);
    }
    for (int64_t n = 0; n < size; ++n) {
      const double t = n - (size - 1) / 2.0;
      if (integrated) {
        const double upper = (t + 0.5) / s, lower = (t - 0.5) / s;
        for (int m = 0; m < 3; ++m) {
          value[m][n] = antiderivative(m, upper) - antiderivative(m, lower);
          dscale[m][n] = -(upper * hermite(m, upper) * pdf(upper) - lower * hermite(m, lower) * pdf(lower)) / s;
        }
      } else {
        const double u = t / s, p = pdf(u);
        for (int m = 0; m < 3; ++m) {
          value[m][n] = hermite(m, u) * p / s;
          dscale[m][n] = -(u * hermite(m + 1, u) + hermite(m, u)) * p / (s * s);
        }
      }
    }
  }
};

bool is_integrated(const std::string& profile) {
  TORCH_CHECK(profile == "integrated" || profile == "sampled",
              "dsconv_ext: profile must be 'integrated' or 'sampled', got ", profile);
  return profile == "integrated";
}

void check_params(const at::Tensor& params, at::IntArrayRef kernel_size) {
  TORCH_CHECK(params.dim() == 2 && params.size(1) == kNumParams, "dsconv_ext: params must be [C, 10]");
  TORCH_CHECK(kernel_size.size() == 2, "dsconv_ext: kernel_size must have 2 entries");
}

}  // namespace

// params [C, 10] -> filters [C, kh, kw] in the parameters' accumulation dtype.
at::Tensor dog_filters(const at::Tensor& params, at::IntArrayRef kernel_size, std::string profile) {
  check_params(params, kernel_size);
  const bool integrated = is_integrated(profile);
  const int64_t kh = kernel_size[0], kw = kernel_size[1], channels = params.size(0);
  const at::Tensor p = params.to(at::kDouble).contiguous();
  at::Tensor out = at::empty({channels, kh, kw}, p.options());
  const double* pp = p.data_ptr<double>();
  double* op = out.data_ptr<double>();
  at::parallel_for(0, channels, 16, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const double* a = pp + c * kNumParams;
      const double sigma = kSigmaMin + softplus(a[kRho]);
      const double gamma = kGammaMin + (kGammaMax - kGammaMin) * sigmoid(a[kTau]);
      const Profiles py(kh, sigma, integrated), px(kw, sigma, integrated);
      const Profiles sy(kh, sigma / gamma, integrated), sx(kw, sigma / gamma, integrated);
      double* f = op + c * kh * kw;
      for (int64_t y = 0; y < kh; ++y)
        for (int64_t x = 0; x < kw; ++x) {
          double v = a[7] + a[6] * sy.value[0][y] * sx.value[0][x];
          for (int b = 0; b < 6; ++b) v += a[b] * py.value[kOrderY[b]][y] * px.value[kOrderX[b]][x];
          f[y * kw + x] = v;
        }
    }
  });
  return out.to(at::toOpMathType(params.scalar_type()));
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
  const double* pp = p.data_ptr<double>();
  const double* gp = g.data_ptr<double>();
  double* op = out.data_ptr<double>();
  at::parallel_for(0, channels, 16, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const double* a = pp + c * kNumParams;
      const double* gf = gp + c * kh * kw;
      double* grad = op + c * kNumParams;
      const double sigma = kSigmaMin + softplus(a[kRho]);
      const double sig_tau = sigmoid(a[kTau]);
      const double gamma = kGammaMin + (kGammaMax - kGammaMin) * sig_tau;
      const Profiles py(kh, sigma, integrated), px(kw, sigma, integrated);
      const Profiles sy(kh, sigma / gamma, integrated), sx(kw, sigma / gamma, integrated);
      double grad_jet[6] = {}, dgrad_jet[6] = {}, grad_surround = 0, dgrad_surround = 0, total = 0;
      for (int64_t y = 0; y < kh; ++y)
        for (int64_t x = 0; x < kw; ++x) {
          const double gv = gf[y * kw + x];
          total += gv;
          grad_surround += gv * sy.value[0][y] * sx.value[0][x];
          dgrad_surround += gv * (sy.dscale[0][y] * sx.value[0][x] + sy.value[0][y] * sx.dscale[0][x]);
          for (int b = 0; b < 6; ++b) {
            const int i = kOrderY[b], j = kOrderX[b];
            grad_jet[b] += gv * py.value[i][y] * px.value[j][x];
            dgrad_jet[b] += gv * (py.dscale[i][y] * px.value[j][x] + py.value[i][y] * px.dscale[j][x]);
          }
        }
      double grad_sigma = a[6] * dgrad_surround / gamma;
      for (int b = 0; b < 6; ++b) {
        grad[b] = grad_jet[b];
        grad_sigma += a[b] * dgrad_jet[b];
      }
      grad[6] = grad_surround;
      grad[7] = total;
      grad[kRho] = grad_sigma * sigmoid(a[kRho]);
      const double grad_gamma = -a[6] * dgrad_surround * sigma / (gamma * gamma);
      grad[kTau] = grad_gamma * (kGammaMax - kGammaMin) * sig_tau * (1.0 - sig_tau);
    }
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
