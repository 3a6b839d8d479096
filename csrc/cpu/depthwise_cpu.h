// Depthwise 2-D convolution on CPU: forward, grad-input and grad-weight.
//
// Tensors follow F.conv2d(groups=C): x [N, C, H, W] with any strides (NCHW, channels_last,
// non-contiguous views), weight [C, 1, kh, kw], bias [C]. padding is (top, bottom, left, right).
// Accumulation is in at::opmath_type (fp32 for fp32/bf16/fp16, fp64 for fp64).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace dsconv_ext {
namespace cpu {

// Returns y [N, C, out_h, out_w], channels_last when `channels_last` is set, else contiguous.
at::Tensor depthwise_forward(const at::Tensor& x, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, bool channels_last);

// Returns grad_x [N, C, H, W] (input_size) in x's layout.
at::Tensor depthwise_backward_input(const at::Tensor& grad_out, const at::Tensor& weight,
                                    at::IntArrayRef input_size, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation,
                                    bool channels_last);

// Returns (grad_weight [C, 1, kh, kw], grad_bias [C]) in the accumulation dtype (fp32, or fp64
// for fp64 input), so that family ops can chain-rule into their parameters without a round
// trip through bf16. Each (channel, tap) is reduced by one thread in a fixed order over
// (n, oh, ow): the result is bitwise repeatable and independent of the thread count.
// grad_bias is empty when compute_bias is false.
std::tuple<at::Tensor, at::Tensor> depthwise_backward_weight(
    const at::Tensor& grad_out, const at::Tensor& x, at::IntArrayRef kernel_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool compute_bias);

}  // namespace cpu
}  // namespace dsconv_ext
