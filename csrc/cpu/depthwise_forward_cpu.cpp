#include "depthwise_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <vector>

#include "../conv_geometry.h"
#include "tensor_strides.h"

namespace dsconv_ext {
namespace cpu {
namespace {

// NCHW-like layouts: one (n, c) plane per task, accumulating one output row at a time so
// the innermost loop runs along W (unit stride for contiguous input).
template <typename scalar_t>
void forward_planes(const scalar_t* x, Strides4 xs, const at::opmath_type<scalar_t>* w,
                    const at::opmath_type<scalar_t>* bias, scalar_t* y, Strides4 ys,
                    const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t taps = g.kernel_h * g.kernel_w;
  at::parallel_for(0, g.batch * g.channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(g.out_w);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / g.channels, c = nc % g.channels;
      const scalar_t* x_plane = x + n * xs.n + c * xs.c;
      const acc_t* w_c = w + c * taps;
      for (int64_t oh = 0; oh < g.out_h; ++oh) {
        std::fill(row.begin(), row.end(), bias ? bias[c] : acc_t(0));
        for (int64_t i = 0; i < g.kernel_h; ++i) {
          const int64_t ih = oh * g.stride_h - g.pad_top + i * g.dilation_h;
          if (ih < 0 || ih >= g.in_h) continue;
          const scalar_t* x_row = x_plane + ih * xs.h;
          for (int64_t j = 0; j < g.kernel_w; ++j) {
            const int64_t offset = j * g.dilation_w - g.pad_left;
            int64_t lo, hi;
            valid_output_range(offset, g.stride_w, g.in_w, g.out_w, lo, hi);
            const acc_t wv = w_c[i * g.kernel_w + j];
            if (g.stride_w == 1 && xs.w == 1) {
              const scalar_t* src = x_row + offset;
              for (int64_t ow = lo; ow < hi; ++ow) row[ow] += wv * static_cast<acc_t>(src[ow]);
            } else {
              for (int64_t ow = lo; ow < hi; ++ow)
                row[ow] += wv * static_cast<acc_t>(x_row[(ow * g.stride_w + offset) * xs.w]);
            }
          }
        }
        scalar_t* y_row = y + n * ys.n + c * ys.c + oh * ys.h;
        for (int64_t ow = 0; ow < g.out_w; ++ow) y_row[ow * ys.w] = static_cast<scalar_t>(row[ow]);
      }
    }
  });
}

// channels_last-like layouts: one output row (n, oh) per task, channels innermost so the
// multiply-add runs over contiguous channels. w_t is the filter transposed to [kh*kw, C].
template <typename scalar_t>
void forward_channels_last(const scalar_t* x, Strides4 xs, const at::opmath_type<scalar_t>* w_t,
                           const at::opmath_type<scalar_t>* bias, scalar_t* y, Strides4 ys,
                           const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = g.channels;
  at::parallel_for(0, g.batch * g.out_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(C);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.out_h, oh = task % g.out_h;
      for (int64_t ow = 0; ow < g.out_w; ++ow) {
        for (int64_t c = 0; c < C; ++c) acc[c] = bias ? bias[c] : acc_t(0);
        for (int64_t i = 0; i < g.kernel_h; ++i) {
          const int64_t ih = oh * g.stride_h - g.pad_top + i * g.dilation_h;
          if (ih < 0 || ih >= g.in_h) continue;
          for (int64_t j = 0; j < g.kernel_w; ++j) {
            const int64_t iw = ow * g.stride_w - g.pad_left + j * g.dilation_w;
            if (iw < 0 || iw >= g.in_w) continue;
            const scalar_t* src = x + n * xs.n + ih * xs.h + iw * xs.w;
            const acc_t* w_tap = w_t + (i * g.kernel_w + j) * C;
            if (xs.c == 1) {
              for (int64_t c = 0; c < C; ++c) acc[c] += w_tap[c] * static_cast<acc_t>(src[c]);
            } else {
              for (int64_t c = 0; c < C; ++c) acc[c] += w_tap[c] * static_cast<acc_t>(src[c * xs.c]);
            }
          }
        }
        scalar_t* dst = y + n * ys.n + oh * ys.h + ow * ys.w;
        for (int64_t c = 0; c < C; ++c) dst[c * ys.c] = static_cast<scalar_t>(acc[c]);
      }
    }
  });
}

}  // namespace

at::Tensor depthwise_forward(const at::Tensor& x, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, bool channels_last) {
  TORCH_CHECK(x.dim() == 4 && weight.dim() == 4, "dsconv_ext cpu: x and weight must be 4-D");
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "dsconv_ext cpu: tensors must be on CPU");
  TORCH_CHECK(weight.size(0) == x.size(1) && weight.size(1) == 1,
              "dsconv_ext cpu: weight must be [C, 1, kh, kw] with C = x.size(1)");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "dsconv_ext cpu: x and weight dtypes differ");
  const ConvGeometry g =
      make_geometry(x.sizes(), {weight.size(2), weight.size(3)}, stride, padding, dilation);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor y = at::empty({g.batch, g.channels, g.out_h, g.out_w}, x.options().memory_format(format));
  if (y.numel() == 0) return y;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dsconv_ext_cpu_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
    at::Tensor w = weight.reshape({g.channels, g.kernel_h * g.kernel_w}).to(acc_type);
    w = channels_last ? w.t().contiguous() : w.contiguous();
    at::Tensor b;
    if (bias.has_value() && bias->defined()) b = bias->to(acc_type).contiguous();
    const acc_t* b_ptr = b.defined() ? b.data_ptr<acc_t>() : nullptr;
    if (channels_last) {
      forward_channels_last<scalar_t>(x.data_ptr<scalar_t>(), Strides4(x), w.data_ptr<acc_t>(), b_ptr,
                                      y.data_ptr<scalar_t>(), Strides4(y), g);
    } else {
      forward_planes<scalar_t>(x.data_ptr<scalar_t>(), Strides4(x), w.data_ptr<acc_t>(), b_ptr,
                               y.data_ptr<scalar_t>(), Strides4(y), g);
    }
  });
  return y;
}

}  // namespace cpu
}  // namespace dsconv_ext
