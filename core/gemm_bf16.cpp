// bfloat16 GEMMs on oneDNN's matmul primitive, and one-row products on latent's own kernel
// (core/gemv_bf16.hpp). Debian's oneDNN runs on OpenMP while latent's pool is oneTBB: every thread that
// calls in first sets its own OpenMP team to one thread, so a GEMM runs on the TBB task that called it
// and the pool never oversubscribes the cores.
#include "gemm_bf16.hpp"

#include <fmt/format.h>

#include "bfloat16.hpp"
#include "error.hpp"
#include "gemv_bf16.hpp"

#ifdef LATENT_WITH_ONEDNN
#include <dlfcn.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>
#endif

namespace latent {

#ifdef LATENT_WITH_ONEDNN
namespace {

using dnnl::memory;

// Primitives are created for shapes known only at execution (oneDNN's runtime dimensions), so one
// primitive per layout serves every shape. Measured here, one thread, GFLOP per CPU-second on the
// `small` preset's GEMM shapes (2048x256x768 to 37x256x128, plain and transposed): a primitive per
// exact shape (oneDNN picks its brgemm kernel) 306-428, runtime dimensions (its jit GEMM kernel)
// 300-405, neither ahead on every shape. But DeepSeekMoE's expert row counts change every step, and
// each new exact shape costs ~300 us to create, more than most of its GEMMs; runtime shapes cost none.
struct Layout {
  bool trans_a, trans_b;
  float alpha, beta;
  bool operator==(const Layout&) const = default;
};
struct LayoutHash {
  size_t operator()(const Layout& l) const {
    return std::hash<float>()(l.alpha) * 31 + std::hash<float>()(l.beta) * 7 + l.trans_a * 2 + l.trans_b;
  }
};

dnnl::engine& engine() {
  static dnnl::engine instance(dnnl::engine::kind::cpu, 0);
  return instance;
}

// A row-major [rows, cols] matrix, stored transposed (column-major) when `trans`.
memory::desc matrix(memory::dim rows, memory::dim cols, bool trans, memory::dim ld, memory::data_type type) {
  return memory::desc({rows, cols}, type, trans ? memory::dims{1, ld} : memory::dims{ld, 1});
}

dnnl::matmul::primitive_desc make_primitive_desc(const Layout& l) {
  constexpr memory::dim any = DNNL_RUNTIME_DIM_VAL;
  dnnl::primitive_attr attr;
  if (l.alpha != 1.0f) attr.set_output_scales(0, {l.alpha});
  if (l.beta != 0.0f) {
    dnnl::post_ops sum;
    sum.append_sum(l.beta);
    attr.set_post_ops(sum);
  }
  const dnnl::matmul::desc desc(matrix(any, any, l.trans_a, any, memory::data_type::bf16),
                                matrix(any, any, l.trans_b, any, memory::data_type::bf16),
                                matrix(any, any, false, any, memory::data_type::f32));
  return dnnl::matmul::primitive_desc(desc, attr, engine());
}

// Sets the calling thread's OpenMP team size to one in the OpenMP runtime oneDNN was built with
// (Debian's libdnnl links GCC's libgomp), found among the libraries already loaded. latent itself is
// not built with -fopenmp: a clang build would then link LLVM's libomp next to oneDNN's libgomp, two
// runtimes in one process, and the call would reach the one oneDNN does not use. A oneDNN built on
// another runtime (TBB, sequential) has no such symbol and needs nothing.
void one_openmp_thread() {
  using SetNumThreads = void (*)(int);
  static const auto set_num_threads = reinterpret_cast<SetNumThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set_num_threads) set_num_threads(1);
}

// A matrix operand's role (DNNL_ARG_SRC, _WEIGHTS, _DST: two operands of one call may look alike), shape
// and layout: the key of a kept memory object.
struct MatrixKey {
  int role;
  memory::dim rows, cols, ld;
  bool trans;
  bool operator==(const MatrixKey&) const = default;
  memory::desc desc() const {
    return matrix(rows, cols, trans, ld, role == DNNL_ARG_DST ? memory::data_type::f32 : memory::data_type::bf16);
  }
};
struct MatrixKeyHash {
  size_t operator()(const MatrixKey& k) const {
    return ((static_cast<size_t>(k.rows) * 1000003u + static_cast<size_t>(k.cols)) * 1000003u +
            static_cast<size_t>(k.ld)) * 8u + static_cast<size_t>(k.role) * 2u + k.trans;
  }
};

// Each thread keeps its own stream and primitives: a stream shared across threads, or created per
// call, costs a third of the throughput (measured). Small products also reuse memory objects, kept
// per operand shape and pointed at each call's data: creating three per call (a descriptor and heap
// allocations each) plus the argument map took a third of the time of attention's block products
// (perf on a loop of them; `build/bench/matmul` prints such shapes' bf16 GFLOP/s). A memory object
// costs kilobytes, and DeepSeekMoE's expert row counts change every step, so large products (where
// creation is noise) create theirs per call and the kept set is cleared when it reaches kMaxMemories.
constexpr int64_t kMaxCachedWork = int64_t(1) << 22;  // multiply-adds
constexpr size_t kMaxMemories = 256;

struct ThreadState {
  dnnl::stream stream{engine()};
  std::unordered_map<Layout, dnnl::matmul, LayoutHash> primitives;
  std::unordered_map<MatrixKey, memory, MatrixKeyHash> memories;

  ThreadState() { one_openmp_thread(); }
  dnnl::matmul& primitive(const Layout& l) {
    auto it = primitives.find(l);
    if (it == primitives.end()) it = primitives.emplace(l, dnnl::matmul(make_primitive_desc(l))).first;
    return it->second;
  }
  // A memory object for a [rows, cols] matrix (stored transposed when trans) at `data`: `scratch` when
  // not kept.
  const memory& matrix_at(const MatrixKey& k, const void* data, bool keep, memory& scratch) {
    void* handle = const_cast<void*>(data);
    if (!keep) return scratch = memory(k.desc(), engine(), handle);
    auto it = memories.find(k);
    if (it == memories.end()) it = memories.emplace(k, memory(k.desc(), engine(), DNNL_MEMORY_NONE)).first;
    it->second.set_data_handle(handle);
    return it->second;
  }
};

ThreadState& thread_state() {
  thread_local ThreadState state;
  return state;
}

}  // namespace

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bfloat16* A, int64_t lda,
               const bfloat16* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  // One row (a decoding step): oneDNN's set-up per call cost more than the product (core/gemv_bf16.hpp).
  if (M == 1) return gemv_bf16(tb, N, K, alpha, A, ta ? lda : 1, B, ldb, beta, C);
  ThreadState& state = thread_state();
  const dnnl::matmul& prim = state.primitive({ta, tb, alpha, beta});
  const bool keep = M * N * K <= kMaxCachedWork;
  // Cleared before the call's three lookups, never between them: that would free an earlier operand's.
  if (keep && state.memories.size() + 3 > kMaxMemories) state.memories.clear();
  memory scratch[3];
  const dnnl_exec_arg_t args[3] = {
      {DNNL_ARG_SRC, state.matrix_at({DNNL_ARG_SRC, M, K, lda, ta}, A, keep, scratch[0]).get()},
      {DNNL_ARG_WEIGHTS, state.matrix_at({DNNL_ARG_WEIGHTS, K, N, ldb, tb}, B, keep, scratch[1]).get()},
      {DNNL_ARG_DST, state.matrix_at({DNNL_ARG_DST, M, N, ldc, false}, C, keep, scratch[2]).get()}};
  dnnl::error::wrap_c_api(dnnl_primitive_execute(prim.get(), state.stream.get(), 3, args), "matmul: oneDNN execute");
  state.stream.wait();
}

bool bf16_gemm_supported(std::string* why) {
  if (cpu_has_avx512_bf16()) return true;
  if (why) *why = "this CPU lacks AVX-512 BF16 (avx512_bf16), which oneDNN's bfloat16 matmul needs to run fast";
  return false;
}

std::string bf16_gemm_description() {
  const dnnl_version_t* v = dnnl_version();
  std::string kernel = "?";
  try {
    kernel = make_primitive_desc({false, false, 1.0f, 0.0f}).impl_info_str();
  } catch (const dnnl::error& e) {
    kernel = std::string("unavailable: ") + e.what();
  }
  return fmt::format("oneDNN {}.{}.{} matmul, kernel {}, one OpenMP thread per pool thread; one-row products on "
                     "latent's AVX-512 BF16 kernel", v->major, v->minor, v->patch, kernel);
}

#else  // built without oneDNN

void gemm_bf16(bool, bool, int64_t, int64_t, int64_t, float, const bfloat16*, int64_t, const bfloat16*, int64_t,
               float, float*, int64_t) {
  fail("matmul: bfloat16 precision needs oneDNN, and latent was built without it (-Donednn=disabled or "
       "libdnnl-dev missing)");
}

bool bf16_gemm_supported(std::string* why) {
  if (why) *why = "latent was built without oneDNN (-Donednn=disabled, or libdnnl-dev was not installed)";
  return false;
}

std::string bf16_gemm_description() { return "none (built without oneDNN)"; }

#endif

}  // namespace latent
