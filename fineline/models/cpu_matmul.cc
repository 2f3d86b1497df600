// Float32 matrix products on the CPU as an XLA FFI handler: c = op(a)·op(b), op(x) = x or
// xᵀ (row-major), as single-threaded OpenBLAS calls on row or column slices of c, one per
// thread. The transposes are read in place: no copy of either operand is made.

#include <algorithm>
#include <cstdint>

#include "cblas.h"
#include "cpu_parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Below this many multiply-adds a product stays on one thread: starting one costs more.
constexpr int64_t kMinParallelWork = int64_t{1} << 22;

ffi::Error Matmul(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b, bool transpose_a,
                  bool transpose_b, int64_t threads, ffi::ResultBuffer<ffi::F32> c) {
  const auto a_dims = a.dimensions();
  const auto b_dims = b.dimensions();
  if (a_dims.size() != 2 || b_dims.size() != 2 ||
      a_dims[transpose_a ? 0 : 1] != b_dims[transpose_b ? 1 : 0]) {
    return ffi::Error::InvalidArgument("matmul: expected 2-D operands with matching inner sizes");
  }
  const int64_t M = a_dims[transpose_a ? 1 : 0], K = a_dims[transpose_a ? 0 : 1];
  const int64_t N = b_dims[transpose_b ? 0 : 1];
  const int64_t lda = a_dims[1], ldb = b_dims[1];
  const CBLAS_TRANSPOSE ta = transpose_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = transpose_b ? CblasTrans : CblasNoTrans;
  const float* A = a.typed_data();
  const float* B = b.typed_data();
  float* C = c->typed_data();
  const int64_t parts = M * N * K < kMinParallelWork ? 1 : std::max<int64_t>(1, threads);
  // Slices along c's longer side, in multiples of 16 so every slice keeps whole BLAS panels.
  const bool by_rows = M >= N;
  const int64_t extent = by_rows ? M : N;
  auto slice = [&](int64_t p) {
    const int64_t step = (extent / parts + 15) / 16 * 16;
    const int64_t lo = std::min(extent, p * step);
    const int64_t hi = p + 1 == parts ? extent : std::min(extent, lo + step);
    if (hi <= lo) return;
    if (by_rows) {
      scipy_cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, N, K, 1.0f,
                        A + (transpose_a ? lo : lo * lda), lda, B, ldb, 0.0f, C + lo * N, N);
    } else {
      scipy_cblas_sgemm(CblasRowMajor, ta, tb, M, hi - lo, K, 1.0f, A, lda,
                        B + (transpose_b ? lo * ldb : lo), ldb, 0.0f, C + lo, N);
    }
  };
  parallel_for(parts, parts, slice);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(FinelineMatmul, Matmul,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b")
                                  .Attr<int64_t>("threads")
                                  .Ret<ffi::Buffer<ffi::F32>>());
