// Shared pieces of the cpu backend's ops with C++ autograd (cpu_autograd.cpp for explicit
// filters, cpu_family_autograd.cpp for DoG and bank filters): the layout rule and the depthwise
// forward and backward called through the dispatcher, so torch.compile traces them with their
// fake kernels.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <tuple>
#include <vector>

namespace dsconv_ext {
namespace cpu {

// Same rule as dsconv_ext.conv_args.is_channels_last: decided by strides, so slices of a
// channels_last tensor count too; the output and gradients keep that layout.
bool is_channels_last(const at::Tensor& x);

// dsconv_ext::_cpu_depthwise_conv2d below autograd: y [N, C, H', W'] from x [N, C, H, W],
// weight [C, 1, kh, kw] in x's dtype and bias [C] or none.
at::Tensor depthwise_below_autograd(const at::Tensor& x, const at::Tensor& weight,
                                    const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation);

// dsconv_ext::_cpu_depthwise_backward: (grad_x in x's dtype and layout, grad_weight [C, 1, kh, kw]
// and grad_bias [C] in fp32, or fp64 for fp64 input); empty where not asked for.
std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_backward_op(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool need_input, bool need_weight, bool need_bias);

// The geometry on ctx->saved_data ("stride", "padding", "dilation"), and the depthwise backward
// op called with it.
void save_geometry(torch::autograd::AutogradContext* ctx, at::IntArrayRef stride, at::IntArrayRef padding,
                   at::IntArrayRef dilation);
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_with_saved_geometry(
    torch::autograd::AutogradContext* ctx, const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    bool need_input, bool need_weight, bool need_bias);

// Saved state of an optional tensor input: "has_<name>" and, when given, "<name>_dtype" (the dtype
// its gradient is returned in).
void save_optional(torch::autograd::AutogradContext* ctx, const char* name, const c10::optional<at::Tensor>& t);

// The backward formulas are differentiable once, like torch.autograd.function.once_differentiable:
// they run with grad mode off, and where a graph was asked for (create_graph=True, and the
// backward's inputs require grad) their results come back behind a node that raises when a
// second backward reaches it, instead of a graph through backward kernels that have no
// derivative of their own (which PyTorch would differentiate as zero, silently).
bool double_backward_requested(const std::vector<at::Tensor>& inputs);
std::vector<at::Tensor> differentiable_once(std::vector<at::Tensor> grads, const std::vector<at::Tensor>& inputs,
                                            bool double_backward_requested);

}  // namespace cpu
}  // namespace dsconv_ext
