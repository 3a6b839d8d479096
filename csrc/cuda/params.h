// Parameter structs passed by value to every CUDA kernel, and seen by the host code that fills
// them (plain C++, no CUDA headers, so the .cpp files can include it).
#pragma once

#include <cstdint>

namespace dsconv_ext {
namespace cuda {

constexpr int kFamilyExplicit = 0;
constexpr int kFamilyDog = 1;
constexpr int kFamilyBank = 2;

// Where a block takes its taps from. All pointers are device pointers to small, contiguous
// tensors prepared by the host (fp32, or fp64 for the DoG parameters so that the synthesis
// matches the CPU backend's fp64 one).
struct TapSource {
  int family;
  int kh, kw;
  int flip;        // grad-input as a correlation: taps reversed along both axes
  int integrated;  // DoG profile: pixel-integrated (1) or point-sampled (0)
  int num_bank;    // bank: M
  const float* weight;   // explicit: [C, kh*kw]
  const double* params;  // dog: [C, 10]
  const float* bank;     // bank: [M, kh*kw]
  const float* coeffs;   // bank: [C, M]
  const float* offset;   // bank: [C] or nullptr
};

// One depthwise correlation out[n, c, oy, ox] = sum_ij tap(c, i, j) * in[n, c, iy, ix] with
// iy = oy * stride_h - pad_top + i * dil_h (same for x). "in" and "out" are the tensors the
// kernel reads and writes: (x, y) for the forward pass, (grad_out, grad_x) for grad-input,
// where the pads may be negative. Strides are in elements, so NCHW, channels_last and strided
// views share one code path.
struct ConvParams {
  int64_t batch, channels;
  int in_h, in_w, out_h, out_w;
  int kh, kw, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left;
  int64_t in_sn, in_sc, in_sh, in_sw;
  int64_t out_sn, out_sc, out_sh, out_sw;
};

}  // namespace cuda
}  // namespace dsconv_ext
