// Per image, NCHW is a [C, H*W] matrix and channels_last its transpose [H*W, C]: both copies
// are blocked matrix transposes (ATen's transpose_mxn: in-register 16x16 tiles on AVX-512).
#include "layout_copy.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

namespace dsconv_ext {
namespace cpu {
namespace {

constexpr int64_t kTile = 16;
// Tiles per task along the source's rows: a 64 x 16 strip keeps whole cache lines of both
// matrices in use.
constexpr int64_t kRowTiles = 4;

// dst[b][j][i] = src[b][i][j] for b < batch, i < rows, j < cols; src and dst rows are
// contiguous, images batch_stride_src / batch_stride_dst apart.
template <typename scalar_t>
void transpose_images(const scalar_t* src, int64_t batch_stride_src, scalar_t* dst, int64_t batch_stride_dst,
                      int64_t batch, int64_t rows, int64_t cols) {
  const int64_t row_blocks = (rows + kTile * kRowTiles - 1) / (kTile * kRowTiles);
  const int64_t col_tiles = (cols + kTile - 1) / kTile;
  const int64_t tasks = batch * row_blocks * col_tiles;
  // About 16k elements per task before another thread is worth starting.
  const int64_t grain = std::max<int64_t>(1, 16384 / (kTile * kTile * kRowTiles));
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (row_blocks * col_tiles);
      const int64_t rest = task % (row_blocks * col_tiles);
      const int64_t j = (rest % col_tiles) * kTile;
      const int64_t i_begin = (rest / col_tiles) * kTile * kRowTiles;
      const int64_t i_end = std::min(rows, i_begin + kTile * kRowTiles);
      const int m_cols = static_cast<int>(std::min(kTile, cols - j));
      const scalar_t* s = src + b * batch_stride_src;
      scalar_t* d = dst + b * batch_stride_dst;
      for (int64_t i = i_begin; i < i_end; i += kTile) {
        const int m_rows = static_cast<int>(std::min(kTile, i_end - i));
        at::vec::transpose_mxn<scalar_t>(s + i * cols + j, cols, d + j * rows + i, rows, m_rows, m_cols);
      }
    }
  });
}

bool dense_planes(const at::Tensor& x) {  // NCHW with contiguous planes, any batch stride
  return x.stride(3) == 1 && x.stride(2) == x.size(3) && x.stride(1) == x.size(2) * x.size(3);
}

bool dense_pixels(const at::Tensor& x) {  // channels_last with contiguous pixels, any batch stride
  return x.stride(1) == 1 && x.stride(3) == x.size(1) && x.stride(2) == x.size(3) * x.size(1);
}

}  // namespace

at::Tensor to_channels_last(const at::Tensor& x) {
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) return x;
  if (x.dim() != 4 || !dense_planes(x) || x.numel() == 0) return x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t channels = x.size(1), pixels = x.size(2) * x.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dsconv_ext_to_channels_last", [&] {
    transpose_images<scalar_t>(x.const_data_ptr<scalar_t>(), x.stride(0), out.data_ptr<scalar_t>(), out.stride(0),
                               x.size(0), channels, pixels);
  });
  return out;
}

at::Tensor to_contiguous(const at::Tensor& x) {
  if (x.is_contiguous()) return x;
  if (x.dim() != 4 || !dense_pixels(x) || x.numel() == 0) return x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  const int64_t channels = x.size(1), pixels = x.size(2) * x.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dsconv_ext_to_contiguous", [&] {
    transpose_images<scalar_t>(x.const_data_ptr<scalar_t>(), x.stride(0), out.data_ptr<scalar_t>(), out.stride(0),
                               x.size(0), pixels, channels);
  });
  return out;
}

}  // namespace cpu
}  // namespace dsconv_ext
