// dsconv_ext::_cuda_bank_forward / _cuda_bank_backward: filters w_c = sum_m coeffs[c, m] bank[m]
// (+ offset[c]) built per block in shared memory (fill_taps), never stored. The backward
// returns the filter gradient [C, kh, kw] in fp32; its chain rule into bank / coeffs / offset
// is three small matmuls (dsconv_ext.families.bank.bank_filters_vjp), done in Python.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "launch.h"

namespace dsconv_ext {
namespace cuda {
namespace {

constexpr const char* kForward = "dsconv_ext::_cuda_bank_forward";
constexpr const char* kBackward = "dsconv_ext::_cuda_bank_backward";

void check_bank(const char* op, const at::Tensor& x, const at::Tensor& bank, const at::Tensor& coeffs,
                const c10::optional<at::Tensor>& offset) {
  check_same_device(op, x, bank, "bank");
  check_same_device(op, x, coeffs, "coeffs");
  TORCH_CHECK(bank.dim() == 3 && bank.size(0) > 0, op, ": bank must be [M, kh, kw] with M > 0, got ", bank.sizes());
  TORCH_CHECK(coeffs.dim() == 2 && coeffs.size(0) == x.size(1) && coeffs.size(1) == bank.size(0), op,
              ": coeffs must be [C, M] = [", x.size(1), ", ", bank.size(0), "], got ", coeffs.sizes());
  TORCH_CHECK(bank.is_floating_point() && coeffs.is_floating_point(), op, ": bank and coeffs must be floating point");
  if (offset.has_value() && offset->defined()) {
    check_same_device(op, x, *offset, "offset");
    TORCH_CHECK(offset->dim() == 1 && offset->size(0) == x.size(1), op, ": offset must be [C]");
  }
}

at::Tensor bank_forward(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& coeffs,
                        const c10::optional<at::Tensor>& offset, const c10::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool channels_last) {
  const ConvGeometry g = check_and_geometry(kForward, x, bank.dim() == 3 ? bank.size(1) : 0,
                                            bank.dim() == 3 ? bank.size(2) : 0, stride, padding, dilation);
  check_bank(kForward, x, bank, coeffs, offset);
  if (bias.has_value() && bias->defined()) {
    check_same_device(kForward, x, *bias, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.channels, kForward, ": bias must be [C]");
  }
  return run_forward(x, bank_taps(bank, coeffs, offset), bias, g, channels_last);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bank_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& bank, const at::Tensor& coeffs,
    const c10::optional<at::Tensor>& offset, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, bool need_input, bool need_filters, bool need_bias, bool channels_last,
    bool deterministic) {
  const ConvGeometry g = check_and_geometry(kBackward, x, bank.dim() == 3 ? bank.size(1) : 0,
                                            bank.dim() == 3 ? bank.size(2) : 0, stride, padding, dilation);
  check_bank(kBackward, x, bank, coeffs, offset);
  check_grad_out(kBackward, grad_out, x, g);
  return run_backward(grad_out, x, bank_taps(bank, coeffs, offset), g, need_input, need_filters, need_bias,
                      channels_last, deterministic, {g.channels, g.kernel_h, g.kernel_w});
}

}  // namespace
}  // namespace cuda
}  // namespace dsconv_ext

TORCH_LIBRARY_FRAGMENT(dsconv_ext, m) {
  m.def("_cuda_bank_forward(Tensor x, Tensor bank, Tensor coeffs, Tensor? offset, Tensor? bias, int[2] stride, "
        "int[4] padding, int[2] dilation, bool channels_last) -> Tensor");
  m.def("_cuda_bank_backward(Tensor grad_out, Tensor x, Tensor bank, Tensor coeffs, Tensor? offset, int[2] stride, "
        "int[4] padding, int[2] dilation, bool need_input, bool need_filters, bool need_bias, bool channels_last, "
        "bool deterministic) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(dsconv_ext, CUDA, m) {
  m.impl("_cuda_bank_forward", &dsconv_ext::cuda::bank_forward);
  m.impl("_cuda_bank_backward", &dsconv_ext::cuda::bank_backward);
}

// CPU tensors reach the same entry points, so they fail with the argument check's message
// ("x must be a CUDA tensor ...") rather than the dispatcher's "could not run ... CPU".
TORCH_LIBRARY_IMPL(dsconv_ext, CPU, m) {
  m.impl("_cuda_bank_forward", &dsconv_ext::cuda::bank_forward);
  m.impl("_cuda_bank_backward", &dsconv_ext::cuda::bank_backward);
}
