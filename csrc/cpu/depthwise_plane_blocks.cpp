// NCHW layers with narrow planes (fewer than 16 output columns, see depthwise_cpu.cpp): the
// width-vectorised kernels would leave most lanes idle, so each task transposes a block of 16
// planes of one image into a small channels_last buffer (a pixel = the block's 16 channels),
// runs the channels_last tiles (channels_last_tiles.h) on it and transposes the result back
// into the output planes. Copying whole tensors to channels_last and back instead costs two
// more passes over memory and three tensor allocations per forward+backward.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "channels_last_tiles.h"
#include "depthwise_cpu.h"

namespace dsconv_ext {
namespace cpu {
namespace {

constexpr int64_t kBlockPlanes = 16;

// pixels[p][c] = planes[c][p] for c < count: `count` planes, `plane_stride` apart, of
// `pixel_count` contiguous pixels each; pixels rows are kBlockPlanes wide.
template <typename scalar_t>
void planes_to_pixels(const scalar_t* planes, int64_t plane_stride, int64_t count, int64_t pixel_count,
                      scalar_t* pixels) {
  for (int64_t p0 = 0; p0 < pixel_count; p0 += 16)
    at::vec::transpose_mxn<scalar_t>(planes + p0, plane_stride, pixels + p0 * kBlockPlanes, kBlockPlanes,
                                     static_cast<int>(count), static_cast<int>(std::min<int64_t>(16, pixel_count - p0)));
}

// The inverse: planes[c][p] = pixels[p][c].
template <typename scalar_t>
void pixels_to_planes(const scalar_t* pixels, int64_t count, int64_t pixel_count, scalar_t* planes,
                      int64_t plane_stride) {
  for (int64_t p0 = 0; p0 < pixel_count; p0 += 16)
    at::vec::transpose_mxn<scalar_t>(pixels + p0 * kBlockPlanes, kBlockPlanes, planes + p0, plane_stride,
                                     static_cast<int>(std::min<int64_t>(16, pixel_count - p0)), static_cast<int>(count));
}

// A block's buffer of h x w pixels.
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
  const Gather ga = forward_gather(g);
  const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
  scalar_t* y_ptr = y.data_ptr<scalar_t>();
  const acc_t* w_ptr = w_t.const_data_ptr<acc_t>();
  const acc_t* bias = bias_acc.defined() ? bias_acc.const_data_ptr<acc_t>() : nullptr;
  const int64_t in_pixels = g.in_h * g.in_w, out_pixels = g.out_h * g.out_w;
  const Strides4 xs(x), ys(y);
  for_each_plane_block(g, [&](int64_t, int64_t n, int64_t c0, int64_t count) {
    thread_local std::vector<scalar_t> in_block, out_block;
    in_block.resize(in_pixels * kBlockPlanes);
    out_block.resize(out_pixels * kBlockPlanes);
    planes_to_pixels(x_ptr + n * xs.n + c0 * xs.c, xs.c, count, in_pixels, in_block.data());
    gather_block(ga, in_block.data(), block_strides(g.in_w), w_ptr + c0, w_t.size(1), bias ? bias + c0 : nullptr,
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
  const std::vector<Gather> input_gathers = need_input ? grad_input_gathers(g) : std::vector<Gather>();
  const int64_t taps = g.kernel_h * g.kernel_w, in_pixels = g.in_h * g.in_w, out_pixels = g.out_h * g.out_w;
  // Per task: [taps + 1][kBlockPlanes] filter and bias gradient sums, added over images in
  // image order below, so the result does not depend on the threads.
  const int64_t sums_size = (taps + 1) * kBlockPlanes;
  const int64_t blocks = (g.channels + kBlockPlanes - 1) / kBlockPlanes;
  std::vector<acc_t> sums((need_weight || need_bias) ? g.batch * blocks * sums_size : 0, acc_t(0));
  const auto interior = interior_output_columns(g);
  const auto interior_rows = interior_output_rows(g);
  const scalar_t* gy_ptr = grad_out.const_data_ptr<scalar_t>();
  const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
  const acc_t* w_ptr = w_t.const_data_ptr<acc_t>();
  const Strides4 gs(grad_out), xs(x), in_block_strides = block_strides(g.in_w), out_block_strides = block_strides(g.out_w);
  for_each_plane_block(g, [&](int64_t task, int64_t n, int64_t c0, int64_t count) {
    thread_local std::vector<scalar_t> gy_block, in_block;
    gy_block.resize(out_pixels * kBlockPlanes);
    in_block.resize(in_pixels * kBlockPlanes);
    planes_to_pixels(gy_ptr + n * gs.n + c0 * gs.c, gs.c, count, out_pixels, gy_block.data());
    if (need_input) {
      for (const Gather& ga : input_gathers)
        gather_block(ga, gy_block.data(), out_block_strides, w_ptr + c0, w_t.size(1), nullptr, in_block.data(),
                     in_block_strides, count);
      const Strides4 gxs(grad_x);
      pixels_to_planes(in_block.data(), count, in_pixels, grad_x.data_ptr<scalar_t>() + n * gxs.n + c0 * gxs.c, gxs.c);
    }
    if (!need_weight && !need_bias) return;
    acc_t* task_sums = sums.data() + task * sums_size;
    acc_t* bias_sums = need_bias ? task_sums + taps * kBlockPlanes : nullptr;
    if (need_weight) planes_to_pixels(x_ptr + n * xs.n + c0 * xs.c, xs.c, count, in_pixels, in_block.data());
    for (int64_t oh = 0, run; oh < g.out_h; oh += run) {
      run = rows_sharing_taps(interior_rows, oh, g.out_h - oh);
      const scalar_t* gy_row = gy_block.data() + oh * out_block_strides.h;
      for (int64_t c = 0; c < count; c += V)
        filter_grad_rows(g, gy_row + c, kBlockPlanes, in_block.data() + c, in_block_strides, oh, run,
                         out_block_strides.h, interior, c, std::min(V, count - c), need_weight, task_sums,
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
