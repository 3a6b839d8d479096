// Forward and grad-input correlation kernels, shared by the three op families (the family only
// changes how fill_taps builds the block's taps).
//
// * nchw_tile: one (n, c) plane tile of 32 x 32 outputs per block of 32 x 4 threads. The input
//   tile with its halo is staged in shared memory as fp32 (loads coalesced along the row when
//   the width stride is 1, whatever the other strides); each thread computes a column of 8
//   outputs. With stride_h = dil_h = 1 every staged value is loaded once per thread into a
//   register and reused for the up-to-K output rows it touches (0.25 shared loads per FMA at
//   K = 7); lanes read consecutive columns, so the loads are bank-conflict free.
// * channels_last: a thread owns V channels (one 16-byte vector) and 4 consecutive outputs of a
//   row; the taps of the block's channels sit in shared memory as [tap][channel] so a thread
//   reads its V taps with vector loads. With stride_w = dil_w = 1 the input vectors slide along
//   the row, each loaded once per kernel row. Blocks loop over spatial units so the tap
//   prologue (DoG / bank synthesis) is amortised.
// * gather: one output per thread, runtime everything. It is the fallback (shared-memory
//   budget exceeded) and the grad-input of strided convolutions, a transposed correlation.
//
// K is the compile-time square kernel size (3, 5, 7) or 0 for the runtime path; only these
// 4 x 3 dtypes instantiations of the two tiled kernels exist, which keeps the build short.
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

constexpr int kTileW = 32;           // output columns per nchw block (= threads along x)
constexpr int kTileThreadsY = 4;     // thread rows per nchw block
constexpr int kRowsPerThread = 8;    // output rows per thread
constexpr int kTileH = kTileThreadsY * kRowsPerThread;
constexpr int kClCols = 4;           // outputs along a row per channels_last thread
constexpr int kClThreads = 256;
constexpr int kGatherThreads = 256;
constexpr size_t kSmemBudget = 48 * 1024;  // no opt-in attribute needed on any architecture

__host__ __device__ inline int round_up4(int v) { return (v + 3) / 4 * 4; }

template <typename scalar_t, int K>
__global__ void __launch_bounds__(kTileW * kTileThreadsY)
    conv_nchw_tile_kernel(ConvParams p, TapSource src, const scalar_t* __restrict__ in, const float* __restrict__ bias,
                          scalar_t* __restrict__ out, int tiles_w, int tiles_per_plane, int in_tile_h, int in_tile_w) {
  extern __shared__ float4 smem_raw[];
  float* smem = reinterpret_cast<float*>(smem_raw);
  const int kh = K > 0 ? K : p.kh, kw = K > 0 ? K : p.kw;
  float* s_taps = smem;
  float* s_scratch = s_taps + round_up4(kh * kw);
  float* s_in = s_scratch + (src.family == kFamilyDog ? round_up4(dog_scratch_per_channel(kh, kw)) : 0);

  const int64_t plane = blockIdx.x / tiles_per_plane;
  const int tile = static_cast<int>(blockIdx.x - plane * tiles_per_plane);
  const int64_t n = plane / p.channels, c = plane - n * p.channels;
  const int oy0 = (tile / tiles_w) * kTileH, ox0 = (tile % tiles_w) * kTileW;
  const int tx = threadIdx.x, ty = threadIdx.y;

  fill_taps<scalar_t>(src, s_taps, s_scratch, c, 1, p.channels);

  const int iy0 = oy0 * p.stride_h - p.pad_top, ix0 = ox0 * p.stride_w - p.pad_left;
  const scalar_t* in_plane = in + n * p.in_sn + c * p.in_sc;
  for (int r = ty; r < in_tile_h; r += kTileThreadsY) {
    const int iy = iy0 + r;
    const bool row_inside = iy >= 0 && iy < p.in_h;
    for (int q = tx; q < in_tile_w; q += kTileW) {
      const int ix = ix0 + q;
      float v = 0.f;
      if (row_inside && ix >= 0 && ix < p.in_w) v = static_cast<float>(in_plane[iy * p.in_sh + ix * p.in_sw]);
      s_in[r * in_tile_w + q] = v;
    }
  }
  __syncthreads();

  float acc[kRowsPerThread];
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) acc[r] = 0.f;
  const int ry0 = ty * kRowsPerThread;
  const int col = tx * p.stride_w;
  bool done = false;
  if constexpr (K > 0) {
    if (p.stride_h == 1 && p.dil_h == 1) {
      float w[K * K];
#pragma unroll
      for (int t = 0; t < K * K; ++t) w[t] = s_taps[t];
      // Staged row ry0 + u feeds output row r through kernel row i = u - r.
#pragma unroll
      for (int u = 0; u < kRowsPerThread + K - 1; ++u) {
        const float* row = s_in + (ry0 + u) * in_tile_w + col;
#pragma unroll
        for (int j = 0; j < K; ++j) {
          const float v = row[j * p.dil_w];
#pragma unroll
          for (int r = 0; r < kRowsPerThread; ++r) {
            const int i = u - r;
            if (i >= 0 && i < K) acc[r] = fmaf(w[i * K + j], v, acc[r]);
          }
        }
      }
      done = true;
    }
  }
  if (!done) {
#pragma unroll 1
    for (int i = 0; i < kh; ++i) {
      for (int j = 0; j < kw; ++j) {
        const float tap = s_taps[i * kw + j];
        const float* base = s_in + (ry0 * p.stride_h + i * p.dil_h) * in_tile_w + col + j * p.dil_w;
#pragma unroll
        for (int r = 0; r < kRowsPerThread; ++r) acc[r] = fmaf(tap, base[r * p.stride_h * in_tile_w], acc[r]);
      }
    }
  }

  const int ox = ox0 + tx;
  if (ox >= p.out_w) return;
  const float b = bias != nullptr ? bias[c] : 0.f;
  scalar_t* out_col = out + n * p.out_sn + c * p.out_sc + ox * p.out_sw;
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    const int oy = oy0 + ry0 + r;
    if (oy < p.out_h) out_col[oy * p.out_sh] = static_cast<scalar_t>(acc[r] + b);
  }
}

template <typename scalar_t, int K>
__global__ void __launch_bounds__(kClThreads)
    conv_channels_last_kernel(ConvParams p, TapSource src, const scalar_t* __restrict__ in,
                              const float* __restrict__ bias, scalar_t* __restrict__ out, int64_t units, int strips,
                              bool vec_in, bool vec_out) {
  constexpr int V = VecWidth<scalar_t>::value;
  constexpr int R = kClCols;
  extern __shared__ float4 smem_raw[];
  float* s_taps = reinterpret_cast<float*>(smem_raw);
  const int kh = K > 0 ? K : p.kh, kw = K > 0 ? K : p.kw;
  const int cb = blockDim.x * V;
  float* s_scratch = s_taps + kh * kw * cb;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * cb;

  fill_taps<scalar_t>(src, s_taps, s_scratch, c0, cb, p.channels);
  __syncthreads();

  const int cl = threadIdx.x * V;
  const int64_t c = c0 + cl;
  const int valid = static_cast<int>(min(static_cast<int64_t>(V), p.channels - c));
  if (valid <= 0) return;  // past the last channel; no barrier follows
  float bias_v[V];
#pragma unroll
  for (int l = 0; l < V; ++l) bias_v[l] = (bias != nullptr && l < valid) ? bias[c + l] : 0.f;

  for (int64_t unit = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; unit < units;
       unit += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const int strip = static_cast<int>(unit % strips);
    const int64_t row = unit / strips;
    const int oy = static_cast<int>(row % p.out_h);
    const int64_t n = row / p.out_h;
    const int ox0 = strip * R;
    const scalar_t* in_n = in + n * p.in_sn + c;
    const int iy_base = oy * p.stride_h - p.pad_top;
    float acc[R][V];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int l = 0; l < V; ++l) acc[r][l] = 0.f;

    bool done = false;
    if constexpr (K > 0) {
      if (p.stride_w == 1 && p.dil_w == 1) {
        const int ix_base = ox0 - p.pad_left;
        for (int i = 0; i < K; ++i) {
          const int iy = iy_base + i * p.dil_h;
          if (iy < 0 || iy >= p.in_h) continue;
          float w[K][V];
#pragma unroll
          for (int j = 0; j < K; ++j) {
            const float4* tp = reinterpret_cast<const float4*>(s_taps + (i * K + j) * cb + cl);
#pragma unroll
            for (int v4 = 0; v4 < V / 4; ++v4) {
              const float4 t4 = tp[v4];
              w[j][4 * v4 + 0] = t4.x;
              w[j][4 * v4 + 1] = t4.y;
              w[j][4 * v4 + 2] = t4.z;
              w[j][4 * v4 + 3] = t4.w;
            }
          }
          const scalar_t* in_row = in_n + iy * p.in_sh;
          // Input column q feeds output r through kernel column j = q - r.
#pragma unroll
          for (int q = 0; q < R + K - 1; ++q) {
            const int ix = ix_base + q;
            if (ix < 0 || ix >= p.in_w) continue;
            float xv[V];
            load_channels<scalar_t, V>(in_row + ix * p.in_sw, valid, vec_in, xv);
#pragma unroll
            for (int r = 0; r < R; ++r) {
              const int j = q - r;
              if (j >= 0 && j < K) {
#pragma unroll
                for (int l = 0; l < V; ++l) acc[r][l] = fmaf(w[j][l], xv[l], acc[r][l]);
              }
            }
          }
        }
        done = true;
      }
    }
    if (!done) {
#pragma unroll 1
      for (int i = 0; i < kh; ++i) {
        const int iy = iy_base + i * p.dil_h;
        if (iy < 0 || iy >= p.in_h) continue;
        const scalar_t* in_row = in_n + iy * p.in_sh;
#pragma unroll 1
        for (int j = 0; j < kw; ++j) {
          float w[V];
          const float4* tp = reinterpret_cast<const float4*>(s_taps + (i * kw + j) * cb + cl);
#pragma unroll
          for (int v4 = 0; v4 < V / 4; ++v4) {
            const float4 t4 = tp[v4];
            w[4 * v4 + 0] = t4.x;
            w[4 * v4 + 1] = t4.y;
            w[4 * v4 + 2] = t4.z;
            w[4 * v4 + 3] = t4.w;
          }
#pragma unroll
          for (int r = 0; r < R; ++r) {
            const int ix = (ox0 + r) * p.stride_w - p.pad_left + j * p.dil_w;
            if (ix < 0 || ix >= p.in_w) continue;
            float xv[V];
            load_channels<scalar_t, V>(in_row + ix * p.in_sw, valid, vec_in, xv);
#pragma unroll
            for (int l = 0; l < V; ++l) acc[r][l] = fmaf(w[l], xv[l], acc[r][l]);
          }
        }
      }
    }

    scalar_t* out_row = out + n * p.out_sn + c + oy * p.out_sh;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int ox = ox0 + r;
      if (ox >= p.out_w) break;
      float v[V];
#pragma unroll
      for (int l = 0; l < V; ++l) v[l] = acc[r][l] + bias_v[l];
      store_channels<scalar_t, V>(out_row + ox * p.out_sw, valid, vec_out, v);
    }
  }
}

// transposed: out[oy, ox] = sum over (i, j, iy, ix) with iy * stride_h - pad_top + i * dil_h = oy
// (the grad-input of a strided correlation, "in" being grad_out); else a plain correlation.
template <typename scalar_t>
__global__ void __launch_bounds__(kGatherThreads)
    conv_gather_kernel(ConvParams p, TapSource src, const scalar_t* __restrict__ in, const float* __restrict__ bias,
                       scalar_t* __restrict__ out, int cb, bool channel_fastest, bool transposed, int64_t pixels) {
  extern __shared__ float4 smem_raw[];
  float* s_taps = reinterpret_cast<float*>(smem_raw);
  const int kh = p.kh, kw = p.kw;
  float* s_scratch = s_taps + kh * kw * cb;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * cb;
  fill_taps<scalar_t>(src, s_taps, s_scratch, c0, cb, p.channels);
  __syncthreads();

  const int lanes = blockDim.x / cb;  // pixels per block iteration
  const int tid = threadIdx.x;
  if (tid >= lanes * cb) return;
  const int cl = channel_fastest ? tid % cb : tid / lanes;
  const int pl = channel_fastest ? tid / cb : tid % lanes;
  const int64_t c = c0 + cl;
  if (c >= p.channels) return;
  const float b = bias != nullptr ? bias[c] : 0.f;

  for (int64_t q = static_cast<int64_t>(blockIdx.x) * lanes + pl; q < pixels; q += static_cast<int64_t>(gridDim.x) * lanes) {
    const int ox = static_cast<int>(q % p.out_w);
    const int64_t t = q / p.out_w;
    const int oy = static_cast<int>(t % p.out_h);
    const int64_t n = t / p.out_h;
    const scalar_t* base = in + n * p.in_sn + c * p.in_sc;
    float acc = 0.f;
    if (!transposed) {
      for (int i = 0; i < kh; ++i) {
        const int iy = oy * p.stride_h - p.pad_top + i * p.dil_h;
        if (iy < 0 || iy >= p.in_h) continue;
        for (int j = 0; j < kw; ++j) {
          const int ix = ox * p.stride_w - p.pad_left + j * p.dil_w;
          if (ix < 0 || ix >= p.in_w) continue;
          acc = fmaf(s_taps[(i * kw + j) * cb + cl], static_cast<float>(base[iy * p.in_sh + ix * p.in_sw]), acc);
        }
      }
    } else {
      for (int i = 0; i < kh; ++i) {
        const int sy = oy + p.pad_top - i * p.dil_h;  // = iy * stride_h
        if (sy < 0) break;                            // decreases with i
        if (sy % p.stride_h != 0) continue;
        const int iy = sy / p.stride_h;
        if (iy >= p.in_h) continue;
        for (int j = 0; j < kw; ++j) {
          const int sx = ox + p.pad_left - j * p.dil_w;
          if (sx < 0) break;
          if (sx % p.stride_w != 0) continue;
          const int ix = sx / p.stride_w;
          if (ix >= p.in_w) continue;
          acc = fmaf(s_taps[(i * kw + j) * cb + cl], static_cast<float>(base[iy * p.in_sh + ix * p.in_sw]), acc);
        }
      }
    }
    out[n * p.out_sn + c * p.out_sc + oy * p.out_sh + ox * p.out_sw] = static_cast<scalar_t>(acc + b);
  }
}

template <typename F>
void dispatch_dtype(at::ScalarType dtype, const char* what, F&& f) {
  switch (dtype) {
    case at::kFloat: f(float{}); break;
    case at::kHalf: f(c10::Half{}); break;
    case at::kBFloat16: f(c10::BFloat16{}); break;
    default: TORCH_CHECK(false, what, ": the CUDA kernels take float32, float16 or bfloat16, got ", dtype);
  }
}

template <typename F>
void dispatch_kernel_size(int kh, int kw, F&& f) {
  if (kh == kw && kh == 3) f(std::integral_constant<int, 3>{});
  else if (kh == kw && kh == 5) f(std::integral_constant<int, 5>{});
  else if (kh == kw && kh == 7) f(std::integral_constant<int, 7>{});
  else f(std::integral_constant<int, 0>{});
}

void fill_strides(ConvParams& p, const at::Tensor& in, const at::Tensor& out) {
  p.in_sn = in.stride(0), p.in_sc = in.stride(1), p.in_sh = in.stride(2), p.in_sw = in.stride(3);
  p.out_sn = out.stride(0), p.out_sc = out.stride(1), p.out_sh = out.stride(2), p.out_sw = out.stride(3);
}

bool vec_aligned(const at::Tensor& t, int v) {
  return t.stride(1) == 1 && t.size(1) % v == 0 && t.stride(0) % v == 0 && t.stride(2) % v == 0 &&
         t.stride(3) % v == 0 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
}

size_t dog_scratch_bytes(const TapSource& src, int cb) {
  return src.family == kFamilyDog ? static_cast<size_t>(cb) * dog_scratch_per_channel(src.kh, src.kw) * sizeof(float)
                                  : 0;
}

void launch_gather(const at::Tensor& in, at::Tensor& out, ConvParams p, const TapSource& src, const float* bias,
                   bool channel_fastest, bool transposed) {
  const int taps = p.kh * p.kw;
  int cb = channel_fastest ? static_cast<int>(std::min<int64_t>(p.channels, 32)) : 1;
  auto smem_for = [&](int channels) {
    return static_cast<size_t>(taps) * channels * sizeof(float) + dog_scratch_bytes(src, channels);
  };
  while (cb > 1 && smem_for(cb) > kSmemBudget) cb /= 2;
  TORCH_CHECK(smem_for(cb) <= kSmemBudget, "dsconv_ext cuda: kernel ", p.kh, "x", p.kw,
              " is too large for the CUDA kernels (one channel's taps must fit in 48 KB of shared memory)");
  const int64_t pixels = p.batch * p.out_h * p.out_w;
  const int lanes = kGatherThreads / cb;
  const int64_t groups = (p.channels + cb - 1) / cb;
  TORCH_CHECK(groups <= 65535, "dsconv_ext cuda: too many channels (", p.channels, ")");
  const int64_t wanted = std::max<int64_t>(1, multiprocessor_count() * 16 / groups);
  const int64_t blocks = std::min<int64_t>((pixels + lanes - 1) / lanes, wanted);
  const dim3 grid(static_cast<unsigned>(std::max<int64_t>(blocks, 1)), static_cast<unsigned>(groups));
  dispatch_dtype(in.scalar_type(), "dsconv_ext cuda", [&](auto tag) {
    using scalar_t = decltype(tag);
    conv_gather_kernel<scalar_t><<<grid, kGatherThreads, smem_for(cb), c10::cuda::getCurrentCUDAStream()>>>(
        p, src, in.const_data_ptr<scalar_t>() , bias, out.mutable_data_ptr<scalar_t>(), cb, channel_fastest,
        transposed, pixels);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void launch_nchw_tile(const at::Tensor& in, at::Tensor& out, ConvParams p, const TapSource& src, const float* bias) {
  const int in_tile_h = (kTileH - 1) * p.stride_h + (p.kh - 1) * p.dil_h + 1;
  const int in_tile_w = (kTileW - 1) * p.stride_w + (p.kw - 1) * p.dil_w + 1;
  const size_t smem = (round_up4(p.kh * p.kw) + (src.family == kFamilyDog ? round_up4(dog_scratch_per_channel(p.kh, p.kw)) : 0) +
                       static_cast<size_t>(in_tile_h) * in_tile_w) * sizeof(float);
  if (smem > kSmemBudget) {  // very large dilated kernels: no staging
    launch_gather(in, out, p, src, bias, /*channel_fastest=*/false, /*transposed=*/false);
    return;
  }
  const int tiles_w = (p.out_w + kTileW - 1) / kTileW, tiles_h = (p.out_h + kTileH - 1) / kTileH;
  const int64_t blocks = p.batch * p.channels * tiles_w * tiles_h;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "dsconv_ext cuda: input too large for one launch");
  const dim3 block(kTileW, kTileThreadsY);
  dispatch_dtype(in.scalar_type(), "dsconv_ext cuda", [&](auto tag) {
    using scalar_t = decltype(tag);
    dispatch_kernel_size(p.kh, p.kw, [&](auto k) {
      conv_nchw_tile_kernel<scalar_t, decltype(k)::value>
          <<<static_cast<unsigned>(blocks), block, smem, c10::cuda::getCurrentCUDAStream()>>>(
              p, src, in.const_data_ptr<scalar_t>(), bias, out.mutable_data_ptr<scalar_t>(), tiles_w,
              tiles_w * tiles_h, in_tile_h, in_tile_w);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

// `in` has unit channel stride.
void launch_channels_last(const at::Tensor& in, at::Tensor& out, ConvParams p, const TapSource& src,
                          const float* bias) {
  const int v = static_cast<int>(16 / in.element_size());
  const int taps = p.kh * p.kw;
  const int64_t vectors = (p.channels + v - 1) / v;
  int bx = static_cast<int>(std::min<int64_t>(vectors, 32));
  auto smem_for = [&](int lanes) {
    return static_cast<size_t>(taps) * lanes * v * sizeof(float) + dog_scratch_bytes(src, lanes * v);
  };
  while (bx > 1 && smem_for(bx) > kSmemBudget) --bx;
  if (smem_for(bx) > kSmemBudget) {
    launch_gather(in, out, p, src, bias, /*channel_fastest=*/true, /*transposed=*/false);
    return;
  }
  const int by = std::max(1, kClThreads / bx);
  const int strips = (p.out_w + kClCols - 1) / kClCols;
  const int64_t units = p.batch * p.out_h * strips;
  const int64_t groups = (vectors + bx - 1) / bx;
  TORCH_CHECK(groups <= 65535, "dsconv_ext cuda: too many channels (", p.channels, ")");
  const int64_t wanted = std::max<int64_t>(1, multiprocessor_count() * 16 / groups);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((units + by - 1) / by, wanted));
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(groups));
  const dim3 block(bx, by);
  const bool vec_in = vec_aligned(in, v), vec_out = vec_aligned(out, v);
  dispatch_dtype(in.scalar_type(), "dsconv_ext cuda", [&](auto tag) {
    using scalar_t = decltype(tag);
    dispatch_kernel_size(p.kh, p.kw, [&](auto k) {
      conv_channels_last_kernel<scalar_t, decltype(k)::value>
          <<<grid, block, smem_for(bx), c10::cuda::getCurrentCUDAStream()>>>(
              p, src, in.const_data_ptr<scalar_t>(), bias, out.mutable_data_ptr<scalar_t>(), units, strips, vec_in,
              vec_out);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

// Narrow planes fill few lanes of a 32-wide tile; such layers are small, so they run through
// the channels_last kernel on copies (the CPU backend makes the same choice).
constexpr int64_t kNarrowPlane = 16;

// out[.., oy, ox] = correlate(in, taps); chooses the kernel by the output's layout.
void correlate(const at::Tensor& in_arg, at::Tensor& out, ConvParams p, const TapSource& src, const float* bias,
               bool channels_last) {
  if (channels_last) {
    const at::Tensor in = in_arg.stride(1) == 1 ? in_arg : in_arg.contiguous(at::MemoryFormat::ChannelsLast);
    fill_strides(p, in, out);
    launch_channels_last(in, out, p, src, bias);
  } else if (p.out_w < kNarrowPlane && p.channels > 1) {
    const at::Tensor in = in_arg.contiguous(at::MemoryFormat::ChannelsLast);
    at::Tensor tmp = at::empty(out.sizes(), out.options().memory_format(at::MemoryFormat::ChannelsLast));
    fill_strides(p, in, tmp);
    launch_channels_last(in, tmp, p, src, bias);
    out.copy_(tmp);
  } else {
    fill_strides(p, in_arg, out);
    launch_nchw_tile(in_arg, out, p, src, bias);
  }
}

ConvParams base_params(const ConvGeometry& g) {
  ConvParams p{};
  p.batch = g.batch;
  p.channels = g.channels;
  p.kh = static_cast<int>(g.kernel_h);
  p.kw = static_cast<int>(g.kernel_w);
  p.stride_h = static_cast<int>(g.stride_h);
  p.stride_w = static_cast<int>(g.stride_w);
  p.dil_h = static_cast<int>(g.dilation_h);
  p.dil_w = static_cast<int>(g.dilation_w);
  return p;
}

at::MemoryFormat format_of(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

}  // namespace

at::Tensor run_forward(const at::Tensor& x, const HostTaps& taps, const c10::optional<at::Tensor>& bias,
                       const ConvGeometry& g, bool channels_last) {
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty({g.batch, g.channels, g.out_h, g.out_w}, x.options().memory_format(format_of(channels_last)));
  if (y.numel() == 0) return y;
  at::Tensor bias_f;
  if (bias.has_value() && bias->defined()) bias_f = bias->to(at::kFloat).contiguous();
  ConvParams p = base_params(g);
  p.in_h = static_cast<int>(g.in_h);
  p.in_w = static_cast<int>(g.in_w);
  p.out_h = static_cast<int>(g.out_h);
  p.out_w = static_cast<int>(g.out_w);
  p.pad_top = static_cast<int>(g.pad_top);
  p.pad_left = static_cast<int>(g.pad_left);
  TapSource src = taps.src;
  src.flip = 0;
  correlate(x, y, p, src, bias_f.defined() ? bias_f.const_data_ptr<float>() : nullptr, channels_last);
  return y;
}

at::Tensor run_grad_input(const at::Tensor& grad_out, const at::Tensor& x, const HostTaps& taps, const ConvGeometry& g,
                          bool channels_last) {
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(format_of(channels_last)));
  if (grad_x.numel() == 0) return grad_x;
  if (grad_out.numel() == 0) return grad_x.zero_();
  ConvParams p = base_params(g);
  p.in_h = static_cast<int>(g.out_h);
  p.in_w = static_cast<int>(g.out_w);
  p.out_h = static_cast<int>(g.in_h);
  p.out_w = static_cast<int>(g.in_w);
  TapSource src = taps.src;
  if (g.stride_h == 1 && g.stride_w == 1) {
    // grad_x[iy] = sum_i grad_out[iy + pad_top - i * dil] w[i]: a correlation of grad_out with
    // the flipped filter and padding (kh - 1) * dil - pad_top (negative when the padding
    // exceeds the kernel's span, which the kernels' bounds checks handle).
    p.pad_top = static_cast<int>((g.kernel_h - 1) * g.dilation_h - g.pad_top);
    p.pad_left = static_cast<int>((g.kernel_w - 1) * g.dilation_w - g.pad_left);
    src.flip = 1;
    correlate(grad_out, grad_x, p, src, nullptr, channels_last);
  } else {
    p.pad_top = static_cast<int>(g.pad_top);
    p.pad_left = static_cast<int>(g.pad_left);
    src.flip = 0;
    const at::Tensor gy = channels_last && grad_out.stride(1) != 1
                              ? grad_out.contiguous(at::MemoryFormat::ChannelsLast)
                              : grad_out;
    fill_strides(p, gy, grad_x);
    launch_gather(gy, grad_x, p, src, nullptr, /*channel_fastest=*/channels_last, /*transposed=*/true);
  }
  return grad_x;
}

}  // namespace cuda
}  // namespace dsconv_ext
