// NCHW building blocks: one (n, c) plane at a time, vectorised along the width.
//
// A PhasePlane is a zero-padded copy of a plane in the accumulation type, split by column
// phase (column index modulo the stride) so that every tap of a strided convolution reads a
// contiguous run of memory. Borders, strides, dilation and views then cost nothing in the
// inner loops, which run over whole vectors of output columns with register tiles.
#pragma once

#include <cstring>
#include <type_traits>
#include <vector>

#include "tap_groups.h"
#include "vec_io.h"

namespace dsconv_ext {
namespace cpu {

template <typename acc_t>
struct PhasePlane {
  std::vector<acc_t> data;
  int64_t rows = 0, cols = 0, phases = 1, phase_size = 0;

  void shape(int64_t rows_, int64_t cols_, int64_t phases_) {
    rows = rows_;
    cols = cols_;
    phases = phases_;
    phase_size = rows * cols;
    if (static_cast<int64_t>(data.size()) < phases * phase_size) data.resize(phases * phase_size);
  }

  acc_t* row(int64_t phase, int64_t r) { return data.data() + phase * phase_size + r * cols; }
  const acc_t* base() const { return data.data(); }

  // Row r of both phases of a stride-2 plane from a unit-stride source row: padded column
  // q = 2m + p holds src_row[q - left]. Vector pairs are split into even and odd columns
  // (the scalar stride-2 gather, once per phase, was most of a stride-2 layer's time).
  void fill_two_phases(const acc_t* src_row, int64_t src_w, int64_t r, int64_t left) {
    using Vec = at::vec::Vectorized<acc_t>;
    constexpr int64_t V = Vec::size();
    acc_t* phase0 = row(0, r);
    acc_t* phase1 = row(1, r);
    std::memset(phase0, 0, sizeof(acc_t) * cols);
    std::memset(phase1, 0, sizeof(acc_t) * cols);
    auto put = [&](int64_t s) {
      const int64_t q = s + left;
      if (q / 2 < cols) (q % 2 ? phase1 : phase0)[q / 2] = src_row[s];
    };
    // Source columns from s0 pair up as (phase 0, phase 1) at the same m.
    const int64_t s0 = left % 2;
    if (s0 == 1 && src_w > 0) put(0);
    int64_t s = s0;
    for (; s + 2 * V <= src_w && (s + left) / 2 + V <= cols; s += 2 * V) {
      const auto [even, odd] = at::vec::deinterleave2(Vec::loadu(src_row + s), Vec::loadu(src_row + s + V));
      even.store(phase0 + (s + left) / 2);
      odd.store(phase1 + (s + left) / 2);
    }
    for (; s < src_w; ++s) put(s);
  }

  // Element (r, q) of the padded plane is src[r - top][q - left] inside the source, else zero.
  template <typename scalar_t>
  void fill(const scalar_t* src, int64_t src_h, int64_t src_w, int64_t stride_h, int64_t stride_w,
            int64_t top, int64_t left) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      if (phases == 2 && stride_w == 1 && left >= 0) {
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t y = r - top;
          if (y >= 0 && y < src_h) {
            fill_two_phases(src + y * stride_h, src_w, r, left);
          } else {
            std::memset(row(0, r), 0, sizeof(acc_t) * cols);
            std::memset(row(1, r), 0, sizeof(acc_t) * cols);
          }
        }
        return;
      }
    }
    for (int64_t p = 0; p < phases; ++p) {
      for (int64_t r = 0; r < rows; ++r) {
        acc_t* dst = row(p, r);
        std::memset(dst, 0, sizeof(acc_t) * cols);
        const int64_t y = r - top;
        if (y < 0 || y >= src_h) continue;
        const scalar_t* src_row = src + y * stride_h;
        // q = m * phases + p, source column q - left = m * phases - first in [0, src_w)
        const int64_t first = left - p;
        const int64_t m_lo = first > 0 ? (first + phases - 1) / phases : 0;
        const int64_t m_hi = std::min(cols, src_w - 1 + first >= 0 ? (src_w - 1 + first) / phases + 1 : 0);
        if (phases == 1 && stride_w == 1) {
          for (int64_t m = m_lo; m < m_hi; ++m) dst[m] = static_cast<acc_t>(src_row[m - first]);
        } else {
          for (int64_t m = m_lo; m < m_hi; ++m) dst[m] = static_cast<acc_t>(src_row[(m * phases - first) * stride_w]);
        }
      }
    }
  }
};

// Offsets into a PhasePlane of tap (i, j) for output (0, 0): the plane walk of every tap.
inline std::vector<int64_t> tap_offsets(int64_t kernel_h, int64_t kernel_w, int64_t dilation_h,
                                        int64_t dilation_w, int64_t phases, int64_t phase_size,
                                        int64_t cols) {
  std::vector<int64_t> offsets(kernel_h * kernel_w);
  for (int64_t i = 0; i < kernel_h; ++i)
    for (int64_t j = 0; j < kernel_w; ++j) {
      const int64_t q = j * dilation_w;
      offsets[i * kernel_w + j] = (q % phases) * phase_size + i * dilation_h * cols + q / phases;
    }
  return offsets;
}

// out[oh][ow] = bias + sum_taps w[t] * plane[offset[t] + oh * row_step + ow] for a tile of
// kRows output rows x kVecs vectors of output columns, all in registers.
template <typename acc_t, int kRows, int kVecs>
inline void correlate_tile(const acc_t* plane, const int64_t* offsets, const acc_t* w, int64_t taps,
                           acc_t bias, int64_t row_step, acc_t* out, int64_t out_stride) {
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  Vec acc[kRows][kVecs];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) acc[r][v] = Vec(bias);
  for (int64_t t = 0; t < taps; ++t) {
    const Vec wv(w[t]);
    const acc_t* src = plane + offsets[t];
    for (int r = 0; r < kRows; ++r)
      for (int v = 0; v < kVecs; ++v)
        acc[r][v] = at::vec::fmadd(Vec::loadu(src + r * row_step + v * V), wv, acc[r][v]);
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) acc[r][v].store(out + r * out_stride + v * V);
}

// Register tile for an output row of `out_w` columns: kVecs vectors x kRows rows, 8 accumulators
// in flight (enough to hide FMA latency), fewer wasted columns on narrow planes.
template <typename acc_t>
inline int tile_vectors(int64_t out_w) {
  const int64_t vectors = (out_w + at::vec::Vectorized<acc_t>::size() - 1) / at::vec::Vectorized<acc_t>::size();
  return vectors >= 4 ? 4 : (vectors >= 2 ? 2 : 1);
}

// kRows output rows x kVecs vectors when stride_h == dilation_h: plane row k (counted from the
// tile's first) feeds output row r through kernel row k - r, so each loaded vector serves up to
// kRows output rows (a 7x7 filter: 10 row loads for 4 output rows instead of 28). kRows * kVecs
// is 8: fewer accumulators leave FMA latency exposed (4 of them ran at about half the rate).
// col_offsets are kernel row 0's tap offsets; source_row_step is dilation_h * cols.
template <typename acc_t, int kRows, int kVecs>
inline void correlate_tile_rows(const acc_t* plane, const int64_t* col_offsets, const acc_t* w, int64_t kernel_h,
                                int64_t kernel_w, acc_t bias, int64_t source_row_step, acc_t* out,
                                int64_t out_stride) {
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  Vec acc[kRows][kVecs];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) acc[r][v] = Vec(bias);
  for (int64_t k = 0; k < kernel_h + kRows - 1; ++k) {
    const acc_t* src = plane + k * source_row_step;
    for (int64_t j = 0; j < kernel_w; ++j) {
      Vec xv[kVecs];
      for (int v = 0; v < kVecs; ++v) xv[v] = Vec::loadu(src + col_offsets[j] + v * V);
      for (int r = 0; r < kRows; ++r) {
        const int64_t i = k - r;  // the same for every j: the branch is predicted
        if (i < 0 || i >= kernel_h) continue;
        const Vec wv(w[i * kernel_w + j]);
        for (int v = 0; v < kVecs; ++v) acc[r][v] = at::vec::fmadd(xv[v], wv, acc[r][v]);
      }
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) acc[r][v].store(out + r * out_stride + v * V);
}

// Full-filter correlation with stride_h == dilation_h in row-sharing tiles (see above). offsets
// are all kernel_h * kernel_w tap offsets, row-major, so offsets[0 .. kernel_w) are kernel row 0's.
// out has correlation_extent rows (a multiple of 8), so whole tiles always fit.
template <typename acc_t>
inline void correlate_plane_shared_rows(const PhasePlane<acc_t>& plane, const int64_t* offsets, const acc_t* w,
                                        int64_t kernel_h, int64_t kernel_w, acc_t bias, int64_t out_h,
                                        int64_t out_w, int64_t stride_h, acc_t* out, int64_t out_cols) {
  constexpr int64_t V = at::vec::Vectorized<acc_t>::size();
  const int vecs = tile_vectors<acc_t>(out_w);
  const int64_t row_step = stride_h * plane.cols;
  auto run = [&](auto rows_c, auto vecs_c) {
    constexpr int kRows = decltype(rows_c)::value, kVecs = decltype(vecs_c)::value;
    for (int64_t oh = 0; oh < out_h; oh += kRows)
      for (int64_t ow = 0; ow < out_w; ow += kVecs * V)
        correlate_tile_rows<acc_t, kRows, kVecs>(plane.base() + oh * row_step + ow, offsets, w, kernel_h, kernel_w,
                                                 bias, row_step, out + oh * out_cols + ow, out_cols);
  };
  if (vecs == 4) run(std::integral_constant<int, 2>{}, std::integral_constant<int, 4>{});
  else if (vecs == 2) run(std::integral_constant<int, 4>{}, std::integral_constant<int, 2>{});
  else run(std::integral_constant<int, 8>{}, std::integral_constant<int, 1>{});
}

// Valid correlation of a prepared plane into out [rows][out_cols] sized by correlation_extent;
// rows and columns past out_h / out_w are
// computed from zero padding and ignored by the caller.
template <typename acc_t>
inline void correlate_plane(const PhasePlane<acc_t>& plane, const int64_t* offsets, const acc_t* w,
                            int64_t taps, acc_t bias, int64_t out_h, int64_t out_w, int64_t stride_h,
                            acc_t* out, int64_t out_cols) {
  constexpr int64_t V = at::vec::Vectorized<acc_t>::size();
  const int vecs = tile_vectors<acc_t>(out_w);
  const int64_t row_step = stride_h * plane.cols;
  auto run = [&](auto rows_c, auto vecs_c) {
    constexpr int kRows = decltype(rows_c)::value, kVecs = decltype(vecs_c)::value;
    for (int64_t oh = 0; oh < out_h; oh += kRows)
      for (int64_t ow = 0; ow < out_w; ow += kVecs * V)
        correlate_tile<acc_t, kRows, kVecs>(plane.base() + oh * row_step + ow, offsets, w, taps, bias,
                                            row_step, out + oh * out_cols + ow, out_cols);
  };
  if (vecs == 4) run(std::integral_constant<int, 2>{}, std::integral_constant<int, 4>{});
  else if (vecs == 2) run(std::integral_constant<int, 4>{}, std::integral_constant<int, 2>{});
  else run(std::integral_constant<int, 8>{}, std::integral_constant<int, 1>{});
}

// Rows and columns a correlation output buffer needs for any out_h' <= out_h, out_w' <= out_w
// (see correlate_plane): whole tiles of the tallest (8 rows) and widest (4 vectors) shapes.
template <typename acc_t>
inline void correlation_extent(int64_t out_h, int64_t out_w, int64_t& rows, int64_t& cols) {
  constexpr int64_t V = at::vec::Vectorized<acc_t>::size();
  rows = round_up(out_h, 8);
  cols = round_up(out_w, 4 * V);
}

// grad_w[t] += sum_oh sum_ow g[oh][ow] * plane[offsets[t] + oh * row_step + ow] for kTaps taps
// (any taps of the filter: each has its own plane offset), kept in kTaps vector accumulators.
// g is zero past out_w.
template <typename acc_t, int kTaps>
inline void weight_grad_taps(const acc_t* plane, const int64_t* offsets, const acc_t* g, int64_t g_cols,
                             int64_t out_h, int64_t row_step, acc_t* grad_w) {
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  Vec acc[kTaps];
  for (int t = 0; t < kTaps; ++t) acc[t] = Vec(acc_t(0));
  for (int64_t oh = 0; oh < out_h; ++oh) {
    const acc_t* g_row = g + oh * g_cols;
    const acc_t* p_row = plane + oh * row_step;
    for (int64_t ow = 0; ow < g_cols; ow += V) {
      const Vec gv = Vec::loadu(g_row + ow);
      for (int t = 0; t < kTaps; ++t) acc[t] = at::vec::fmadd(gv, Vec::loadu(p_row + offsets[t] + ow), acc[t]);
    }
  }
  for (int t = 0; t < kTaps; ++t) grad_w[t] += lane_sum(acc[t]);
}

template <typename acc_t>
inline void weight_grad_plane(const PhasePlane<acc_t>& plane, const int64_t* offsets, int64_t kernel_h,
                              int64_t kernel_w, const acc_t* g, int64_t g_cols, int64_t out_h,
                              int64_t stride_h, acc_t* grad_w) {
  const int64_t row_step = stride_h * plane.cols;
  const acc_t* p = plane.base();
  for_each_sized_tap_group(kernel_h * kernel_w, [&](int64_t first, auto taps_c) {
    weight_grad_taps<acc_t, decltype(taps_c)::value>(p, offsets + first, g, g_cols, out_h, row_step, grad_w + first);
  });
}

}  // namespace cpu
}  // namespace dsconv_ext
