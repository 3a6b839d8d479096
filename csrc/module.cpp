// The Python module dsconv_ext._C. Importing it loads this library, whose static
// TORCH_LIBRARY registrations make the native kernels visible under torch.ops.dsconv_ext.
// No pybind11: the module exposes nothing itself, so it can use the stable limited API.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "dsconv_ext native kernels (registered as torch.ops.dsconv_ext._*)",
      -1,    // per-interpreter state size
      NULL,  // methods
  };
  return PyModule_Create(&module_def);
}
}
