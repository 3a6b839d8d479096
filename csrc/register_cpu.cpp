// Registers the native CPU kernels as private ops torch.ops.dsconv_ext._cpu_*.
// The public, autograd-aware ops (dsconv_ext::depthwise_conv2d, ...) are defined in
// dsconv_ext/ops and call these through the backend table.
#include <torch/library.h>

#include "cpu/depthwise_cpu.h"

TORCH_LIBRARY_FRAGMENT(dsconv_ext, m) {
  m.def("_cpu_depthwise_forward(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
        "int[2] dilation, bool channels_last) -> Tensor");
  m.def("_cpu_depthwise_backward_input(Tensor grad_out, Tensor weight, int[4] input_size, int[2] stride, "
        "int[4] padding, int[2] dilation, bool channels_last) -> Tensor");
  m.def("_cpu_depthwise_backward_weight(Tensor grad_out, Tensor x, int[2] kernel_size, int[2] stride, "
        "int[4] padding, int[2] dilation, bool compute_bias) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(dsconv_ext, CPU, m) {
  m.impl("_cpu_depthwise_forward", &dsconv_ext::cpu::depthwise_forward);
  m.impl("_cpu_depthwise_backward_input", &dsconv_ext::cpu::depthwise_backward_input);
  m.impl("_cpu_depthwise_backward_weight", &dsconv_ext::cpu::depthwise_backward_weight);
}
