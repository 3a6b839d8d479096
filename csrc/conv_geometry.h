// Geometry of a depthwise 2-D convolution, shared by every native backend.
#pragma once

#include <ATen/ATen.h>

namespace dsconv_ext {

struct ConvGeometry {
  int64_t batch, channels, in_h, in_w, out_h, out_w, kernel_h, kernel_w;
  int64_t stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, dilation_h, dilation_w;
};

// padding is (top, bottom, left, right): asymmetric padding is how "same" works for even
// kernels and how TF-style "same" works at stride 2, so the kernels take it natively.
inline ConvGeometry make_geometry(at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation) {
  TORCH_CHECK(input_size.size() == 4, "dsconv_ext: input size must have 4 entries");
  TORCH_CHECK(kernel_size.size() == 2 && stride.size() == 2 && dilation.size() == 2,
              "dsconv_ext: kernel_size, stride and dilation must have 2 entries");
  TORCH_CHECK(padding.size() == 4, "dsconv_ext: padding must be (top, bottom, left, right)");
  ConvGeometry g;
  g.batch = input_size[0];
  g.channels = input_size[1];
  g.in_h = input_size[2];
  g.in_w = input_size[3];
  g.kernel_h = kernel_size[0];
  g.kernel_w = kernel_size[1];
  g.stride_h = stride[0];
  g.stride_w = stride[1];
  g.pad_top = padding[0];
  g.pad_bottom = padding[1];
  g.pad_left = padding[2];
  g.pad_right = padding[3];
  g.dilation_h = dilation[0];
  g.dilation_w = dilation[1];
  TORCH_CHECK(g.stride_h > 0 && g.stride_w > 0 && g.dilation_h > 0 && g.dilation_w > 0,
              "dsconv_ext: stride and dilation must be positive");
  const int64_t span_h = g.dilation_h * (g.kernel_h - 1) + 1;
  const int64_t span_w = g.dilation_w * (g.kernel_w - 1) + 1;
  const int64_t padded_h = g.in_h + g.pad_top + g.pad_bottom;
  const int64_t padded_w = g.in_w + g.pad_left + g.pad_right;
  TORCH_CHECK(padded_h >= span_h && padded_w >= span_w,
              "dsconv_ext: kernel larger than the padded input");
  g.out_h = (padded_h - span_h) / g.stride_h + 1;
  g.out_w = (padded_w - span_w) / g.stride_w + 1;
  return g;
}

// Range [lo, hi) of output columns o for which o * stride + offset lands inside [0, extent).
inline void valid_output_range(int64_t offset, int64_t stride, int64_t extent, int64_t out_extent,
                               int64_t& lo, int64_t& hi) {
  // o * stride + offset >= 0  <=>  o >= ceil(-offset / stride)
  lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  // o * stride + offset <= extent - 1  <=>  o <= floor((extent - 1 - offset) / stride)
  const int64_t last = extent - 1 - offset;
  hi = last < 0 ? 0 : last / stride + 1;
  if (hi > out_extent) hi = out_extent;
  if (lo > hi) lo = hi;
}

}  // namespace dsconv_ext
