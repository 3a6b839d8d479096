// dsconv_ext::_cpu_depthwise_conv2d: the cpu backend's depthwise convolution as one registered op
// with its autograd formula in C++.
//
// The Python custom op (dsconv_ext/ops/depthwise_op.py) serves every backend, but its Python
// autograd wrapper, context and backward dispatch cost about 130 us per forward+backward call on
// this project's CPU machine, against 20 us for the kernels' own entry points on a small layer
// (the 7x7 and 14x14 MobileNet layers take 0.3-1.5 ms in all). The functional ops call this op
// for the cpu backend instead; its fake kernels are registered in dsconv_ext/ops/cpu_native_op.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <string>

#include "cpu/depthwise_cpu.h"
#include "cpu_autograd.h"

namespace dsconv_ext {
namespace cpu {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor conv2d_kernel(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  return depthwise_forward(x, weight, bias, stride, padding, dilation, is_channels_last(x));
}

}  // namespace

bool is_channels_last(const at::Tensor& x) {
  if (x.dim() != 4 || x.is_contiguous()) return false;
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) return true;
  return x.stride(1) < x.stride(3) && x.stride(1) < x.stride(2);
}

at::Tensor depthwise_below_autograd(const at::Tensor& x, const at::Tensor& weight,
                                    const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("dsconv_ext::_cpu_depthwise_conv2d", "")
                             .typed<decltype(conv2d_kernel)>();
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(x, weight, bias, stride, padding, dilation);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_backward_op(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool need_input, bool need_weight, bool need_bias) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("dsconv_ext::_cpu_depthwise_backward", "")
                             .typed<decltype(depthwise_backward)>();
  return op.call(grad_out.to(x.scalar_type()), x, weight, stride, padding, dilation, need_input, need_weight,
                 need_bias, is_channels_last(x));
}

void save_geometry(AutogradContext* ctx, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  ctx->saved_data["stride"] = stride.vec();
  ctx->saved_data["padding"] = padding.vec();
  ctx->saved_data["dilation"] = dilation.vec();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_with_saved_geometry(
    AutogradContext* ctx, const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, bool need_input,
    bool need_weight, bool need_bias) {
  return depthwise_backward_op(grad_out, x, weight, ctx->saved_data["stride"].toIntVector(),
                               ctx->saved_data["padding"].toIntVector(), ctx->saved_data["dilation"].toIntVector(),
                               need_input, need_weight, need_bias);
}

void save_optional(AutogradContext* ctx, const char* name, const c10::optional<at::Tensor>& t) {
  const bool given = t.has_value() && t->defined();
  ctx->saved_data[std::string("has_") + name] = given;
  if (given) ctx->saved_data[std::string(name) + "_dtype"] = t->scalar_type();
}

bool double_backward_requested(const std::vector<at::Tensor>& inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

std::vector<at::Tensor> differentiable_once(std::vector<at::Tensor> grads, const std::vector<at::Tensor>& inputs,
                                            bool double_backward_requested) {
  if (!double_backward_requested) return grads;
  // An error node with the backward's inputs' edges: a second backward that reaches any of them
  // through these gradients raises instead of skipping the missing terms.
  auto error = c10::make_intrusive<torch::autograd::Error>(
      "dsconv_ext: the cpu backend's ops are differentiable once; a second backward through their "
      "gradients (create_graph=True, e.g. a gradient penalty) is not supported",
      torch::autograd::collect_next_edges(at::ArrayRef<at::Tensor>(inputs)));
  for (at::Tensor& g : grads)
    if (g.defined()) {
      g = g.detach();
      torch::autograd::set_history(g, error);
    }
  return grads;
}

namespace {

class DepthwiseConv2dFunction : public torch::autograd::Function<DepthwiseConv2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation) {
    ctx->save_for_backward({x, weight});
    save_geometry(ctx, stride, padding, dilation);
    save_optional(ctx, "bias", bias);
    return depthwise_below_autograd(x, weight, bias, stride, padding, dilation);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& weight = saved[1];
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // Edges exist for tensor inputs only: x, weight and (when given) bias.
    const bool need_input = ctx->needs_input_grad(0);
    const bool need_weight = ctx->needs_input_grad(1);
    const bool need_bias = has_bias && ctx->needs_input_grad(2);
    const at::Tensor& grad_out = grad_outputs[0];
    if (!grad_out.defined()) return variable_list(6);
    const std::vector<at::Tensor> inputs = {grad_out, x, weight};
    const bool twice = double_backward_requested(inputs);
    at::NoGradGuard no_grad;
    auto [grad_x, grad_w, grad_b] =
        backward_with_saved_geometry(ctx, grad_out, x, weight, need_input, need_weight, need_bias);
    return differentiable_once({need_input ? grad_x : at::Tensor(),
                                need_weight ? grad_w.to(weight.scalar_type()) : at::Tensor(),
                                need_bias ? grad_b.to(ctx->saved_data["bias_dtype"].toScalarType()) : at::Tensor(),
                                at::Tensor(), at::Tensor(), at::Tensor()},
                               inputs, twice);
  }
};

at::Tensor conv2d_autograd(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  return DepthwiseConv2dFunction::apply(x, weight, bias, stride, padding, dilation);
}

}  // namespace
}  // namespace cpu
}  // namespace dsconv_ext

TORCH_LIBRARY_FRAGMENT(dsconv_ext, m) {
  m.def("_cpu_depthwise_conv2d(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
        "int[2] dilation) -> Tensor");
}

TORCH_LIBRARY_IMPL(dsconv_ext, CPU, m) {
  m.impl("_cpu_depthwise_conv2d", &dsconv_ext::cpu::conv2d_kernel);
}

TORCH_LIBRARY_IMPL(dsconv_ext, Autograd, m) {
  m.impl("_cpu_depthwise_conv2d", &dsconv_ext::cpu::conv2d_autograd);
}
