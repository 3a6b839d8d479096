// dsconv_ext::_cpu_dog_conv2d and dsconv_ext::_cpu_bank_conv2d: the cpu backend's DoG-jet and
// filter-bank convolutions as registered ops with their autograd formulas in C++, for the same
// reason as cpu_autograd.cpp (the Python custom ops' autograd costs ~130 us a call). Each call
// builds its [C, kh, kw] filter once (DoG: _cpu_dog_filters, vectorised over channels; bank:
// _cpu_bank_filters, one pass without BLAS), keeps it in the accumulation dtype for the backward,
// and runs the depthwise kernels; the backward chain-rules the fp32 filter gradient into the
// parameters. Parameter layouts and dtypes as in dsconv_ext/ops/dog_op.py and bank_op.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "cpu_autograd.h"

namespace dsconv_ext {
namespace cpu {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

c10::optional<at::Tensor> bias_like(const c10::optional<at::Tensor>& bias, const at::Tensor& x) {
  if (!bias.has_value() || !bias->defined()) return c10::nullopt;
  return bias->to(x.scalar_type());
}

// ---- DoG jet -------------------------------------------------------------------------------

// params [C, 10] -> filters [C, kh, kw] in fp32 (fp64 for fp64 params).
at::Tensor dog_filters_op(const at::Tensor& params, at::IntArrayRef kernel_size, const std::string& profile) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("dsconv_ext::_cpu_dog_filters", "")
                             .typed<at::Tensor(const at::Tensor&, at::IntArrayRef, std::string)>();
  return op.call(params, kernel_size, profile);
}

at::Tensor dog_filters_vjp_op(const at::Tensor& params, const at::Tensor& grad_filters, at::IntArrayRef kernel_size,
                              const std::string& profile) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("dsconv_ext::_cpu_dog_filters_backward", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef, std::string)>();
  return op.call(params, grad_filters, kernel_size, profile);
}

at::Tensor dog_kernel(const at::Tensor& x, const at::Tensor& params, at::IntArrayRef kernel_size,
                      const c10::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                      at::IntArrayRef dilation, std::string profile) {
  const at::Tensor weight = dog_filters_op(params, kernel_size, profile).to(x.scalar_type()).unsqueeze(1);
  return depthwise_below_autograd(x, weight, bias_like(bias, x), stride, padding, dilation);
}

class DoGConv2dFunction : public torch::autograd::Function<DoGConv2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& params,
                            at::IntArrayRef kernel_size, const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, std::string profile) {
    const at::Tensor filters = dog_filters_op(params, kernel_size, profile);
    ctx->save_for_backward({x, params, filters});
    save_geometry(ctx, stride, padding, dilation);
    save_optional(ctx, "bias", bias);
    ctx->saved_data["kernel_size"] = kernel_size.vec();
    ctx->saved_data["profile"] = profile;
    return depthwise_below_autograd(x, filters.to(x.scalar_type()).unsqueeze(1), bias_like(bias, x), stride, padding,
                                    dilation);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &params = saved[1], &filters = saved[2];
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // Edges exist for tensor inputs only: x, params and (when given) bias.
    const bool need_input = ctx->needs_input_grad(0), need_params = ctx->needs_input_grad(1);
    const bool need_bias = has_bias && ctx->needs_input_grad(2);
    if (!grad_outputs[0].defined()) return variable_list(8);
    const std::vector<at::Tensor> inputs = {grad_outputs[0], x, params};
    const bool twice = double_backward_requested(inputs);
    at::NoGradGuard no_grad;
    auto [grad_x, grad_w, grad_b] =
        backward_with_saved_geometry(ctx, grad_outputs[0], x, filters.to(x.scalar_type()).unsqueeze(1), need_input,
                                     need_params, need_bias);
    at::Tensor grad_params;
    if (need_params)
      grad_params = dog_filters_vjp_op(params, grad_w.squeeze(1), ctx->saved_data["kernel_size"].toIntVector(),
                                       ctx->saved_data["profile"].toStringRef());
    return differentiable_once({need_input ? grad_x : at::Tensor(), grad_params, at::Tensor(),
                                need_bias ? grad_b.to(ctx->saved_data["bias_dtype"].toScalarType()) : at::Tensor(),
                                at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()},
                               inputs, twice);
  }
};

at::Tensor dog_autograd(const at::Tensor& x, const at::Tensor& params, at::IntArrayRef kernel_size,
                        const c10::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                        at::IntArrayRef dilation, std::string profile) {
  return DoGConv2dFunction::apply(x, params, kernel_size, bias, stride, padding, dilation, std::move(profile));
}

// ---- filter bank ---------------------------------------------------------------------------

// w_c = sum_m coeffs[c, m] bank[m] (+ offset[c]): [C, kh * kw] in the promoted dtype of bank,
// coeffs and fp32 (as families.bank.bank_filters), through the dispatcher so that torch.compile's
// fake tensors reach its fake kernel.
at::Tensor bank_filters(const at::Tensor& bank, const at::Tensor& coeffs, const c10::optional<at::Tensor>& offset) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("dsconv_ext::_cpu_bank_filters", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&)>();
  return op.call(bank, coeffs, offset);
}

// (grad_coeffs [C, M], grad_bank [M, kh, kw]) from grad_filters [C, kh * kw], in its dtype.
std::tuple<at::Tensor, at::Tensor> bank_filters_vjp(const at::Tensor& bank, const at::Tensor& coeffs,
                                                    const at::Tensor& grad_filters) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("dsconv_ext::_cpu_bank_filters_backward", "")
                             .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                       const at::Tensor&)>();
  return op.call(bank, coeffs, grad_filters);
}

at::Tensor bank_weight(const at::Tensor& filters, const at::Tensor& bank, const at::Tensor& x) {
  return filters.to(x.scalar_type()).reshape({filters.size(0), 1, bank.size(1), bank.size(2)});
}

at::Tensor bank_kernel(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& coeffs,
                       const c10::optional<at::Tensor>& offset, const c10::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  return depthwise_below_autograd(x, bank_weight(bank_filters(bank, coeffs, offset), bank, x), bias_like(bias, x),
                                  stride, padding, dilation);
}

class BankConv2dFunction : public torch::autograd::Function<BankConv2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& bank, const at::Tensor& coeffs,
                            const c10::optional<at::Tensor>& offset, const c10::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
    const at::Tensor filters = bank_filters(bank, coeffs, offset);
    // offset only for differentiable_once's edges: the formulas need the filters, not it.
    ctx->save_for_backward({x, bank, coeffs, filters, offset.has_value() ? *offset : at::Tensor()});
    save_geometry(ctx, stride, padding, dilation);
    save_optional(ctx, "offset", offset);
    save_optional(ctx, "bias", bias);
    return depthwise_below_autograd(x, bank_weight(filters, bank, x), bias_like(bias, x), stride, padding, dilation);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &bank = saved[1], &coeffs = saved[2], &filters = saved[3];
    const bool has_offset = ctx->saved_data["has_offset"].toBool(), has_bias = ctx->saved_data["has_bias"].toBool();
    // Edges exist for tensor inputs only: x, bank, coeffs, then offset and bias where given.
    const size_t offset_edge = 3, bias_edge = has_offset ? 4 : 3;
    const bool need_input = ctx->needs_input_grad(0), need_bank = ctx->needs_input_grad(1);
    const bool need_coeffs = ctx->needs_input_grad(2);
    const bool need_offset = has_offset && ctx->needs_input_grad(offset_edge);
    const bool need_bias = has_bias && ctx->needs_input_grad(bias_edge);
    if (!grad_outputs[0].defined()) return variable_list(8);
    const std::vector<at::Tensor> inputs = {grad_outputs[0], x, bank, coeffs, saved[4]};
    const bool twice = double_backward_requested(inputs);
    at::NoGradGuard no_grad;
    const bool need_filter = need_bank || need_coeffs || need_offset;
    auto [grad_x, grad_w, grad_b] = backward_with_saved_geometry(ctx, grad_outputs[0], x, bank_weight(filters, bank, x),
                                                                 need_input, need_filter, need_bias);
    at::Tensor grad_bank, grad_coeffs, grad_offset;
    if (need_filter) {
      // grad_filters [C, taps] in the accumulation dtype, chain-ruled as families.bank.bank_filters_vjp.
      const at::Tensor g = grad_w.reshape({grad_w.size(0), -1});
      if (need_coeffs || need_bank) {
        auto [wide_coeffs, wide_bank] = bank_filters_vjp(bank, coeffs, g);
        if (need_coeffs) grad_coeffs = wide_coeffs.to(coeffs.scalar_type());
        if (need_bank) grad_bank = wide_bank.to(bank.scalar_type());
      }
      if (need_offset) grad_offset = g.sum(1).to(ctx->saved_data["offset_dtype"].toScalarType());
    }
    return differentiable_once({need_input ? grad_x : at::Tensor(), grad_bank, grad_coeffs, grad_offset,
                                need_bias ? grad_b.to(ctx->saved_data["bias_dtype"].toScalarType()) : at::Tensor(),
                                at::Tensor(), at::Tensor(), at::Tensor()},
                               inputs, twice);
  }
};

at::Tensor bank_autograd(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& coeffs,
                         const c10::optional<at::Tensor>& offset, const c10::optional<at::Tensor>& bias,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  return BankConv2dFunction::apply(x, bank, coeffs, offset, bias, stride, padding, dilation);
}

}  // namespace
}  // namespace cpu
}  // namespace dsconv_ext

TORCH_LIBRARY_FRAGMENT(dsconv_ext, m) {
  m.def("_cpu_dog_conv2d(Tensor x, Tensor params, int[2] kernel_size, Tensor? bias, int[2] stride, int[4] padding, "
        "int[2] dilation, str profile) -> Tensor");
  m.def("_cpu_bank_conv2d(Tensor x, Tensor bank, Tensor coeffs, Tensor? offset, Tensor? bias, int[2] stride, "
        "int[4] padding, int[2] dilation) -> Tensor");
}

TORCH_LIBRARY_IMPL(dsconv_ext, CPU, m) {
  m.impl("_cpu_dog_conv2d", &dsconv_ext::cpu::dog_kernel);
  m.impl("_cpu_bank_conv2d", &dsconv_ext::cpu::bank_kernel);
}

TORCH_LIBRARY_IMPL(dsconv_ext, Autograd, m) {
  m.impl("_cpu_dog_conv2d", &dsconv_ext::cpu::dog_autograd);
  m.impl("_cpu_bank_conv2d", &dsconv_ext::cpu::bank_autograd);
}
