// channels_last depthwise convolution on whole tensors: the tiles of channels_last_tiles.h
// threaded over output rows, and the filter gradient's row chunks and their fixed-order sum.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "channels_last_tiles.h"
#include "depthwise_cpu.h"
#include "prefetch.h"

namespace dsconv_ext {
namespace cpu {
namespace {

// fp32 outputs of 8 MiB and more are written with non-temporal stores: a layer's input, its
// output and the next layer's output would not stay cached together anyway (a server core's
// share of the last-level cache is a few MiB), and skipping the read of each output line
// before it is written, and the eviction of the input to make room for it, made 3x3 and 7x7
// forward and grad-input at 56x56 (9.6 and 14.4 MB outputs) faster; smaller outputs stay
// cached for the layer that reads them next.
constexpr int64_t kStreamOutputBytes = int64_t(8) << 20;
// Output rows between the filter gradient's prefetch and its use.
constexpr int64_t kPrefetchRows = 2;
// The filter gradient's row groups (weight_grad_channels_last): grad_out and x rows of all
// channels that fit in a quarter of a server core's L2 (1-2 MiB), leaving room for the
// neighbouring lines the hardware fetches and the next group's prefetched rows. Without the
// groups, a 56x56 x 144 3x3 layer ran at half PyTorch's speed: one channel block walking down 28
// rows of 56 pixels streamed 1.8 MB, and the next block found its lines evicted.
constexpr int64_t kFilterGradGroupBytes = int64_t(256) << 10;

template <typename scalar_t>
void gather_rows(const Gather& ga, const scalar_t* src, Strides4 ss, const at::opmath_type<scalar_t>* w_t,
                 int64_t c_stride_w, const at::opmath_type<scalar_t>* bias, scalar_t* out, Strides4 os,
                 int64_t batch, int64_t channels) {
  constexpr int64_t V = VecIO<scalar_t>::kWidth;
  const int64_t rows_per_task = rows_per_call(ga);
  const int64_t tasks_per_image = (ga.out_h + rows_per_task - 1) / rows_per_task;
  at::parallel_for(0, batch * tasks_per_image, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / tasks_per_image, r = (task % tasks_per_image) * rows_per_task;
      const int64_t row_count = std::min(rows_per_task, ga.out_h - r);
      for (int64_t c0 = 0; c0 < channels; c0 += V) {
        const int64_t count = std::min(V, channels - c0);
        // The next task's output lines, asked for ownership ahead of its stores: written into
        // lines not in cache (a fresh output tensor in a forward+backward), the forward took
        // 0.39 ms at 28x28 x 192 3x3 against 0.16 ms in a loop; with this, 0.20-0.28 ms.
        if (!ga.stream_output && task + 1 < end) {
          const int64_t next_n = (task + 1) / tasks_per_image, next_r = ((task + 1) % tasks_per_image) * rows_per_task;
          for (int64_t row = next_r; row < std::min(next_r + rows_per_task, ga.out_h); ++row)
            prefetch_pixel_channels<true>(out + next_n * os.n + (row * ga.out_row_step + ga.out_row_offset) * os.h +
                                              ga.out_col_offset * os.w + c0,
                                          ga.out_w, ga.out_col_step * os.w, count);
        }
        if (count == V) gather_row<scalar_t, false>(ga, src, ss, w_t, c_stride_w, bias, out, os, n, r, row_count, c0, V);
        else gather_row<scalar_t, true>(ga, src, ss, w_t, c_stride_w, bias, out, os, n, r, row_count, c0, count);
      }
    }
    if (ga.stream_output) stream_fence();
  });
}


template <typename scalar_t>
void weight_grad_channels_last(const ConvGeometry& g, const scalar_t* gy, Strides4 gs, const scalar_t* x, Strides4 xs,
                               at::opmath_type<scalar_t>* grad_w, at::opmath_type<scalar_t>* grad_b) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t V = Vec::size();
  const int64_t taps = g.kernel_h * g.kernel_w;
  const int64_t c_stride = round_up(g.channels, V);
  // Output rows are split into a number of chunks that depends only on the shape (about one
  // per 64k multiply-adds, at most 16); chunk partial sums are added in chunk order, so the
  // result does not depend on the threads.
  const int64_t rows = g.batch * g.out_h;
  const int64_t work = rows * g.out_w * g.channels * taps;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>({rows, 16, work / 65536}));
  const int64_t chunk_size = (taps + 1) * c_stride;
  std::vector<acc_t> partial(chunks * chunk_size, acc_t(0));
  const auto interior = interior_output_columns(g);
  const auto interior_rows = interior_output_rows(g);
  // Bytes of grad_out and x that one more output row brings in, all channels.
  const int64_t row_bytes = (g.out_w + g.stride_h * g.in_w) * g.channels * static_cast<int64_t>(sizeof(scalar_t));
  const int64_t group_rows = std::max<int64_t>(1, kFilterGradGroupBytes / row_bytes);
  // grad_out's row and the source rows that output row `row` reads and row - 1 did not,
  // channels [c0, c0 + count).
  auto prefetch_rows_ahead = [&](int64_t row, int64_t c0, int64_t count) {
    const int64_t n = row / g.out_h, oh = row % g.out_h;
    prefetch_pixel_channels(gy + n * gs.n + oh * gs.h + c0, g.out_w, gs.w, count);
    const int64_t span = (g.kernel_h - 1) * g.dilation_h, first = oh * g.stride_h - g.pad_top;
    const int64_t fresh = oh == 0 ? first : std::max(first, first - g.stride_h + span + 1);
    for (int64_t ih = std::max<int64_t>(fresh, 0); ih <= std::min(first + span, g.in_h - 1); ++ih)
      prefetch_pixel_channels(x + n * xs.n + ih * xs.h + c0, g.in_w, xs.w, count);
  };
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      acc_t* part = partial.data() + chunk * (taps + 1) * c_stride;
      acc_t* bias_part = part + taps * c_stride;
      // Channel blocks outside, rows inside: consecutive rows share all but stride_h of their
      // source rows, and one channel block of those stays in L1 from row to row. The rows go in
      // groups that fit in L2 with all their channels, so that each cache line, fetched once
      // with its neighbours by the hardware, is still there when the next channel block reads
      // it. Per channel block the rows are still summed in order: the result is the same.
      const int64_t row_begin = rows * chunk / chunks, row_end = rows * (chunk + 1) / chunks;
      for (int64_t group = row_begin; group < row_end; group += group_rows) {
        const int64_t group_end = std::min(row_end, group + group_rows);
        for (int64_t c0 = 0; c0 < g.channels; c0 += V) {
          const int64_t count = std::min<int64_t>(V, g.channels - c0);
          for (int64_t row = group, run; row < group_end; row += run) {
            const int64_t n = row / g.out_h, oh = row % g.out_h;
            run = rows_sharing_taps(interior_rows, oh, group_end - row);
            for (int64_t ahead = row + kPrefetchRows; ahead < std::min(group_end, row + run + kPrefetchRows); ++ahead)
              prefetch_rows_ahead(ahead, c0, count);
            const scalar_t* gy_row = gy + n * gs.n + oh * gs.h;
            filter_grad_rows(g, gy_row + c0, gs.w, x + n * xs.n + c0, xs, oh, run, gs.h, interior, c0, count,
                             grad_w != nullptr, part, c_stride, grad_b ? bias_part + c0 : nullptr);
          }
        }
      }
    }
  });
  // Chunk sums, vectorised over channels, in chunk order; then [tap][C] -> [C][tap].
  for (int64_t chunk = 1; chunk < chunks; ++chunk) {
    const acc_t* src = partial.data() + chunk * chunk_size;
    acc_t* dst = partial.data();
    for (int64_t k = 0; k < chunk_size; k += V) (Vec::loadu(dst + k) + Vec::loadu(src + k)).store(dst + k);
  }
  for (int64_t c = 0; c < g.channels; ++c) {
    if (grad_w)
      for (int64_t t = 0; t < taps; ++t) grad_w[c * taps + t] = partial[t * c_stride + c];
    if (grad_b) grad_b[c] = partial[taps * c_stride + c];
  }
}

}  // namespace

void forward_channels_last_dispatch(const at::Tensor& x, const at::Tensor& w_t, const at::Tensor& bias_acc,
                                    at::Tensor& y, const ConvGeometry& g) {
  Gather ga = forward_gather(g);
  ga.stream_output = y.nbytes() >= kStreamOutputBytes;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dsconv_ext_forward_channels_last", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    gather_rows<scalar_t>(ga, x.data_ptr<scalar_t>(), Strides4(x), w_t.data_ptr<acc_t>(), w_t.size(1),
                          bias_acc.defined() ? bias_acc.data_ptr<acc_t>() : nullptr, y.data_ptr<scalar_t>(),
                          Strides4(y), g.batch, g.channels);
  });
}
void backward_channels_last_dispatch(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w_t,
                                     at::Tensor& grad_x, at::Tensor& grad_w, at::Tensor& grad_b, const ConvGeometry& g) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dsconv_ext_backward_channels_last", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gy = grad_out.data_ptr<scalar_t>();
    const acc_t* w_ptr = w_t.data_ptr<acc_t>();
    if (grad_x.defined()) {
      for (Gather& ga : grad_input_gathers(g)) {
        ga.stream_output = grad_x.nbytes() >= kStreamOutputBytes;
        gather_rows<scalar_t>(ga, gy, Strides4(grad_out), w_ptr, w_t.size(1), nullptr, grad_x.data_ptr<scalar_t>(),
                              Strides4(grad_x), g.batch, g.channels);
      }
    }
    if (grad_w.defined() || grad_b.defined()) {
      weight_grad_channels_last<scalar_t>(g, gy, Strides4(grad_out), x.data_ptr<scalar_t>(), Strides4(x),
                                          grad_w.defined() ? grad_w.data_ptr<acc_t>() : nullptr,
                                          grad_b.defined() ? grad_b.data_ptr<acc_t>() : nullptr);
    }
  });
}

}  // namespace cpu
}  // namespace dsconv_ext
