// The backward engine: deep graphs, accumulation, grad mode, retained and released graphs, leaves.
#include <pthread.h>

#include <exception>
#include <functional>

#include "../helpers.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

// Runs fn on a thread with a small stack, so that recursion proportional to graph depth fails
// loudly (a crash) instead of passing by luck on the main thread's 8 MiB stack.
void run_on_small_stack(const std::function<void()>& fn, size_t stack_bytes = 256 * 1024) {
  struct Job {
    const std::function<void()>* fn;
    std::exception_ptr error;
  } job{&fn, nullptr};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, stack_bytes);
  pthread_t thread;
  const int rc = pthread_create(
      &thread, &attr,
      [](void* arg) -> void* {
        auto* j = static_cast<Job*>(arg);
        try {
          (*j->fn)();
        } catch (...) {
          j->error = std::current_exception();
        }
        return nullptr;
      },
      &job);
  pthread_attr_destroy(&attr);
  REQUIRE(rc == 0);
  pthread_join(thread, nullptr);
  if (job.error) std::rethrow_exception(job.error);
}

// Identity that saves its input (history included), as a user op multiplying by its input would.
struct KeepInput : autograd::Function<KeepInput> {
  static Tensor forward(autograd::AutogradContext* ctx, const Tensor& x) {
    ctx->save_for_backward({x});
    return x * 1.0;
  }
  static std::vector<Tensor> backward(autograd::AutogradContext*, std::vector<Tensor> g) { return {g[0]}; }
};

}  // namespace

TEST_CASE("a chain of 100000 ops runs backward and is destroyed without deep recursion", "[engine]") {
  const int64_t n = 100000;
  std::vector<double> grads;
  run_on_small_stack([&] {
    const Tensor x = from_vector<double>({1.0}).requires_grad_();
    {
      Tensor y = x;
      for (int64_t i = 0; i < n / 2; ++i) y = (y * 1.0) + 0.0;
      const Tensor z = y * x;  // the leaf is reached both at the start and at the end of the chain
      sum(z).backward();       // z = x^2 after an identity chain: dz/dx = 2x
      grads = x.grad().to_vector<double>();
    }  // y and z take the whole (released) graph with them
    {
      // Binary ops save their inputs, so the chain also runs through the backward closures.
      Tensor y = x;
      for (int64_t i = 0; i < n; ++i) y = y * from_vector<double>({1.0});
    }
    {
      // Custom ops whose contexts save their inputs: the chain also runs through saved tensors.
      Tensor y = x;
      for (int64_t i = 0; i < n / 4; ++i) y = KeepInput::apply(y);
    }
    {
      // A graph never run backward: closures and edges both intact when it dies.
      Tensor y = x;
      for (int64_t i = 0; i < n / 4; ++i) y = exp(y) * 0.0 + y;
    }
  });
  REQUIRE(grads == std::vector<double>{2.0});
}

TEST_CASE("gradients accumulate across backward calls until reset", "[engine]") {
  const Tensor x = from_vector<double>({1, 2, 3}).requires_grad_();
  sum(x * x).backward();
  require_close(x.grad(), {2, 4, 6});
  sum(x * 3.0).backward();
  require_close(x.grad(), {5, 7, 9});
  x.set_grad(Tensor());
  CHECK_FALSE(x.grad().defined());
  sum(x).backward();
  require_close(x.grad(), {1, 1, 1});
}

TEST_CASE("a leaf used several times gets the summed gradient", "[engine]") {
  const Tensor x = from_vector<double>({0.5, -1.5}).requires_grad_();
  // f = sum(x * x + 2 * x + exp(x)): df/dx = 2x + 2 + exp(x).
  sum(x * x + x * 2.0 + exp(x)).backward();
  require_close(x.grad(), {2 * 0.5 + 2 + std::exp(0.5), 2 * -1.5 + 2 + std::exp(-1.5)}, 1e-12);
  // Diamond: a = x*2, b = a*3, c = a*4, f = sum(b*c) = 24 sum(a^2)... df/dx = 2 * 24 * a = 96 x.
  const Tensor w = from_vector<double>({1, -2}).requires_grad_();
  const Tensor a = w * 2.0;
  sum((a * 3.0) * (a * 4.0)).backward();
  require_close(w.grad(), {96, -192});
}

// The engine sums a node input's gradients into the first one's memory when nothing else sees it
// (autograd/engine.cpp, accumulate): a gradient that a backward also keeps, or returns for two inputs,
// must come through the sum unchanged.
TEST_CASE("summing gradients never writes into a gradient someone else holds", "[engine]") {
  const Tensor x = from_vector<double>({1, 2, 3}).requires_grad_();
  const Tensor held = from_vector<double>({10, 20, 30});
  const Tensor other = x * 4.0;
  // kept(x) = x, whose backward returns `held` (kept by the test) whatever the incoming gradient. Made
  // after `other`, its node runs first (newest first): `held` is the first gradient x's sum sees.
  const Tensor kept = autograd::record("kept", x.detach().clone(), {x}, [held](const Tensor&) -> std::vector<Tensor> {
    return {held};
  });
  sum(kept * 2.0 + kept * 3.0 + other).backward();
  require_close(held, {10, 20, 30});
  require_close(x.grad(), {14, 24, 34});  // held + 4
  // add's backward hands one gradient to both of its inputs: here the same tensor, twice.
  const Tensor y = from_vector<double>({1, -1}).requires_grad_();
  sum((y + y) * 5.0 + y).backward();
  require_close(y.grad(), {11, 11});
}

TEST_CASE("NoGradGuard nests and restores the previous mode", "[engine]") {
  const Tensor x = from_vector<double>({1, 2}).requires_grad_();
  CHECK(GradMode::is_enabled());
  {
    NoGradGuard outer;
    CHECK_FALSE(GradMode::is_enabled());
    CHECK_FALSE((x * 2.0).requires_grad());
    {
      NoGradGuard inner;
      CHECK_FALSE(GradMode::is_enabled());
    }
    CHECK_FALSE(GradMode::is_enabled());  // the inner guard restores "off", not "on"
    CHECK_FALSE((x + x).requires_grad());
  }
  CHECK(GradMode::is_enabled());
  const Tensor y = x * 2.0;
  CHECK(y.requires_grad());
  CHECK_FALSE(y.is_leaf());
  CHECK(y.grad_fn() != nullptr);
}

TEST_CASE("under NoGradGuard the fused ops keep nothing for a backward and give the same values", "[engine]") {
  // Ops that prepare less when no node is recorded (no detached copies, no saved statistics) must
  // compute exactly what they compute when recording.
  const Tensor x = randn64({3, 8}, 1).to(kFloat32).requires_grad_(), w = randn64({5, 8}, 2).to(kFloat32).requires_grad_();
  const Tensor norm_weight = randn64({8}, 3).to(kFloat32).requires_grad_();
  const Tensor q = randn64({1, 4, 1, 6}, 4).to(kFloat32).requires_grad_(), k = randn64({1, 2, 9, 6}, 5).to(kFloat32);
  const Tensor v = randn64({1, 2, 9, 3}, 6).to(kFloat32);
  std::vector<ExpertWeights> experts;
  for (uint64_t e = 0; e < 3; ++e)
    experts.push_back({randn64({4, 8}, 10 + e).to(kFloat32), randn64({4, 8}, 20 + e).to(kFloat32),
                       randn64({8, 4}, 30 + e).to(kFloat32), ""});
  const Tensor ids = from_vector<int64_t>({0, 2, 1, 2, 0, 1}, {3, 2}), gates = randn64({3, 2}, 7).to(kFloat32);
  auto run = [&] {
    return std::vector<Tensor>{linear(x, w), rms_norm(x, norm_weight, 1e-6), scaled_dot_product_attention(q, k, v),
                               moe_experts(x, gates, ids, experts, experts[1]),
                               rotary_embedding(reshape(x, {1, 3, 2, 4}), ones({3, 2}), zeros({3, 2}), {0, 1, 2})};
  };
  const std::vector<Tensor> recorded = run();
  NoGradGuard no_grad;
  const std::vector<Tensor> plain = run();
  for (size_t i = 0; i < plain.size(); ++i) {
    INFO("op " << i);
    CHECK(recorded[i].grad_fn() != nullptr);
    CHECK(plain[i].grad_fn() == nullptr);
    CHECK_FALSE(plain[i].requires_grad());
    CHECK(plain[i].to_vector<float>() == recorded[i].to_vector<float>());
  }
}

TEST_CASE("retain_graph allows a second backward; without it the second backward throws", "[engine]") {
  const Tensor x = from_vector<double>({1, 2}).requires_grad_();
  const Tensor y = sum(exp(x));
  y.backward(/*retain_graph=*/true);
  y.backward();
  require_close(x.grad(), {2 * std::exp(1.0), 2 * std::exp(2.0)}, 1e-12);
  CHECK_THROWS_WITH(y.backward(), Catch::Contains("retain_graph") && Catch::Contains("freed"));
  // The failed backward did not touch the gradient.
  require_close(x.grad(), {2 * std::exp(1.0), 2 * std::exp(2.0)}, 1e-12);
}

TEST_CASE("saved tensors are freed by backward unless the graph is retained", "[engine]") {
  const int64_t n = 1 << 16;  // 512 KiB per f64 tensor: large enough to stand out in the byte count
  const int64_t tensor_bytes = static_cast<int64_t>(allocator::size_class(n * sizeof(double)));
  const int64_t scalar_bytes = static_cast<int64_t>(allocator::size_class(sizeof(double)));
  const Tensor x = randn64({n}, 11);
  const int64_t base = allocator::stats().bytes_in_use;
  Tensor loss;
  {
    // tanh saves x (no copy) and h; exp saves h and e. Once this scope closes, h and e are alive
    // only because the graph may need them.
    const Tensor h = tanh(x);
    const Tensor e = exp(h);
    loss = sum(e);
  }
  auto held = [&] { return allocator::stats().bytes_in_use - base; };
  CHECK(held() == 2 * tensor_bytes + scalar_bytes);
  loss.backward(/*retain_graph=*/true);
  CHECK(held() == 3 * tensor_bytes + scalar_bytes);  // + x.grad; h and e retained
  loss.backward();
  CHECK(held() == tensor_bytes + scalar_bytes);  // h and e released; x.grad accumulated in place
  // The values are right: d/dx sum(exp(tanh x)) = exp(tanh x) (1 - tanh^2 x), twice.
  const std::vector<double> xs = x.to_vector<double>(), gs = x.grad().to_vector<double>();
  for (size_t i = 0; i < xs.size(); i += 997) {
    const double t = std::tanh(xs[i]);
    REQUIRE(gs[i] == Approx(2 * std::exp(t) * (1 - t * t)).epsilon(1e-12));
  }
}

TEST_CASE("detach shares data but not history", "[engine]") {
  const Tensor x = from_vector<double>({1, 2}).requires_grad_();
  const Tensor y = x * 3.0;
  const Tensor d = y.detach();
  CHECK(d.shares_storage(y));
  CHECK_FALSE(d.requires_grad());
  CHECK(d.is_leaf());
  // Gradients stop at the detached tensor: f = sum(x * detach(3x)) has df/dx = 3x only.
  sum(x * d).backward();
  require_close(x.grad(), {3, 6});
}

TEST_CASE("engine misuse throws clear errors", "[engine]") {
  CHECK_THROWS_WITH(arange(3).requires_grad_(), Catch::Contains("requires_grad_") && Catch::Contains("int64"));
  const Tensor x = from_vector<double>({1, 2}).requires_grad_();
  Tensor y = x * 2.0;
  CHECK_THROWS_WITH(y.backward(),
                    Catch::Contains("backward") && Catch::Contains("[2]") && Catch::Contains("grad_output"));
  CHECK_THROWS_WITH(y.requires_grad_(false), Catch::Contains("non-leaf"));
  CHECK_THROWS_WITH(from_vector<double>({1}).backward(), Catch::Contains("does not require grad"));
  CHECK_THROWS_WITH(y.backward(from_vector<double>({1, 1, 1})), Catch::Contains("[3]") && Catch::Contains("[2]"));
  CHECK_THROWS_WITH(y.backward(from_vector<float>({1, 1})), Catch::Contains("dtype"));
  // With an explicit grad_output a non-scalar runs: d(2x)/dx weighted by [1, -1].
  y.backward(from_vector<double>({1, -1}));
  require_close(x.grad(), {2, -2});
}

TEST_CASE("backward through several outputs of one node and into non-leaf roots", "[engine]") {
  // split has two outputs sharing one node; only one of them reaches the loss.
  const Tensor x = from_vector<double>({1, 2, 3, 4}).requires_grad_();
  const std::vector<Tensor> parts = split(x * 2.0, 2, 0);
  sum(parts[1] * parts[1]).backward();
  // d/dx sum((2x[2:])^2) = 8 x on the second half, 0 on the first.
  require_close(x.grad(), {0, 0, 24, 32});
}

TEST_CASE("gradients do not depend on the thread count", "[engine][determinism]") {
  const int before = get_num_threads();
  auto run = [](int threads) {
    set_num_threads(threads);
    const Tensor w = randn64({300, 200}, 21), v = randn64({200, 100}, 22);
    sum(tanh(matmul(w, v)) * 0.5).backward();
    return std::make_pair(w.grad().to_vector<double>(), v.grad().to_vector<double>());
  };
  const auto one = run(1), two = run(2);
  set_num_threads(before);
  CHECK(one.first == two.first);
  CHECK(one.second == two.second);
}
