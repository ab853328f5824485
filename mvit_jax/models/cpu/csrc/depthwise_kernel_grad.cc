// Kernel gradient of the depthwise 3-D convolution (MViT's conv pooling) on the CPU, as an XLA FFI custom call.
//
// d_kernel[dt, dh, dw, c] = sum over (b, t, h, w, g) of x_pad[b, t*sT+dt, h*sH+dh, w*sW+dw, g, c] * ct[b, t, h, w, g, c]
//
// Why by hand: XLA's CPU backend emits this reduction (27 taps x channels, kept channel axis minor) as scalar
// loops over strided slices, several times slower than the whole forward convolution (docs/performance.md); no
// library offers it for JAX. Here every (tap, channel) accumulator stays in L1 and the channel loop is vectorised.
// Rows (b, t) are split over XLA's intra-op thread pool; each row's sums are added in a fixed order.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

MVIT_CLONES void MultiplyAccumulate(float* __restrict acc, const float* __restrict x, const float* __restrict g,
                                    int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i] * g[i];
}

struct Geometry {
  int64_t B, T, H, W, G, C;     // input (unpadded)
  int64_t To, Ho, Wo;            // output grid
  int64_t kT, kH, kW, sT, sH, sW, pT, pH, pW;
};

// Sums of one output row (b, to) into acc (kT*kH*kW*C floats, zeroed by the caller).
void Row(const Geometry& q, const float* x, const float* ct, int64_t b, int64_t to, float* acc) {
  const int64_t gc = q.G * q.C;
  for (int64_t dt = 0; dt < q.kT; ++dt) {
    const int64_t t = to * q.sT + dt - q.pT;
    if (t < 0 || t >= q.T) continue;
    for (int64_t ho = 0; ho < q.Ho; ++ho) {
      for (int64_t dh = 0; dh < q.kH; ++dh) {
        const int64_t h = ho * q.sH + dh - q.pH;
        if (h < 0 || h >= q.H) continue;
        const float* x_row = x + ((b * q.T + t) * q.H + h) * q.W * gc;
        const float* ct_row = ct + ((b * q.To + to) * q.Ho + ho) * q.Wo * gc;
        for (int64_t dw = 0; dw < q.kW; ++dw) {
          float* a = acc + ((dt * q.kH + dh) * q.kW + dw) * q.C;
          for (int64_t wo = 0; wo < q.Wo; ++wo) {
            const int64_t w = wo * q.sW + dw - q.pW;
            if (w < 0 || w >= q.W) continue;
            const float* xv = x_row + w * gc;
            const float* gv = ct_row + wo * gc;
            for (int64_t g = 0; g < q.G; ++g) MultiplyAccumulate(a, xv + g * q.C, gv + g * q.C, q.C);
          }
        }
      }
    }
  }
}

ffi::Error KernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> ct,
                          ffi::Span<const int64_t> kernel, ffi::Span<const int64_t> stride,
                          ffi::ResultBuffer<ffi::F32> out) {
  auto xd = x.dimensions();
  auto cd = ct.dimensions();
  if (xd.size() != 6 || cd.size() != 6 || kernel.size() != 3 || stride.size() != 3) {
    return ffi::Error::InvalidArgument("depthwise_kernel_grad: x, ct (B, T, H, W, G, C); kernel, stride of 3");
  }
  Geometry q{xd[0], xd[1], xd[2], xd[3], xd[4], xd[5], cd[1], cd[2], cd[3],
             kernel[0], kernel[1], kernel[2], stride[0], stride[1], stride[2],
             kernel[0] / 2, kernel[1] / 2, kernel[2] / 2};
  const int64_t taps_c = q.kT * q.kH * q.kW * q.C;
  const int64_t rows = q.B * q.To;
  // Per-row sums, added in row order afterwards: the result does not depend on which thread took which row.
  std::vector<float> partial(rows * taps_c, 0.0f);
  const float* xs = x.typed_data();
  const float* cts = ct.typed_data();
  float* sums = partial.data();
  mvit::ParallelFor(pool, rows, [q, xs, cts, sums, taps_c](int64_t r) {
    Row(q, xs, cts, r / q.To, r % q.To, sums + r * taps_c);
  });
  float* result = out->typed_data();
  std::fill(result, result + taps_c, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = partial.data() + r * taps_c;
    for (int64_t i = 0; i < taps_c; ++i) result[i] += p[i];
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MvitDepthwiseKernelGrad, KernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<ffi::Span<const int64_t>>("kernel")
                                  .Attr<ffi::Span<const int64_t>>("stride")
                                  .Ret<ffi::Buffer<ffi::F32>>());
