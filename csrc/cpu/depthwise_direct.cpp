// NCHW fp32 forward and backward that read the planes in place (direct_rows.h), for the
// layers that have them (the *_applies checks): unit column stride in every tensor and
// stride_w == 1; forward also stride_h == dilation_h, grad-input stride 1 and dilation_h 1,
// grad-weight a filter of at most kMaxWeightGradTaps taps. The rest runs on the plane path.
#include <ATen/Parallel.h>

#include "depthwise_cpu.h"
#include "direct_rows.h"
#include "tensor_strides.h"

namespace dsconv_ext {
namespace cpu {

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)

namespace {

DirectCorrelation forward_correlation(const ConvGeometry& g) {
  DirectCorrelation dc{g.in_h, g.in_w, g.out_h, g.out_w, g.kernel_h, g.kernel_w, g.stride_h,
                       g.dilation_h, g.dilation_w, -g.pad_top, -g.pad_left};
  dc.plan();
  return dc;
}

// grad_x = grad_out correlated with the flipped filter, at stride 1.
DirectCorrelation grad_input_correlation(const ConvGeometry& g) {
  DirectCorrelation dc{g.out_h, g.out_w, g.in_h, g.in_w, g.kernel_h, g.kernel_w, 1, g.dilation_h, g.dilation_w,
                       g.pad_top - (g.kernel_h - 1) * g.dilation_h, g.pad_left - (g.kernel_w - 1) * g.dilation_w};
  dc.plan();
  return dc;
}

bool unit_column_stride(const at::Tensor& t) { return t.size(3) == 1 || t.stride(3) == 1; }

}  // namespace

bool direct_forward_applies(const at::Tensor& x, const at::Tensor& y, const ConvGeometry& g) {
  return x.scalar_type() == at::kFloat && g.stride_w == 1 && g.stride_h == g.dilation_h && unit_column_stride(x) &&
         unit_column_stride(y);
}

bool direct_grad_input_applies(const at::Tensor& grad_out, const at::Tensor& grad_x, const ConvGeometry& g) {
  return grad_out.scalar_type() == at::kFloat && g.stride_h == 1 && g.stride_w == 1 && g.dilation_h == 1 &&
         unit_column_stride(grad_out) && unit_column_stride(grad_x);
}

bool direct_weight_grad_applies(const at::Tensor& grad_out, const at::Tensor& x, const ConvGeometry& g) {
  return x.scalar_type() == at::kFloat && g.stride_w == 1 && g.kernel_h * g.kernel_w <= kMaxWeightGradTaps &&
         unit_column_stride(x) && unit_column_stride(grad_out);
}

void forward_direct(const at::Tensor& x, const at::Tensor& w_acc, const at::Tensor& bias_acc, at::Tensor& y,
                    const ConvGeometry& g) {
  const DirectCorrelation dc = forward_correlation(g);
  TORCH_INTERNAL_ASSERT(dc.shares_rows(), "direct forward needs stride_h == dilation_h");
  const Strides4 xs(x), ys(y);
  const float* x_ptr = x.data_ptr<float>();
  const float* w_ptr = w_acc.data_ptr<float>();
  const float* b_ptr = bias_acc.defined() ? bias_acc.data_ptr<float>() : nullptr;
  float* y_ptr = y.data_ptr<float>();
  const int64_t taps = g.kernel_h * g.kernel_w;
  at::parallel_for(0, g.batch * g.channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / g.channels, c = nc % g.channels;
      direct_correlate_plane(dc, x_ptr + n * xs.n + c * xs.c, xs.h, w_ptr + c * taps, b_ptr ? b_ptr[c] : 0.f,
                             y_ptr + n * ys.n + c * ys.c, ys.h);
    }
  });
}

void backward_direct(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w_acc, at::Tensor& grad_x,
                     at::Tensor& grad_w, at::Tensor& grad_b, const ConvGeometry& g) {
  const bool need_input = grad_x.defined();
  const DirectCorrelation weight_dc = forward_correlation(g);
  const DirectCorrelation input_dc = need_input ? grad_input_correlation(g) : weight_dc;
  TORCH_INTERNAL_ASSERT(!need_input || input_dc.shares_rows(), "direct grad-input needs dilation_h == 1");
  const int64_t taps = g.kernel_h * g.kernel_w;
  std::vector<int64_t> tap_index(taps);
  for (int64_t t = 0; t < taps; ++t) tap_index[t] = t;

  const Strides4 gs(grad_out), xs(x);
  const Strides4 gxs = need_input ? Strides4(grad_x) : gs;
  const float* gy_ptr = grad_out.data_ptr<float>();
  const float* x_ptr = x.data_ptr<float>();
  const float* w_ptr = w_acc.data_ptr<float>();
  float* gx_ptr = need_input ? grad_x.data_ptr<float>() : nullptr;
  float* gw_ptr = grad_w.defined() ? grad_w.data_ptr<float>() : nullptr;
  float* gb_ptr = grad_b.defined() ? grad_b.data_ptr<float>() : nullptr;

  // One channel per task, batch in a fixed order: each channel's filter gradient is reduced by
  // one thread in the same order whatever the thread count.
  at::parallel_for(0, g.channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> flipped(taps);
    for (int64_t c = begin; c < end; ++c) {
      const float* w_c = w_ptr + c * taps;
      for (int64_t t = 0; t < taps; ++t) flipped[t] = w_c[taps - 1 - t];
      float* gw_c = gw_ptr ? gw_ptr + c * taps : nullptr;
      if (gw_c) std::fill(gw_c, gw_c + taps, 0.f);
      float bias_sum = 0.f;
      for (int64_t n = 0; n < g.batch; ++n) {
        const float* gy_plane = gy_ptr + n * gs.n + c * gs.c;
        if (need_input)
          direct_correlate_plane(input_dc, gy_plane, gs.h, flipped.data(), 0.f, gx_ptr + n * gxs.n + c * gxs.c, gxs.h);
        if (gw_c)
          direct_weight_grad_plane(weight_dc, gy_plane, gs.h, x_ptr + n * xs.n + c * xs.c, xs.h, tap_index.data(), gw_c);
        if (gb_ptr) bias_sum += direct_plane_sum(weight_dc, gy_plane, gs.h);
      }
      if (gb_ptr) gb_ptr[c] = bias_sum;
    }
  });
}

#else

bool direct_forward_applies(const at::Tensor&, const at::Tensor&, const ConvGeometry&) { return false; }
bool direct_grad_input_applies(const at::Tensor&, const at::Tensor&, const ConvGeometry&) { return false; }
bool direct_weight_grad_applies(const at::Tensor&, const at::Tensor&, const ConvGeometry&) { return false; }

void forward_direct(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&, const ConvGeometry&) {
  TORCH_CHECK(false, "dsconv_ext cpu: this build has no direct NCHW kernels");
}

void backward_direct(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&,
                     const ConvGeometry&) {
  TORCH_CHECK(false, "dsconv_ext cpu: this build has no direct NCHW kernels");
}

#endif

}  // namespace cpu
}  // namespace dsconv_ext
