// Host side of the CUDA backend: argument checks shared by the three op families and the two
// launchers every op is built from (a correlation for forward / grad-input, and the reduction
// for the filter and bias gradients).
#pragma once

#include <ATen/ATen.h>

#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "../conv_geometry.h"
#include "params.h"

namespace dsconv_ext {
namespace cuda {

// A TapSource plus the (converted, contiguous) tensors its pointers point into, which must
// live until the kernels that read them are enqueued (the caching allocator keeps their memory
// stream-ordered after that).
struct HostTaps {
  TapSource src{};
  std::vector<at::Tensor> keep_alive;
};

HostTaps explicit_taps(const at::Tensor& weight);  // [C, 1, kh, kw]
HostTaps dog_taps(const at::Tensor& params, int64_t kh, int64_t kw, const std::string& profile);
HostTaps bank_taps(const at::Tensor& bank, const at::Tensor& coeffs, const c10::optional<at::Tensor>& offset);

// SMs of the current device: sizes grids (and so the deterministic reduction order, which
// therefore depends on the shape and the device model only).
int multiprocessor_count();

// Checks x (and grad_out) for the CUDA kernels and returns the geometry.
ConvGeometry check_and_geometry(const char* op, const at::Tensor& x, int64_t kh, int64_t kw, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation);
void check_grad_out(const char* op, const at::Tensor& grad_out, const at::Tensor& x, const ConvGeometry& g);
void check_same_device(const char* op, const at::Tensor& x, const at::Tensor& t, const char* name);

// y = correlate(x, taps) + bias, laid out channels_last or contiguous NCHW.
at::Tensor run_forward(const at::Tensor& x, const HostTaps& taps, const c10::optional<at::Tensor>& bias,
                       const ConvGeometry& g, bool channels_last);

// grad_x from grad_out, laid out like the forward output.
at::Tensor run_grad_input(const at::Tensor& grad_out, const at::Tensor& x, const HostTaps& taps, const ConvGeometry& g,
                          bool channels_last);

// [C, kh*kw + 1] fp32: the filter gradient, and the bias gradient in the last column. Without
// `deterministic` the blocks' partial sums meet through atomics; with it, in a workspace
// reduced in a fixed order.
at::Tensor run_grad_filter(const at::Tensor& grad_out, const at::Tensor& x, const ConvGeometry& g, bool channels_last,
                           bool deterministic);

// The three-output convention of every backward op: grad_x, grad_filter (shape `filter_shape`,
// fp32), grad_bias (fp32), each an empty tensor when not asked for.
std::tuple<at::Tensor, at::Tensor, at::Tensor> run_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                                            const HostTaps& taps, const ConvGeometry& g,
                                                            bool need_input, bool need_filter, bool need_bias,
                                                            bool channels_last, bool deterministic,
                                                            at::IntArrayRef filter_shape);

}  // namespace cuda
}  // namespace dsconv_ext
