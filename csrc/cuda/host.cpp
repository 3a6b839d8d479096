// Host-side checks, tap sources and the backward driver shared by the three op families.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>

#include <limits>

#include "launch.h"

namespace dsconv_ext {
namespace cuda {

namespace {

// Rows, columns, taps and strides/dilations are int on the device (see common.cuh).
void check_int_range(const char* op, const ConvGeometry& g) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max() / 4;
  for (int64_t v : {g.in_h, g.in_w, g.out_h, g.out_w, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.dilation_h,
                    g.dilation_w, g.pad_top, g.pad_bottom, g.pad_left, g.pad_right}) {
    TORCH_CHECK(v <= kMax, op, ": spatial sizes, kernel, stride, padding and dilation must be below ", kMax);
  }
  TORCH_CHECK(g.dilation_h * (g.kernel_h - 1) < kMax && g.dilation_w * (g.kernel_w - 1) < kMax, op,
              ": dilated kernel too large");
  TORCH_CHECK(g.kernel_h * g.kernel_w < kMax, op, ": kernel too large");
}

void check_dtype(const char* op, const at::Tensor& x) {
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16, op,
              ": the CUDA kernels take float32, float16 or bfloat16 input, got ", t,
              " (float64 runs on the 'reference' backend)");
}

}  // namespace

int multiprocessor_count() {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  return count;
}

void check_same_device(const char* op, const at::Tensor& x, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " must be on ", x.device(), " like x, got ", t.device());
}

ConvGeometry check_and_geometry(const char* op, const at::Tensor& x, int64_t kh, int64_t kw, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor, got one on ", x.device(),
              " (use the 'cpu' or 'reference' backend for CPU tensors)");
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D [N, C, H, W], got ", x.dim(), "-D");
  check_dtype(op, x);
  TORCH_CHECK(kh > 0 && kw > 0, op, ": kernel size must be positive");
  for (int64_t p : padding) TORCH_CHECK(p >= 0, op, ": padding must be non-negative");
  const ConvGeometry g = make_geometry(x.sizes(), {kh, kw}, stride, padding, dilation);
  check_int_range(op, g);
  return g;
}

void check_grad_out(const char* op, const at::Tensor& grad_out, const at::Tensor& x, const ConvGeometry& g) {
  check_same_device(op, x, grad_out, "grad_out");
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type(), op, ": grad_out dtype ", grad_out.scalar_type(),
              " differs from x dtype ", x.scalar_type());
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == g.batch && grad_out.size(1) == g.channels &&
                  grad_out.size(2) == g.out_h && grad_out.size(3) == g.out_w,
              op, ": grad_out must be [", g.batch, ", ", g.channels, ", ", g.out_h, ", ", g.out_w, "], got ",
              grad_out.sizes());
}

HostTaps explicit_taps(const at::Tensor& weight) {
  HostTaps h;
  const at::Tensor w = weight.reshape({weight.size(0), weight.size(2) * weight.size(3)}).to(at::kFloat).contiguous();
  h.keep_alive.push_back(w);
  h.src.family = kFamilyExplicit;
  h.src.kh = static_cast<int>(weight.size(2));
  h.src.kw = static_cast<int>(weight.size(3));
  h.src.weight = w.const_data_ptr<float>();
  return h;
}

HostTaps dog_taps(const at::Tensor& params, int64_t kh, int64_t kw, const std::string& profile) {
  TORCH_CHECK(profile == "integrated" || profile == "sampled",
              "dsconv_ext cuda: profile must be 'integrated' or 'sampled', got ", profile);
  HostTaps h;
  // fp64 like the CPU synthesis: [C, 10] is tiny, and fp64 keeps the erf differences exact.
  const at::Tensor p = params.to(at::kDouble).contiguous();
  h.keep_alive.push_back(p);
  h.src.family = kFamilyDog;
  h.src.kh = static_cast<int>(kh);
  h.src.kw = static_cast<int>(kw);
  h.src.integrated = profile == "integrated" ? 1 : 0;
  h.src.params = p.const_data_ptr<double>();
  return h;
}

HostTaps bank_taps(const at::Tensor& bank, const at::Tensor& coeffs, const c10::optional<at::Tensor>& offset) {
  HostTaps h;
  const int64_t m = bank.size(0), taps = bank.size(1) * bank.size(2);
  const at::Tensor b = bank.reshape({m, taps}).to(at::kFloat).contiguous();
  const at::Tensor c = coeffs.to(at::kFloat).contiguous();
  h.keep_alive.push_back(b);
  h.keep_alive.push_back(c);
  h.src.family = kFamilyBank;
  h.src.kh = static_cast<int>(bank.size(1));
  h.src.kw = static_cast<int>(bank.size(2));
  h.src.num_bank = static_cast<int>(m);
  h.src.bank = b.const_data_ptr<float>();
  h.src.coeffs = c.const_data_ptr<float>();
  if (offset.has_value() && offset->defined()) {
    const at::Tensor o = offset->to(at::kFloat).contiguous();
    h.keep_alive.push_back(o);
    h.src.offset = o.const_data_ptr<float>();
  }
  return h;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> run_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                                            const HostTaps& taps, const ConvGeometry& g,
                                                            bool need_input, bool need_filter, bool need_bias,
                                                            bool channels_last, bool deterministic,
                                                            at::IntArrayRef filter_shape) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto acc_options = x.options().dtype(at::kFloat);
  at::Tensor grad_x = need_input ? run_grad_input(grad_out, x, taps, g, channels_last) : at::empty({0}, x.options());
  at::Tensor grad_filter = at::empty({0}, acc_options);
  at::Tensor grad_bias = at::empty({0}, acc_options);
  if (need_filter) {
    const at::Tensor both = run_grad_filter(grad_out, x, g, channels_last, deterministic);
    const int64_t taps_count = g.kernel_h * g.kernel_w;
    // Separate tensors: outputs of a custom op may not alias each other.
    grad_filter = both.narrow(1, 0, taps_count).contiguous().view(filter_shape);
    if (need_bias) grad_bias = both.select(1, taps_count).contiguous();
  } else if (need_bias) {
    // ATen's sum reduction is deterministic (fixed tree, no atomics).
    grad_bias = grad_out.numel() > 0 ? grad_out.sum({0, 2, 3}, false, at::kFloat) : at::zeros({g.channels}, acc_options);
  }
  return {grad_x, grad_filter, grad_bias};
}

}  // namespace cuda
}  // namespace dsconv_ext
