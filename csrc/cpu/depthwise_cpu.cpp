// Entry points of the CPU backend: argument checks, output allocation, layout choice.
#include "depthwise_cpu.h"

#include "tap_groups.h"
#include "vec_io.h"

namespace dsconv_ext {
namespace cpu {
namespace {

// Channel padding for the channels_last kernels: a whole number of the widest vectors.
constexpr int64_t kChannelAlign = 16;

bool use_channels_last_kernels(const at::Tensor& x, bool channels_last) {
  return channels_last && x.stride(1) == 1;
}

// Which NCHW kernels run an op: the direct kernels (depthwise_direct.cpp), blocks of 16 planes
// transposed through the channels_last tiles (depthwise_plane_blocks.cpp), or the phase-split
// plane path (depthwise_planes.cpp).
enum class NchwKernels { kDirect, kPlaneBlocks, kPlanes };

// Narrow planes leave most lanes of the width-vectorised kernels idle (a 7x7 plane fills 7 of
// 16) and pay per-plane set-up on little work; strided columns cost the plane path a phase split
// per plane; filters of more than kMaxWeightGradTaps taps, where no direct kernel applies, make
// the plane path stream each plane once per group of taps. All three run faster on the blocks,
// which gather every tap in one pass over pixels of 16 channels. Measured per pass, N=8,
// 2 threads: 56x56 C144 3x3 stride 2 1.2-1.6x; 28x28 C240 5x5 grad-weight 1.5x; 28x28 C192
// 7x7 bf16 1.3-1.6x; 14x14 and 7x7, 3x3 to 7x7, 1.0-1.5x. Below two blocks' worth of channels
// the blocks lose (C=8 and C=24 at 14x14 3x3: 1.3-1.8x slower): lanes past C idle and too few
// tasks to share.
constexpr int64_t kNarrowPlane = 16;
constexpr int64_t kMinBlockChannels = 32;

NchwKernels nchw_kernels(const ConvGeometry& g, bool direct_applies) {
  const bool blocks_pay = g.out_w < kNarrowPlane || g.stride_w > 1 ||
                          (!direct_applies && g.kernel_h * g.kernel_w > kMaxWeightGradTaps);
  if (g.channels >= kMinBlockChannels && blocks_pay) return NchwKernels::kPlaneBlocks;
  return direct_applies ? NchwKernels::kDirect : NchwKernels::kPlanes;
}

at::Tensor filter_as_acc(const at::Tensor& weight, int64_t channels, int64_t taps, at::ScalarType acc) {
  return weight.reshape({channels, taps}).to(acc).contiguous();
}

// [kh*kw, C_padded], zero beyond C, so full vector loads stay in bounds.
at::Tensor filter_transposed(const at::Tensor& weight, int64_t channels, int64_t taps, at::ScalarType acc) {
  at::Tensor w_t = at::zeros({taps, round_up(channels, kChannelAlign)}, weight.options().dtype(acc));
  w_t.narrow(1, 0, channels).copy_(weight.reshape({channels, taps}).t());
  return w_t;
}

at::Tensor padded_bias(const at::Tensor& bias, int64_t channels, at::ScalarType acc) {
  at::Tensor b = at::zeros({round_up(channels, kChannelAlign)}, bias.options().dtype(acc));
  b.narrow(0, 0, channels).copy_(bias);
  return b;
}

void check_common(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.dim() == 4 && weight.dim() == 4, "dsconv_ext cpu: x and weight must be 4-D");
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "dsconv_ext cpu: tensors must be on CPU");
  TORCH_CHECK(weight.size(0) == x.size(1) && weight.size(1) == 1,
              "dsconv_ext cpu: weight must be [C, 1, kh, kw] with C = x.size(1)");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "dsconv_ext cpu: x and weight dtypes differ");
}

}  // namespace

at::Tensor depthwise_forward(const at::Tensor& x, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, bool channels_last) {
  check_common(x, weight);
  const ConvGeometry g = make_geometry(x.sizes(), {weight.size(2), weight.size(3)}, stride, padding, dilation);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor y = at::empty({g.batch, g.channels, g.out_h, g.out_w}, x.options().memory_format(format));
  if (y.numel() == 0) return y;
  const auto acc = at::toOpMathType(x.scalar_type());
  const int64_t taps = g.kernel_h * g.kernel_w;
  const bool has_bias = bias.has_value() && bias->defined();
  if (use_channels_last_kernels(x, channels_last)) {
    forward_channels_last_dispatch(x, filter_transposed(weight, g.channels, taps, acc),
                                   has_bias ? padded_bias(*bias, g.channels, acc) : at::Tensor(), y, g);
    return y;
  }
  const NchwKernels kernels = nchw_kernels(g, direct_forward_applies(x, y, g));
  if (kernels == NchwKernels::kPlaneBlocks) {
    // The plane blocks read each plane as one contiguous run of pixels.
    forward_plane_blocks(x.contiguous(), filter_transposed(weight, g.channels, taps, acc),
                         has_bias ? padded_bias(*bias, g.channels, acc) : at::Tensor(), y, g);
    return y;
  }
  const at::Tensor b = has_bias ? bias->to(acc).contiguous() : at::Tensor();
  const at::Tensor w_acc = filter_as_acc(weight, g.channels, taps, acc);
  if (kernels == NchwKernels::kDirect) forward_direct(x, w_acc, b, y, g);
  else forward_planes_dispatch(x, w_acc, b, y, g);
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool need_input, bool need_weight, bool need_bias,
    bool channels_last) {
  check_common(x, weight);
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type(), "dsconv_ext cpu: grad_out and x dtypes differ");
  const ConvGeometry g = make_geometry(x.sizes(), {weight.size(2), weight.size(3)}, stride, padding, dilation);
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == g.batch && grad_out.size(1) == g.channels &&
                  grad_out.size(2) == g.out_h && grad_out.size(3) == g.out_w,
              "dsconv_ext cpu: grad_out has the wrong shape");
  const auto acc = at::toOpMathType(x.scalar_type());
  const auto acc_options = x.options().dtype(acc);
  const int64_t taps = g.kernel_h * g.kernel_w;
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor grad_x = need_input ? at::empty(x.sizes(), x.options().memory_format(format)) : at::Tensor();
  at::Tensor grad_w = need_weight ? at::zeros({g.channels, taps}, acc_options) : at::Tensor();
  at::Tensor grad_b = need_bias ? at::zeros({g.channels}, acc_options) : at::Tensor();
  if (grad_out.numel() > 0 && x.numel() > 0) {
    if (use_channels_last_kernels(x, channels_last)) {
      const at::Tensor gy = grad_out.contiguous(at::MemoryFormat::ChannelsLast);
      backward_channels_last_dispatch(gy, x, filter_transposed(weight, g.channels, taps, acc), grad_x, grad_w,
                                      grad_b, g);
    } else {
      // grad-input and the filter gradients may each run on different kernels; those on the
      // same kernels share one pass, so grad_out is read once where both do.
      const bool need_filter = need_weight || need_bias;
      const NchwKernels input_kernels =
          need_input ? nchw_kernels(g, direct_grad_input_applies(grad_out, grad_x, g)) : NchwKernels::kPlanes;
      const NchwKernels filter_kernels =
          need_filter ? nchw_kernels(g, direct_weight_grad_applies(grad_out, x, g)) : NchwKernels::kPlanes;
      auto wanted_on = [&](NchwKernels kernels, at::Tensor& gx, at::Tensor& gw, at::Tensor& gb) {
        const bool input = need_input && input_kernels == kernels;
        const bool filter = need_filter && filter_kernels == kernels;
        gx = input ? grad_x : at::Tensor();
        gw = filter ? grad_w : at::Tensor();
        gb = filter ? grad_b : at::Tensor();
        return input || filter;
      };
      at::Tensor gx, gw, gb;
      if (wanted_on(NchwKernels::kPlaneBlocks, gx, gw, gb))
        backward_plane_blocks(grad_out.contiguous(), gw.defined() ? x.contiguous() : x, filter_transposed(weight, g.channels, taps, acc),
                              gx, gw, gb, g);
      at::Tensor w_acc;
      if (wanted_on(NchwKernels::kDirect, gx, gw, gb)) {
        w_acc = filter_as_acc(weight, g.channels, taps, acc);
        backward_direct(grad_out, x, w_acc, gx, gw, gb, g);
      }
      if (wanted_on(NchwKernels::kPlanes, gx, gw, gb)) {
        if (!w_acc.defined()) w_acc = filter_as_acc(weight, g.channels, taps, acc);
        backward_planes_dispatch(grad_out, x, w_acc, gx, gw, gb, g);
      }
    }
  } else if (need_input) {
    grad_x.zero_();
  }
  return {need_input ? grad_x : at::empty({0}, x.options()),
          need_weight ? grad_w.reshape({g.channels, 1, g.kernel_h, g.kernel_w}) : at::empty({0}, acc_options),
          need_bias ? grad_b : at::empty({0}, acc_options)};
}

}  // namespace cpu
}  // namespace dsconv_ext
