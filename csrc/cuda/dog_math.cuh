// The DoG-jet profiles on the device, in fp64: the CUDA twin of dsconv_ext/families/dog.py
// (the reference, with the maths in its docstring) and csrc/cpu/dog_filters_cpu.cpp.
#pragma once

#include <cuda_runtime.h>

namespace dsconv_ext {
namespace cuda {

// Constants shared with dsconv_ext/families/dog.py.
constexpr int kDogNumParams = 10;
constexpr int kDogRho = 8;
constexpr int kDogTau = 9;
constexpr double kDogSigmaMin = 0.1;
constexpr double kDogGammaMin = 0.1;
constexpr double kDogGammaMax = 0.95;
__device__ constexpr int kDogOrderY[6] = {0, 0, 1, 0, 1, 2};
__device__ constexpr int kDogOrderX[6] = {0, 1, 0, 2, 1, 0};

__device__ __forceinline__ double dog_softplus(double v) { return v > 20.0 ? v : log1p(exp(v)); }
__device__ __forceinline__ double dog_sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }
__device__ __forceinline__ double dog_sigma(double rho) { return kDogSigmaMin + dog_softplus(rho); }
__device__ __forceinline__ double dog_gamma(double tau) {
  return kDogGammaMin + (kDogGammaMax - kDogGammaMin) * dog_sigmoid(tau);
}
__device__ __forceinline__ double dog_pdf(double u) { return exp(-0.5 * u * u) * 0.39894228040143267794; }

// phi^(order)(u) / phi(u)
__device__ __forceinline__ double dog_hermite(int order, double u) {
  switch (order) {
    case 0: return 1.0;
    case 1: return -u;
    case 2: return u * u - 1.0;
    default: return u * (3.0 - u * u);
  }
}

// Q_order(u): Phi for order 0, phi^(order-1) otherwise.
__device__ __forceinline__ double dog_antiderivative(int order, double u) {
  if (order == 0) return 0.5 * (1.0 + erf(u * 0.70710678118654752440));
  return dog_hermite(order - 1, u) * dog_pdf(u);
}

// Orders 0..2 of the 1-D profile at tap n of a `size`-tap axis and scale s; with `dscale`
// also their derivatives with respect to s.
__device__ inline void dog_profile(int n, int size, double s, bool integrated, double (&value)[3], double* dscale) {
  const double t = n - (size - 1) / 2.0;
  if (integrated) {
    const double upper = (t + 0.5) / s, lower = (t - 0.5) / s;
    const double pdf_upper = dog_pdf(upper), pdf_lower = dog_pdf(lower);
    for (int m = 0; m < 3; ++m) {
      value[m] = dog_antiderivative(m, upper) - dog_antiderivative(m, lower);
      if (dscale != nullptr)
        dscale[m] = -(upper * dog_hermite(m, upper) * pdf_upper - lower * dog_hermite(m, lower) * pdf_lower) / s;
    }
  } else {
    const double u = t / s, p = dog_pdf(u);
    for (int m = 0; m < 3; ++m) {
      value[m] = dog_hermite(m, u) * p / s;
      if (dscale != nullptr) dscale[m] = -(u * dog_hermite(m + 1, u) + dog_hermite(m, u)) * p / (s * s);
    }
  }
}

}  // namespace cuda
}  // namespace dsconv_ext
