// Registers the native CPU kernels as private ops torch.ops.dsconv_ext._cpu_*.
// The public, autograd-aware ops (dsconv_ext::depthwise_conv2d, ...) are defined in
// dsconv_ext/ops and call these through the backend table.
#include <torch/library.h>

#include "cpu/depthwise_cpu.h"

TORCH_LIBRARY_FRAGMENT(dsconv_ext, m) {
  m.def("_cpu_depthwise_forward(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
        "int[2] dilation, bool channels_last) -> Tensor");
  m.def("_cpu_depthwise_backward(Tensor grad_out, Tensor x, Tensor weight, int[2] stride, int[4] padding, "
        "int[2] dilation, bool need_input, bool need_weight, bool need_bias, bool channels_last) "
        "-> (Tensor, Tensor, Tensor)");
  // No tensor arguments, so a catch-all kernel rather than a CPU one.
  m.def("_cpu_fma_throughput(int iterations) -> float", &dsconv_ext::cpu::fma_throughput);
}

TORCH_LIBRARY_IMPL(dsconv_ext, CPU, m) {
  m.impl("_cpu_depthwise_forward", &dsconv_ext::cpu::depthwise_forward);
  m.impl("_cpu_depthwise_backward", &dsconv_ext::cpu::depthwise_backward);
}
