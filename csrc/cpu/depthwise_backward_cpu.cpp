#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <vector>

#include "../conv_geometry.h"
#include "depthwise_cpu.h"
#include "tensor_strides.h"

namespace dsconv_ext {
namespace cpu {
namespace {

// Output row oh that input row ih meets through kernel row i, or -1 when none does
// (ih + pad - i * dilation must be a non-negative multiple of the stride below out_h).
inline int64_t source_output_index(int64_t in_index, int64_t pad, int64_t tap, int64_t dilation,
                                   int64_t stride, int64_t out_extent) {
  const int64_t t = in_index + pad - tap * dilation;
  if (t < 0 || t % stride != 0) return -1;
  const int64_t o = t / stride;
  return o < out_extent ? o : -1;
}

// grad_x for NCHW-like layouts. Each task owns one (n, c) plane and gathers one input row at
// a time, so no two threads write the same element and the result is deterministic.
template <typename scalar_t>
void backward_input_planes(const scalar_t* gy, Strides4 gs, const at::opmath_type<scalar_t>* w,
                           scalar_t* gx, Strides4 xs, const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t taps = g.kernel_h * g.kernel_w;
  at::parallel_for(0, g.batch * g.channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(g.in_w);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / g.channels, c = nc % g.channels;
      const scalar_t* gy_plane = gy + n * gs.n + c * gs.c;
      const acc_t* w_c = w + c * taps;
      for (int64_t ih = 0; ih < g.in_h; ++ih) {
        std::fill(row.begin(), row.end(), acc_t(0));
        for (int64_t i = 0; i < g.kernel_h; ++i) {
          const int64_t oh = source_output_index(ih, g.pad_top, i, g.dilation_h, g.stride_h, g.out_h);
          if (oh < 0) continue;
          const scalar_t* gy_row = gy_plane + oh * gs.h;
          for (int64_t j = 0; j < g.kernel_w; ++j) {
            const int64_t offset = j * g.dilation_w - g.pad_left;
            int64_t lo, hi;
            valid_output_range(offset, g.stride_w, g.in_w, g.out_w, lo, hi);
            const acc_t wv = w_c[i * g.kernel_w + j];
            if (g.stride_w == 1 && gs.w == 1) {
              acc_t* dst = row.data() + offset;
              for (int64_t ow = lo; ow < hi; ++ow) dst[ow] += wv * static_cast<acc_t>(gy_row[ow]);
            } else {
              for (int64_t ow = lo; ow < hi; ++ow)
                row[ow * g.stride_w + offset] += wv * static_cast<acc_t>(gy_row[ow * gs.w]);
            }
          }
        }
        scalar_t* gx_row = gx + n * xs.n + c * xs.c + ih * xs.h;
        for (int64_t iw = 0; iw < g.in_w; ++iw) gx_row[iw * xs.w] = static_cast<scalar_t>(row[iw]);
      }
    }
  });
}

// grad_x for channels_last-like layouts: one input row (n, ih) per task, channels innermost.
template <typename scalar_t>
void backward_input_channels_last(const scalar_t* gy, Strides4 gs, const at::opmath_type<scalar_t>* w_t,
                                  scalar_t* gx, Strides4 xs, const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = g.channels;
  at::parallel_for(0, g.batch * g.in_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(C);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.in_h, ih = task % g.in_h;
      for (int64_t iw = 0; iw < g.in_w; ++iw) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t i = 0; i < g.kernel_h; ++i) {
          const int64_t oh = source_output_index(ih, g.pad_top, i, g.dilation_h, g.stride_h, g.out_h);
          if (oh < 0) continue;
          for (int64_t j = 0; j < g.kernel_w; ++j) {
            const int64_t ow = source_output_index(iw, g.pad_left, j, g.dilation_w, g.stride_w, g.out_w);
            if (ow < 0) continue;
            const scalar_t* src = gy + n * gs.n + oh * gs.h + ow * gs.w;
            const acc_t* w_tap = w_t + (i * g.kernel_w + j) * C;
            if (gs.c == 1) {
              for (int64_t c = 0; c < C; ++c) acc[c] += w_tap[c] * static_cast<acc_t>(src[c]);
            } else {
              for (int64_t c = 0; c < C; ++c) acc[c] += w_tap[c] * static_cast<acc_t>(src[c * gs.c]);
            }
          }
        }
        scalar_t* dst = gx + n * xs.n + ih * xs.h + iw * xs.w;
        for (int64_t c = 0; c < C; ++c) dst[c * xs.c] = static_cast<scalar_t>(acc[c]);
      }
    }
  });
}

// grad_weight and grad_bias for NCHW-like layouts: one channel per task.
template <typename scalar_t>
void backward_weight_planes(const scalar_t* gy, Strides4 gs, const scalar_t* x, Strides4 xs,
                            at::opmath_type<scalar_t>* gw, at::opmath_type<scalar_t>* gb,
                            const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t taps = g.kernel_h * g.kernel_w;
  at::parallel_for(0, g.channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      acc_t* gw_c = gw + c * taps;
      std::fill(gw_c, gw_c + taps, acc_t(0));
      acc_t bias_sum = 0;
      for (int64_t n = 0; n < g.batch; ++n) {
        const scalar_t* x_plane = x + n * xs.n + c * xs.c;
        for (int64_t oh = 0; oh < g.out_h; ++oh) {
          const scalar_t* gy_row = gy + n * gs.n + c * gs.c + oh * gs.h;
          if (gb) {
            for (int64_t ow = 0; ow < g.out_w; ++ow) bias_sum += static_cast<acc_t>(gy_row[ow * gs.w]);
          }
          for (int64_t i = 0; i < g.kernel_h; ++i) {
            const int64_t ih = oh * g.stride_h - g.pad_top + i * g.dilation_h;
            if (ih < 0 || ih >= g.in_h) continue;
            const scalar_t* x_row = x_plane + ih * xs.h;
            for (int64_t j = 0; j < g.kernel_w; ++j) {
              const int64_t offset = j * g.dilation_w - g.pad_left;
              int64_t lo, hi;
              valid_output_range(offset, g.stride_w, g.in_w, g.out_w, lo, hi);
              acc_t dot = 0;
              for (int64_t ow = lo; ow < hi; ++ow)
                dot += static_cast<acc_t>(gy_row[ow * gs.w]) *
                       static_cast<acc_t>(x_row[(ow * g.stride_w + offset) * xs.w]);
              gw_c[i * g.kernel_w + j] += dot;
            }
          }
        }
      }
      if (gb) gb[c] = bias_sum;
    }
  });
}

// grad_weight and grad_bias for channels_last-like layouts: a block of channels per task,
// channels innermost. gw_t is [kh*kw, C].
template <typename scalar_t>
void backward_weight_channels_last(const scalar_t* gy, Strides4 gs, const scalar_t* x, Strides4 xs,
                                   at::opmath_type<scalar_t>* gw_t, at::opmath_type<scalar_t>* gb,
                                   const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t kChannelBlock = 32;
  const int64_t C = g.channels;
  const int64_t taps = g.kernel_h * g.kernel_w;
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t c0 = block * kChannelBlock;
      const int64_t cb = std::min(kChannelBlock, C - c0);
      std::vector<acc_t> acc(taps * cb, acc_t(0));
      std::vector<acc_t> bias_acc(cb, acc_t(0));
      for (int64_t n = 0; n < g.batch; ++n) {
        for (int64_t oh = 0; oh < g.out_h; ++oh) {
          for (int64_t ow = 0; ow < g.out_w; ++ow) {
            const scalar_t* gy_px = gy + n * gs.n + oh * gs.h + ow * gs.w + c0 * gs.c;
            if (gb) {
              for (int64_t c = 0; c < cb; ++c) bias_acc[c] += static_cast<acc_t>(gy_px[c * gs.c]);
            }
            for (int64_t i = 0; i < g.kernel_h; ++i) {
              const int64_t ih = oh * g.stride_h - g.pad_top + i * g.dilation_h;
              if (ih < 0 || ih >= g.in_h) continue;
              for (int64_t j = 0; j < g.kernel_w; ++j) {
                const int64_t iw = ow * g.stride_w - g.pad_left + j * g.dilation_w;
                if (iw < 0 || iw >= g.in_w) continue;
                const scalar_t* x_px = x + n * xs.n + ih * xs.h + iw * xs.w + c0 * xs.c;
                acc_t* a = acc.data() + (i * g.kernel_w + j) * cb;
                for (int64_t c = 0; c < cb; ++c)
                  a[c] += static_cast<acc_t>(gy_px[c * gs.c]) * static_cast<acc_t>(x_px[c * xs.c]);
              }
            }
          }
        }
      }
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t c = 0; c < cb; ++c) gw_t[t * C + c0 + c] = acc[t * cb + c];
      if (gb)
        for (int64_t c = 0; c < cb; ++c) gb[c0 + c] = bias_acc[c];
    }
  });
}

}  // namespace

at::Tensor depthwise_backward_input(const at::Tensor& grad_out, const at::Tensor& weight,
                                    at::IntArrayRef input_size, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation,
                                    bool channels_last) {
  TORCH_CHECK(grad_out.dim() == 4 && weight.dim() == 4, "dsconv_ext cpu: grad_out and weight must be 4-D");
  TORCH_CHECK(grad_out.scalar_type() == weight.scalar_type(), "dsconv_ext cpu: grad_out and weight dtypes differ");
  const ConvGeometry g =
      make_geometry(input_size, {weight.size(2), weight.size(3)}, stride, padding, dilation);
  TORCH_CHECK(grad_out.size(0) == g.batch && grad_out.size(1) == g.channels &&
                  grad_out.size(2) == g.out_h && grad_out.size(3) == g.out_w,
              "dsconv_ext cpu: grad_out has the wrong shape");
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor gx = at::empty(input_size, grad_out.options().memory_format(format));
  if (gx.numel() == 0) return gx;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_out.scalar_type(), "dsconv_ext_cpu_backward_input", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
    at::Tensor w = weight.reshape({g.channels, g.kernel_h * g.kernel_w}).to(acc_type);
    w = channels_last ? w.t().contiguous() : w.contiguous();
    if (channels_last) {
      backward_input_channels_last<scalar_t>(grad_out.data_ptr<scalar_t>(), Strides4(grad_out),
                                             w.data_ptr<acc_t>(), gx.data_ptr<scalar_t>(), Strides4(gx), g);
    } else {
      backward_input_planes<scalar_t>(grad_out.data_ptr<scalar_t>(), Strides4(grad_out), w.data_ptr<acc_t>(),
                                      gx.data_ptr<scalar_t>(), Strides4(gx), g);
    }
  });
  return gx;
}

std::tuple<at::Tensor, at::Tensor> depthwise_backward_weight(
    const at::Tensor& grad_out, const at::Tensor& x, at::IntArrayRef kernel_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool compute_bias) {
  TORCH_CHECK(grad_out.dim() == 4 && x.dim() == 4, "dsconv_ext cpu: grad_out and x must be 4-D");
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type(), "dsconv_ext cpu: grad_out and x dtypes differ");
  const ConvGeometry g = make_geometry(x.sizes(), kernel_size, stride, padding, dilation);
  TORCH_CHECK(grad_out.size(0) == g.batch && grad_out.size(1) == g.channels &&
                  grad_out.size(2) == g.out_h && grad_out.size(3) == g.out_w,
              "dsconv_ext cpu: grad_out has the wrong shape");
  const auto acc_type = at::toOpMathType(x.scalar_type());
  const auto acc_options = x.options().dtype(acc_type);
  // Decide the loop order from the activations' layout, as the forward does.
  const bool channels_last = x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  at::Tensor gw = channels_last ? at::empty({g.kernel_h * g.kernel_w, g.channels}, acc_options)
                                : at::empty({g.channels, g.kernel_h * g.kernel_w}, acc_options);
  at::Tensor gb = compute_bias ? at::empty({g.channels}, acc_options) : at::empty({0}, acc_options);
  if (grad_out.numel() == 0 || x.numel() == 0) {
    gw.zero_();
    gb.zero_();
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dsconv_ext_cpu_backward_weight", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      acc_t* gb_ptr = compute_bias ? gb.data_ptr<acc_t>() : nullptr;
      if (channels_last) {
        backward_weight_channels_last<scalar_t>(grad_out.data_ptr<scalar_t>(), Strides4(grad_out),
                                                x.data_ptr<scalar_t>(), Strides4(x), gw.data_ptr<acc_t>(), gb_ptr, g);
      } else {
        backward_weight_planes<scalar_t>(grad_out.data_ptr<scalar_t>(), Strides4(grad_out), x.data_ptr<scalar_t>(),
                                         Strides4(x), gw.data_ptr<acc_t>(), gb_ptr, g);
      }
    });
  }
  if (channels_last) gw = gw.t().contiguous();
  return {gw.reshape({g.channels, 1, g.kernel_h, g.kernel_w}), gb};
}

}  // namespace cpu
}  // namespace dsconv_ext
