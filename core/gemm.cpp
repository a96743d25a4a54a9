// GEMM dispatch. Blocks depend only on the problem size, never on the thread count, so results are
// the same for any number of threads.
#include "gemm.hpp"

#include <cblas.h>

#include <algorithm>
#include <memory>

#include "gemm_bf16.hpp"
#include "matmul_precision.hpp"
#include "parallel.hpp"
#include "storage.hpp"
#include "strided.hpp"

namespace latent {
namespace {

// A block gets at least kMinWorkPerBlock multiply-adds (below that, one BLAS call beats packing the
// shared operand again plus the task overhead) and at least kMinBlockExtent rows or columns (a
// weight gradient, [out, N] x [N, in] with N tokens, cut into slivers repacks its tall shared
// operand once per sliver), at most kMaxBlocks blocks per GEMM, and block edges are multiples of
// kBlockAlign so that BLAS micro-kernels run full width.
constexpr int64_t kMinWorkPerBlock = 1 << 21, kMinBlockExtent = 64, kMaxBlocks = 8, kBlockAlign = 16;
// Batched products with at least this many entries are parallel over the batch only.
constexpr int64_t kMinBatchTasks = 4;

// Rows (or columns) per block when splitting `extent` for a GEMM of `work` multiply-adds.
int64_t block_size(int64_t extent, int64_t work) {
  const int64_t blocks = std::clamp<int64_t>(std::min(work / kMinWorkPerBlock, extent / kMinBlockExtent), 1, kMaxBlocks);
  const int64_t block = (extent + blocks - 1) / blocks;
  return (block + kBlockAlign - 1) / kBlockAlign * kBlockAlign;
}

// y = alpha * op(A) x + beta * y for a row-major A stored [rows, cols] (op(A) = A^T when trans).
template <class T>
void blas_gemv(bool trans, int64_t rows, int64_t cols, T alpha, const T* A, int64_t lda, const T* x, int64_t incx,
               T beta, T* y, int64_t incy) {
  const auto op = trans ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemv(CblasRowMajor, op, int(rows), int(cols), alpha, A, int(lda), x, int(incx), beta, y, int(incy));
  else
    cblas_dgemv(CblasRowMajor, op, int(rows), int(cols), alpha, A, int(lda), x, int(incx), beta, y, int(incy));
}

template <class T>
void blas(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
          T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  // One row or one column is a matrix-vector product. GEMM would first pack the whole matrix operand
  // (OpenBLAS 0.3.21 does so even for M = 1), which doubled the time of every linear layer in decoding.
  if (M == 1) {  // C[0, :] = op(B)^T a: op(B)^T is B itself when B is stored transposed ([N, K])
    if (tb)
      blas_gemv<T>(false, N, K, alpha, B, ldb, A, ta ? lda : 1, beta, C, 1);
    else
      blas_gemv<T>(true, K, N, alpha, B, ldb, A, ta ? lda : 1, beta, C, 1);
    return;
  }
  if (N == 1) {  // C[:, 0] = op(A) b
    if (ta)
      blas_gemv<T>(true, K, M, alpha, A, lda, B, tb ? 1 : ldb, beta, C, ldc);
    else
      blas_gemv<T>(false, M, K, alpha, A, lda, B, tb ? 1 : ldb, beta, C, ldc);
    return;
  }
  const auto opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, opa, opb, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, opa, opb, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

// The same product cut into blocks across the pool; `kernel` runs one block on its thread. The blocks
// depend only on the shape: with one thread they run one after another, so a kernel never sees a
// different partition (and rounds differently) when the thread count changes.
template <class In, class Out, class Kernel>
void split_blocks(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const In* A, int64_t lda, const In* B,
                  int64_t ldb, Out* C, int64_t ldc, Kernel&& kernel) {
  const int64_t work = M * N * K;
  if (M >= N) {
    parallel_for(M, block_size(M, work), [&](int64_t b, int64_t e) {
      kernel(e - b, N, ta ? A + b : A + b * lda, B, C + b * ldc);
    });
  } else {
    parallel_for(N, block_size(N, work), [&](int64_t b, int64_t e) {
      kernel(M, e - b, A, tb ? B + b * ldb : B + b, C + b);
    });
  }
}

template <class T> void zero_product(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
}

// --- bfloat16 precision: float32 operands rounded once per GEMM call, then every block runs on them.

bool bf16_precision() { return get_matmul_precision() == MatmulPrecision::kBFloat16; }

// A stored [rows, cols] float32 matrix with leading dimension ld, converted to a packed bfloat16 copy
// (leading dimension cols) in memory from the caching allocator.
struct Bf16Matrix {
  Tensor buffer;
  const bfloat16* data() const { return buffer.data<bfloat16>(); }
};

Bf16Matrix to_bf16(const float* src, int64_t rows, int64_t cols, int64_t ld, bool on_pool) {
  Bf16Matrix m{Tensor::empty({rows, cols}, kBFloat16)};
  bfloat16* dst = m.buffer.data<bfloat16>();
  if (on_pool && ld == cols) {
    float_to_bfloat16(src, dst, rows * cols);
  } else if (on_pool) {
    parallel_for(rows, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(cols, 1)), [&](int64_t b, int64_t e) {
      round_to_bf16(src + b * ld, e - b, cols, ld, dst + b * cols);
    });
  } else {
    round_to_bf16(src, rows, cols, ld, dst);
  }
  return m;
}

// Whether the dims [0, dims) of t of size > 1, in order of stride, step through memory as one
// progression starting at `first`: each dim's stride is the previous one's times its size.
bool strides_progress(const Tensor& t, int64_t dims, int64_t first) {
  std::vector<std::pair<int64_t, int64_t>> counted;  // (stride, size)
  for (int64_t d = 0; d < dims; ++d)
    if (t.size(d) > 1) counted.emplace_back(t.stride(d), t.size(d));
  std::sort(counted.begin(), counted.end());
  int64_t expected = first;
  for (const auto& [stride, size] : counted) {
    if (stride != expected) return false;
    expected *= size;
  }
  return true;
}

// Whether t's elements occupy [offset, offset + numel) exactly once: a contiguous tensor, or a
// transpose or permutation of one.
bool fills_its_span(const Tensor& t) { return t.numel() > 0 && strides_progress(t, t.dim(), 1); }

// Whether t is rows of `cols` contiguous elements whose starts are ld >= cols apart in some order of
// its other dims (attention's v: a [B, H, T, V] view of [B, T, H, nope + V] values), as rows x cols
// at row r * ld; and its strides for the same layout with the gaps closed (ld -> cols).
bool rows_with_gaps(const Tensor& t, int64_t& rows, int64_t& cols, int64_t& ld, Shape& packed_strides) {
  if (t.dim() < 2 || t.stride(-1) != 1 || t.numel() == 0) return false;
  cols = t.size(-1), rows = t.numel() / cols, ld = 0;
  for (int64_t d = 0; d + 1 < t.dim(); ++d)  // the smallest stride among the other dims that count
    if (t.size(d) > 1 && (ld == 0 || t.stride(d) < ld)) ld = t.stride(d);
  if (ld < cols || !strides_progress(t, t.dim() - 1, ld)) return false;
  packed_strides = t.strides();
  for (int64_t d = 0; d + 1 < t.dim(); ++d) packed_strides[static_cast<size_t>(d)] = t.stride(d) / ld * cols;
  return true;
}

// float32 GEMM at bfloat16 precision; `on_pool` splits the conversion and the product across the pool.
void gemm_at_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc, bool on_pool) {
  if (M == 0 || N == 0) return;
  const Bf16Matrix a = ta ? to_bf16(A, K, M, lda, on_pool) : to_bf16(A, M, K, lda, on_pool);
  const Bf16Matrix b = tb ? to_bf16(B, N, K, ldb, on_pool) : to_bf16(B, K, N, ldb, on_pool);
  const int64_t a_ld = ta ? M : K, b_ld = tb ? K : N;
  if (on_pool)
    gemm_bf16_blocks(ta, tb, M, N, K, alpha, a.data(), a_ld, b.data(), b_ld, beta, C, ldc);
  else
    gemm_bf16(ta, tb, M, N, K, alpha, a.data(), a_ld, b.data(), b_ld, beta, C, ldc);
}

}  // namespace

void round_to_bf16(const float* src, int64_t rows, int64_t cols, int64_t ld, bfloat16* dst) {
  if (ld == cols && rows > 0) cols *= rows, rows = 1;  // packed already: one flat array
  float_to_bfloat16_rows_here(src, rows, cols, ld, dst, cols);
}

void gemm_bf16_blocks(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bfloat16* A, int64_t lda,
                      const bfloat16* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (K == 0) return zero_product(M, N, beta, C, ldc);
  split_blocks(ta, tb, M, N, K, A, lda, B, ldb, C, ldc,
               [&](int64_t m, int64_t n, const bfloat16* a, const bfloat16* b, float* c) {
                 gemm_bf16(ta, tb, m, n, K, alpha, a, lda, b, ldb, beta, c, ldc);
               });
}

bfloat16* rounded_copy(const Tensor& t) {
  const size_t elements = t.storage()->nbytes() / sizeof(float);
  if (!bf16_precision() || t.dtype() != kFloat32 || t.offset() != 0 ||
      t.numel() != static_cast<int64_t>(elements) || !fills_its_span(t))
    return nullptr;
  auto copy = std::make_shared<Storage>(elements * sizeof(bfloat16));
  t.storage()->attach_rounded(copy);
  return static_cast<bfloat16*>(copy->data());
}

Tensor rounded_view(const Tensor& t) {
  if (t.dtype() != kFloat32) return Tensor();
  std::shared_ptr<Storage> copy = t.storage()->rounded();
  if (!copy) return Tensor();
  auto view = std::make_shared<TensorImpl>();
  view->storage = std::move(copy);
  view->shape = t.shape(), view->strides = t.strides(), view->offset = t.offset();
  view->dtype = kBFloat16;
  return Tensor(std::move(view));
}

int64_t keep_rounded_rows(const Tensor& rows, int64_t start, int64_t length, Tensor& copy, int64_t rounded) {
  const int64_t from = std::min(rounded, start);
  if (!rows.defined() || !bf16_precision() || rows.dtype() != kFloat32) return from;
  if (!rows.is_contiguous() || rows.offset() != 0 || rows.dim() < 2 || length > rows.size(1))
    fail("keep_rounded_rows: expected a contiguous [B, capacity, ...] buffer holding {} positions, got {}", length,
         shape_str(rows.shape()));
  if (!copy.defined() || copy.shape() != rows.shape() || copy.dtype() != kBFloat16)
    copy = Tensor::empty(rows.shape(), kBFloat16);
  const int64_t batch = rows.size(0), per_position = rows.stride(1), per_entry = rows.stride(0);
  for (int64_t b = 0; b < batch; ++b)
    float_to_bfloat16(rows.data<float>() + b * per_entry + from * per_position,
                      copy.data<bfloat16>() + b * per_entry + from * per_position, (length - from) * per_position);
  rows.storage()->attach_rounded(copy.storage());
  return length;
}

Tensor to_bf16_operand(const Tensor& t) {
  if (t.dtype() == kBFloat16) return t;
  if (t.dtype() != kFloat32) fail("to_bf16_operand: expected a float32 tensor, got {}", dtype_name(t.dtype()));
  if (Tensor view = rounded_view(t); view.defined()) return view;
  if (!fills_its_span(t)) {
    int64_t rows = 0, cols = 0, ld = 0;
    Shape packed_strides;
    if (!rows_with_gaps(t, rows, cols, ld, packed_strides)) return cast_copy(t, kBFloat16);
    const Tensor packed = Tensor::empty({rows * cols}, kBFloat16);
    const float* src = t.data<float>();
    bfloat16* dst = packed.data<bfloat16>();
    parallel_for(rows, std::max<int64_t>(1, (1 << 16) / cols), [&](int64_t b, int64_t e) {
      float_to_bfloat16_rows_here(src + b * ld, e - b, cols, ld, dst + b * cols, cols);
    });
    return packed.as_strided(t.shape(), packed_strides, 0);
  }
  const Tensor flat = Tensor::empty({t.numel()}, kBFloat16);
  float_to_bfloat16(t.data<float>(), flat.data<bfloat16>(), t.numel());
  return flat.as_strided(t.shape(), t.strides(), 0);
}

template <class T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
          T beta, T* C, int64_t ldc) {
  if (K == 0) return zero_product(M, N, beta, C, ldc);  // BLAS leaves C untouched for K = 0
  if constexpr (std::is_same_v<T, float>)
    if (bf16_precision()) return gemm_at_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, true);
  split_blocks(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, [&](int64_t m, int64_t n, const T* a, const T* b, T* c) {
    blas(ta, tb, m, n, K, alpha, a, lda, b, ldb, beta, c, ldc);
  });
}
template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t);

template <class T>
void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                 int64_t ldb, T beta, T* C, int64_t ldc) {
  if (K == 0) return zero_product(M, N, beta, C, ldc);  // BLAS leaves C untouched for K = 0
  if constexpr (std::is_same_v<T, float>)
    if (bf16_precision()) return gemm_at_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, false);
  blas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
template void gemm_serial<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                                 int64_t, float, float*, int64_t);
template void gemm_serial<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                                  int64_t, double, double*, int64_t);

namespace {

// A matrix operand as BLAS sees it: base pointer offsets per batch entry, transposed or not, ld.
struct MatrixView {
  Tensor storage;   // keeps a contiguous copy alive when one was needed
  bool transposed = false;
  int64_t ld = 0;
  Shape batch_strides;
};

MatrixView as_matrix(const Tensor& t) {
  const int64_t nd = t.dim();
  const int64_t rows = t.shape()[nd - 2], cols = t.shape()[nd - 1];
  const int64_t rs = t.strides()[nd - 2], cs = t.strides()[nd - 1];
  MatrixView m;
  if ((cs == 1 || cols == 1) && rs >= std::max<int64_t>(1, cols)) {
    m = {t, false, rs, {}};
  } else if ((rs == 1 || rows == 1) && cs >= std::max<int64_t>(1, rows)) {
    m = {t, true, cs, {}};
  } else {
    const Tensor c = cast_copy(t, t.dtype());
    m = {c, false, std::max<int64_t>(1, cols), {}};
  }
  m.batch_strides.assign(m.storage.strides().begin(), m.storage.strides().end() - 2);
  return m;
}

}  // namespace

void matmul_into(const Tensor& a, const Tensor& b, const Tensor& out) {
  if (a.dim() != 2 || b.dim() != 2 || b.size(0) != a.size(1) || out.numel() != a.size(0) * b.size(1) ||
      !out.is_contiguous() || a.dtype() != b.dtype() || out.dtype() != a.dtype())
    fail("matmul_into: {} {} @ {} {} into {} {}", dtype_name(a.dtype()), shape_str(a.shape()), dtype_name(b.dtype()),
         shape_str(b.shape()), dtype_name(out.dtype()), shape_str(out.shape()));
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  const MatrixView ma = as_matrix(a), mb = as_matrix(b);
  dispatch_floating(a.dtype(), "matmul", [&]<class T>() {
    gemm<T>(ma.transposed, mb.transposed, M, N, K, T(1), ma.storage.data<T>(), ma.ld, mb.storage.data<T>(), mb.ld, T(0),
            out.data<T>(), N);
  });
}

Tensor matmul_kernel(const Tensor& a, const Tensor& b) {
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  // At bfloat16 precision (or with an operand the caller rounded already) each float32 operand is
  // rounded once, before broadcasting repeats it, and in its own layout: a transposed weight or
  // gradient is rounded as the flat array it is, not transposed on the way.
  auto f32_or_bf16 = [](const Tensor& t) { return t.dtype() == kFloat32 || t.dtype() == kBFloat16; };
  const bool bf16 = f32_or_bf16(a) && f32_or_bf16(b) &&
                    (bf16_precision() || a.dtype() == kBFloat16 || b.dtype() == kBFloat16);
  if (!bf16 && a.dim() == 2 && b.dim() == 2) {  // one product: no batch to broadcast
    Tensor out = Tensor::empty({M, N}, a.dtype());
    matmul_into(a, b, out);
    return out;
  }
  Shape batch_a(a.shape().begin(), a.shape().end() - 2), batch_b(b.shape().begin(), b.shape().end() - 2);
  const Shape batch = broadcast_shapes(batch_a, batch_b, "matmul");
  Shape ea = batch, eb = batch;
  ea.insert(ea.end(), {M, K});
  eb.insert(eb.end(), {K, N});
  auto expanded = [](const Tensor& t, const Shape& shape) {
    Shape strides(shape.size(), 0);
    const size_t lead = shape.size() - t.shape().size();
    for (size_t d = 0; d < t.shape().size(); ++d) strides[lead + d] = t.shape()[d] == 1 && shape[lead + d] != 1 ? 0 : t.strides()[d];
    return t.as_strided(shape, strides, t.offset());
  };
  Shape out_shape = batch;
  out_shape.insert(out_shape.end(), {M, N});
  Tensor out = Tensor::empty(out_shape, bf16 ? kFloat32 : a.dtype());
  if (bf16 && K == 0) return out.fill_(0.0);
  const Tensor a_in = bf16 ? to_bf16_operand(a) : a, b_in = bf16 ? to_bf16_operand(b) : b;
  const MatrixView ma = as_matrix(expanded(a_in, ea)), mb = as_matrix(expanded(b_in, eb));
  const int64_t count = shape_numel(batch);
  const Shape batch_index_strides = contiguous_strides(batch);
  // Runs product(i, offset into a, offset into b, whole_pool) for every batch entry: a large batch is
  // parallel over its entries, a small one over each product's blocks. Small entries are grouped so
  // that a task gets kMinWorkPerBlock multiply-adds: a decoding step's per-head products (one row each)
  // would otherwise cost more to hand to the pool than to compute.
  const int64_t grain = std::max<int64_t>(1, kMinWorkPerBlock / std::max<int64_t>(1, M * N * K));
  auto for_each_entry = [&](auto&& product) {
    parallel_for(count, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        int64_t oa = 0, ob = 0, rest = i;
        for (size_t d = 0; d < batch.size(); ++d) {
          const int64_t idx = rest / batch_index_strides[d];
          rest %= batch_index_strides[d];
          oa += idx * ma.batch_strides[d];
          ob += idx * mb.batch_strides[d];
        }
        product(i, oa, ob, !(count >= kMinBatchTasks && K > 0));
      }
    });
  };
  if (bf16) {
    const bfloat16 *pa = ma.storage.data<bfloat16>(), *pb = mb.storage.data<bfloat16>();
    float* pc = out.data<float>();
    for_each_entry([&](int64_t i, int64_t oa, int64_t ob, bool whole_pool) {
      (whole_pool ? gemm_bf16_blocks : gemm_bf16)(ma.transposed, mb.transposed, M, N, K, 1.0f, pa + oa, ma.ld, pb + ob,
                                                mb.ld, 0.0f, pc + i * M * N, N);
    });
    return out;
  }
  dispatch_floating(a.dtype(), "matmul", [&]<class T>() {
    const T *pa = ma.storage.data<T>(), *pb = mb.storage.data<T>();
    T* pc = out.data<T>();
    for_each_entry([&](int64_t i, int64_t oa, int64_t ob, bool whole_pool) {
      (whole_pool ? gemm<T> : blas<T>)(ma.transposed, mb.transposed, M, N, K, T(1), pa + oa, ma.ld, pb + ob, mb.ld,
                                       T(0), pc + i * M * N, N);
    });
  });
  return out;
}

}  // namespace latent
