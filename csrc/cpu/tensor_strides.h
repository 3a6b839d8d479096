// Element strides of a 4-D tensor, so that one kernel serves NCHW, channels_last and views.
#pragma once

#include <ATen/ATen.h>

namespace dsconv_ext {
namespace cpu {

struct Strides4 {
  int64_t n, c, h, w;
  explicit Strides4(const at::Tensor& t)
      : n(t.stride(0)), c(t.stride(1)), h(t.stride(2)), w(t.stride(3)) {}
  Strides4(int64_t n_, int64_t c_, int64_t h_, int64_t w_) : n(n_), c(c_), h(h_), w(w_) {}
};

}  // namespace cpu
}  // namespace dsconv_ext
