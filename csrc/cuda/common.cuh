// Shared device-side pieces of the CUDA backend: element conversions and 16-byte
// channel-vector loads, and the block prologue that generates
// the filter taps of the block's channels in shared memory from whichever family describes
// them (explicit weights, DoG-jet parameters, or bank coefficients).
//
// Indexing: every tensor is addressed through int64 element strides (batch and channel offsets
// can exceed 2^31 elements); coordinates inside one image (rows, columns, taps) are int, which
// the host checks (check_int_range in host.cpp).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "dog_math.cuh"
#include "params.h"

namespace dsconv_ext {
namespace cuda {

// Elements of scalar_t in one 16-byte vector.
template <typename scalar_t>
struct VecWidth {
  static constexpr int value = 16 / sizeof(scalar_t);
};

__device__ __forceinline__ int tid_in_block() { return threadIdx.y * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int block_threads() { return blockDim.x * blockDim.y; }

// V consecutive channels at p (channel stride 1) as floats. `valid` < V at the channel tail;
// `vec_ok` says that p is 16-byte aligned for every pixel (checked on the host once).
template <typename scalar_t, int V>
__device__ __forceinline__ void load_channels(const scalar_t* __restrict__ p, int valid, bool vec_ok, float (&out)[V]) {
  if (vec_ok && valid >= V) {
    const int4 raw = __ldg(reinterpret_cast<const int4*>(p));
    const scalar_t* s = reinterpret_cast<const scalar_t*>(&raw);
#pragma unroll
    for (int l = 0; l < V; ++l) out[l] = static_cast<float>(s[l]);
  } else {
#pragma unroll
    for (int l = 0; l < V; ++l) out[l] = l < valid ? static_cast<float>(p[l]) : 0.f;
  }
}

template <typename scalar_t, int V>
__device__ __forceinline__ void store_channels(scalar_t* __restrict__ p, int valid, bool vec_ok, const float (&v)[V]) {
  if (vec_ok && valid >= V) {
    int4 raw;
    scalar_t* s = reinterpret_cast<scalar_t*>(&raw);
#pragma unroll
    for (int l = 0; l < V; ++l) s[l] = static_cast<scalar_t>(v[l]);
    *reinterpret_cast<int4*>(p) = raw;
  } else {
#pragma unroll
    for (int l = 0; l < V; ++l)
      if (l < valid) p[l] = static_cast<scalar_t>(v[l]);
  }
}

// Shared-memory floats the DoG synthesis needs per channel: the order-0..2 profiles along y and
// x at sigma, and the order-0 surround profiles along y and x at sigma / gamma.
__host__ __device__ inline int dog_scratch_per_channel(int kh, int kw) { return 4 * (kh + kw); }

// Fills s_taps[t * cb + cl] (t = i * kw + j, cl = c - c0) with the taps of channels
// c0 .. c0 + cb - 1, zero for channels >= C, rounded to scalar_t like the weight tensor the
// other backends build. Every thread of the block must call it; the caller synchronises
// before reading s_taps. s_scratch needs cb * dog_scratch_per_channel floats for the DoG family.
template <typename scalar_t>
__device__ void fill_taps(const TapSource& src, float* __restrict__ s_taps, float* __restrict__ s_scratch,
                          int64_t c0, int cb, int64_t channels) {
  const int kh = src.kh, kw = src.kw, taps = kh * kw;
  const int tid = tid_in_block(), nthreads = block_threads();
  const int per_channel = dog_scratch_per_channel(kh, kw);
  if (src.family == kFamilyDog) {
    // Phase 1: the 1-D profiles, once per (channel, axis position); the 2-D taps are sums of
    // their products, so the special functions are evaluated (kh + kw) times, not kh * kw.
    for (int item = tid; item < cb * (kh + kw); item += nthreads) {
      const int cl = item / (kh + kw), pos = item - cl * (kh + kw);
      const int64_t c = c0 + cl;
      if (c >= channels) continue;
      const double* a = src.params + c * kDogNumParams;
      const double sigma = dog_sigma(a[kDogRho]), gamma = dog_gamma(a[kDogTau]);
      const bool along_y = pos < kh;
      const int n = along_y ? pos : pos - kh, size = along_y ? kh : kw;
      double jet[3], surround[3];
      dog_profile(n, size, sigma, src.integrated != 0, jet, nullptr);
      dog_profile(n, size, sigma / gamma, src.integrated != 0, surround, nullptr);
      float* sc = s_scratch + cl * per_channel;
      if (along_y) {
        for (int m = 0; m < 3; ++m) sc[m * kh + n] = static_cast<float>(jet[m]);
        sc[3 * (kh + kw) + n] = static_cast<float>(surround[0]);
      } else {
        for (int m = 0; m < 3; ++m) sc[3 * kh + m * kw + n] = static_cast<float>(jet[m]);
        sc[3 * (kh + kw) + kh + n] = static_cast<float>(surround[0]);
      }
    }
    __syncthreads();
  }
  for (int item = tid; item < cb * taps; item += nthreads) {
    const int t = item / cb, cl = item - t * cb;
    const int64_t c = c0 + cl;
    float value = 0.f;
    if (c < channels) {
      const int ts = src.flip ? taps - 1 - t : t;
      if (src.family == kFamilyExplicit) {
        value = src.weight[c * taps + ts];
      } else if (src.family == kFamilyBank) {
        const float* coeff = src.coeffs + c * src.num_bank;
        float acc = 0.f;
        for (int m = 0; m < src.num_bank; ++m) acc = fmaf(coeff[m], src.bank[static_cast<int64_t>(m) * taps + ts], acc);
        if (src.offset != nullptr) acc += src.offset[c];
        value = acc;
      } else {
        const int i = ts / kw, j = ts - (ts / kw) * kw;
        const double* a = src.params + c * kDogNumParams;
        const float* sc = s_scratch + cl * per_channel;
        const float* py = sc;                   // [3][kh]
        const float* px = sc + 3 * kh;          // [3][kw]
        const float* sy = sc + 3 * (kh + kw);   // [kh]
        const float* sx = sy + kh;              // [kw]
        double v = a[7] + a[6] * (static_cast<double>(sy[i]) * sx[j]);
#pragma unroll
        for (int b = 0; b < 6; ++b)
          v += a[b] * (static_cast<double>(py[kDogOrderY[b] * kh + i]) * px[kDogOrderX[b] * kw + j]);
        value = static_cast<float>(v);
      }
      value = static_cast<float>(static_cast<scalar_t>(value));
    }
    s_taps[t * cb + cl] = value;
  }
}

}  // namespace cuda
}  // namespace dsconv_ext
