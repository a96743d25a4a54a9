// Version counters: in-place writes bump a count shared by every view of the storage, and a backward
// through a node whose saved tensor was written since the forward throws instead of using new values.
#include "../helpers.hpp"

using namespace latent;
using latent::autograd::AutogradContext;
using latent::autograd::Function;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

// y = x * w elementwise; dx = g w, dw = g x. Saves both inputs.
struct SavedProduct : Function<SavedProduct> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w) {
    ctx->save_for_backward({x, w});
    return x * w;
  }
  static std::vector<Tensor> backward(AutogradContext* ctx, std::vector<Tensor> g) {
    const Tensor x = ctx->get_saved_variables()[0], w = ctx->get_saved_variables()[1];
    return {g[0] * w, g[0] * x};
  }
};

}  // namespace

TEST_CASE("in-place writes bump a version shared by views and detached handles", "[version]") {
  Tensor x = zeros({2, 3}, kFloat64);
  const Tensor row = narrow(x, 0, 1, 1), alias = x.detach(), other = zeros({2, 3}, kFloat64);
  const uint64_t start = x.version(), other_start = other.version();
  x.fill_(1.0);
  CHECK(x.version() == start + 1);
  CHECK(row.version() == start + 1);
  CHECK(alias.version() == start + 1);
  Tensor r = row;
  r.copy_(ones({1, 3}, kFloat64));  // through a view: the base sees it too
  CHECK(x.version() == start + 2);
  r.zero_();
  CHECK(alias.version() == start + 3);
  CHECK(other.version() == other_start);  // a separate storage keeps its own count
  Tensor w = x;
  nn::init::normal_(w, 0.0, 1.0);
  CHECK(x.version() == start + 4);
}

TEST_CASE("fill_ on a saved weight between forward and backward throws, naming op and tensor", "[version]") {
  Tensor w = randn64({3, 4}, 1);
  const Tensor x = randn64({2, 3}, 2);
  const Tensor y = sum(matmul(x, w));
  w.fill_(2.0);
  CHECK_THROWS_WITH(y.backward(), Catch::Contains("matmul backward: saved input 1 (shape [3, 4]) was modified in "
                                                  "place after the forward (version 0, now 1)"));
  // Writing to a view of the input counts: it is the same storage.
  Tensor x2 = randn64({2, 3}, 3);
  const Tensor z = sum(matmul(x2, w));
  Tensor first_row = narrow(x2.detach(), 0, 0, 1);
  first_row.fill_(0.0);
  CHECK_THROWS_WITH(z.backward(), Catch::Contains("matmul backward: saved input 0 (shape [2, 3])"));
}

TEST_CASE("linear's saved weight and a saved output are checked too", "[version]") {
  nn::Linear linear(3, 2);
  linear.to(kFloat64);
  const Tensor x = randn64({4, 3}, 4);
  const Tensor loss = sum(linear(x));
  linear.weight.fill_(0.5);
  CHECK_THROWS_WITH(loss.backward(), Catch::Contains("linear backward: saved input 1 (shape [2, 3])"));
  // exp saves its result: writing to the output itself is caught.
  Tensor e = exp(x);
  const Tensor s = sum(e * 1.0);
  e.fill_(1.0);
  CHECK_THROWS_WITH(s.backward(), Catch::Contains("exp backward: saved output 0 (shape [4, 3])"));
}

TEST_CASE("a custom Function's save_for_backward is version-checked", "[version][function]") {
  Tensor w = randn64({5}, 5);
  const Tensor x = randn64({5}, 6);
  const Tensor y = sum(SavedProduct::apply(x, w));
  w.copy_(zeros({5}, kFloat64));
  CHECK_THROWS_WITH(y.backward(), Catch::Contains("SavedProduct backward: saved input 1 (shape [5]) was modified "
                                                  "in place after the forward (version 0, now 1)"));
}

TEST_CASE("an optimizer step bumps the version of what it updates", "[version]") {
  const Tensor w = randn64({3}, 7);
  const Tensor x = randn64({3}, 8);
  optim::SGD sgd({w}, {.lr = 0.1});
  const Tensor first = sum(w * x);
  first.backward();
  const Tensor second = sum(w * x * x);  // recorded, not yet differentiated
  sgd.step();
  CHECK_THROWS_WITH(second.backward(), Catch::Contains("mul backward") && Catch::Contains("modified in place"));
}

TEST_CASE("untouched graphs, unsaved inputs and writes after backward are fine", "[version]") {
  Tensor w = randn64({3, 4}, 9);
  const Tensor x = randn64({2, 3}, 10);
  const Tensor y = sum(matmul(x, w));
  y.backward();
  w.fill_(2.0);  // after the backward: nothing saved is read again
  // add saves neither input: changing one in place does not change its gradient (as in PyTorch).
  Tensor b = randn64({4}, 11);
  const Tensor a = randn64({4}, 12);
  const Tensor s = sum(add(a, b));
  b.fill_(3.0);
  s.backward();
  require_close(a.grad(), {1, 1, 1, 1});
  // A graph recorded after the write remembers the new version.
  x.set_grad(Tensor());
  const Tensor t = sum(matmul(x, w));
  t.backward();
  require_close(x.grad(), std::vector<double>(6, 8.0));  // each row of w now sums to 4 * 2
}
