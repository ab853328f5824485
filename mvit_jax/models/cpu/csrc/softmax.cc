// Softmax over the last axis of a float32 array on the CPU, and its vector-Jacobian product, as XLA FFI calls.
//
//   forward:  p[r, i] = exp(x[r, i] - max_j x[r, j]) / sum_j exp(x[r, j] - max_j x[r, j])
//   backward: dx[r, i] = p[r, i] * (g[r, i] - sum_j g[r, j] p[r, j])
//
// Why by hand: XLA's CPU loop fusions take about twice as long as a fused softmax for MViT-B's attention
// (docs/performance.md), because the row reductions and exp are emitted as separate passes with scalar exp.
// Here a row stays in L1 for its three passes, and exp is a Cephes-style polynomial the compiler vectorises
// (AVX-512 / AVX2 / SSE chosen at load time).
// Sums use 16 fixed lanes, so the result does not depend on the instruction set or the thread split. Rows are
// split over XLA's intra-op thread pool.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>

#include "cpu_parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 16;

// exp(x) for x <= 0 (softmax arguments), relative error ~2 ulp; arguments below -87.3 give exp(-87.3) ~ 1e-38
// instead of an underflow, NaN stays NaN. Cody-Waite range reduction to [-ln2/2, ln2/2], Cephes expf polynomial.
inline float ExpNonPositive(float x) {
  x = x < -87.33654f ? -87.33654f : x;
  const float n = __builtin_rintf(x * 1.44269504088896341f);
  const float f = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  const float y = p * f * f + f + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

MVIT_CLONES void SoftmaxRow(const float* __restrict x, float* __restrict p, int64_t n) {
  float lane_max[kLanes];
  for (int j = 0; j < kLanes; ++j) lane_max[j] = -INFINITY;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lane_max[j] = x[i + j] > lane_max[j] ? x[i + j] : lane_max[j];
  }
  float m = -INFINITY;
  for (int j = 0; j < kLanes; ++j) m = lane_max[j] > m ? lane_max[j] : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;

  float lane_sum[kLanes] = {};
  i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float e = ExpNonPositive(x[i + j] - m);
      p[i + j] = e;
      lane_sum[j] += e;
    }
  }
  float sum = 0.0f;
  for (int j = 0; j < kLanes; ++j) sum += lane_sum[j];
  for (; i < n; ++i) {
    p[i] = ExpNonPositive(x[i] - m);
    sum += p[i];
  }
  const float inv = 1.0f / sum;
  for (i = 0; i < n; ++i) p[i] *= inv;
}

MVIT_CLONES void SoftmaxVjpRow(const float* __restrict p, const float* __restrict g, float* __restrict dx,
                               int64_t n) {
  float lane_sum[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lane_sum[j] += g[i + j] * p[i + j];
  }
  float d = 0.0f;
  for (int j = 0; j < kLanes; ++j) d += lane_sum[j];
  for (; i < n; ++i) d += g[i] * p[i];
  for (i = 0; i < n; ++i) dx[i] = p[i] * (g[i] - d);
}

// Runs row_fn(first_row, end_row) over blocks of ~16K elements' rows, in parallel.
void ParallelRows(ffi::ThreadPool& pool, int64_t rows, int64_t row_length,
                  std::function<void(int64_t, int64_t)> row_fn) {
  const int64_t block = std::max<int64_t>(1, 16384 / std::max<int64_t>(row_length, 1));
  mvit::ParallelFor(pool, (rows + block - 1) / block,
                    [row_fn, rows, block](int64_t b) { row_fn(b * block, std::min(rows, (b + 1) * block)); });
}

int64_t RowLength(const ffi::Buffer<ffi::F32>& x) {
  auto d = x.dimensions();
  return d.size() == 0 ? 1 : d[d.size() - 1];
}

ffi::Error SoftmaxImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> out) {
  const int64_t n = RowLength(x);
  const int64_t rows = n == 0 ? 0 : static_cast<int64_t>(x.element_count()) / n;
  const float* xs = x.typed_data();
  float* ps = out->typed_data();
  ParallelRows(pool, rows, n, [xs, ps, n](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) SoftmaxRow(xs + r * n, ps + r * n, n);
  });
  return ffi::Error::Success();
}

ffi::Error SoftmaxVjpImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> p, ffi::Buffer<ffi::F32> g,
                          ffi::ResultBuffer<ffi::F32> out) {
  if (p.element_count() != g.element_count()) {
    return ffi::Error::InvalidArgument("softmax_vjp: probabilities and cotangent differ in size");
  }
  const int64_t n = RowLength(p);
  const int64_t rows = n == 0 ? 0 : static_cast<int64_t>(p.element_count()) / n;
  const float* ps = p.typed_data();
  const float* gs = g.typed_data();
  float* dxs = out->typed_data();
  ParallelRows(pool, rows, n, [ps, gs, dxs, n](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) SoftmaxVjpRow(ps + r * n, gs + r * n, dxs + r * n, n);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MvitSoftmax, SoftmaxImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MvitSoftmaxVjp, SoftmaxVjpImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
