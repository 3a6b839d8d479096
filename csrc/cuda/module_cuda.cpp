// The Python module dsconv_ext._C_cuda: importing it loads this library, whose static
// TORCH_LIBRARY registrations add the CUDA kernels as torch.ops.dsconv_ext._cuda_*. A separate
// module from _C, so a CPU-only machine's _C never needs the CUDA libraries.
#include <Python.h>

extern "C" {
PyObject* PyInit__C_cuda(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C_cuda",  // name
      "dsconv_ext CUDA kernels (registered as torch.ops.dsconv_ext._cuda_*)",
      -1,  // per-interpreter state size
      NULL,  // methods
  };
  return PyModule_Create(&module_def);
}
}
