// NCHW fp32 kernels that read planes in place: vectorised along the width, with masked loads
// standing in for the zero padding (masked_lanes.h). The plane path (phase_plane.h) copies each
// plane into a padded buffer and its result out of another; for small filters on
// feature-map-sized planes those copies cost as much as the multiply-adds.
//
// Used where rows have unit column stride and the output column step is 1 (stride_w == 1);
// the plane path keeps strided columns, bf16/fp16 and builds without masked lanes.
#pragma once

#include <vector>

#include "masked_lanes.h"
#include "prefetch.h"
#include "tap_groups.h"
#include "vec_io.h"

namespace dsconv_ext {
namespace cpu {

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)

// out[oh][ow] = bias + sum over taps (i, j) of w[i * kernel_w + j] *
//     src[oh * row_step + i * dilation_h + row_offset][ow + j * dilation_w + col_offset],
// src read as zero outside [0, src_h) x [0, src_w). Forward: row_step = stride_h, offsets = -pad.
// grad-input at stride 1: src = grad_out, the flipped filter, offsets = pad - (k - 1) * dilation.
struct DirectCorrelation {
  int64_t src_h, src_w, out_h, out_w, kernel_h, kernel_w, row_step, dilation_h, dilation_w, row_offset, col_offset;
  int64_t vecs = 0;         // vectors per output row
  int64_t tile_vecs = 1;    // register tile: 8 / tile_vecs rows x tile_vecs vectors of accumulators
  std::vector<LaneMask> load_masks;   // [vector][kernel column]: lanes whose source column is inside the row
  std::vector<LaneMask> store_masks;  // [vector]: lanes inside the output row

  // Output rows in one tile share source rows only when a tap row's step equals the output's.
  bool shares_rows() const { return row_step == dilation_h; }

  void plan() {
    constexpr int64_t V = at::vec::Vectorized<float>::size();
    vecs = (out_w + V - 1) / V;
    tile_vecs = vecs >= 4 ? 4 : (vecs >= 2 ? 2 : 1);
    const int64_t padded_vecs = round_up(vecs, tile_vecs);
    load_masks.resize(padded_vecs * kernel_w);
    store_masks.resize(padded_vecs);
    for (int64_t v = 0; v < padded_vecs; ++v) {
      // Lanes past the output row stay zero: the weight gradient multiplies them by grad_out.
      const int64_t out_lanes = out_w - v * V;
      store_masks[v] = lane_mask(0, out_lanes);
      for (int64_t j = 0; j < kernel_w; ++j) {
        const int64_t first = v * V + j * dilation_w + col_offset;  // source column of lane 0
        load_masks[v * kernel_w + j] = lane_mask(-first, std::min(src_w - first, out_lanes));
      }
    }
  }
};

// Tile rows read ahead of the one being computed. The tiles' short, overlapping row reads do
// not train the hardware prefetcher: without this, a plane streamed from memory ran at half
// the speed of the plane path that copies it first (measured, 56x56 planes, 3x3).
constexpr int64_t kPrefetchTileRows = 2;

// kRows output rows from oh0 x kVecs vectors from v0: source row k of the tile (counted from the
// first tap row of output row oh0) feeds output row r through kernel row k - r.
// Inlined into its caller: compiled on its own, GCC kept the 4 x 2 tile's accumulators on the stack.
template <int kRows, int kVecs>
__attribute__((always_inline)) inline void direct_tile(const DirectCorrelation& dc, const float* src, int64_t src_row_stride, const float* w,
                        float bias, int64_t oh0, int64_t v0, float* out, int64_t out_row_stride) {
  using Vec = at::vec::Vectorized<float>;
  constexpr int64_t V = Vec::size();
  Vec acc[kRows][kVecs];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) acc[r][v] = Vec(bias);
  const int64_t kernel_h = dc.kernel_h, kernel_w = dc.kernel_w, dilation_w = dc.dilation_w;
  const LaneMask* masks = dc.load_masks.data() + v0 * kernel_w;
  const int64_t first_row = oh0 * dc.row_step + dc.row_offset;
  for (int64_t k = 0; k < kernel_h + kRows - 1; ++k) {
    const int64_t source_row = first_row + k * dc.dilation_h;
    if (source_row < 0 || source_row >= dc.src_h) continue;
    const float* row = src + source_row * src_row_stride + v0 * V + dc.col_offset;
    for (int64_t j = 0; j < kernel_w; ++j) {
      Vec xv[kVecs];
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) xv[v] = masked_load(row + j * dilation_w + v * V, masks[v * kernel_w + j]);
      // Fully unrolled, so that the accumulators stay in registers.
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) {
        const int64_t i = k - r;  // the same for every j: the branch is predicted
        if (i >= 0 && i < kernel_h) {
          const Vec wv(w[i * kernel_w + j]);
#pragma GCC unroll 4
          for (int v = 0; v < kVecs; ++v) acc[r][v] = at::vec::fmadd(xv[v], wv, acc[r][v]);
        }
      }
    }
  }
  // Constant trip counts: a runtime row count would index acc at run time and keep it in memory.
  const int64_t rows = dc.out_h - oh0;
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
    if (r < rows)
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v)
        masked_store(out + (oh0 + r) * out_row_stride + (v0 + v) * V, acc[r][v], dc.store_masks[v0 + v]);
}

// One plane; needs dc.shares_rows().
inline void direct_correlate_plane(const DirectCorrelation& dc, const float* src, int64_t src_row_stride,
                                   const float* w, float bias, float* out, int64_t out_row_stride) {
  auto run = [&](auto rows_c, auto vecs_c) {
    constexpr int kRows = decltype(rows_c)::value, kVecs = decltype(vecs_c)::value;
    for (int64_t oh0 = 0; oh0 < dc.out_h; oh0 += kRows) {
      // Tile row t reads source rows row_offset + K * dilation_h for K in [t, t + kernel_h - 1 + kRows):
      // fetch the ones that tile row oh0 + ahead adds (at the first, all up to it), and its output rows.
      const int64_t ahead = oh0 + kPrefetchTileRows * kRows;
      for (int64_t K = oh0 == 0 ? 0 : ahead + dc.kernel_h - 1; K < ahead + dc.kernel_h - 1 + kRows; ++K) {
        const int64_t source_row = dc.row_offset + K * dc.dilation_h;
        if (source_row >= 0 && source_row < dc.src_h) prefetch_floats(src + source_row * src_row_stride, dc.src_w);
      }
      for (int64_t r = ahead; r < std::min<int64_t>(ahead + kRows, dc.out_h); ++r)
        prefetch_floats<true>(out + r * out_row_stride, dc.out_w);
      for (int64_t v0 = 0; v0 < dc.vecs; v0 += kVecs)
        direct_tile<kRows, kVecs>(dc, src, src_row_stride, w, bias, oh0, v0, out, out_row_stride);
    }
  };
  if (dc.tile_vecs == 4) run(std::integral_constant<int, 2>{}, std::integral_constant<int, 4>{});
  else if (dc.tile_vecs == 2) run(std::integral_constant<int, 4>{}, std::integral_constant<int, 2>{});
  else run(std::integral_constant<int, 8>{}, std::integral_constant<int, 1>{});
}

// grad_w[t] += sum over (oh, ow) of g[oh][ow] * src[...] for kTaps taps of the filter (any rows
// and columns), with src indexed as in DirectCorrelation (dc.out_* is g's extent).
template <int kTaps>
inline void direct_weight_grad_taps(const DirectCorrelation& dc, const float* g, int64_t g_row_stride,
                                    const float* src, int64_t src_row_stride, const int64_t* taps, bool prefetch,
                                    float* grad_w) {
  using Vec = at::vec::Vectorized<float>;
  constexpr int64_t V = Vec::size();
  const int64_t kernel_w = dc.kernel_w;
  Vec acc[kTaps];
  int64_t row_of[kTaps], column_of[kTaps];
  const LaneMask* masks_of[kTaps];
  for (int t = 0; t < kTaps; ++t) {
    acc[t] = Vec(0.f);
    const int64_t i = taps[t] / kernel_w, j = taps[t] % kernel_w;
    row_of[t] = i * dc.dilation_h + dc.row_offset;
    column_of[t] = j * dc.dilation_w + dc.col_offset;
    masks_of[t] = dc.load_masks.data() + j;
  }
  // Output row oh reads source rows oh * row_step + row_offset + [0, (kernel_h - 1) * dilation_h].
  const int64_t row_span = (dc.kernel_h - 1) * dc.dilation_h + 1;
  for (int64_t oh = 0; oh < dc.out_h; ++oh) {
    if (prefetch) {
      // Rows two output rows ahead that no earlier output row read (at the first, all up to them).
      const int64_t ahead = std::min<int64_t>(oh + 2, dc.out_h - 1);
      for (int64_t r = oh == 0 ? 0 : ahead; r <= ahead; ++r) prefetch_floats(g + r * g_row_stride, dc.out_w);
      const int64_t first = dc.row_offset + (oh == 0 ? 0 : (oh + 1) * dc.row_step + row_span);
      const int64_t last = std::min(dc.src_h, dc.row_offset + ahead * dc.row_step + row_span);
      for (int64_t r = std::max<int64_t>(first, 0); r < last; ++r) prefetch_floats(src + r * src_row_stride, dc.src_w);
    }
    const float* g_row = g + oh * g_row_stride;
    const float* x_row[kTaps];
    bool all_inside = true;
    for (int t = 0; t < kTaps; ++t) {
      const int64_t source_row = oh * dc.row_step + row_of[t];
      const bool inside = source_row >= 0 && source_row < dc.src_h;
      all_inside = all_inside && inside;
      x_row[t] = inside ? src + source_row * src_row_stride + column_of[t] : nullptr;
    }
    if (all_inside) {
      for (int64_t v = 0; v < dc.vecs; ++v) {
        const Vec gv = masked_load(g_row + v * V, dc.store_masks[v]);
        for (int t = 0; t < kTaps; ++t)
          acc[t] = at::vec::fmadd(gv, masked_load(x_row[t] + v * V, masks_of[t][v * kernel_w]), acc[t]);
      }
    } else {
      for (int64_t v = 0; v < dc.vecs; ++v) {
        const Vec gv = masked_load(g_row + v * V, dc.store_masks[v]);
        for (int t = 0; t < kTaps; ++t)
          if (x_row[t]) acc[t] = at::vec::fmadd(gv, masked_load(x_row[t] + v * V, masks_of[t][v * kernel_w]), acc[t]);
      }
    }
  }
  for (int t = 0; t < kTaps; ++t) grad_w[t] += lane_sum(acc[t]);
}

// Every tap of the filter, in passes of at most kMaxWeightGradTaps; tap_index is 0 .. taps - 1.
inline void direct_weight_grad_plane(const DirectCorrelation& dc, const float* g, int64_t g_row_stride,
                                     const float* src, int64_t src_row_stride, const int64_t* tap_index,
                                     float* grad_w) {
  // The first pass streams the planes in from memory; the later ones find them in cache.
  for_each_sized_tap_group(dc.kernel_h * dc.kernel_w, [&](int64_t first, auto taps_c) {
    direct_weight_grad_taps<decltype(taps_c)::value>(dc, g, g_row_stride, src, src_row_stride, tap_index + first,
                                                     first == 0, grad_w + first);
  });
}

// Sum of the plane g [rows][cols] (unit column stride), in a fixed order.
inline float direct_plane_sum(const DirectCorrelation& dc, const float* g, int64_t g_row_stride) {
  using Vec = at::vec::Vectorized<float>;
  constexpr int64_t V = Vec::size();
  Vec total(0.f);
  for (int64_t oh = 0; oh < dc.out_h; ++oh)
    for (int64_t v = 0; v < dc.vecs; ++v) total = total + masked_load(g + oh * g_row_stride + v * V, dc.store_masks[v]);
  return lane_sum(total);
}

#endif

}  // namespace cpu
}  // namespace dsconv_ext
