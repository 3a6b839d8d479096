// Entry points of the CPU backend: argument checks, output allocation, layout choice.
#include "depthwise_cpu.h"

#include "vec_io.h"

namespace dsconv_ext {
namespace cpu {
namespace {

// Channel padding for the channels_last kernels: a whole number of the widest vectors.
constexpr int64_t kChannelAlign = 16;

bool use_channels_last_kernels(const at::Tensor& x, bool channels_last) {
  return channels_last && x.stride(1) == 1;
}

// Narrow planes leave most vector lanes of the width-vectorised kernels idle (a 7x7 plane fills
// 7 of 16 lanes) and pay per-plane set-up on little work: they run 16 planes at a time through
// the channels_last tiles instead (depthwise_plane_blocks.cpp). Measured against copying the
// whole tensors to channels_last and back, forward+backward: 1.15-1.35x faster at 7x7 and
// 14x14 with 3x3 to 7x7 filters; against the direct kernels at 14x14 3x3, each pass 1.1-1.3x.
constexpr int64_t kNarrowPlane = 16;

bool run_plane_blocks(const ConvGeometry& g, bool channels_last) {
  return !channels_last && g.out_w < kNarrowPlane && g.channels > 1;
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
  const bool plane_blocks = run_plane_blocks(g, channels_last);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor y = at::empty({g.batch, g.channels, g.out_h, g.out_w}, x.options().memory_format(format));
  if (y.numel() == 0) return y;
  const auto acc = at::toOpMathType(x.scalar_type());
  const int64_t taps = g.kernel_h * g.kernel_w;
  const bool has_bias = bias.has_value() && bias->defined();
  if (use_channels_last_kernels(x, channels_last) || plane_blocks) {
    at::Tensor b = has_bias ? padded_bias(*bias, g.channels, acc) : at::Tensor();
    const at::Tensor w_t = filter_transposed(weight, g.channels, taps, acc);
    // The plane blocks read each plane as one contiguous run of pixels.
    if (plane_blocks) forward_plane_blocks(x.contiguous(), w_t, b, y, g);
    else forward_channels_last_dispatch(x, w_t, b, y, g);
  } else {
    at::Tensor b = has_bias ? bias->to(acc).contiguous() : at::Tensor();
    const at::Tensor w_acc = filter_as_acc(weight, g.channels, taps, acc);
    if (direct_forward_applies(x, y, g)) forward_direct(x, w_acc, b, y, g);
    else forward_planes_dispatch(x, w_acc, b, y, g);
  }
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
    } else if (run_plane_blocks(g, channels_last)) {
      backward_plane_blocks(grad_out.contiguous(), x.contiguous(),
                            filter_transposed(weight, g.channels, taps, acc), grad_x, grad_w, grad_b, g);
    } else {
      const at::Tensor w_acc = filter_as_acc(weight, g.channels, taps, acc);
      // Each output goes to the direct kernels where they apply, else to the plane path; one
      // pass each, so grad_out is read once where both apply.
      const bool input_direct = need_input && direct_grad_input_applies(grad_out, grad_x, g);
      const bool weight_direct = (need_weight || need_bias) && direct_weight_grad_applies(grad_out, x, g);
      at::Tensor none;
      if (input_direct || weight_direct)
        backward_direct(grad_out, x, w_acc, input_direct ? grad_x : none, weight_direct ? grad_w : none,
                        weight_direct ? grad_b : none, g);
      if ((need_input && !input_direct) || ((need_weight || need_bias) && !weight_direct))
        backward_planes_dispatch(grad_out, x, w_acc, input_direct ? none : grad_x, weight_direct ? none : grad_w,
                                 weight_direct ? none : grad_b, g);
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
