// Tensor handles: geometry, views sharing storage, copies, printing, factories, RNG, allocator.
#include "../helpers.hpp"

using namespace latent;
using latent::testing::require_close;

TEST_CASE("factories fill, range and copy values", "[tensor]") {
  require_close(zeros({2, 2}), {0, 0, 0, 0});
  require_close(full({3}, 2.5, kFloat64), {2.5, 2.5, 2.5});
  require_close(arange(4), {0, 1, 2, 3});
  require_close(arange(2, 9, 3), {2, 5, 8});
  const Tensor t = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(t.shape() == Shape{2, 3});
  CHECK(t.numel() == 6);
  CHECK(t.size(-1) == 3);
  CHECK(t.dtype() == kFloat32);
  CHECK_THROWS_AS(from_vector<float>({1, 2}, {3}), Error);
  CHECK_THROWS_AS(t.to_vector<double>(), Error);
}

TEST_CASE("views share storage and follow strides", "[tensor]") {
  const Tensor t = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor tt = t.transpose(0, 1);
  CHECK(tt.shape() == Shape{3, 2});
  CHECK(tt.shares_storage(t));
  CHECK_FALSE(tt.is_contiguous());
  require_close(tt, {1, 4, 2, 5, 3, 6});
  require_close(t.narrow(1, 1, 2), {2, 3, 5, 6});
  require_close(t.reshape({3, 2}), {1, 2, 3, 4, 5, 6});
  CHECK(t.reshape({3, 2}).shares_storage(t));
  require_close(tt.reshape({6}), {1, 4, 2, 5, 3, 6});
  CHECK_FALSE(tt.reshape({6}).shares_storage(t));  // a transposed tensor cannot be flattened without a copy
  CHECK_THROWS_AS(tt.view({6}), Error);
  require_close(from_vector<double>({1, 2}, {2, 1}).expand({2, 3}), {1, 1, 1, 2, 2, 2});
  CHECK(t.unsqueeze(0).shape() == Shape{1, 2, 3});
  CHECK(t.unsqueeze(0).squeeze(0).shape() == Shape{2, 3});
  require_close(t.permute({1, 0}).contiguous(), {1, 4, 2, 5, 3, 6});
  CHECK_THROWS_AS(t.reshape({4, 2}), Error);
  CHECK_THROWS_AS(t.transpose(0, 2), Error);
  CHECK_THROWS_AS(t.narrow(1, 2, 2), Error);
}

TEST_CASE("item, to and clone", "[tensor]") {
  CHECK(scalar_tensor(3.5).item() == 3.5);
  CHECK_THROWS_WITH(zeros({2}).item(), Catch::Contains("one-element"));
  const Tensor t = from_vector<float>({1.5f, -2.25f}, {2});
  require_close(t.to(kFloat64), {1.5, -2.25});
  require_close(t.to(kInt64), {1, -2});
  const Tensor c = t.clone();
  CHECK_FALSE(c.shares_storage(t));
}

TEST_CASE("printing shows shape, dtype and values, eliding large tensors", "[tensor]") {
  CHECK(fmt::format("{}", from_vector<int64_t>({1, 2, 3, 4}, {2, 2})) ==
        "tensor([[1, 2],\n        [3, 4]], shape=[2, 2], dtype=int64)");
  CHECK(fmt::format("{}", scalar_tensor(0.5)) == "tensor(0.5, shape=[], dtype=float32)");
  const std::string big = fmt::format("{}", arange(2000));
  CHECK(big == "tensor([0, 1, 2, ..., 1997, 1998, 1999], shape=[2000], dtype=int64)");
}

TEST_CASE("the generator is deterministic and independent of the thread count", "[random]") {
  manual_seed(42);
  const std::vector<float> a = randn({1000}).to_vector<float>();
  manual_seed(42);
  set_num_threads(1);
  const std::vector<float> b = randn({1000}).to_vector<float>();
  set_num_threads(2);
  CHECK(a == b);
  Generator g1(7), g2(7);
  CHECK(rand({100000}, kFloat64, &g1).to_vector<double>() == rand({100000}, kFloat64, &g2).to_vector<double>());
  // Moments of a large draw are close to those of a standard normal.
  Generator g(1);
  const std::vector<double> x = randn({200000}, kFloat64, &g).to_vector<double>();
  double m = 0, v = 0;
  for (double e : x) m += e;
  m /= double(x.size());
  for (double e : x) v += (e - m) * (e - m);
  v /= double(x.size());
  CHECK(std::abs(m) < 0.01);
  CHECK(std::abs(v - 1) < 0.01);
  std::vector<int64_t> perm = randperm(50, &g).to_vector<int64_t>();
  std::sort(perm.begin(), perm.end());
  CHECK(perm == arange(50).to_vector<int64_t>());
}

TEST_CASE("the caching allocator stops asking the OS for memory on a repeated workload", "[allocator]") {
  auto workload = [] {
    for (int i = 0; i < 5; ++i) {
      Tensor a = randn({128, 64}), b = randn({64, 32});
      Tensor c = matmul(a, b) + 1.0;
      (void)sum(c).item();
    }
  };
  workload();
  const int64_t before = allocator::stats().os_allocations;
  workload();
  CHECK(allocator::stats().os_allocations == before);
  CHECK(allocator::size_class(1000) >= 1000);
  CHECK(allocator::size_class(1000) <= 1250);
}
