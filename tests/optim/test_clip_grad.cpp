// clip_grad_norm: the global norm by hand and from torch, in-place scaling, non-finite gradients.
#include <cmath>
#include <limits>

#include "optim/clip_grad.hpp"
#include "problem.hpp"

using namespace latent;

namespace {
Tensor with_grad(const Shape& shape, const Tensor& grad) {
  Tensor p = zeros(shape, grad.dtype()).requires_grad_();
  p.set_grad(grad);
  return p;
}
}  // namespace

TEST_CASE("clip_grad_norm by hand: norm over all gradients, scaled only above max_norm", "[clip]") {
  // |[3, 4, 12]| = 13
  Tensor a = with_grad({2}, from_vector<double>({3, 4})), b = with_grad({1, 1}, from_vector<double>({12}, {1, 1}));
  Tensor none = zeros({5}, kFloat64).requires_grad_();  // no gradient: skipped
  CHECK(optim::grad_norm({a, none, b}) == 13.0);
  CHECK(optim::clip_grad_norm({a, none, b}, 26.0) == 13.0);
  CHECK(a.grad().to_vector<double>() == std::vector<double>{3, 4});
  CHECK(optim::clip_grad_norm({a, none, b}, 6.5) == 13.0);
  const double factor = 6.5 / (13.0 + 1e-6);
  testing::require_close(a.grad(), {3 * factor, 4 * factor}, 1e-15);
  testing::require_close(b.grad(), {12 * factor}, 1e-15);
  CHECK_FALSE(none.grad().defined());
  CHECK(optim::grad_norm({a, b}) == Approx(6.5).epsilon(1e-6));
  CHECK(optim::clip_grad_norm({none}, 1.0) == 0.0);
  CHECK(optim::clip_grad_norm({}, 1.0) == 0.0);
  CHECK(optim::clip_grad_norm({a}, std::numeric_limits<double>::infinity()) > 0);  // infinity: measure only
  CHECK_THROWS_WITH(optim::clip_grad_norm({a}, -1.0), "clip_grad_norm: max_norm must be >= 0, got -1");
}

// Expected values printed by tests/optim/make_golden.py (torch.nn.utils.clip_grad_norm_, float64).
TEST_CASE("clip_grad_norm matches torch.nn.utils.clip_grad_norm_", "[clip]") {
  testing::Regression r;
  r.backward();
  CHECK(optim::clip_grad_norm({r.w, r.b}, 1.0) == Approx(1.6971594328833695).epsilon(1e-14));
  std::vector<double> grads = r.w.grad().to_vector<double>();
  for (double g : r.b.grad().to_vector<double>()) grads.push_back(g);
  testing::require_close(grads,
                         {-0.23377283155602829, -0.25203863565996504, 0.64681569209988676, -0.13169055539451122,
                          -0.52175385593664292, 0.31265459040810967, -0.24157998976174319, -0.13331090898437656},
                         1e-13);
}

TEST_CASE("clip_grad_norm leaves non-finite gradients untouched and returns the non-finite norm", "[clip]") {
  const double inf = std::numeric_limits<double>::infinity();
  Tensor a = with_grad({2}, from_vector<float>({1, 2})),
         b = with_grad({2}, from_vector<float>({static_cast<float>(inf), 0}));
  CHECK(std::isinf(optim::clip_grad_norm({a, b}, 1.0)));
  CHECK(a.grad().to_vector<float>() == std::vector<float>{1, 2});
  b.grad().fill_(std::nan(""));
  CHECK(std::isnan(optim::clip_grad_norm({a, b}, 1.0)));
  CHECK(a.grad().to_vector<float>() == std::vector<float>{1, 2});
}

TEST_CASE("clip_grad_norm accumulates float32 gradients in double", "[clip]") {
  // 1e20^2 overflows float32; the norm of 4 such values is still 2e20.
  Tensor p = with_grad({4}, full({4}, 1e20, kFloat32));
  CHECK(optim::clip_grad_norm({p}, 1.0) == Approx(2e20).epsilon(1e-7));
  testing::require_close(p.grad(), {0.5, 0.5, 0.5, 0.5}, 1e-6);
}

TEST_CASE("clip_grad_norm over large and strided gradients does not depend on the thread count", "[clip]") {
  const int before = get_num_threads();
  const Tensor values = randn({300'001}, kFloat32, nullptr);
  std::vector<double> norms;
  std::vector<std::vector<float>> clipped;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Tensor p = with_grad({300'001}, values.clone());
    norms.push_back(optim::clip_grad_norm({p}, 1.0));
    clipped.push_back(p.grad().to_vector<float>());
  }
  set_num_threads(before);
  CHECK(norms[0] == norms[1]);
  CHECK(clipped[0] == clipped[1]);
  double sum = 0;
  for (float v : values.to_vector<float>()) sum += static_cast<double>(v) * v;
  CHECK(norms[0] == Approx(std::sqrt(sum)).epsilon(1e-12));

  // A transposed (non-contiguous) gradient is read and scaled in place through its strides.
  const Tensor base = from_vector<double>({3, 0, 0, 4, 0, 0}, {3, 2});
  Tensor q = with_grad({2, 3}, base.t());
  CHECK(optim::clip_grad_norm({q}, 1.0) == 5.0);
  testing::require_close(q.grad(), {3 / (5 + 1e-6), 0, 0, 0, 4 / (5 + 1e-6), 0}, 1e-15);
}
