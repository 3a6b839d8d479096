// Software prefetch for kernels whose short, strided reads do not train the hardware
// prefetcher (measured: the direct NCHW kernels and the channels_last filter gradient ran
// with their loads waiting on memory without it).
#pragma once

#include <cstdint>

namespace dsconv_ext {
namespace cpu {

// Asks for `count` floats from p to be brought into cache (for writing when kWrite).
template <bool kWrite = false>
inline void prefetch_floats(const float* p, int64_t count) {
  const char* bytes = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < count * static_cast<int64_t>(sizeof(float)); b += 64) __builtin_prefetch(bytes + b, kWrite, 3);
}

// A channels_last row: `pixels` pixels `pixel_stride` elements apart, `count` channels of each
// (for writing when kWrite).
template <bool kWrite = false, typename scalar_t>
inline void prefetch_pixel_channels(const scalar_t* first, int64_t pixels, int64_t pixel_stride, int64_t count) {
  for (int64_t p = 0; p < pixels; ++p, first += pixel_stride) {
    __builtin_prefetch(first, kWrite, 3);
    __builtin_prefetch(first + count - 1, kWrite, 3);
  }
}

}  // namespace cpu
}  // namespace dsconv_ext
