// Log-probabilities of target tokens under the LM head, as an XLA FFI handler: for each row
// i of x (C×D), log softmax(x_i · W)[target_i] and whether target_i is the first maximum of
// the row's logits (the greedy pick). W is D×V, or read as the transpose of a V×D tied
// embedding.
//
// The C×V logits are never stored: each thread takes a slice of the rows and walks the
// vocabulary in tiles of kTile logits per row, one single-threaded OpenBLAS call each, so a
// tile is reduced while it is still in cache. A row keeps its running max, the index of its
// first occurrence, Σ exp(logit − max) (rescaled when the max grows) and its target's logit.

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cblas.h"
#include "cpu_parallel.h"
#include "cpu_vector_exp.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kTile = 1024;

struct Row {
  float max = -FLT_MAX, sum = 0.0f, target = 0.0f;
  int64_t argmax = -1;
};

// Folds logits [v0, v0 + n) of one row into its running state.
void fold(const float* logits, int64_t v0, int64_t n, int64_t target, Row& row) {
  float tile_max = -FLT_MAX;
#pragma omp simd reduction(max : tile_max)
  for (int64_t t = 0; t < n; ++t) tile_max = std::max(tile_max, logits[t]);
  if (tile_max > row.max) {  // strictly: an equal later maximum is not the first
    row.sum *= std::exp(row.max - tile_max);
    row.max = tile_max;
    row.argmax = v0 + (std::find(logits, logits + n, tile_max) - logits);
  }
  float sum = 0.0f;
  for (int64_t t = 0; t < n; ++t) sum += std::exp(logits[t] - row.max);
  row.sum += sum;
  if (target >= v0 && target < v0 + n) row.target = logits[target - v0];
}

ffi::Error TargetLogprobs(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                          ffi::Buffer<ffi::S32> targets, bool transpose_w, int64_t threads,
                          ffi::ResultBuffer<ffi::F32> logprobs,
                          ffi::ResultBuffer<ffi::PRED> greedy) {
  const auto x_dims = x.dimensions(), w_dims = w.dimensions();
  if (x_dims.size() != 2 || w_dims.size() != 2 || targets.dimensions().size() != 1 ||
      targets.dimensions()[0] != x_dims[0] || w_dims[transpose_w ? 1 : 0] != x_dims[1]) {
    return ffi::Error::InvalidArgument(
        "target_logprobs: expected x C×D, W D×V (V×D when transposed) and C targets");
  }
  const int64_t C = x_dims[0], D = x_dims[1], V = w_dims[transpose_w ? 0 : 1];
  const float* X = x.typed_data();
  const float* W = w.typed_data();
  const int32_t* target = targets.typed_data();
  float* out = logprobs->typed_data();
  bool* is_greedy = greedy->typed_data();
  const int64_t parts = std::max<int64_t>(1, std::min(threads, C));
  auto slice = [&](int64_t p) {
    const int64_t lo = C * p / parts, hi = C * (p + 1) / parts, n = hi - lo;
    if (n == 0) return;
    std::vector<float> tile(n * kTile);
    std::vector<Row> rows(n);
    for (int64_t v0 = 0; v0 < V; v0 += kTile) {
      const int64_t width = std::min(kTile, V - v0);
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, transpose_w ? CblasTrans : CblasNoTrans, n,
                        width, D, 1.0f, X + lo * D, D, W + (transpose_w ? v0 * D : v0),
                        transpose_w ? D : V, 0.0f, tile.data(), width);
      for (int64_t i = 0; i < n; ++i) {
        fold(tile.data() + i * width, v0, width, target[lo + i], rows[i]);
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      const Row& row = rows[i];
      out[lo + i] = row.target - row.max - std::log(row.sum);
      is_greedy[lo + i] = row.argmax == target[lo + i];
    }
  };
  parallel_for(parts, parts, slice);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(FinelineTargetLogprobs, TargetLogprobs,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Attr<bool>("transpose_w")
                                  .Attr<int64_t>("threads")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::PRED>>());
