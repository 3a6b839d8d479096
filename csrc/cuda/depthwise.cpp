// dsconv_ext::_cuda_depthwise_forward / _cuda_depthwise_backward: explicit [C, 1, kh, kw]
// filters. Same arguments as the _cpu_* ops (csrc/register_cpu.cpp), plus `deterministic`.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "launch.h"

namespace dsconv_ext {
namespace cuda {
namespace {

constexpr const char* kForward = "dsconv_ext::_cuda_depthwise_forward";
constexpr const char* kBackward = "dsconv_ext::_cuda_depthwise_backward";

void check_weight(const char* op, const at::Tensor& x, const at::Tensor& weight) {
  check_same_device(op, x, weight, "weight");
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == x.size(1) && weight.size(1) == 1, op,
              ": weight must be [C, 1, kh, kw] with C = x.size(1) = ", x.size(1), ", got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), op, ": weight dtype ", weight.scalar_type(),
              " differs from x dtype ", x.scalar_type());
}

at::Tensor depthwise_forward(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             bool channels_last) {
  const ConvGeometry g = check_and_geometry(kForward, x, weight.dim() == 4 ? weight.size(2) : 0,
                                            weight.dim() == 4 ? weight.size(3) : 0, stride, padding, dilation);
  check_weight(kForward, x, weight);
  if (bias.has_value() && bias->defined()) {
    check_same_device(kForward, x, *bias, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.channels, kForward, ": bias must be [C]");
  }
  return run_forward(x, explicit_taps(weight), bias, g, channels_last);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool need_input, bool need_weight, bool need_bias,
    bool channels_last, bool deterministic) {
  const ConvGeometry g = check_and_geometry(kBackward, x, weight.dim() == 4 ? weight.size(2) : 0,
                                            weight.dim() == 4 ? weight.size(3) : 0, stride, padding, dilation);
  check_weight(kBackward, x, weight);
  check_grad_out(kBackward, grad_out, x, g);
  return run_backward(grad_out, x, explicit_taps(weight), g, need_input, need_weight, need_bias, channels_last,
                      deterministic, {g.channels, 1, g.kernel_h, g.kernel_w});
}

}  // namespace
}  // namespace cuda
}  // namespace dsconv_ext

TORCH_LIBRARY_FRAGMENT(dsconv_ext, m) {
  m.def("_cuda_depthwise_forward(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
        "int[2] dilation, bool channels_last) -> Tensor");
  m.def("_cuda_depthwise_backward(Tensor grad_out, Tensor x, Tensor weight, int[2] stride, int[4] padding, "
        "int[2] dilation, bool need_input, bool need_weight, bool need_bias, bool channels_last, "
        "bool deterministic) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(dsconv_ext, CUDA, m) {
  m.impl("_cuda_depthwise_forward", &dsconv_ext::cuda::depthwise_forward);
  m.impl("_cuda_depthwise_backward", &dsconv_ext::cuda::depthwise_backward);
}

// CPU tensors reach the same entry points, so they fail with the argument check's message
// ("x must be a CUDA tensor ...") rather than the dispatcher's "could not run ... CPU".
TORCH_LIBRARY_IMPL(dsconv_ext, CPU, m) {
  m.impl("_cuda_depthwise_forward", &dsconv_ext::cuda::depthwise_forward);
  m.impl("_cuda_depthwise_backward", &dsconv_ext::cuda::depthwise_backward);
}
