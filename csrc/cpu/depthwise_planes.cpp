// NCHW (and any-stride) depthwise convolution: each (n, c) plane is copied once into a
// zero-padded, phase-split buffer in the accumulation type, then correlated with register tiles
// vectorised along the width. grad-input is the same correlation of grad_out spread onto the
// input grid (zero-upsampled by the stride) with the flipped filter.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "../conv_geometry.h"
#include "depthwise_cpu.h"
#include "phase_plane.h"
#include "tensor_strides.h"

namespace dsconv_ext {
namespace cpu {
namespace {

template <typename acc_t>
struct ForwardPlan {
  int64_t out_rows, out_cols, plane_rows, plane_cols;
  std::vector<int64_t> offsets;

  explicit ForwardPlan(const ConvGeometry& g) {
    correlation_extent<acc_t>(g.out_h, g.out_w, out_rows, out_cols);
    plane_rows = (out_rows - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1;
    const int64_t max_offset = ((g.kernel_w - 1) * g.dilation_w) / g.stride_w;
    const int64_t padded_w = g.in_w + g.pad_left + g.pad_right;
    plane_cols = std::max((padded_w + g.stride_w - 1) / g.stride_w, out_cols + max_offset) + 1;
    offsets = tap_offsets(g.kernel_h, g.kernel_w, g.dilation_h, g.dilation_w, g.stride_w,
                          plane_rows * plane_cols, plane_cols);
  }
};

template <typename scalar_t, typename acc_t>
void store_plane(const acc_t* src, int64_t src_cols, int64_t rows, int64_t cols, scalar_t* dst,
                 int64_t stride_h, int64_t stride_w) {
  for (int64_t r = 0; r < rows; ++r) {
    const acc_t* s = src + r * src_cols;
    scalar_t* d = dst + r * stride_h;
    if (stride_w == 1) {
      for (int64_t q = 0; q < cols; ++q) d[q] = static_cast<scalar_t>(s[q]);
    } else {
      for (int64_t q = 0; q < cols; ++q) d[q * stride_w] = static_cast<scalar_t>(s[q]);
    }
  }
}

template <typename scalar_t>
void forward_planes(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
                    const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const ForwardPlan<acc_t> plan(g);
  const Strides4 xs(x), ys(y);
  const scalar_t* x_ptr = x.data_ptr<scalar_t>();
  scalar_t* y_ptr = y.data_ptr<scalar_t>();
  const acc_t* w_ptr = w.data_ptr<acc_t>();
  const acc_t* b_ptr = bias.defined() ? bias.data_ptr<acc_t>() : nullptr;
  const int64_t taps = g.kernel_h * g.kernel_w;
  at::parallel_for(0, g.batch * g.channels, 1, [&](int64_t begin, int64_t end) {
    PhasePlane<acc_t> plane;
    plane.shape(plan.plane_rows, plan.plane_cols, g.stride_w);
    std::vector<acc_t> out(plan.out_rows * plan.out_cols);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / g.channels, c = nc % g.channels;
      plane.fill(x_ptr + n * xs.n + c * xs.c, g.in_h, g.in_w, xs.h, xs.w, g.pad_top, g.pad_left);
      const acc_t bias_c = b_ptr ? b_ptr[c] : acc_t(0);
      if (g.stride_h == g.dilation_h)
        correlate_plane_shared_rows<acc_t>(plane, plan.offsets.data(), w_ptr + c * taps, g.kernel_h, g.kernel_w,
                                           bias_c, g.out_h, g.out_w, g.stride_h, out.data(), plan.out_cols);
      else
        correlate_plane<acc_t>(plane, plan.offsets.data(), w_ptr + c * taps, taps, bias_c, g.out_h, g.out_w,
                               g.stride_h, out.data(), plan.out_cols);
      store_plane(out.data(), plan.out_cols, g.out_h, g.out_w, y_ptr + n * ys.n + c * ys.c, ys.h, ys.w);
    }
  });
}

// grad-input of the input pixels congruent to (residue_h, residue_w) modulo the stride:
// grad_x[residue + stride * r] = sum over the taps that land on the strided output grid of
// w[i, j] * grad_out[r + offset_i][q + offset_j], a stride-1 correlation of the padded grad_out
// plane with a subset of the filter. Splitting by residue avoids multiplying the zeros a
// stride-upsampled grad_out would hold.
struct ResidueClass {
  int64_t residue_h, residue_w, out_h, out_w;
  std::vector<int64_t> taps;     // filter indices i * kernel_w + j
  std::vector<int64_t> offsets;  // plane offsets of those taps for output (0, 0)
};

template <typename acc_t>
struct GradInputPlan {
  int64_t plane_rows, plane_cols, out_rows, out_cols, top, left;
  std::vector<ResidueClass> classes;

  explicit GradInputPlan(const ConvGeometry& g) {
    top = (g.kernel_h - 1) * g.dilation_h / g.stride_h + 1;
    left = (g.kernel_w - 1) * g.dilation_w / g.stride_w + 1;
    const int64_t max_out_h = (g.in_h + g.stride_h - 1) / g.stride_h;
    const int64_t max_out_w = (g.in_w + g.stride_w - 1) / g.stride_w;
    correlation_extent<acc_t>(max_out_h, max_out_w, out_rows, out_cols);
    plane_rows = top + std::max(g.out_h, out_rows + (g.stride_h - 1 + g.pad_top) / g.stride_h) + 1;
    plane_cols = left + std::max(g.out_w, out_cols + (g.stride_w - 1 + g.pad_left) / g.stride_w) + 1;
    for (int64_t rh = 0; rh < std::min(g.stride_h, g.in_h); ++rh)
      for (int64_t rw = 0; rw < std::min(g.stride_w, g.in_w); ++rw) {
        ResidueClass rc{rh, rw, (g.in_h - rh + g.stride_h - 1) / g.stride_h,
                        (g.in_w - rw + g.stride_w - 1) / g.stride_w, {}, {}};
        for (int64_t i = 0; i < g.kernel_h; ++i) {
          const int64_t th = rh + g.pad_top - i * g.dilation_h;
          if (((th % g.stride_h) + g.stride_h) % g.stride_h != 0) continue;
          for (int64_t j = 0; j < g.kernel_w; ++j) {
            const int64_t tw = rw + g.pad_left - j * g.dilation_w;
            if (((tw % g.stride_w) + g.stride_w) % g.stride_w != 0) continue;
            rc.taps.push_back(i * g.kernel_w + j);
            rc.offsets.push_back((th / g.stride_h + top) * plane_cols + tw / g.stride_w + left);
          }
        }
        classes.push_back(std::move(rc));
      }
  }
};

template <typename scalar_t>
void backward_planes(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w, at::Tensor& grad_x,
                     at::Tensor& grad_w, at::Tensor& grad_b, const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t V = at::vec::Vectorized<acc_t>::size();
  const bool need_input = grad_x.defined(), need_weight = grad_w.defined(), need_bias = grad_b.defined();
  const int64_t taps = g.kernel_h * g.kernel_w;
  const GradInputPlan<acc_t> input_plan(g);
  // grad-weight: grad_out (zero-padded to whole vectors) against the padded input plane.
  const ForwardPlan<acc_t> weight_plan(g);
  const int64_t g_cols = round_up(g.out_w, V);

  const Strides4 gs(grad_out), xs(x);
  const Strides4 gxs = need_input ? Strides4(grad_x) : gs;
  const scalar_t* gy_ptr = grad_out.data_ptr<scalar_t>();
  const scalar_t* x_ptr = x.data_ptr<scalar_t>();
  scalar_t* gx_ptr = need_input ? grad_x.data_ptr<scalar_t>() : nullptr;
  const acc_t* w_ptr = w.data_ptr<acc_t>();
  acc_t* gw_ptr = need_weight ? grad_w.data_ptr<acc_t>() : nullptr;
  acc_t* gb_ptr = need_bias ? grad_b.data_ptr<acc_t>() : nullptr;

  // One channel per task, batch in a fixed order: the filter gradient of each channel is
  // reduced by one thread in the same order whatever the thread count.
  at::parallel_for(0, g.channels, 1, [&](int64_t begin, int64_t end) {
    PhasePlane<acc_t> gy_padded, plane;
    gy_padded.shape(input_plan.plane_rows, input_plan.plane_cols, 1);
    plane.shape(weight_plan.plane_rows, weight_plan.plane_cols, g.stride_w);
    std::vector<acc_t> out(input_plan.out_rows * input_plan.out_cols);
    std::vector<acc_t> g_plane(g.out_h * g_cols, acc_t(0));
    std::vector<acc_t> tap_weights(taps);
    for (int64_t c = begin; c < end; ++c) {
      acc_t* gw_c = gw_ptr ? gw_ptr + c * taps : nullptr;
      if (gw_c) std::fill(gw_c, gw_c + taps, acc_t(0));
      acc_t bias_sum = 0;
      for (int64_t n = 0; n < g.batch; ++n) {
        const scalar_t* gy_plane = gy_ptr + n * gs.n + c * gs.c;
        if (need_input) {
          gy_padded.fill(gy_plane, g.out_h, g.out_w, gs.h, gs.w, input_plan.top, input_plan.left);
          scalar_t* gx_plane = gx_ptr + n * gxs.n + c * gxs.c;
          for (const ResidueClass& rc : input_plan.classes) {
            const int64_t count = static_cast<int64_t>(rc.taps.size());
            for (int64_t t = 0; t < count; ++t) tap_weights[t] = w_ptr[c * taps + rc.taps[t]];
            correlate_plane<acc_t>(gy_padded, rc.offsets.data(), tap_weights.data(), count, acc_t(0), rc.out_h,
                                   rc.out_w, 1, out.data(), input_plan.out_cols);
            store_plane(out.data(), input_plan.out_cols, rc.out_h, rc.out_w,
                        gx_plane + rc.residue_h * gxs.h + rc.residue_w * gxs.w, g.stride_h * gxs.h,
                        g.stride_w * gxs.w);
          }
        }
        if (need_weight || need_bias) {
          for (int64_t oh = 0; oh < g.out_h; ++oh)
            for (int64_t ow = 0; ow < g.out_w; ++ow)
              g_plane[oh * g_cols + ow] = static_cast<acc_t>(gy_plane[oh * gs.h + ow * gs.w]);
        }
        if (need_bias) {
          at::vec::Vectorized<acc_t> total(acc_t(0));
          for (int64_t k = 0; k < g.out_h * g_cols; k += V)
            total = total + at::vec::Vectorized<acc_t>::loadu(g_plane.data() + k);
          bias_sum += lane_sum(total);
        }
        if (need_weight) {
          plane.fill(x_ptr + n * xs.n + c * xs.c, g.in_h, g.in_w, xs.h, xs.w, g.pad_top, g.pad_left);
          weight_grad_plane<acc_t>(plane, weight_plan.offsets.data(), g.kernel_h, g.kernel_w, g_plane.data(),
                                   g_cols, g.out_h, g.stride_h, gw_c);
        }
      }
      if (gb_ptr) gb_ptr[c] = bias_sum;
    }
  });
}

}  // namespace

void forward_planes_dispatch(const at::Tensor& x, const at::Tensor& w_acc, const at::Tensor& bias_acc,
                             at::Tensor& y, const ConvGeometry& g) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dsconv_ext_forward_planes",
                                  [&] { forward_planes<scalar_t>(x, w_acc, bias_acc, y, g); });
}

void backward_planes_dispatch(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w_acc,
                              at::Tensor& grad_x, at::Tensor& grad_w, at::Tensor& grad_b, const ConvGeometry& g) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dsconv_ext_backward_planes",
                                  [&] { backward_planes<scalar_t>(grad_out, x, w_acc, grad_x, grad_w, grad_b, g); });
}

}  // namespace cpu
}  // namespace dsconv_ext
