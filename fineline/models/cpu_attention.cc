// Masked softmax attention on the CPU, forward and backward, as XLA FFI handlers.
//
// Layouts are the model's own: q, out B×S×H×Dh; k, v B×T×K×Dh (K key/value heads, each
// shared by G = H / K query heads); mask B×S×T or 1×S×T. Every (b, key/value head) pair is
// one task, so a task owns its rows of dk and dv. A task walks the queries in blocks of at
// most `block` rows, each block through its G query heads. A block scores only the keys
// from the first any of its rows sees, and with `causal` (the mask hides every key after the
// query's own index, S = T) only up to its last row; a packed row's next sequence starts a
// new block, so its queries skip the keys of the sequences before. The blocks' products are
// single-threaded BLAS calls on strided views (no transposed copies), the tasks spread over
// `threads`.
//
// The forward keeps each row's max score and 1 / Σ exp, so the backward recomputes the
// probabilities block by block instead of storing B×H×S×T of them. As in the XLA path, a
// masked slot has probability 0, a row that sees no key attends uniformly, and no gradient
// flows through masked scores.

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cblas.h"
#include "cpu_parallel.h"
#include "cpu_vector_exp.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr float kMasked = -FLT_MAX;

struct Shape {
  int64_t B, S, T, H, K, Dh, block;
  bool causal;
  bool shared_mask;  // one S×T mask for every row of the batch
  int64_t G() const { return H / K; }
  int64_t q_ld() const { return H * Dh; }   // row stride of one head's S×Dh view
  int64_t kv_ld() const { return K * Dh; }  // row stride of one head's T×Dh view
};

void sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// The mask is read as bytes: GCC vectorises the row loops over uint8_t, not over bool.
const uint8_t* mask_row(const bool* mask, const Shape& d, int64_t b, int64_t s) {
  return reinterpret_cast<const uint8_t*>(mask) + ((d.shared_mask ? 0 : b) * d.S + s) * d.T;
}

// A block of queries [s0, s0 + n) and the key slots [first, first + seen) it scores: up to
// its last row when causal, and from the first slot any of its rows sees. The slots left out
// have probability exactly 0.
struct QueryBlock {
  int64_t s0, n, first, seen;
};

// The first key slot query s sees, or -1 when it sees none.
int64_t first_key(const Shape& d, const bool* mask, int64_t b, int64_t s) {
  const uint8_t* m = mask_row(mask, d, b, s);
  const int64_t end = d.causal ? s + 1 : d.T;
  int64_t t = 0;
  while (t < end && !m[t]) ++t;
  return t == end ? -1 : t;
}

// The query blocks of batch row b: at most `block` rows each, and a new block wherever a
// row's first key lies kMinSkip or more slots past its block's, as where a packed row's next
// sequence starts: the sequence's queries then skip the keys of the ones before. A block
// with a row that sees no key scores every slot, over which that row attends uniformly.
constexpr int64_t kMinSkip = 16;

std::vector<QueryBlock> query_blocks(const Shape& d, const bool* mask, int64_t b) {
  std::vector<QueryBlock> blocks;
  for (int64_t s0 = 0; s0 < d.S;) {
    int64_t first = first_key(d, mask, b, s0), n = 1;
    bool blind = first < 0;
    for (; n < d.block && s0 + n < d.S; ++n) {
      const int64_t row_first = first_key(d, mask, b, s0 + n);
      if (!blind && row_first >= first + kMinSkip) break;
      blind = blind || row_first < 0;
      first = std::min(first, row_first);
    }
    if (blind) {
      blocks.push_back({s0, n, 0, d.T});
    } else {
      blocks.push_back({s0, n, first, (d.causal ? s0 + n : d.T) - first});
    }
    s0 += n;
  }
  return blocks;
}

// exp(score − mx) of a visible score, 0 of a masked one, and 1 of every slot of a row that
// sees no key (it attends uniformly). The vectorised loops evaluate exp on masked slots too,
// on their raw scores: the most negative float there would send each such lane of glibc's
// vector exp down its slow scalar path.
inline float softmax_numerator(float score, bool visible, float mx, bool blind) {
  return blind ? 1.0f : visible ? std::exp(score - mx) : 0.0f;
}

void forward_task(const Shape& d, const float* q, const float* k, const float* v,
                  const bool* mask, float* out, float* row_max, float* row_inv, int64_t b,
                  int64_t kv, std::vector<float>& probs) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.Dh)), masked = kMasked;
  const float* k_h = k + (b * d.T * d.K + kv) * d.Dh;
  const float* v_h = v + (b * d.T * d.K + kv) * d.Dh;
  probs.resize(d.block * d.T);
  for (const auto [s0, n, first, seen] : query_blocks(d, mask, b)) {
    for (int64_t h = kv * d.G(); h < (kv + 1) * d.G(); ++h) {
      const int64_t q_off = (b * d.S * d.H + h) * d.Dh;
      float* p = probs.data();
      sgemm(CblasNoTrans, CblasTrans, n, seen, d.Dh, scale, q + q_off + s0 * d.q_ld(), d.q_ld(),
            k_h + first * d.kv_ld(), d.kv_ld(), 0.0f, p, seen);
      for (int64_t i = 0; i < n; ++i) {
        float* row = p + i * seen;
        const uint8_t* m = mask_row(mask, d, b, s0 + i) + first;
        float mx = masked;
        int64_t visible = 0;
#pragma omp simd reduction(max : mx) reduction(+ : visible)
        for (int64_t t = 0; t < seen; ++t) {
          mx = std::max(mx, m[t] ? row[t] : masked);
          visible += m[t];
        }
        const bool blind = visible == 0;  // not mx == masked: a NaN score must stay NaN
        float sum = 0.0f;
        for (int64_t t = 0; t < seen; ++t) {
          row[t] = softmax_numerator(row[t], m[t], mx, blind);
          sum += row[t];
        }
        const float inv = 1.0f / sum;
        for (int64_t t = 0; t < seen; ++t) row[t] *= inv;
        row_max[(b * d.H + h) * d.S + s0 + i] = mx;
        row_inv[(b * d.H + h) * d.S + s0 + i] = inv;
      }
      sgemm(CblasNoTrans, CblasNoTrans, n, d.Dh, seen, 1.0f, p, seen, v_h + first * d.kv_ld(),
            d.kv_ld(), 0.0f, out + q_off + s0 * d.q_ld(), d.q_ld());
    }
  }
}

void backward_task(const Shape& d, const float* q, const float* k, const float* v,
                   const bool* mask, const float* out, const float* row_max,
                   const float* row_inv, const float* dout, float* dq, float* dk, float* dv,
                   int64_t b, int64_t kv, std::vector<float>& scratch) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.Dh)), masked = kMasked;
  const int64_t kv_off = (b * d.T * d.K + kv) * d.Dh;
  const float *k_h = k + kv_off, *v_h = v + kv_off;
  float *dk_h = dk + kv_off, *dv_h = dv + kv_off;
  for (int64_t t = 0; t < d.T; ++t) {
    std::memset(dk_h + t * d.kv_ld(), 0, d.Dh * sizeof(float));
    std::memset(dv_h + t * d.kv_ld(), 0, d.Dh * sizeof(float));
  }
  scratch.resize(2 * d.block * d.T);
  for (const auto [s0, n, first, seen] : query_blocks(d, mask, b)) {
    const int64_t kv_first = first * d.kv_ld();
    for (int64_t h = kv * d.G(); h < (kv + 1) * d.G(); ++h) {
      const int64_t off = (b * d.S * d.H + h) * d.Dh + s0 * d.q_ld();
      float* p = scratch.data();
      float* dscores = p + d.block * d.T;
      sgemm(CblasNoTrans, CblasTrans, n, seen, d.Dh, scale, q + off, d.q_ld(), k_h + kv_first,
            d.kv_ld(), 0.0f, p, seen);
      sgemm(CblasNoTrans, CblasTrans, n, seen, d.Dh, 1.0f, dout + off, d.q_ld(), v_h + kv_first,
            d.kv_ld(), 0.0f, dscores, seen);
      for (int64_t i = 0; i < n; ++i) {
        // softmax': p ⊙ (dp − Σ_t p·dp), and Σ_t p·dp = Σ_d dout·out.
        const float* dout_i = dout + off + i * d.q_ld();
        const float* out_i = out + off + i * d.q_ld();
        float row_dot = 0.0f;
        for (int64_t e = 0; e < d.Dh; ++e) row_dot += dout_i[e] * out_i[e];
        const int64_t r = (b * d.H + h) * d.S + s0 + i;
        const float mx = row_max[r], inv = row_inv[r];
        const bool blind = mx == masked;  // a NaN row's inv is NaN either way
        const uint8_t* m = mask_row(mask, d, b, s0 + i) + first;
        float* p_i = p + i * seen;
        float* ds_i = dscores + i * seen;
        for (int64_t t = 0; t < seen; ++t) {
          const float score = p_i[t], dp = ds_i[t];
          const float prob = softmax_numerator(score, m[t], mx, blind) * inv;
          const float ds = prob * (dp - row_dot) * scale;
          p_i[t] = prob;
          ds_i[t] = m[t] ? ds : 0.0f;
        }
      }
      sgemm(CblasNoTrans, CblasNoTrans, n, d.Dh, seen, 1.0f, dscores, seen, k_h + kv_first,
            d.kv_ld(), 0.0f, dq + off, d.q_ld());
      sgemm(CblasTrans, CblasNoTrans, seen, d.Dh, n, 1.0f, dscores, seen, q + off, d.q_ld(), 1.0f,
            dk_h + kv_first, d.kv_ld());
      sgemm(CblasTrans, CblasNoTrans, seen, d.Dh, n, 1.0f, p, seen, dout + off, d.q_ld(), 1.0f,
            dv_h + kv_first, d.kv_ld());
    }
  }
}

ffi::Error shape_of(ffi::Buffer<ffi::F32>& q, ffi::Buffer<ffi::F32>& k, ffi::Buffer<ffi::F32>& v,
                    ffi::Buffer<ffi::PRED>& mask, bool causal, int64_t block, Shape* d) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions(), md = mask.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4 || md.size() != 3) {
    return ffi::Error::InvalidArgument("attention: q, k, v must be rank 4 and the mask rank 3");
  }
  *d = Shape{qd[0], qd[1], kd[1], qd[2], kd[2], qd[3], block, causal, md[0] == 1};
  bool ok = kd[0] == d->B && kd[3] == d->Dh && d->K > 0 && d->H % d->K == 0 && block > 0;
  for (int i = 0; i < 4; ++i) ok = ok && vd[i] == kd[i];
  ok = ok && (md[0] == d->B || md[0] == 1) && md[1] == d->S && md[2] == d->T && (!causal || d->S == d->T);
  if (!ok) {
    return ffi::Error::InvalidArgument(
        "attention: expected q B×S×H×Dh, k and v B×T×K×Dh with K dividing H, mask B×S×T or "
        "1×S×T, "
        "and S = T when causal");
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                   ffi::Buffer<ffi::PRED> mask, bool causal, int64_t block, int64_t threads,
                   ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> row_max,
                   ffi::ResultBuffer<ffi::F32> row_inv) {
  Shape d;
  if (ffi::Error error = shape_of(q, k, v, mask, causal, block, &d); error.failure()) return error;
  parallel_for(d.B * d.K, threads, [&](int64_t task) {
    thread_local std::vector<float> probs;
    forward_task(d, q.typed_data(), k.typed_data(), v.typed_data(), mask.typed_data(),
                 out->typed_data(), row_max->typed_data(), row_inv->typed_data(), task / d.K,
                 task % d.K, probs);
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                    ffi::Buffer<ffi::PRED> mask, ffi::Buffer<ffi::F32> out,
                    ffi::Buffer<ffi::F32> row_max, ffi::Buffer<ffi::F32> row_inv,
                    ffi::Buffer<ffi::F32> dout, bool causal, int64_t block, int64_t threads,
                    ffi::ResultBuffer<ffi::F32> dq, ffi::ResultBuffer<ffi::F32> dk,
                    ffi::ResultBuffer<ffi::F32> dv) {
  Shape d;
  if (ffi::Error error = shape_of(q, k, v, mask, causal, block, &d); error.failure()) return error;
  parallel_for(d.B * d.K, threads, [&](int64_t task) {
    thread_local std::vector<float> scratch;
    backward_task(d, q.typed_data(), k.typed_data(), v.typed_data(), mask.typed_data(),
                  out.typed_data(), row_max.typed_data(), row_inv.typed_data(),
                  dout.typed_data(), dq->typed_data(), dk->typed_data(), dv->typed_data(),
                  task / d.K, task % d.K, scratch);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(FinelineAttentionForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Attr<bool>("causal")
                                  .Attr<int64_t>("block")
                                  .Attr<int64_t>("threads")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(FinelineAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("causal")
                                  .Attr<int64_t>("block")
                                  .Attr<int64_t>("threads")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
