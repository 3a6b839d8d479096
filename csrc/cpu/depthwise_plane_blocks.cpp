// NCHW layers with narrow planes (fewer than 16 output columns, see depthwise_cpu.cpp): the
// width-vectorised kernels would leave most lanes idle, so each task transposes a block of 16
// planes of one image into a small channels_last buffer (a pixel = the block's 16 channels),
// runs the channels_last tiles (channels_last_tiles.h) on it and transposes the result back
// into the output planes. Copying whole tensors to channels_last and back instead costs two
// more passes over memory and three tensor allocations per forward+backward.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "block_transpose.h"
#include "channels_last_tiles.h"
#include "depthwise_cpu.h"

namespace dsconv_ext {
namespace cpu {
namespace {

constexpr int64_t kBlockPlanes = kTransposeBlock;

// Where a block buffer's rows keep their pixels: row pixels start `left` columns in, and each
// row is `width` pixels wide, the columns around the data zero. With the zero columns wide
// enough for every tap of every tile, a gather over the buffer has no border tiles: on the 7x7
// and 14x14 planes of the late stages (pad 3 of a 7x7 filter) every tile of the unpadded plane
// was a border tile, testing each tap's column, and the forward ran 1.5-2x slower than
// PyTorch's.
struct BlockColumns {
  int64_t left = 0, width = 0;
};

// The zero columns that make every tile of each gather over rows of src_w pixels an interior
// tile (see gather_row_tiles), shared by all the gathers.
BlockColumns columns_for_gathers(const std::vector<Gather>& gathers, int64_t src_w) {
  BlockColumns cols;
  for (const Gather& ga : gathers) cols.left = std::max(cols.left, -ga.col_offset_min);
  cols.width = cols.left + src_w;
  for (const Gather& ga : gathers) {
    if (ga.cols.empty() || ga.out_w == 0) continue;
    const int64_t tiles = (ga.out_w + ga.pixel_tile - 1) / ga.pixel_tile;
    const int64_t last_column = (tiles * ga.pixel_tile - 1) * ga.col_step + ga.col_offset_max;
    cols.width = std::max(cols.width, cols.left + last_column + 1);
  }
  return cols;
}

// The gather reading a buffer laid out as `cols` instead of its unpadded rows.
Gather over_padded_columns(Gather ga, BlockColumns cols) {
  for (int64_t& offset : ga.col_offset) offset += cols.left;
  ga.col_offset_min += cols.left;
  ga.col_offset_max += cols.left;
  ga.src_w = cols.width;
  return ga;
}

// pixels[p][c] = planes[c][p] for c < count, zero for c >= count: `count` planes,
// `plane_stride` apart, of `pixel_count` contiguous pixels each; pixels rows are kBlockPlanes
// wide.
template <typename scalar_t>
void planes_to_pixels(const scalar_t* planes, int64_t plane_stride, int64_t count, int64_t pixel_count,
                      scalar_t* pixels) {
  scalar_t* pixel_at[kTransposeBlock];
  for (int64_t p0 = 0; p0 < pixel_count; p0 += kTransposeBlock) {
    const int n = static_cast<int>(std::min<int64_t>(kTransposeBlock, pixel_count - p0));
    for (int i = 0; i < n; ++i) pixel_at[i] = pixels + (p0 + i) * kBlockPlanes;
    planes_to_pixel_vectors(planes + p0, plane_stride, static_cast<int>(count), n, pixel_at);
  }
}

// planes_to_pixels into a buffer of rows laid out as `cols`: planes of h rows of w pixels.
// The planes are read 16 pixels at a time across row ends, which takes fewer transposes than
// row by row on rows narrower than 16.
template <typename scalar_t>
void planes_to_padded_rows(const scalar_t* planes, int64_t plane_stride, int64_t count, int64_t h, int64_t w,
                           BlockColumns cols, scalar_t* pixels) {
  const int64_t right = cols.width - cols.left - w, row_elements = cols.width * kBlockPlanes;
  for (int64_t r = 0; r < h; ++r) {
    scalar_t* row = pixels + r * row_elements;
    std::fill_n(row, cols.left * kBlockPlanes, scalar_t(0));
    std::fill_n(row + (cols.left + w) * kBlockPlanes, right * kBlockPlanes, scalar_t(0));
  }
  scalar_t* next = pixels + cols.left * kBlockPlanes;  // where the next pixel read goes
  int64_t column = 0;
  const int64_t pixel_count = h * w, row_gap = (cols.width - w) * kBlockPlanes;
  scalar_t* pixel_at[kTransposeBlock];
  for (int64_t p0 = 0; p0 < pixel_count; p0 += kTransposeBlock) {
    const int n = static_cast<int>(std::min<int64_t>(kTransposeBlock, pixel_count - p0));
    for (int i = 0; i < n; ++i) {
      pixel_at[i] = next;
      next += kBlockPlanes;
      if (++column == w) column = 0, next += row_gap;
    }
    planes_to_pixel_vectors(planes + p0, plane_stride, static_cast<int>(count), n, pixel_at);
  }
}

// The inverse of planes_to_pixels: planes[c][p] = pixels[p][c].
template <typename scalar_t>
void pixels_to_planes(const scalar_t* pixels, int64_t count, int64_t pixel_count, scalar_t* planes,
                      int64_t plane_stride) {
  for (int64_t p0 = 0; p0 < pixel_count; p0 += kTransposeBlock)
    pixel_vectors_to_planes(pixels + p0 * kBlockPlanes,
                            static_cast<int>(std::min<int64_t>(kTransposeBlock, pixel_count - p0)),
                            static_cast<int>(count), planes + p0, plane_stride);
}

// A block's buffer of rows `width` pixels wide.
Strides4 block_strides(int64_t width) { return Strides4(0, 1, width * kBlockPlanes, kBlockPlanes); }

// One gather over a whole block buffer: w_t and bias already offset to the block's first channel.
template <typename scalar_t>
void gather_block(const Gather& ga, const scalar_t* src, Strides4 ss, const at::opmath_type<scalar_t>* w_t,
                  int64_t c_stride_w, const at::opmath_type<scalar_t>* bias, scalar_t* out, Strides4 os,
                  int64_t count) {
  constexpr int64_t V = VecIO<scalar_t>::kWidth;
  const int64_t rows_per_step = rows_per_call(ga);
  for (int64_t r = 0; r < ga.out_h; r += rows_per_step) {
    const int64_t row_count = std::min(rows_per_step, ga.out_h - r);
    for (int64_t c = 0; c < count; c += V) {
      if (c + V <= count) gather_row<scalar_t, false>(ga, src, ss, w_t, c_stride_w, bias, out, os, 0, r, row_count, c, V);
      else gather_row<scalar_t, true>(ga, src, ss, w_t, c_stride_w, bias, out, os, 0, r, row_count, c, count - c);
    }
  }
}

// Tasks (image, block of planes) in order; each gets its own buffers.
template <typename Body>
void for_each_plane_block(const ConvGeometry& g, Body&& body) {
  const int64_t blocks = (g.channels + kBlockPlanes - 1) / kBlockPlanes;
  at::parallel_for(0, g.batch * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t c0 = (task % blocks) * kBlockPlanes;
      body(task, task / blocks, c0, std::min(kBlockPlanes, g.channels - c0));
    }
  });
}

template <typename scalar_t>
void forward_blocks(const ConvGeometry& g, const at::Tensor& x, const at::Tensor& w_t, const at::Tensor& bias_acc,
                    at::Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const std::vector<Gather> unpadded = {forward_gather(g)};
  const BlockColumns in_cols = columns_for_gathers(unpadded, g.in_w);
  const Gather ga = over_padded_columns(unpadded[0], in_cols);
  const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
  scalar_t* y_ptr = y.data_ptr<scalar_t>();
  const acc_t* w_ptr = w_t.const_data_ptr<acc_t>();
  const acc_t* bias = bias_acc.defined() ? bias_acc.const_data_ptr<acc_t>() : nullptr;
  const int64_t out_pixels = g.out_h * g.out_w;
  const Strides4 xs(x), ys(y);
  for_each_plane_block(g, [&](int64_t, int64_t n, int64_t c0, int64_t count) {
    thread_local std::vector<scalar_t> in_block, out_block;
    in_block.resize(g.in_h * in_cols.width * kBlockPlanes);
    out_block.resize(out_pixels * kBlockPlanes);
    planes_to_padded_rows(x_ptr + n * xs.n + c0 * xs.c, xs.c, count, g.in_h, g.in_w, in_cols, in_block.data());
    gather_block(ga, in_block.data(), block_strides(in_cols.width), w_ptr + c0, w_t.size(1), bias ? bias + c0 : nullptr,
                 out_block.data(), block_strides(g.out_w), count);
    pixels_to_planes(out_block.data(), count, out_pixels, y_ptr + n * ys.n + c0 * ys.c, ys.c);
  });
}

template <typename scalar_t>
void backward_blocks(const ConvGeometry& g, const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w_t,
                     at::Tensor& grad_x, at::Tensor& grad_w, at::Tensor& grad_b) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t V = VecIO<scalar_t>::kWidth;
  const bool need_input = grad_x.defined(), need_weight = grad_w.defined(), need_bias = grad_b.defined();
  // grad_out's block is laid out for the grad-input gathers (their zero columns, see
  // BlockColumns); x's for the filter gradient: zero columns so that every output column's
  // taps land in the buffer, which takes the per-tap column tests out of the filter-gradient
  // loop for the price of multiply-adds by zero.
  std::vector<Gather> input_gathers = need_input ? grad_input_gathers(g) : std::vector<Gather>();
  const BlockColumns gy_cols = columns_for_gathers(input_gathers, g.out_w);
  for (Gather& ga : input_gathers) ga = over_padded_columns(ga, gy_cols);
  const BlockColumns x_cols{g.pad_left, std::max(g.pad_left + g.in_w, (g.out_w - 1) * g.stride_w +
                                                                          (g.kernel_w - 1) * g.dilation_w + 1)};
  ConvGeometry gx = g;  // the filter gradient's geometry over x's block
  gx.in_w = x_cols.width;
  gx.pad_left = 0;
  gx.pad_right = 0;
  const int64_t taps = g.kernel_h * g.kernel_w, in_pixels = g.in_h * g.in_w;
  // Per task: [taps + 1][kBlockPlanes] filter and bias gradient sums, added over images in
  // image order below, so the result does not depend on the threads.
  const int64_t sums_size = (taps + 1) * kBlockPlanes;
  const int64_t blocks = (g.channels + kBlockPlanes - 1) / kBlockPlanes;
  std::vector<acc_t> sums((need_weight || need_bias) ? g.batch * blocks * sums_size : 0, acc_t(0));
  const auto interior = interior_output_columns(gx);
  const auto interior_rows = interior_output_rows(gx);
  const scalar_t* gy_ptr = grad_out.const_data_ptr<scalar_t>();
  const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
  const acc_t* w_ptr = w_t.const_data_ptr<acc_t>();
  const Strides4 gs(grad_out), xs(x), gx_block_strides = block_strides(g.in_w),
      x_block_strides = block_strides(x_cols.width), gy_block_strides = block_strides(gy_cols.width);
  for_each_plane_block(g, [&](int64_t task, int64_t n, int64_t c0, int64_t count) {
    thread_local std::vector<scalar_t> gy_block, in_block;
    gy_block.resize(g.out_h * gy_cols.width * kBlockPlanes);
    in_block.resize(std::max(in_pixels, g.in_h * x_cols.width) * kBlockPlanes);
    planes_to_padded_rows(gy_ptr + n * gs.n + c0 * gs.c, gs.c, count, g.out_h, g.out_w, gy_cols, gy_block.data());
    if (need_input) {
      for (const Gather& ga : input_gathers)
        gather_block(ga, gy_block.data(), gy_block_strides, w_ptr + c0, w_t.size(1), nullptr, in_block.data(),
                     gx_block_strides, count);
      const Strides4 gxs(grad_x);
      pixels_to_planes(in_block.data(), count, in_pixels, grad_x.data_ptr<scalar_t>() + n * gxs.n + c0 * gxs.c, gxs.c);
    }
    if (!need_weight && !need_bias) return;
    acc_t* task_sums = sums.data() + task * sums_size;
    acc_t* bias_sums = need_bias ? task_sums + taps * kBlockPlanes : nullptr;
    if (need_weight)
      planes_to_padded_rows(x_ptr + n * xs.n + c0 * xs.c, xs.c, count, g.in_h, g.in_w, x_cols, in_block.data());
    const scalar_t* gy_first = gy_block.data() + gy_cols.left * kBlockPlanes;
    for (int64_t oh = 0, run; oh < g.out_h; oh += run) {
      run = rows_sharing_taps(interior_rows, oh, g.out_h - oh);
      const scalar_t* gy_row = gy_first + oh * gy_block_strides.h;
      for (int64_t c = 0; c < count; c += V)
        filter_grad_rows(gx, gy_row + c, kBlockPlanes, in_block.data() + c, x_block_strides, oh, run,
                         gy_block_strides.h, interior, c, std::min(V, count - c), need_weight, task_sums,
                         kBlockPlanes, bias_sums ? bias_sums + c : nullptr);
    }
  });
  if (!need_weight && !need_bias) return;
  acc_t* gw = need_weight ? grad_w.data_ptr<acc_t>() : nullptr;
  acc_t* gb = need_bias ? grad_b.data_ptr<acc_t>() : nullptr;
  for (int64_t block = 0; block < blocks; ++block) {
    acc_t* total = sums.data() + block * sums_size;  // image 0's sums, then the others added in order
    for (int64_t n = 1; n < g.batch; ++n) {
      const acc_t* image = sums.data() + (n * blocks + block) * sums_size;
      for (int64_t k = 0; k < sums_size; ++k) total[k] += image[k];
    }
    const int64_t c0 = block * kBlockPlanes;
    for (int64_t c = c0; c < std::min(g.channels, c0 + kBlockPlanes); ++c) {
      if (gw)
        for (int64_t t = 0; t < taps; ++t) gw[c * taps + t] = total[t * kBlockPlanes + c - c0];
      if (gb) gb[c] = total[taps * kBlockPlanes + c - c0];
    }
  }
}

}  // namespace

void forward_plane_blocks(const at::Tensor& x, const at::Tensor& w_t, const at::Tensor& bias_acc, at::Tensor& y,
                          const ConvGeometry& g) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dsconv_ext_forward_plane_blocks",
                                  [&] { forward_blocks<scalar_t>(g, x, w_t, bias_acc, y); });
}

void backward_plane_blocks(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w_t, at::Tensor& grad_x,
                           at::Tensor& grad_w, at::Tensor& grad_b, const ConvGeometry& g) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dsconv_ext_backward_plane_blocks",
                                  [&] { backward_blocks<scalar_t>(g, grad_out, x, w_t, grad_x, grad_w, grad_b); });
}

}  // namespace cpu
}  // namespace dsconv_ext
