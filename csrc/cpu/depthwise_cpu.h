// Depthwise 2-D convolution on CPU: forward, and one backward pass for grad-input,
// grad-weight and grad-bias.
//
// Tensors follow F.conv2d(groups=C): x [N, C, H, W] with any strides (NCHW, channels_last,
// non-contiguous views), weight [C, 1, kh, kw], bias [C]. padding is (top, bottom, left, right).
// Accumulation is in at::opmath_type (fp32 for fp32/bf16/fp16, fp64 for fp64).
//
// channels_last inputs (unit channel stride) are vectorised over channels
// (depthwise_channels_last.cpp). Everything else runs, per op, on one of three NCHW kernels
// (chosen in depthwise_cpu.cpp): in-place fp32 planes vectorised along the width
// (depthwise_direct.cpp), blocks of 16 planes transposed through the channels_last tiles
// (depthwise_plane_blocks.cpp), or padded phase-split plane copies (depthwise_planes.cpp).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "../conv_geometry.h"

namespace dsconv_ext {
namespace cpu {

// Returns y [N, C, out_h, out_w], channels_last when `channels_last` is set, else contiguous.
at::Tensor depthwise_forward(const at::Tensor& x, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, bool channels_last);

// Returns (grad_x [N, C, H, W] in x's dtype and layout, grad_weight [C, 1, kh, kw] and
// grad_bias [C] in the accumulation dtype); each is an empty tensor when not asked for.
// grad_weight / grad_bias are reduced in a fixed order that depends only on the shape: bitwise
// repeatable, whatever the thread count.
std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool need_input, bool need_weight, bool need_bias,
    bool channels_last);

// Fused multiply-adds per second on fp32 vectors over all intra-op threads (a peak to compare
// kernels against); `iterations` sets the run length.
double fma_throughput(int64_t iterations);

// Layout-specific kernels. w_acc is the filter [C, kh*kw] in the accumulation dtype; w_t the
// filter transposed to [kh*kw, C_padded] with zero padding up to a whole number of vectors;
// bias_acc is [C] (planes) or [C_padded] (channels_last), or undefined. Outputs not wanted are
// passed undefined.
void forward_planes_dispatch(const at::Tensor& x, const at::Tensor& w_acc, const at::Tensor& bias_acc,
                             at::Tensor& y, const ConvGeometry& g);
void backward_planes_dispatch(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w_acc,
                              at::Tensor& grad_x, at::Tensor& grad_w, at::Tensor& grad_b, const ConvGeometry& g);
void forward_channels_last_dispatch(const at::Tensor& x, const at::Tensor& w_t, const at::Tensor& bias_acc,
                                    at::Tensor& y, const ConvGeometry& g);
// NCHW fp32 kernels that read planes in place (depthwise_direct.cpp), for the layers the
// *_applies checks accept; backward_direct computes the outputs passed defined.
bool direct_forward_applies(const at::Tensor& x, const at::Tensor& y, const ConvGeometry& g);
bool direct_grad_input_applies(const at::Tensor& grad_out, const at::Tensor& grad_x, const ConvGeometry& g);
bool direct_weight_grad_applies(const at::Tensor& grad_out, const at::Tensor& x, const ConvGeometry& g);
void forward_direct(const at::Tensor& x, const at::Tensor& w_acc, const at::Tensor& bias_acc, at::Tensor& y,
                    const ConvGeometry& g);
void backward_direct(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w_acc, at::Tensor& grad_x,
                     at::Tensor& grad_w, at::Tensor& grad_b, const ConvGeometry& g);
// NCHW layers with narrow planes, run a block of 16 planes at a time through the channels_last
// tiles (depthwise_plane_blocks.cpp); w_t and bias_acc as for the channels_last kernels.
void forward_plane_blocks(const at::Tensor& x, const at::Tensor& w_t, const at::Tensor& bias_acc, at::Tensor& y,
                          const ConvGeometry& g);
void backward_plane_blocks(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w_t, at::Tensor& grad_x,
                           at::Tensor& grad_w, at::Tensor& grad_b, const ConvGeometry& g);
void backward_channels_last_dispatch(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w_t,
                                     at::Tensor& grad_x, at::Tensor& grad_w, at::Tensor& grad_b,
                                     const ConvGeometry& g);

}  // namespace cpu
}  // namespace dsconv_ext
