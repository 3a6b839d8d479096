// channels_last building blocks, vectorised over channels (the contiguous axis): the row
// gathers behind forward and grad-input (a register tile of 7 or 8 output pixels along the row,
// so each filter vector is loaded once per tile; interior tiles without bounds checks, border
// tiles checking each tap) and the filter gradient of one output row. Used on whole
// channels_last tensors (depthwise_channels_last.cpp) and on blocks of narrow NCHW planes
// transposed into a small channels_last buffer (depthwise_plane_blocks.cpp).
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

#include "../conv_geometry.h"
#include "tap_groups.h"
#include "tensor_strides.h"
#include "vec_io.h"

namespace dsconv_ext {
namespace cpu {

// Output pixels per register tile along a row: kPixelTile, or 7 where that leaves fewer idle
// pixels in the row's last tile. The 56-, 28-, 14- and 7-pixel rows of the ConvNeXt, MobileNet
// and EfficientNet stages are multiples of 7; with tiles of 8 a 28- or 14-pixel row computes 32
// or 16 pixels (the 7x7 forward took as long at 28x28 and 14x14 as at 28x32 and 14x16).
constexpr int kPixelTile = 8;
inline int pixel_tile_for(int64_t out_w) {
  auto padded = [out_w](int64_t tile) { return (out_w + tile - 1) / tile * tile; };
  return padded(7) < padded(kPixelTile) ? 7 : kPixelTile;
}

// Whether `offsets` are each integer of [lo, hi] once; if so, index[k] is the position in
// offsets of offset lo + k.
inline bool index_consecutive_offsets(const std::vector<int64_t>& offsets, int64_t lo, int64_t hi,
                                      std::vector<int64_t>& index) {
  if (hi - lo + 1 != static_cast<int64_t>(offsets.size())) return false;
  index.assign(offsets.size(), -1);
  for (size_t k = 0; k < offsets.size(); ++k) index[offsets[k] - lo] = static_cast<int64_t>(k);
  return std::find(index.begin(), index.end(), -1) == index.end();
}

// A gather along rows: out(r, q) = bias + sum over taps (i, j) of w[i, j] *
// src(r * row_step + row_offset_i, q * col_step + col_offset_j), src taken as zero outside
// [0, src_h) x [0, src_w); out(r, q) is stored at pixel (r * out_row_step + out_row_offset,
// q * out_col_step + out_col_offset) of the destination.
// Forward: all taps, steps = stride, offsets = tap * dilation - pad. grad-input: the flipped
// filter, offsets = (pad - tap * dilation) / stride, one gather per residue class of the input
// pixel modulo the stride, each with the taps that land on the strided output grid.
struct Gather {
  int64_t src_h, src_w, out_h, out_w, row_step, col_step;
  int64_t out_row_step = 1, out_row_offset = 0, out_col_step = 1, out_col_offset = 0;
  int64_t kernel_w;                      // to index the filter: tap (i, j) is i * kernel_w + j
  std::vector<int64_t> rows, row_offset;  // kernel rows taken, and their source offsets
  std::vector<int64_t> cols, col_offset;  // kernel columns taken, and their source offsets
  int64_t col_offset_min = 0, col_offset_max = 0;
  bool stream_output = false;  // non-temporal stores for fp32 output (set by the caller)
  int pixel_tile = kPixelTile;  // set by finish(), from out_w

  void add_row(int64_t i, int64_t offset) { rows.push_back(i); row_offset.push_back(offset); }
  void add_col(int64_t j, int64_t offset) { cols.push_back(j); col_offset.push_back(offset); }
  // Set by finish(): with row_step 1 and row offsets that are a run of consecutive integers,
  // neighbouring output rows share source rows, and a two-row tile loads each source vector
  // once for both (half the loads per multiply-add).
  bool dense_rows = false;
  int64_t min_row_offset = 0;
  std::vector<int64_t> tap_of_row_offset;  // index into rows for offset min_row_offset + k
  // Set by finish(): with col_step 1 and column offsets a run of consecutive integers, a tile's
  // taps along a source row read a window of consecutive pixels (gather_tile_window).
  bool dense_cols = false;
  std::vector<int64_t> tap_of_col_offset;  // index into cols for offset col_offset_min + k

  void finish() {
    pixel_tile = pixel_tile_for(out_w);
    if (!row_offset.empty()) {
      const auto [lo, hi] = std::minmax_element(row_offset.begin(), row_offset.end());
      min_row_offset = *lo;
      dense_rows = row_step == 1 && index_consecutive_offsets(row_offset, *lo, *hi, tap_of_row_offset);
    }
    if (col_offset.empty()) return;
    col_offset_min = *std::min_element(col_offset.begin(), col_offset.end());
    col_offset_max = *std::max_element(col_offset.begin(), col_offset.end());
    dense_cols = col_step == 1 && index_consecutive_offsets(col_offset, col_offset_min, col_offset_max, tap_of_col_offset);
  }
};

template <typename scalar_t, bool kPartial>
inline at::vec::Vectorized<at::opmath_type<scalar_t>> load_channels(const scalar_t* p, int64_t count) {
  if constexpr (kPartial) return VecIO<scalar_t>::load_partial(p, count);
  else return VecIO<scalar_t>::load(p);
}

// One tile of kTile output pixels (n, r, q0 ..) for channels [c0, c0 + count), accumulators in
// registers. Border tiles point taps that fall outside the source at a zero vector, so the
// loops keep compile-time bounds either way.
template <typename scalar_t, bool kPartial, bool kBorder, int kTile>
inline void gather_tile(const Gather& ga, const scalar_t* src_n, Strides4 ss, const at::opmath_type<scalar_t>* w_t,
                        int64_t c_stride_w, const at::vec::Vectorized<at::opmath_type<scalar_t>>& bias_v,
                        int64_t r, int64_t q0, int64_t c0, int64_t count, at::vec::Vectorized<at::opmath_type<scalar_t>>* out) {
  using Vec = at::vec::Vectorized<at::opmath_type<scalar_t>>;
  alignas(64) static const scalar_t zeros[64] = {};
  Vec acc[kTile];
  for (int t = 0; t < kTile; ++t) acc[t] = bias_v;
  // Loop invariants in locals, and pointers stepped by adds: the tap loop must be loads and
  // FMAs, not index arithmetic.
  const int64_t pixel = ga.col_step * ss.w;
  const int64_t n_rows = static_cast<int64_t>(ga.rows.size()), n_cols = static_cast<int64_t>(ga.cols.size());
  const int64_t* rows = ga.rows.data();
  const int64_t* cols = ga.cols.data();
  const int64_t* row_offset = ga.row_offset.data();
  const int64_t* col_offset = ga.col_offset.data();
  const int64_t src_h = ga.src_h, src_w = ga.src_w, first_col = q0 * ga.col_step;
  const int64_t row_start = r * ga.row_step, tap_row_stride = ga.kernel_w * c_stride_w;
  for (int64_t ri = 0; ri < n_rows; ++ri) {
    const int64_t sr = row_start + row_offset[ri];
    if (sr < 0 || sr >= src_h) continue;
    const scalar_t* src_row = src_n + sr * ss.h;
    const at::opmath_type<scalar_t>* w_row = w_t + rows[ri] * tap_row_stride + c0;
    for (int64_t ci = 0; ci < n_cols; ++ci) {
      const Vec wv = Vec::loadu(w_row + cols[ci] * c_stride_w);
      const int64_t base = first_col + col_offset[ci];
      const scalar_t* p = src_row + base * ss.w;
      if constexpr (kBorder) {
        for (int t = 0; t < kTile; ++t) {
          const int64_t sc = base + t * ga.col_step;
          const scalar_t* q = (sc >= 0 && sc < src_w) ? p : zeros;
          acc[t] = at::vec::fmadd(load_channels<scalar_t, kPartial>(q, count), wv, acc[t]);
          p += pixel;
        }
      } else {
        for (int t = 0; t < kTile; ++t) {
          acc[t] = at::vec::fmadd(load_channels<scalar_t, kPartial>(p, count), wv, acc[t]);
          p += pixel;
        }
      }
    }
  }
  for (int t = 0; t < kTile; ++t) out[t] = acc[t];
}

// Two output rows (r, r + 1) of a dense-row gather: source row r + k feeds row r through the
// tap of offset k and row r + 1 through the tap of offset k - 1, from one set of loads.
template <typename scalar_t, bool kPartial, bool kBorder, int kTile>
inline void gather_tile_two_rows(const Gather& ga, const scalar_t* src_n, Strides4 ss,
                                 const at::opmath_type<scalar_t>* w_t, int64_t c_stride_w,
                                 const at::vec::Vectorized<at::opmath_type<scalar_t>>& bias_v, int64_t r, int64_t q0,
                                 int64_t c0, int64_t count, at::vec::Vectorized<at::opmath_type<scalar_t>>* out0,
                                 at::vec::Vectorized<at::opmath_type<scalar_t>>* out1) {
  using Vec = at::vec::Vectorized<at::opmath_type<scalar_t>>;
  alignas(64) static const scalar_t zeros[64] = {};
  Vec acc0[kTile], acc1[kTile];
  for (int t = 0; t < kTile; ++t) acc0[t] = acc1[t] = bias_v;
  const int64_t pixel = ga.col_step * ss.w;
  const int64_t n_offsets = static_cast<int64_t>(ga.tap_of_row_offset.size());
  const int64_t n_cols = static_cast<int64_t>(ga.cols.size());
  const int64_t* cols = ga.cols.data();
  const int64_t* col_offset = ga.col_offset.data();
  const int64_t* tap_of = ga.tap_of_row_offset.data();
  const int64_t* rows = ga.rows.data();
  const int64_t src_h = ga.src_h, src_w = ga.src_w, first_col = q0 * ga.col_step;
  const int64_t tap_row_stride = ga.kernel_w * c_stride_w;
  for (int64_t k = 0; k <= n_offsets; ++k) {
    const int64_t sr = r + ga.min_row_offset + k;
    if (sr < 0 || sr >= src_h) continue;
    const scalar_t* src_row = src_n + sr * ss.h;
    const bool feeds0 = k < n_offsets, feeds1 = k > 0;
    const at::opmath_type<scalar_t>* w0 = w_t + (feeds0 ? rows[tap_of[k]] : 0) * tap_row_stride + c0;
    const at::opmath_type<scalar_t>* w1 = w_t + (feeds1 ? rows[tap_of[k - 1]] : 0) * tap_row_stride + c0;
    for (int64_t ci = 0; ci < n_cols; ++ci) {
      const int64_t base = first_col + col_offset[ci];
      const scalar_t* p = src_row + base * ss.w;
      Vec xv[kTile];
      for (int t = 0; t < kTile; ++t) {
        const scalar_t* q = p;
        if constexpr (kBorder) {
          const int64_t sc = base + t * ga.col_step;
          q = (sc >= 0 && sc < src_w) ? p : zeros;
        }
        xv[t] = load_channels<scalar_t, kPartial>(q, count);
        p += pixel;
      }
      if (feeds0) {
        const Vec wv = Vec::loadu(w0 + cols[ci] * c_stride_w);
        for (int t = 0; t < kTile; ++t) acc0[t] = at::vec::fmadd(xv[t], wv, acc0[t]);
      }
      if (feeds1) {
        const Vec wv = Vec::loadu(w1 + cols[ci] * c_stride_w);
        for (int t = 0; t < kTile; ++t) acc1[t] = at::vec::fmadd(xv[t], wv, acc1[t]);
      }
    }
  }
  for (int t = 0; t < kTile; ++t) {
    out0[t] = acc0[t];
    out1[t] = acc1[t];
  }
}

// Window tiles keep kTile + kTaps - 1 source pixels and up to 2 * kTile accumulators in
// registers: only where there are 32.
#if defined(CPU_CAPABILITY_AVX512)
constexpr bool kWindowTiles = true;
#else
constexpr bool kWindowTiles = false;
#endif

// acc[t] += x[t + k] * w(k) for the kTaps taps k of one source row.
template <typename Vec, int kTile, int kTaps>
inline void window_taps(Vec* acc, const Vec* x, const typename Vec::value_type* w_row, const int64_t* w_col) {
  for (int k = 0; k < kTaps; ++k) {
    const Vec wv = Vec::loadu(w_row + w_col[k]);
    for (int t = 0; t < kTile; ++t) acc[t] = at::vec::fmadd(x[t + k], wv, acc[t]);
  }
}

// An interior tile of a gather with dense columns (see Gather::dense_cols) and kTaps of them,
// for kRows (1, or 2 for dense-row gathers) output rows r ..: each source row's window of
// kTile + kTaps - 1 pixels is loaded once and feeds every tap, where gather_tile loads a pixel
// once per tap (a 7-tap row: 13 loads per 49 multiply-adds instead of 49, and as few bf16
// widenings). Border tiles read window pixels outside the source row as zero.
template <typename scalar_t, bool kPartial, bool kBorder, int kTile, int kTaps, int kRows>
inline void gather_tile_window(const Gather& ga, const scalar_t* src_n, Strides4 ss,
                               const at::opmath_type<scalar_t>* w_t, int64_t c_stride_w,
                               const at::vec::Vectorized<at::opmath_type<scalar_t>>& bias_v, int64_t r, int64_t q0,
                               int64_t c0, int64_t count, at::vec::Vectorized<at::opmath_type<scalar_t>> (*out)[kTile]) {
  using Vec = at::vec::Vectorized<at::opmath_type<scalar_t>>;
  constexpr int kWindow = kTile + kTaps - 1;
  Vec acc[kRows][kTile];
  for (int o = 0; o < kRows; ++o)
    for (int t = 0; t < kTile; ++t) acc[o][t] = bias_v;
  int64_t w_col[kTaps];
  for (int k = 0; k < kTaps; ++k) w_col[k] = ga.cols[ga.tap_of_col_offset[k]] * c_stride_w + c0;
  const int64_t tap_row_stride = ga.kernel_w * c_stride_w, pixel = ss.w;
  const int64_t window_column = q0 + ga.col_offset_min, src_w = ga.src_w;
  const scalar_t* window_start = src_n + window_column * pixel;
  auto load_window = [&](int64_t sr, Vec* x) {
    const scalar_t* p = window_start + sr * ss.h;
    for (int i = 0; i < kWindow; ++i) {
      if constexpr (kBorder) {
        const int64_t sc = window_column + i;
        x[i] = (sc >= 0 && sc < src_w) ? load_channels<scalar_t, kPartial>(p + i * pixel, count) : Vec(0);
      } else {
        x[i] = load_channels<scalar_t, kPartial>(p + i * pixel, count);
      }
    }
  };
  Vec x[kWindow];
  if constexpr (kRows == 1) {
    for (size_t ri = 0; ri < ga.rows.size(); ++ri) {
      const int64_t sr = r * ga.row_step + ga.row_offset[ri];
      if (sr < 0 || sr >= ga.src_h) continue;
      load_window(sr, x);
      window_taps<Vec, kTile, kTaps>(acc[0], x, w_t + ga.rows[ri] * tap_row_stride, w_col);
    }
  } else {
    // Source row r + min_row_offset + k feeds row r through the tap of offset k and row r + 1
    // through the tap of offset k - 1 (as in gather_tile_two_rows).
    const int64_t n_offsets = static_cast<int64_t>(ga.tap_of_row_offset.size());
    for (int64_t k = 0; k <= n_offsets; ++k) {
      const int64_t sr = r + ga.min_row_offset + k;
      if (sr < 0 || sr >= ga.src_h) continue;
      load_window(sr, x);
      if (k < n_offsets)
        window_taps<Vec, kTile, kTaps>(acc[0], x, w_t + ga.rows[ga.tap_of_row_offset[k]] * tap_row_stride, w_col);
      if (k > 0)
        window_taps<Vec, kTile, kTaps>(acc[1], x, w_t + ga.rows[ga.tap_of_row_offset[k - 1]] * tap_row_stride, w_col);
    }
  }
  for (int o = 0; o < kRows; ++o)
    for (int t = 0; t < kTile; ++t) out[o][t] = acc[o][t];
}

// gather_tile_window where the gather has 5 or 7 dense columns, or 3 in tiles of 8 (the
// filters of the supported models at stride 1); false where it does not apply.
template <typename scalar_t, bool kPartial, int kTile>
inline bool try_gather_tile_window(bool interior, const Gather& ga, const scalar_t* src_n, Strides4 ss,
                                   const at::opmath_type<scalar_t>* w_t, int64_t c_stride_w,
                                   const at::vec::Vectorized<at::opmath_type<scalar_t>>& bias_v, int64_t r,
                                   int64_t q0, int64_t c0, int64_t count, int64_t row_count,
                                   at::vec::Vectorized<at::opmath_type<scalar_t>> (*out)[kTile]) {
  if constexpr (!kWindowTiles) {
    return false;
  } else {
    if (!ga.dense_cols) return false;
    auto run = [&](auto taps_c) {
      constexpr int kTaps = decltype(taps_c)::value;
      auto with_rows = [&](auto border_c) {
        constexpr bool kBorder = decltype(border_c)::value;
        if (row_count == 2)
          gather_tile_window<scalar_t, kPartial, kBorder, kTile, kTaps, 2>(ga, src_n, ss, w_t, c_stride_w, bias_v, r,
                                                                           q0, c0, count, out);
        else
          gather_tile_window<scalar_t, kPartial, kBorder, kTile, kTaps, 1>(ga, src_n, ss, w_t, c_stride_w, bias_v, r,
                                                                           q0, c0, count, out);
      };
      if (interior) with_rows(std::false_type{});
      else with_rows(std::true_type{});
      return true;
    };
    switch (ga.cols.size()) {
      // Three taps: measured 1.2x faster in tiles of 8 (56-pixel rows), 5-10% slower in tiles of
      // 7 (28, 14 and 7), where the old tiles keep the window tiles' set-up off so little work.
      case 3: return kTile == 8 && run(std::integral_constant<int, 3>{});
      case 5: return run(std::integral_constant<int, 5>{});
      case 7: return run(std::integral_constant<int, 7>{});
      default: return false;
    }
  }
}

// Output rows r .. r + row_count - 1 (row_count 1, or 2 for dense-row gathers) of image n,
// channels [c0, c0 + count).
template <typename scalar_t, bool kPartial, int kTile>
void gather_row_tiles(const Gather& ga, const scalar_t* src, Strides4 ss, const at::opmath_type<scalar_t>* w_t,
                      int64_t c_stride_w, const at::opmath_type<scalar_t>* bias, scalar_t* out, Strides4 os,
                      int64_t n, int64_t r, int64_t row_count, int64_t c0, int64_t count) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<acc_t>;
  const Vec bias_v = bias ? Vec::loadu(bias + c0) : Vec(acc_t(0));
  const scalar_t* src_n = src + n * ss.n + c0;
  Vec result[2][kTile];
  const int64_t px_step = ga.out_col_step * os.w;
  for (int64_t q0 = 0; q0 < ga.out_w; q0 += kTile) {
    const int64_t tile = std::min<int64_t>(kTile, ga.out_w - q0);
    const bool interior = q0 * ga.col_step + ga.col_offset_min >= 0 &&
                          (q0 + kTile - 1) * ga.col_step + ga.col_offset_max < ga.src_w;
    if (try_gather_tile_window<scalar_t, kPartial, kTile>(interior, ga, src_n, ss, w_t, c_stride_w, bias_v, r, q0, c0,
                                                          count, row_count, result)) {
      // done by the window tile
    } else if (row_count == 2) {
      if (interior)
        gather_tile_two_rows<scalar_t, kPartial, false, kTile>(ga, src_n, ss, w_t, c_stride_w, bias_v, r, q0, c0, count,
                                                        result[0], result[1]);
      else
        gather_tile_two_rows<scalar_t, kPartial, true, kTile>(ga, src_n, ss, w_t, c_stride_w, bias_v, r, q0, c0, count,
                                                       result[0], result[1]);
    } else if (interior) {
      gather_tile<scalar_t, kPartial, false, kTile>(ga, src_n, ss, w_t, c_stride_w, bias_v, r, q0, c0, count, result[0]);
    } else {
      gather_tile<scalar_t, kPartial, true, kTile>(ga, src_n, ss, w_t, c_stride_w, bias_v, r, q0, c0, count, result[0]);
    }
    for (int64_t row = 0; row < row_count; ++row) {
      scalar_t* out_px = out + n * os.n + ((r + row) * ga.out_row_step + ga.out_row_offset) * os.h +
                         (q0 * ga.out_col_step + ga.out_col_offset) * os.w + c0;
      for (int t = 0; t < tile; ++t) {
        if constexpr (kPartial) {
          VecIO<scalar_t>::store_partial(out_px + t * px_step, result[row][t], count);
        } else if constexpr (std::is_same_v<scalar_t, float>) {
          if (ga.stream_output) stream_store(out_px + t * px_step, result[row][t]);
          else result[row][t].store(out_px + t * px_step);
        } else {
          VecIO<scalar_t>::store(out_px + t * px_step, result[row][t]);
        }
      }
    }
  }
}

// Output rows r .. r + row_count - 1 of image n, channels [c0, c0 + count), in tiles of
// ga.pixel_tile pixels.
template <typename scalar_t, bool kPartial>
void gather_row(const Gather& ga, const scalar_t* src, Strides4 ss, const at::opmath_type<scalar_t>* w_t,
                int64_t c_stride_w, const at::opmath_type<scalar_t>* bias, scalar_t* out, Strides4 os,
                int64_t n, int64_t r, int64_t row_count, int64_t c0, int64_t count) {
  if (ga.pixel_tile == 7)
    gather_row_tiles<scalar_t, kPartial, 7>(ga, src, ss, w_t, c_stride_w, bias, out, os, n, r, row_count, c0, count);
  else
    gather_row_tiles<scalar_t, kPartial, kPixelTile>(ga, src, ss, w_t, c_stride_w, bias, out, os, n, r, row_count,
                                                     c0, count);
}

// Two-row tiles need 8 source + 16 accumulator vectors: only where there are 32 registers.
#if defined(CPU_CAPABILITY_AVX512)
constexpr bool kTwoRowTiles = true;
#else
constexpr bool kTwoRowTiles = false;
#endif

// Output rows per gather_row call: two for dense-row gathers where two-row tiles fit, else one.
inline int64_t rows_per_call(const Gather& ga) { return (kTwoRowTiles && ga.dense_rows) ? 2 : 1; }

// Filter-gradient partial sums of row_count consecutive output rows (n, oh ..) for kTaps taps
// (any kernel rows and columns, see for_each_tap_group), one vector accumulator per tap, kept in
// registers across the rows (on 7- and 14-pixel rows, adding them to memory after every row cost
// as much as the row's multiply-adds). The rows must share their taps: all inside the input, or
// row_count 1. tap_elements[t]: element offset of tap t's source pixel from the first row's output
// column 0 anchor in x; col_offset[t]: its column offset, to bounds-check border columns;
// partial_of[t]: where its sum goes. Row r + 1 starts gy_row_step elements after row r in grad_out
// and x_row_step after it in x. The bias gradient, the rows' sum of grad_out, is added to
// bias_partial unless it is null.
template <typename scalar_t, int kTaps, bool kPartial>
void weight_grad_row_taps(const ConvGeometry& g, const scalar_t* gy_row, int64_t gy_step, const scalar_t* x_anchor,
                          int64_t x_pixel, const int64_t* tap_elements, const int64_t* col_offset, int64_t ow_lo,
                          int64_t ow_hi, int64_t count, at::opmath_type<scalar_t>* const* partial_of,
                          at::opmath_type<scalar_t>* bias_partial, int64_t row_count, int64_t gy_row_step,
                          int64_t x_row_step) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<acc_t>;
  Vec acc[kTaps];
  for (int t = 0; t < kTaps; ++t) acc[t] = Vec(acc_t(0));
  Vec bias_acc(acc_t(0));
  int64_t elements[kTaps];
  for (int t = 0; t < kTaps; ++t) elements[t] = tap_elements[t];
  // One base pointer per output column plus per-tap element offsets: the addressing modes
  // do the rest, so the loop is loads and FMAs.
  const int64_t in_w = g.in_w, stride_w = g.stride_w;
  for (int64_t row = 0; row < row_count; ++row, x_anchor += x_row_step, gy_row += gy_row_step) {
    const scalar_t* x_base = x_anchor;
    const scalar_t* gy_px = gy_row;
    for (int64_t ow = 0; ow < g.out_w; ++ow, x_base += x_pixel, gy_px += gy_step) {
      const Vec gv = load_channels<scalar_t, kPartial>(gy_px, count);
      bias_acc = bias_acc + gv;
      if (ow >= ow_lo && ow < ow_hi) {
        for (int t = 0; t < kTaps; ++t)
          acc[t] = at::vec::fmadd(gv, load_channels<scalar_t, kPartial>(x_base + elements[t], count), acc[t]);
      } else {
        for (int t = 0; t < kTaps; ++t) {
          const int64_t iw = ow * stride_w + col_offset[t];
          if (iw < 0 || iw >= in_w) continue;
          acc[t] = at::vec::fmadd(gv, load_channels<scalar_t, kPartial>(x_base + elements[t], count), acc[t]);
        }
      }
    }
  }
  for (int t = 0; t < kTaps; ++t) {
    acc_t* dst = partial_of[t];
    (Vec::loadu(dst) + acc[t]).store(dst);
  }
  if (bias_partial) (Vec::loadu(bias_partial) + bias_acc).store(bias_partial);
}

// The bias gradient of one row alone, where no tap of the row lands inside the input.
template <typename scalar_t, bool kPartial>
void bias_grad_row(const scalar_t* gy_row, int64_t gy_step, int64_t out_w, int64_t count,
                   at::opmath_type<scalar_t>* bias_partial) {
  using Vec = at::vec::Vectorized<at::opmath_type<scalar_t>>;
  Vec total = Vec::loadu(bias_partial);
  for (int64_t ow = 0; ow < out_w; ++ow) total = total + load_channels<scalar_t, kPartial>(gy_row + ow * gy_step, count);
  total.store(bias_partial);
}

// The taps of output rows oh .. oh + row_count - 1 whose kernel row lands inside the input (the
// same for every one of those rows, see weight_grad_row_taps), in tap order, grouped as
// for_each_tap_group does; x_n is image n of x, offset to channel c0. bias_partial as in
// weight_grad_row_taps.
template <typename scalar_t, bool kPartial>
void weight_grad_row(const ConvGeometry& g, const scalar_t* gy_row, int64_t gy_step, const scalar_t* x_n, Strides4 xs,
                     int64_t oh, int64_t row_count, int64_t gy_row_step, int64_t ow_lo, int64_t ow_hi, int64_t c0,
                     int64_t count, at::opmath_type<scalar_t>* partial, int64_t c_stride,
                     at::opmath_type<scalar_t>* bias_partial) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t kMaxTaps = 64;
  int64_t tap_elements[kMaxTaps], col_offset[kMaxTaps];
  acc_t* partial_of[kMaxTaps];
  const int64_t anchor_row = oh * g.stride_h - g.pad_top;
  int64_t taps = 0;
  // Runs the taps collected so far; large kernels are flushed kMaxTaps taps at a time.
  auto flush = [&] {
    for_each_sized_tap_group(taps, [&](int64_t first, auto taps_c) {
      weight_grad_row_taps<scalar_t, decltype(taps_c)::value, kPartial>(
          g, gy_row, gy_step, x_n, g.stride_w * xs.w, tap_elements + first, col_offset + first, ow_lo, ow_hi, count,
          partial_of + first, bias_partial, row_count, gy_row_step, g.stride_h * xs.h);
      bias_partial = nullptr;
    });
    taps = 0;
  };
  for (int64_t i = 0; i < g.kernel_h; ++i) {
    const int64_t ih = anchor_row + i * g.dilation_h;
    if (ih < 0 || ih >= g.in_h) continue;
    for (int64_t j = 0; j < g.kernel_w; ++j) {
      col_offset[taps] = j * g.dilation_w - g.pad_left;
      tap_elements[taps] = ih * xs.h + col_offset[taps] * xs.w;
      partial_of[taps] = partial + (i * g.kernel_w + j) * c_stride + c0;
      if (++taps == kMaxTaps) flush();
    }
  }
  flush();
  if (bias_partial)
    for (int64_t row = 0; row < row_count; ++row)
      bias_grad_row<scalar_t, kPartial>(gy_row + row * gy_row_step, gy_step, g.out_w, count, bias_partial);
}

// The filter-gradient and/or bias-gradient sums of output rows oh .. oh + row_count - 1 (rows
// that share their taps, see rows_sharing_taps) for channels [c0, c0 + count), count <= one
// vector; gy_row and x_n are offset to channel c0, as in weight_grad_row, and grad_out's rows
// are gy_row_step elements apart.
template <typename scalar_t>
void filter_grad_rows(const ConvGeometry& g, const scalar_t* gy_row, int64_t gy_step, const scalar_t* x_n, Strides4 xs,
                      int64_t oh, int64_t row_count, int64_t gy_row_step, std::pair<int64_t, int64_t> interior,
                      int64_t c0, int64_t count, bool need_weight, at::opmath_type<scalar_t>* partial,
                      int64_t c_stride, at::opmath_type<scalar_t>* bias_partial) {
  const bool full = count == VecIO<scalar_t>::kWidth;
  if (!need_weight) {
    for (int64_t row = 0; row < row_count; ++row, gy_row += gy_row_step) {
      if (full) bias_grad_row<scalar_t, false>(gy_row, gy_step, g.out_w, count, bias_partial);
      else bias_grad_row<scalar_t, true>(gy_row, gy_step, g.out_w, count, bias_partial);
    }
  } else if (full) {
    weight_grad_row<scalar_t, false>(g, gy_row, gy_step, x_n, xs, oh, row_count, gy_row_step, interior.first,
                                     interior.second, c0, count, partial, c_stride, bias_partial);
  } else {
    weight_grad_row<scalar_t, true>(g, gy_row, gy_step, x_n, xs, oh, row_count, gy_row_step, interior.first,
                                    interior.second, c0, count, partial, c_stride, bias_partial);
  }
}

// Outputs [first, last) along one axis whose filter taps all land inside the input: those of the
// first tap's valid range (valid_output_range) that are also in the last tap's.
inline std::pair<int64_t, int64_t> interior_outputs(int64_t pad, int64_t kernel, int64_t dilation, int64_t stride,
                                                    int64_t in, int64_t out) {
  int64_t first, first_tap_end, last_tap_begin, last;
  valid_output_range(-pad, stride, in, out, first, first_tap_end);
  valid_output_range((kernel - 1) * dilation - pad, stride, in, out, last_tap_begin, last);
  return {first, std::max(first, last)};
}

// Output rows whose filter taps all land inside the input (rows that share their taps).
inline std::pair<int64_t, int64_t> interior_output_rows(const ConvGeometry& g) {
  return interior_outputs(g.pad_top, g.kernel_h, g.dilation_h, g.stride_h, g.in_h, g.out_h);
}

// Output columns whose filter taps all land inside the input row.
inline std::pair<int64_t, int64_t> interior_output_columns(const ConvGeometry& g) {
  return interior_outputs(g.pad_left, g.kernel_w, g.dilation_w, g.stride_w, g.in_w, g.out_w);
}

// How many output rows from oh, at most `limit`, share oh's taps: a run of interior rows, else 1.
inline int64_t rows_sharing_taps(std::pair<int64_t, int64_t> interior_rows, int64_t oh, int64_t limit) {
  if (oh < interior_rows.first || oh >= interior_rows.second) return 1;
  return std::max<int64_t>(1, std::min(limit, interior_rows.second - oh));
}


// The forward gather: every tap, steps = stride, offsets = tap * dilation - pad.
inline Gather forward_gather(const ConvGeometry& g) {
  Gather ga;
  ga.src_h = g.in_h, ga.src_w = g.in_w, ga.out_h = g.out_h, ga.out_w = g.out_w;
  ga.row_step = g.stride_h, ga.col_step = g.stride_w, ga.kernel_w = g.kernel_w;
  for (int64_t i = 0; i < g.kernel_h; ++i) ga.add_row(i, i * g.dilation_h - g.pad_top);
  for (int64_t j = 0; j < g.kernel_w; ++j) ga.add_col(j, j * g.dilation_w - g.pad_left);
  ga.finish();
  return ga;
}

// grad-input gathers for the input pixels congruent to (residue_h, residue_w) modulo the stride.
inline Gather grad_input_gather(const ConvGeometry& g, int64_t residue_h, int64_t residue_w) {
  Gather ga;
  ga.src_h = g.out_h, ga.src_w = g.out_w;
  ga.out_h = (g.in_h - residue_h + g.stride_h - 1) / g.stride_h;
  ga.out_w = (g.in_w - residue_w + g.stride_w - 1) / g.stride_w;
  ga.row_step = ga.col_step = 1;
  ga.out_row_step = g.stride_h, ga.out_row_offset = residue_h;
  ga.out_col_step = g.stride_w, ga.out_col_offset = residue_w;
  ga.kernel_w = g.kernel_w;
  // Input row residue + stride * r meets output row r + (residue + pad - i * dilation) / stride
  // through kernel row i, when that division is exact.
  for (int64_t i = 0; i < g.kernel_h; ++i) {
    const int64_t t = residue_h + g.pad_top - i * g.dilation_h;
    if (((t % g.stride_h) + g.stride_h) % g.stride_h == 0) ga.add_row(i, t / g.stride_h);
  }
  for (int64_t j = 0; j < g.kernel_w; ++j) {
    const int64_t t = residue_w + g.pad_left - j * g.dilation_w;
    if (((t % g.stride_w) + g.stride_w) % g.stride_w == 0) ga.add_col(j, t / g.stride_w);
  }
  ga.finish();
  return ga;
}

// The grad-input gathers of every residue class of the input pixels modulo the stride.
inline std::vector<Gather> grad_input_gathers(const ConvGeometry& g) {
  std::vector<Gather> gathers;
  for (int64_t residue_h = 0; residue_h < std::min(g.stride_h, g.in_h); ++residue_h)
    for (int64_t residue_w = 0; residue_w < std::min(g.stride_w, g.in_w); ++residue_w)
      gathers.push_back(grad_input_gather(g, residue_h, residue_w));
  return gathers;
}

}  // namespace cpu
}  // namespace dsconv_ext
