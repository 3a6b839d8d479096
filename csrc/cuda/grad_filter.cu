// Filter and bias gradients: gw[c, i, j] = sum_{n, oy, ox} gy[n, c, oy, ox] * x[n, c, iy, ix] and
// gb[c] = sum gy, reduced in fp32. The result is one [C, taps + 1] buffer (bias last).
//
// Work split: blocks are (split s, channel or channel group); split s owns a fixed,
// shape-derived slice of the output pixels and produces one partial sum per (channel, item).
// Deterministic mode writes the partials to a workspace [S, C, taps + 1] that a second kernel
// adds in split order; otherwise they are atomically added to the zeroed result. Inside a
// block every thread accumulates in registers in a fixed order and threads are combined by
// fixed shuffle / shared-memory trees, so the deterministic result depends only on the shape
// and the device's SM count (which sets S).
//
// * nchw: 32 x 32 output tiles of one plane staged in shared memory with the input halo;
//   compile-time K: each thread owns a column of 8 outputs and all K*K taps in registers
//   (0.25 shared loads per FMA at K = 7 with stride_h = dil_h = 1); runtime K: each thread owns
//   (tap, pixel slice) pairs.
// * channels_last: a thread owns one channel (lanes = consecutive channels, so warp loads are
//   contiguous) and 4 consecutive outputs of a row; compile-time K keeps all taps in registers
//   and slides the input along the row; runtime K gives each thread a few taps (tap-owner).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <type_traits>

#include "common.cuh"
#include "launch.h"

namespace dsconv_ext {
namespace cuda {
namespace {

constexpr int kTileW = 32;
constexpr int kTileThreadsY = 4;
constexpr int kRowsPerThread = 8;
constexpr int kTileH = kTileThreadsY * kRowsPerThread;
constexpr int kNchwThreads = kTileW * kTileThreadsY;
constexpr int kClCols = 4;
constexpr int kClThreads = 256;
constexpr int kClChunk = 8;        // taps combined per round of the channels_last block reduction
constexpr int kTapsPerThread = 4;  // runtime-K channels_last: taps a thread accumulates per pass
constexpr size_t kSmemBudget = 48 * 1024;

__device__ __forceinline__ void emit(float* dst, int64_t index, float value, bool atomic) {
  if (atomic) atomicAdd(dst + index, value);
  else dst[index] = value;
}

// Fixed-order tree: the same lanes are added in the same order on every run.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// p: "in" = x, "out" = grad_out. dst: this split's partials (deterministic) or the result.
template <typename scalar_t, int K>
__global__ void __launch_bounds__(kNchwThreads)
    grad_filter_nchw_kernel(ConvParams p, const scalar_t* __restrict__ gy, const scalar_t* __restrict__ x,
                            float* __restrict__ result, bool atomic, int tiles_w, int tiles_per_plane,
                            int64_t tiles_total, int splits, int in_tile_h, int in_tile_w) {
  extern __shared__ float4 smem_raw[];
  float* s_gy = reinterpret_cast<float*>(smem_raw);    // [kTileH][kTileW]
  float* s_x = s_gy + kTileH * kTileW;                  // [in_tile_h][in_tile_w]
  float* s_acc = s_x + in_tile_h * in_tile_w;           // K > 0: [warps][items]; K == 0: [slices][items]
  const int kh = K > 0 ? K : p.kh, kw = K > 0 ? K : p.kw;
  const int taps = kh * kw, items = taps + 1;
  const int64_t c = blockIdx.y;
  const int split = blockIdx.x;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kTileW + tx;
  const int64_t first = tiles_total * split / splits, last = tiles_total * (split + 1) / splits;
  float* dst = atomic ? result : result + static_cast<int64_t>(split) * p.channels * items;

  // Runtime K: thread owns items item0, item0 + T, ... over pixels slice, slice + slices, ...
  const int owners = min(items, kNchwThreads);
  const int slices = kNchwThreads / owners;
  const int item0 = tid % owners, slice = tid / owners;
  if constexpr (K == 0) {
    for (int e = tid; e < slices * items; e += kNchwThreads) s_acc[e] = 0.f;
  }

  constexpr int KK = K > 0 ? K * K : 1;
  float acc[KK];
#pragma unroll
  for (int t = 0; t < KK; ++t) acc[t] = 0.f;
  float bias_acc = 0.f;
  const int ry0 = ty * kRowsPerThread, col = tx * p.stride_w;

  for (int64_t tile_id = first; tile_id < last; ++tile_id) {
    const int64_t n = tile_id / tiles_per_plane;
    const int tile = static_cast<int>(tile_id - n * tiles_per_plane);
    const int oy0 = (tile / tiles_w) * kTileH, ox0 = (tile % tiles_w) * kTileW;
    __syncthreads();  // the previous tile's reads are done
    const scalar_t* gy_plane = gy + n * p.out_sn + c * p.out_sc;
    for (int r = ty; r < kTileH; r += kTileThreadsY) {
      const int oy = oy0 + r, ox = ox0 + tx;
      s_gy[r * kTileW + tx] =
          (oy < p.out_h && ox < p.out_w) ? static_cast<float>(gy_plane[oy * p.out_sh + ox * p.out_sw]) : 0.f;
    }
    const int iy0 = oy0 * p.stride_h - p.pad_top, ix0 = ox0 * p.stride_w - p.pad_left;
    const scalar_t* x_plane = x + n * p.in_sn + c * p.in_sc;
    for (int r = ty; r < in_tile_h; r += kTileThreadsY) {
      const int iy = iy0 + r;
      const bool row_inside = iy >= 0 && iy < p.in_h;
      for (int q = tx; q < in_tile_w; q += kTileW) {
        const int ix = ix0 + q;
        s_x[r * in_tile_w + q] =
            (row_inside && ix >= 0 && ix < p.in_w) ? static_cast<float>(x_plane[iy * p.in_sh + ix * p.in_sw]) : 0.f;
      }
    }
    __syncthreads();

    if constexpr (K > 0) {
      float g[kRowsPerThread];
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        g[r] = s_gy[(ry0 + r) * kTileW + tx];
        bias_acc += g[r];
      }
      if (p.stride_h == 1 && p.dil_h == 1) {
#pragma unroll
        for (int u = 0; u < kRowsPerThread + K - 1; ++u) {
          const float* row = s_x + (ry0 + u) * in_tile_w + col;
#pragma unroll
          for (int j = 0; j < K; ++j) {
            const float v = row[j * p.dil_w];
#pragma unroll
            for (int r = 0; r < kRowsPerThread; ++r) {
              const int i = u - r;
              if (i >= 0 && i < K) acc[i * K + j] = fmaf(g[r], v, acc[i * K + j]);
            }
          }
        }
      } else {
#pragma unroll
        for (int r = 0; r < kRowsPerThread; ++r) {
#pragma unroll
          for (int i = 0; i < K; ++i) {
            const float* row = s_x + ((ry0 + r) * p.stride_h + i * p.dil_h) * in_tile_w + col;
#pragma unroll
            for (int j = 0; j < K; ++j) acc[i * K + j] = fmaf(g[r], row[j * p.dil_w], acc[i * K + j]);
          }
        }
      }
    } else {
      if (slice < slices) {
        for (int item = item0; item < items; item += owners) {
          float a = 0.f;
          if (item == taps) {
            for (int q = slice; q < kTileH * kTileW; q += slices) a += s_gy[q];
          } else {
            const int i = item / kw, j = item - (item / kw) * kw;
            const float* base = s_x + i * p.dil_h * in_tile_w + j * p.dil_w;
            for (int q = slice; q < kTileH * kTileW; q += slices) {
              const int qy = q / kTileW, qx = q % kTileW;
              a = fmaf(s_gy[q], base[qy * p.stride_h * in_tile_w + qx * p.stride_w], a);
            }
          }
          s_acc[slice * items + item] += a;  // (slice, item) has one owner
        }
      }
    }
  }

  if constexpr (K > 0) {
    const int warp = tid / 32, lane = tid % 32;
    constexpr int kWarps = kNchwThreads / 32;
#pragma unroll
    for (int t = 0; t < KK + 1; ++t) {
      const float v = warp_sum(t < KK ? acc[t] : bias_acc);
      if (lane == 0) s_acc[warp * (KK + 1) + t] = v;
    }
    __syncthreads();
    for (int t = tid; t < KK + 1; t += kNchwThreads) {
      float v = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) v += s_acc[w * (KK + 1) + t];
      emit(dst, c * items + t, v, atomic);
    }
  } else {
    __syncthreads();
    for (int item = tid; item < items; item += kNchwThreads) {
      float v = 0.f;
      for (int s = 0; s < slices; ++s) v += s_acc[s * items + item];
      emit(dst, c * items + item, v, atomic);
    }
  }
}

// p: "in" = x, "out" = grad_out, both with unit channel stride. Block (bx channels, by rows).
template <typename scalar_t, int K>
__global__ void __launch_bounds__(kClThreads)
    grad_filter_channels_last_kernel(ConvParams p, const scalar_t* __restrict__ gy, const scalar_t* __restrict__ x,
                                     float* __restrict__ result, bool atomic, int64_t units, int strips, int splits) {
  extern __shared__ float4 smem_raw[];
  float* s_red = reinterpret_cast<float*>(smem_raw);  // K > 0: [kClChunk][by][bx]
  const int kh = K > 0 ? K : p.kh, kw = K > 0 ? K : p.kw;
  const int taps = kh * kw, items = taps + 1;
  const int bx = blockDim.x, by = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * bx + tx;
  const bool active = c < p.channels;
  const int split = blockIdx.x;
  const int64_t first = units * split / splits, last = units * (split + 1) / splits;
  float* dst = atomic ? result : result + static_cast<int64_t>(split) * p.channels * items;
  const scalar_t* x_c = x + c;
  const scalar_t* gy_c = gy + c;

  if constexpr (K > 0) {
    constexpr int R = kClCols;
    constexpr int KK = K * K;
    float acc[KK];
#pragma unroll
    for (int t = 0; t < KK; ++t) acc[t] = 0.f;
    float bias_acc = 0.f;
    if (active) {
      for (int64_t unit = first + ty; unit < last; unit += by) {
        const int strip = static_cast<int>(unit % strips);
        const int64_t row = unit / strips;
        const int oy = static_cast<int>(row % p.out_h);
        const int64_t n = row / p.out_h;
        const int ox0 = strip * R;
        float g[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const int ox = ox0 + r;
          g[r] = ox < p.out_w ? static_cast<float>(gy_c[n * p.out_sn + oy * p.out_sh + ox * p.out_sw]) : 0.f;
          bias_acc += g[r];
        }
        const scalar_t* x_n = x_c + n * p.in_sn;
        const int iy_base = oy * p.stride_h - p.pad_top;
        if (p.stride_w == 1 && p.dil_w == 1) {
          const int ix_base = ox0 - p.pad_left;
#pragma unroll
          for (int i = 0; i < K; ++i) {
            const int iy = iy_base + i * p.dil_h;
            if (iy < 0 || iy >= p.in_h) continue;
            const scalar_t* x_row = x_n + iy * p.in_sh;
            // Input column q meets output r through kernel column j = q - r.
#pragma unroll
            for (int q = 0; q < R + K - 1; ++q) {
              const int ix = ix_base + q;
              if (ix < 0 || ix >= p.in_w) continue;
              const float v = static_cast<float>(x_row[ix * p.in_sw]);
#pragma unroll
              for (int r = 0; r < R; ++r) {
                const int j = q - r;
                if (j >= 0 && j < K) acc[i * K + j] = fmaf(g[r], v, acc[i * K + j]);
              }
            }
          }
        } else {
#pragma unroll
          for (int i = 0; i < K; ++i) {
            const int iy = iy_base + i * p.dil_h;
            if (iy < 0 || iy >= p.in_h) continue;
            const scalar_t* x_row = x_n + iy * p.in_sh;
#pragma unroll
            for (int r = 0; r < R; ++r) {
#pragma unroll
              for (int j = 0; j < K; ++j) {
                const int ix = (ox0 + r) * p.stride_w - p.pad_left + j * p.dil_w;
                if (ix < 0 || ix >= p.in_w) continue;
                acc[i * K + j] = fmaf(g[r], static_cast<float>(x_row[ix * p.in_sw]), acc[i * K + j]);
              }
            }
          }
        }
      }
    }
    // Combine the by threads of each channel, kClChunk items per round, in ty order.
#pragma unroll
    for (int base = 0; base < KK + 1; base += kClChunk) {
#pragma unroll
      for (int q = 0; q < kClChunk; ++q) {
        const int t = base + q;
        if (t < KK + 1) s_red[(q * by + ty) * bx + tx] = t < KK ? acc[t] : bias_acc;
      }
      __syncthreads();
      if (ty < kClChunk && base + ty < KK + 1 && active) {
        float v = 0.f;
        for (int y = 0; y < by; ++y) v += s_red[(ty * by + y) * bx + tx];
        emit(dst, c * items + base + ty, v, atomic);
      }
      __syncthreads();
    }
  } else {
    // Tap-owner: thread row ty owns items ty, ty + by, ...; kTapsPerThread of them per pass over
    // the split's pixels. Every (channel, item) has exactly one owner: no combination needed.
    if (!active) return;  // no barrier in this branch
    for (int base = ty; base < items; base += by * kTapsPerThread) {
      float acc[kTapsPerThread];
      int ti[kTapsPerThread], tj[kTapsPerThread];
#pragma unroll
      for (int q = 0; q < kTapsPerThread; ++q) {
        acc[q] = 0.f;
        const int item = base + q * by;
        ti[q] = item < taps ? item / kw : -1;  // -1: the bias item or past the end
        tj[q] = item < taps ? item - (item / kw) * kw : 0;
      }
      for (int64_t pix = first; pix < last; ++pix) {
        const int ox = static_cast<int>(pix % p.out_w);
        const int64_t row = pix / p.out_w;
        const int oy = static_cast<int>(row % p.out_h);
        const int64_t n = row / p.out_h;
        const float g = static_cast<float>(gy_c[n * p.out_sn + oy * p.out_sh + ox * p.out_sw]);
        const scalar_t* x_n = x_c + n * p.in_sn;
#pragma unroll
        for (int q = 0; q < kTapsPerThread; ++q) {
          if (ti[q] < 0) {
            if (base + q * by == taps) acc[q] += g;
            continue;
          }
          const int iy = oy * p.stride_h - p.pad_top + ti[q] * p.dil_h;
          const int ix = ox * p.stride_w - p.pad_left + tj[q] * p.dil_w;
          if (iy < 0 || iy >= p.in_h || ix < 0 || ix >= p.in_w) continue;
          acc[q] = fmaf(g, static_cast<float>(x_n[iy * p.in_sh + ix * p.in_sw]), acc[q]);
        }
      }
#pragma unroll
      for (int q = 0; q < kTapsPerThread; ++q) {
        const int item = base + q * by;
        if (item < items) emit(dst, c * items + item, acc[q], atomic);
      }
    }
  }
}

__global__ void sum_splits_kernel(const float* __restrict__ partials, float* __restrict__ out, int splits,
                                  int64_t count) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = 0.f;
    for (int s = 0; s < splits; ++s) v += partials[s * count + e];
    out[e] = v;
  }
}

template <typename F>
void dispatch_dtype(at::ScalarType dtype, F&& f) {
  switch (dtype) {
    case at::kFloat: f(float{}); break;
    case at::kHalf: f(c10::Half{}); break;
    case at::kBFloat16: f(c10::BFloat16{}); break;
    default: TORCH_CHECK(false, "dsconv_ext cuda: the CUDA kernels take float32, float16 or bfloat16, got ", dtype);
  }
}

template <typename F>
void dispatch_kernel_size(int kh, int kw, F&& f) {
  if (kh == kw && kh == 3) f(std::integral_constant<int, 3>{});
  else if (kh == kw && kh == 5) f(std::integral_constant<int, 5>{});
  else if (kh == kw && kh == 7) f(std::integral_constant<int, 7>{});
  else f(std::integral_constant<int, 0>{});
}

int compile_time_k(int kh, int kw) { return (kh == kw && (kh == 3 || kh == 5 || kh == 7)) ? kh : 0; }

// Splits so that the grid is a few waves; at most max_splits (each split needs some work).
int choose_splits(int64_t groups, int64_t max_splits) {
  const int64_t target_blocks = static_cast<int64_t>(multiprocessor_count()) * 8;
  const int64_t s = (target_blocks + groups - 1) / groups;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({s, max_splits, 1024})));
}

struct Target {
  at::Tensor result;     // [C, items]
  at::Tensor workspace;  // [S, C, items] in deterministic mode
  float* dst;
};

Target make_target(const at::Tensor& like, int64_t channels, int items, int splits, bool deterministic) {
  Target t;
  const auto options = like.options().dtype(at::kFloat).memory_format(at::MemoryFormat::Contiguous);
  if (deterministic) {
    t.result = at::empty({channels, items}, options);
    t.workspace = at::empty({splits, channels, items}, options);
    t.dst = t.workspace.mutable_data_ptr<float>();
  } else {
    t.result = at::zeros({channels, items}, options);
    t.dst = t.result.mutable_data_ptr<float>();
  }
  return t;
}

void finish_target(Target& t, int splits) {
  if (!t.workspace.defined()) return;
  const int64_t count = t.result.numel();
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((count + threads - 1) / threads, 4096);
  sum_splits_kernel<<<static_cast<unsigned>(std::max<int64_t>(blocks, 1)), threads, 0,
                      c10::cuda::getCurrentCUDAStream()>>>(t.workspace.const_data_ptr<float>(),
                                                           t.result.mutable_data_ptr<float>(), splits, count);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Returns false when the staged tiles do not fit; the caller then takes the channels_last path.
bool launch_nchw(const at::Tensor& gy, const at::Tensor& x, const ConvParams& p, bool deterministic,
                 at::Tensor& result) {
  const int taps = p.kh * p.kw, items = taps + 1;
  const int in_tile_h = (kTileH - 1) * p.stride_h + (p.kh - 1) * p.dil_h + 1;
  const int in_tile_w = (kTileW - 1) * p.stride_w + (p.kw - 1) * p.dil_w + 1;
  const bool compile_k = compile_time_k(p.kh, p.kw) > 0;
  const int owners = std::min(items, kNchwThreads), slices = kNchwThreads / owners;
  const size_t acc_floats = compile_k ? static_cast<size_t>(kNchwThreads / 32) * items
                                      : static_cast<size_t>(slices) * items;
  const size_t smem = (static_cast<size_t>(kTileH) * kTileW + static_cast<size_t>(in_tile_h) * in_tile_w + acc_floats) *
                      sizeof(float);
  if (smem > kSmemBudget || p.channels > 65535) return false;
  const int tiles_w = (p.out_w + kTileW - 1) / kTileW, tiles_h = (p.out_h + kTileH - 1) / kTileH;
  const int64_t tiles_total = p.batch * tiles_w * tiles_h;
  const int splits = choose_splits(p.channels, tiles_total);
  Target target = make_target(x, p.channels, items, splits, deterministic);
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(p.channels));
  const dim3 block(kTileW, kTileThreadsY);
  dispatch_dtype(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    dispatch_kernel_size(p.kh, p.kw, [&](auto k) {
      grad_filter_nchw_kernel<scalar_t, decltype(k)::value><<<grid, block, smem, c10::cuda::getCurrentCUDAStream()>>>(
          p, gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), target.dst, !deterministic, tiles_w,
          tiles_w * tiles_h, tiles_total, splits, in_tile_h, in_tile_w);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  finish_target(target, splits);
  result = target.result;
  return true;
}

at::Tensor launch_channels_last(const at::Tensor& gy, const at::Tensor& x, const ConvParams& p, bool deterministic) {
  const int taps = p.kh * p.kw, items = taps + 1;
  const bool compile_k = compile_time_k(p.kh, p.kw) > 0;
  const int bx = static_cast<int>(std::min<int64_t>(p.channels, 32));
  const int by = kClThreads / bx;  // >= 8 = kClChunk
  const int64_t groups = (p.channels + bx - 1) / bx;
  TORCH_CHECK(groups <= 65535, "dsconv_ext cuda: too many channels (", p.channels, ")");
  const int strips = compile_k ? (p.out_w + kClCols - 1) / kClCols : p.out_w;
  const int64_t units = p.batch * p.out_h * strips;
  const int64_t min_units_per_split = compile_k ? by : 64;
  const int splits = choose_splits(groups, std::max<int64_t>(1, units / min_units_per_split));
  const size_t smem = compile_k ? static_cast<size_t>(kClChunk) * by * bx * sizeof(float) : 0;
  Target target = make_target(x, p.channels, items, splits, deterministic);
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(groups));
  const dim3 block(bx, by);
  dispatch_dtype(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    dispatch_kernel_size(p.kh, p.kw, [&](auto k) {
      grad_filter_channels_last_kernel<scalar_t, decltype(k)::value>
          <<<grid, block, smem, c10::cuda::getCurrentCUDAStream()>>>(p, gy.const_data_ptr<scalar_t>(),
                                                                    x.const_data_ptr<scalar_t>(), target.dst,
                                                                    !deterministic, units, strips, splits);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  finish_target(target, splits);
  return target.result;
}

ConvParams filter_params(const ConvGeometry& g, const at::Tensor& x, const at::Tensor& gy) {
  ConvParams p{};
  p.batch = g.batch;
  p.channels = g.channels;
  p.in_h = static_cast<int>(g.in_h);
  p.in_w = static_cast<int>(g.in_w);
  p.out_h = static_cast<int>(g.out_h);
  p.out_w = static_cast<int>(g.out_w);
  p.kh = static_cast<int>(g.kernel_h);
  p.kw = static_cast<int>(g.kernel_w);
  p.stride_h = static_cast<int>(g.stride_h);
  p.stride_w = static_cast<int>(g.stride_w);
  p.dil_h = static_cast<int>(g.dilation_h);
  p.dil_w = static_cast<int>(g.dilation_w);
  p.pad_top = static_cast<int>(g.pad_top);
  p.pad_left = static_cast<int>(g.pad_left);
  p.in_sn = x.stride(0), p.in_sc = x.stride(1), p.in_sh = x.stride(2), p.in_sw = x.stride(3);
  p.out_sn = gy.stride(0), p.out_sc = gy.stride(1), p.out_sh = gy.stride(2), p.out_sw = gy.stride(3);
  return p;
}

}  // namespace

at::Tensor run_grad_filter(const at::Tensor& grad_out, const at::Tensor& x, const ConvGeometry& g, bool channels_last,
                           bool deterministic) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t items = g.kernel_h * g.kernel_w + 1;
  if (grad_out.numel() == 0 || x.numel() == 0) {
    return at::zeros({g.channels, items}, x.options().dtype(at::kFloat));
  }
  // Narrow NCHW planes fill few lanes of a 32-wide tile: such layers take the channels_last
  // path on copies, as in forward.
  if (!channels_last && g.out_w >= 16) {
    at::Tensor result;
    if (launch_nchw(grad_out, x, filter_params(g, x, grad_out), deterministic, result)) return result;
  }
  const at::Tensor xc = x.stride(1) == 1 ? x : x.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor gyc = grad_out.stride(1) == 1 ? grad_out : grad_out.contiguous(at::MemoryFormat::ChannelsLast);
  return launch_channels_last(gyc, xc, filter_params(g, xc, gyc), deterministic);
}

}  // namespace cuda
}  // namespace dsconv_ext
