// An outside program written only against the documented public core and autograd names: it checks documented
// behaviour with hand-computed values and exits non-zero on the first group of mismatches.
#include <latent/latent.hpp>

#include <cmath>
#include <cstdio>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

using namespace latent;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    fmt::print(stderr, "FAILED: {}\n", what);
  }
}

void expect_values(const Tensor& t, const std::vector<double>& expected, const std::string& what, double tol = 1e-6) {
  const std::vector<double> got = t.to(kFloat64).to_vector<double>();
  bool ok = got.size() == expected.size();
  for (size_t i = 0; ok && i < got.size(); ++i) ok = std::abs(got[i] - expected[i]) <= tol * (1 + std::abs(expected[i]));
  std::string listed;
  for (double e : expected) listed += (listed.empty() ? "" : ", ") + fmt::format("{:.6g}", e);
  expect(ok, fmt::format("{}: got {}, expected [{}]", what, t, listed));
}

// Runs fn and reports whether it threw latent::Error whose message mentions `mention`.
template <class Fn> bool throws_error(Fn&& fn, const std::string& mention) {
  try {
    fn();
  } catch (const Error& e) {
    return std::string(e.what()).find(mention) != std::string::npos;
  }
  return false;
}

void check_tensor_basics() {
  expect(!Tensor().defined(), "a default Tensor is undefined");

  Tensor z = zeros({2, 3});
  expect(z.defined() && z.shape() == Shape{2, 3} && z.dim() == 2 && z.numel() == 6, "zeros({2,3}) geometry");
  expect(z.dtype() == kFloat32 && z.size(-1) == 3 && z.size(0) == 2, "zeros dtype and size(-1)");
  expect_values(z, {0, 0, 0, 0, 0, 0}, "zeros");
  expect_values(ones({2}), {1, 1}, "ones");
  Tensor f = full({3}, 2.5, kFloat64);
  expect(f.dtype() == kFloat64, "full keeps the requested dtype");
  expect_values(f, {2.5, 2.5, 2.5}, "full");
  Tensor r = arange(4);
  expect(r.dtype() == kInt64 && r.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3}, "arange(4) is Int64 0..3");

  Tensor a = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  expect(a.dtype() == kFloat64 && a.to_vector<double>() == std::vector<double>{1, 2, 3, 4, 5, 6}, "from_vector round trip");
  expect(from_vector<float>({4.5f}, {1}).item() == 4.5, "item of a one-element tensor");
  expect(a.to(kFloat32).dtype() == kFloat32 && a.to(kFloat32).to_vector<float>()[5] == 6.0f, "to(kFloat32)");
  expect_values(transpose(a, 0, 1).contiguous(), {1, 4, 2, 5, 3, 6}, "transpose(...).contiguous() is row-major");
  expect_values(a.clone(), {1, 2, 3, 4, 5, 6}, "clone");

  expect(throws_error([&] { (void)a.to_vector<float>(); }, ""), "to_vector with the wrong type throws latent::Error");
  expect(throws_error([&] { (void)a.item(); }, ""), "item of a 6-element tensor throws latent::Error");

  const std::string printed = fmt::format("{}", from_vector<float>({1.5f, -2.0f}, {2}));
  expect(printed.find("1.5") != std::string::npos && printed.find("-2") != std::string::npos,
         "fmt prints the values, got " + printed);
  std::ostringstream os;
  os << from_vector<int64_t>({7, 8}, {2});
  expect(os.str().find('7') != std::string::npos, "operator<< prints the values, got " + os.str());
}

void check_ops() {
  const Tensor a = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = from_vector<double>({1, 0, -1}, {3, 1});
  expect_values(matmul(a, b), {-2, -2}, "matmul [2,3] @ [3,1]");
  expect(matmul(ones({5, 2, 3}), ones({3, 4})).shape() == Shape{5, 2, 4}, "matmul broadcasts batch dims");
  expect(throws_error([] { (void)matmul(ones({2, 3}), ones({4, 5})); }, "matmul"),
         "matmul with mismatched inner dims throws latent::Error naming matmul");

  Tensor total = sum(a);
  expect(total.dim() == 0 && total.shape().empty() && total.item() == 21, "sum over all dims is a 0-dim scalar");
  expect(sum(a, {1}, true).shape() == Shape{2, 1}, "sum keepdim");
  expect_values(sum(a, {0}), {5, 7, 9}, "sum over dim 0");
  expect_values(mean(a, {1}), {2, 5}, "mean over dim 1");

  const Tensor row = from_vector<double>({1, 2, 3}, {3});
  expect_values(a + row, {2, 4, 6, 5, 7, 9}, "+ broadcasts");
  expect_values(a - 1.0, {0, 1, 2, 3, 4, 5}, "- scalar");
  expect_values(2.0 * row / row, {2, 2, 2}, "scalar * and /");
  expect_values(-row, {-1, -2, -3}, "unary minus");

  const Tensor one = from_vector<double>({1.0}, {1});
  expect_values(exp(one), {std::exp(1.0)}, "exp");
  expect_values(log(exp(row)), {1, 2, 3}, "log(exp(x))");
  expect_values(sqrt(from_vector<double>({9.0}, {1})), {3}, "sqrt");
  expect_values(tanh(one), {std::tanh(1.0)}, "tanh");
  expect_values(sigmoid(one), {1 / (1 + std::exp(-1.0))}, "sigmoid");
  expect_values(silu(one), {1 / (1 + std::exp(-1.0))}, "silu(1) = sigmoid(1)");
  expect_values(relu(from_vector<double>({-1, 2}, {2})), {0, 2}, "relu");
  expect_values(gelu(one), {0.5 * (1 + std::erf(1 / std::sqrt(2.0)))}, "gelu, exact erf form");
  expect_values(pow(row, 2.0), {1, 4, 9}, "pow");

  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  expect_values(softmax(row, 0), {std::exp(1.0) / z, std::exp(2.0) / z, std::exp(3.0) / z}, "softmax");
  expect_values(log_softmax(row, -1), {1 - std::log(z), 2 - std::log(z), 3 - std::log(z)}, "log_softmax");

  expect(reshape(a, {3, 2}).shape() == Shape{3, 2}, "reshape");
  expect(permute(ones({2, 3, 4}), {2, 0, 1}).shape() == Shape{4, 2, 3}, "permute");
  expect_values(narrow(a, 1, 1, 2), {2, 3, 5, 6}, "narrow");
  expect_values(cat({row, row}, 0), {1, 2, 3, 1, 2, 3}, "cat");
  const Tensor ids = from_vector<int64_t>({1, 0}, {2});
  expect_values(index_select(a, 0, ids), {4, 5, 6, 1, 2, 3}, "index_select");
  expect_values(gather(a, 1, from_vector<int64_t>({2, 0}, {2, 1})), {3, 4}, "gather");
  Tensor looked_up = embedding(a, from_vector<int64_t>({1, 1, 0}, {3}));
  expect(looked_up.shape() == Shape{3, 3}, "embedding shape");
  expect_values(looked_up, {4, 5, 6, 4, 5, 6, 1, 2, 3}, "embedding rows");

  // rms_norm of [1, 2, 3, 4]: mean of squares 7.5.
  const Tensor v = from_vector<double>({1, 2, 3, 4}, {1, 4});
  const double rms = std::sqrt(7.5);
  expect_values(rms_norm(v, full({4}, 2.0, kFloat64), 0.0), {2 / rms, 4 / rms, 6 / rms, 8 / rms}, "rms_norm");
  // Equal logits: the loss is log(classes) whatever the target.
  Tensor loss = cross_entropy(zeros({2, 4}, kFloat64), from_vector<int64_t>({1, 3}, {2}));
  expect(loss.dim() == 0, "cross_entropy returns a 0-dim scalar");
  expect_values(loss, {std::log(4.0)}, "cross_entropy of equal logits");
}

void check_autograd() {
  Tensor x = from_vector<double>({1, -2, 3}, {3});
  expect(!x.requires_grad(), "tensors do not require grad by default");
  x.requires_grad_();
  expect(x.requires_grad() && !x.grad().defined(), "no gradient before a backward");

  sum(x * x).backward();  // d/dx sum(x^2) = 2x
  expect_values(x.grad(), {2, -4, 6}, "backward of sum(x * x)");

  Tensor w = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor y = w * 3.0;
  y.backward(from_vector<double>({1, 10}, {2}));  // explicit grad_output for a non-scalar
  expect_values(w.grad(), {3, 30}, "backward(grad_output)");

  expect(!(x * 2.0).detach().requires_grad(), "detach drops the history");
  {
    NoGradGuard outer;
    {
      NoGradGuard inner;
      expect(!(x * 2.0).requires_grad(), "nothing is recorded under nested NoGradGuards");
    }
    expect(!(x * 2.0).requires_grad(), "the outer NoGradGuard still holds after the inner one ends");
  }
  expect((x * 2.0).requires_grad(), "recording resumes after the guards");

  Tensor m = from_vector<double>({0.3, -0.2, 0.5, 0.1, 0.7, -0.4}, {2, 3}).requires_grad_();
  Tensor n = from_vector<double>({0.2, 0.9, -0.6}, {3, 1}).requires_grad_();
  expect(autograd::gradcheck([](const std::vector<Tensor>& in) { return tanh(matmul(in[0], in[1])); }, {m, n}),
         "gradcheck agrees for tanh(matmul)");
  // A step of 0.5 makes central differences of exp off by about eps^2/6 = 4%: gradcheck must say so.
  expect(throws_error(
             [&] {
               autograd::GradcheckOptions coarse;
               coarse.eps = 0.5;
               autograd::gradcheck([](const std::vector<Tensor>& in) { return exp(in[0]); }, {x}, coarse);
             },
             "gradcheck"),
         "gradcheck throws latent::Error on disagreement");
}

void check_seed_and_threads() {
  manual_seed(42);
  const std::vector<float> first = randn({1000}).to_vector<float>();
  const std::vector<float> second = randn({1000}).to_vector<float>();
  manual_seed(42);
  expect(randn({1000}).to_vector<float>() == first, "manual_seed replays the same draws");
  expect(first != second, "successive draws differ");

  Tensor big = randn({1 << 18});
  set_num_threads(1);
  expect(get_num_threads() == 1, "set_num_threads(1)");
  const double one_thread = sum(big).item();
  set_num_threads(2);
  expect(get_num_threads() == 2, "set_num_threads(2)");
  expect(sum(big).item() == one_thread, "a reduction is bitwise identical on 1 and 2 threads");
}

}  // namespace

int main() {
  try {
    check_tensor_basics();
    check_ops();
    check_autograd();
    check_seed_and_threads();
  } catch (const std::exception& e) {
    fmt::print(stderr, "api_program: unexpected exception: {}\n", e.what());
    return 1;
  }
  if (failures > 0) {
    fmt::print(stderr, "api_program: {} check(s) failed\n", failures);
    return 1;
  }
  fmt::print("api_program: every documented behaviour checked holds\n");
  return 0;
}
