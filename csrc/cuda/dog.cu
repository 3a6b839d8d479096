// dsconv_ext::_cuda_dog_forward / _cuda_dog_backward: DoG-jet filters generated per block in
// shared memory from params [C, 10] (fill_taps), never stored. The backward reduces the filter
// gradient [C, kh, kw] in fp32 like every family, then chains it into the parameters with one
// small kernel (one block per channel, fp64, the CUDA twin of dog_filters_vjp in
// dsconv_ext/families/dog.py and of the CPU _cpu_dog_filters_backward).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common.cuh"
#include "launch.h"

namespace dsconv_ext {
namespace cuda {
namespace {

constexpr const char* kForward = "dsconv_ext::_cuda_dog_forward";
constexpr const char* kBackward = "dsconv_ext::_cuda_dog_backward";
constexpr int kVjpThreads = 128;
constexpr int kVjpSums = 15;  // <g, jet_b> (6), <g, d jet_b / d sigma> (6), <g, S>, <g, dS / d scale>, sum g

__device__ __forceinline__ double warp_sum_double(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// grad_filters [C, kh * kw] fp32 -> grad_params [C, 10] fp64. Block c handles channel c.
__global__ void __launch_bounds__(kVjpThreads)
    dog_params_vjp_kernel(const double* __restrict__ params, const float* __restrict__ grad_filters,
                          double* __restrict__ grad_params, int kh, int kw, bool integrated) {
  extern __shared__ double smem_d[];
  // value / d-scale of the jet profiles (orders 0..2) and of the order-0 surround profile.
  double* jy = smem_d;            // [3][kh]
  double* djy = jy + 3 * kh;      // [3][kh]
  double* jx = djy + 3 * kh;      // [3][kw]
  double* djx = jx + 3 * kw;      // [3][kw]
  double* sy = djx + 3 * kw;      // [kh]
  double* dsy = sy + kh;          // [kh]
  double* sx = dsy + kh;          // [kw]
  double* dsx = sx + kw;          // [kw]
  __shared__ double s_partial[kVjpThreads / 32][kVjpSums];

  const int64_t c = blockIdx.x;
  const double* a = params + c * kDogNumParams;
  const double sigma = dog_sigma(a[kDogRho]), gamma = dog_gamma(a[kDogTau]);
  const int tid = threadIdx.x;
  for (int pos = tid; pos < kh + kw; pos += kVjpThreads) {
    const bool along_y = pos < kh;
    const int n = along_y ? pos : pos - kh, size = along_y ? kh : kw;
    double v[3], d[3], sv[3], sd[3];
    dog_profile(n, size, sigma, integrated, v, d);
    dog_profile(n, size, sigma / gamma, integrated, sv, sd);
    double* jv = along_y ? jy : jx;
    double* jd = along_y ? djy : djx;
    for (int m = 0; m < 3; ++m) {
      jv[m * size + n] = v[m];
      jd[m * size + n] = d[m];
    }
    (along_y ? sy : sx)[n] = sv[0];
    (along_y ? dsy : dsx)[n] = sd[0];
  }
  __syncthreads();

  double sums[kVjpSums];
#pragma unroll
  for (int k = 0; k < kVjpSums; ++k) sums[k] = 0.0;
  const float* g = grad_filters + c * kh * kw;
  for (int t = tid; t < kh * kw; t += kVjpThreads) {
    const int y = t / kw, x = t - (t / kw) * kw;
    const double gv = g[t];
    sums[14] += gv;
    sums[12] += gv * sy[y] * sx[x];
    sums[13] += gv * (dsy[y] * sx[x] + sy[y] * dsx[x]);
#pragma unroll
    for (int b = 0; b < 6; ++b) {
      const int i = kDogOrderY[b], j = kDogOrderX[b];
      sums[b] += gv * jy[i * kh + y] * jx[j * kw + x];
      sums[6 + b] += gv * (djy[i * kh + y] * jx[j * kw + x] + jy[i * kh + y] * djx[j * kw + x]);
    }
  }
  const int warp = tid / 32, lane = tid % 32;
#pragma unroll
  for (int k = 0; k < kVjpSums; ++k) {
    const double v = warp_sum_double(sums[k]);
    if (lane == 0) s_partial[warp][k] = v;
  }
  __syncthreads();
  if (tid != 0) return;
#pragma unroll
  for (int k = 0; k < kVjpSums; ++k) {
    double v = 0.0;
    for (int w = 0; w < kVjpThreads / 32; ++w) v += s_partial[w][k];
    sums[k] = v;
  }
  double* out = grad_params + c * kDogNumParams;
  double grad_sigma = a[6] * sums[13] / gamma;
  for (int b = 0; b < 6; ++b) {
    out[b] = sums[b];
    grad_sigma += a[b] * sums[6 + b];
  }
  out[6] = sums[12];
  out[7] = sums[14];
  out[kDogRho] = grad_sigma * dog_sigmoid(a[kDogRho]);
  const double sig_tau = dog_sigmoid(a[kDogTau]);
  const double grad_gamma = -a[6] * sums[13] * sigma / (gamma * gamma);
  out[kDogTau] = grad_gamma * (kDogGammaMax - kDogGammaMin) * sig_tau * (1.0 - sig_tau);
}

void check_params(const char* op, const at::Tensor& x, const at::Tensor& params, at::IntArrayRef kernel_size) {
  check_same_device(op, x, params, "params");
  TORCH_CHECK(params.dim() == 2 && params.size(0) == x.size(1) && params.size(1) == kDogNumParams, op,
              ": params must be [C, 10] with C = x.size(1) = ", x.size(1), ", got ", params.sizes());
  TORCH_CHECK(params.is_floating_point(), op, ": params must be floating point");
  TORCH_CHECK(kernel_size.size() == 2, op, ": kernel_size must have 2 entries");
}

at::Tensor dog_forward(const at::Tensor& x, const at::Tensor& params, at::IntArrayRef kernel_size,
                       const c10::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, c10::string_view profile, bool channels_last) {
  TORCH_CHECK(kernel_size.size() == 2, kForward, ": kernel_size must have 2 entries");
  const ConvGeometry g = check_and_geometry(kForward, x, kernel_size[0], kernel_size[1], stride, padding, dilation);
  check_params(kForward, x, params, kernel_size);
  if (bias.has_value() && bias->defined()) {
    check_same_device(kForward, x, *bias, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.channels, kForward, ": bias must be [C]");
  }
  const c10::cuda::CUDAGuard guard(x.device());
  return run_forward(x, dog_taps(params, g.kernel_h, g.kernel_w, std::string(profile)), bias, g, channels_last);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dog_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& params, at::IntArrayRef kernel_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, c10::string_view profile,
    bool need_input, bool need_params, bool need_bias, bool channels_last, bool deterministic) {
  TORCH_CHECK(kernel_size.size() == 2, kBackward, ": kernel_size must have 2 entries");
  const ConvGeometry g = check_and_geometry(kBackward, x, kernel_size[0], kernel_size[1], stride, padding, dilation);
  check_params(kBackward, x, params, kernel_size);
  check_grad_out(kBackward, grad_out, x, g);
  const c10::cuda::CUDAGuard guard(x.device());
  const HostTaps taps = dog_taps(params, g.kernel_h, g.kernel_w, std::string(profile));
  auto grads = run_backward(grad_out, x, taps, g, need_input, need_params, need_bias, channels_last, deterministic,
                            {g.channels, g.kernel_h * g.kernel_w});
  if (!need_params) return grads;
  const at::Tensor grad_filters = std::get<1>(grads);  // [C, taps] fp32, contiguous
  at::Tensor grad_params = at::empty({g.channels, kDogNumParams}, params.options().dtype(at::kDouble));
  if (g.channels > 0) {
    const int kh = static_cast<int>(g.kernel_h), kw = static_cast<int>(g.kernel_w);
    const size_t smem = static_cast<size_t>(8) * (kh + kw) * sizeof(double);
    TORCH_CHECK(smem <= 48 * 1024, kBackward, ": kernel too large");
    dog_params_vjp_kernel<<<static_cast<unsigned>(g.channels), kVjpThreads, smem,
                            c10::cuda::getCurrentCUDAStream()>>>(
        taps.src.params, grad_filters.const_data_ptr<float>(), grad_params.mutable_data_ptr<double>(), kh, kw,
        taps.src.integrated != 0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  std::get<1>(grads) = grad_params.to(params.scalar_type());
  return grads;
}

}  // namespace
}  // namespace cuda
}  // namespace dsconv_ext

TORCH_LIBRARY_FRAGMENT(dsconv_ext, m) {
  m.def("_cuda_dog_forward(Tensor x, Tensor params, int[2] kernel_size, Tensor? bias, int[2] stride, int[4] padding, "
        "int[2] dilation, str profile, bool channels_last) -> Tensor");
  m.def("_cuda_dog_backward(Tensor grad_out, Tensor x, Tensor params, int[2] kernel_size, int[2] stride, "
        "int[4] padding, int[2] dilation, str profile, bool need_input, bool need_params, bool need_bias, "
        "bool channels_last, bool deterministic) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(dsconv_ext, CUDA, m) {
  m.impl("_cuda_dog_forward", &dsconv_ext::cuda::dog_forward);
  m.impl("_cuda_dog_backward", &dsconv_ext::cuda::dog_backward);
}

// CPU tensors reach the same entry points, so they fail with the argument check's message
// ("x must be a CUDA tensor ...") rather than the dispatcher's "could not run ... CPU".
TORCH_LIBRARY_IMPL(dsconv_ext, CPU, m) {
  m.impl("_cuda_dog_forward", &dsconv_ext::cuda::dog_forward);
  m.impl("_cuda_dog_backward", &dsconv_ext::cuda::dog_backward);
}
