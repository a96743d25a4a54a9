// Tensor handles: geometry, views sharing storage, strided copies, printing, factories, RNG, allocator,
// the thread pool's chunking and the broadcast kernels.
#include <algorithm>
#include <mutex>
#include <thread>

#include "../helpers.hpp"
#include "core/strided.hpp"

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

namespace {

// x[i0, i1, ...] = sum_d i_d * 10^(rank-1-d): each value spells its own index.
Tensor spelled(const Shape& shape) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t flat = 0; flat < v.size(); ++flat) {
    int64_t rest = static_cast<int64_t>(flat), value = 0, scale = 1;
    for (size_t d = shape.size(); d-- > 0;) {
      value += (rest % shape[d]) * scale;
      rest /= shape[d];
      scale *= 10;
    }
    v[flat] = static_cast<double>(value);
  }
  return from_vector<double>(v, shape);
}

}  // namespace

TEST_CASE("strided copies follow the strides, converting dtypes", "[tensor][strided]") {
  const Tensor x = spelled({2, 3, 4, 5});
  // permute -> contiguous: element [a, b, c, d] of the result is x[c, b, d, a] = 1000 c + 100 b + 10 d + a.
  const Tensor p = x.permute({3, 1, 0, 2}).contiguous();
  CHECK(p.shape() == Shape{5, 3, 2, 4});
  const std::vector<double> pv = p.to_vector<double>();
  size_t flat = 0;
  for (int64_t a = 0; a < 5; ++a)
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t c = 0; c < 2; ++c)
        for (int64_t d = 0; d < 4; ++d) REQUIRE(pv[flat++] == double(c * 1000 + b * 100 + d * 10 + a));
  // Into a strided destination (a column slice of a larger tensor), from another dtype.
  Tensor big = zeros({3, 6}, kFloat32);
  big.narrow(1, 2, 3).copy_(from_vector<int64_t>({1, 2, 3, 4, 5, 6, 7, 8, 9}, {3, 3}).transpose(0, 1));
  CHECK(big.to_vector<float>() == std::vector<float>{0, 0, 1, 4, 7, 0, 0, 0, 2, 5, 8, 0, 0, 0, 3, 6, 9, 0});
  // Broadcast sources (stride 0) are read repeatedly.
  const Tensor row = from_vector<double>({1, 2, 3}).expand({2, 3}).contiguous();
  CHECK(row.to_vector<double>() == std::vector<double>{1, 2, 3, 1, 2, 3});
  // Large enough for several parallel chunks: a transposed copy is exact and thread-count independent.
  Generator gen(3);
  const Tensor m = randn({700, 300}, kFloat64, &gen);
  const int before = get_num_threads();
  set_num_threads(1);
  const std::vector<double> one = m.t().contiguous().to_vector<double>();
  set_num_threads(2);
  const std::vector<double> two = m.t().contiguous().to_vector<double>();
  set_num_threads(before);
  CHECK(one == two);
  const std::vector<double> mv = m.to_vector<double>();
  for (int64_t i = 0; i < 300; i += 37)
    for (int64_t j = 0; j < 700; j += 41) REQUIRE(one[size_t(i * 700 + j)] == mv[size_t(j * 300 + i)]);
  CHECK(cast_copy(m.t(), kFloat32).to_vector<float>()[1] == static_cast<float>(mv[300]));
  CHECK_THROWS_WITH(big.copy_(zeros({2, 6})),
                    Catch::Contains("copy_") && Catch::Contains("[2, 6]") && Catch::Contains("[3, 6]"));
}

TEST_CASE("fill_ writes only the elements of a view", "[tensor]") {
  Tensor t = zeros({3, 4}, kFloat64);
  Tensor column = t.narrow(1, 1, 1);
  column.fill_(7);
  CHECK(t.to_vector<double>() == std::vector<double>{0, 7, 0, 0, 0, 7, 0, 0, 0, 7, 0, 0});
  Tensor big = zeros({1 << 17}, kInt64);  // several parallel chunks
  big.fill_(-3);
  const std::vector<int64_t> v = big.to_vector<int64_t>();
  CHECK(std::all_of(v.begin(), v.end(), [](int64_t e) { return e == -3; }));
}

TEST_CASE("broadcast elementwise kernels are right on every layout", "[tensor][elementwise]") {
  // Column broadcast ([N, 1] against [N, C]), a strided operand, and a large case that splits into chunks.
  const Tensor x = spelled({4, 3});
  const Tensor col = from_vector<double>({1, 2, 3, 4}, {4, 1});
  const Tensor prod = x * col;
  CHECK(prod.to_vector<double>() == std::vector<double>{0, 1, 2, 20, 22, 24, 60, 63, 66, 120, 124, 128});
  CHECK((x.t() + from_vector<double>({100, 200, 300, 400})).to_vector<double>() ==
        std::vector<double>{100, 210, 320, 430, 101, 211, 321, 431, 102, 212, 322, 432});
  Generator gen(4);
  const Tensor a = randn({600, 200}, kFloat64, &gen), r = randn({600, 1}, kFloat64, &gen);
  const std::vector<double> av = a.to_vector<double>(), rv = r.to_vector<double>(), out = (a * r).to_vector<double>();
  for (size_t i = 0; i < av.size(); i += 113) REQUIRE(out[i] == av[i] * rv[i / 200]);
  const std::vector<double> tr = (a.t() - r.t()).to_vector<double>();  // [200, 600] strided minus a row
  for (size_t j = 0; j < 200; j += 17)
    for (size_t i = 0; i < 600; i += 29) REQUIRE(tr[j * 600 + i] == av[i * 200 + j] - rv[i]);
}

TEST_CASE("parallel_for cuts the same chunks for any thread count", "[parallel]") {
  auto chunks = [](int threads) {
    set_num_threads(threads);
    std::mutex mutex;
    std::vector<std::pair<int64_t, int64_t>> seen;
    parallel_for(1000, 64, [&](int64_t b, int64_t e) {
      std::lock_guard lock(mutex);
      seen.emplace_back(b, e);
    });
    std::sort(seen.begin(), seen.end());
    return seen;
  };
  const int before = get_num_threads();
  const auto one = chunks(1), two = chunks(2);
  set_num_threads(before);
  CHECK(one == two);
  REQUIRE(one.size() == 16);
  CHECK(one.back() == std::make_pair(int64_t{960}, int64_t{1000}));
  CHECK(get_num_threads() == before);
  CHECK_THROWS_WITH(set_num_threads(0), Catch::Contains("set_num_threads") && Catch::Contains("0"));
  int calls = 0;
  parallel_for(0, 8, [&](int64_t, int64_t) { ++calls; });
  CHECK(calls == 0);
}

TEST_CASE("tasks of little total work run in order on the calling thread", "[parallel]") {
  const int before = get_num_threads();
  set_num_threads(2);
  std::mutex mutex;
  std::vector<int64_t> order;
  std::vector<std::thread::id> threads;
  auto record = [&](int64_t i) {
    std::lock_guard lock(mutex);
    order.push_back(i);
    threads.push_back(std::this_thread::get_id());
  };
  parallel_tasks(6, kMinParallelWork - 1, record);
  CHECK(order == std::vector<int64_t>{0, 1, 2, 3, 4, 5});
  CHECK(std::count(threads.begin(), threads.end(), std::this_thread::get_id()) == 6);
  order.clear();
  parallel_tasks(6, kMinParallelWork, record);  // enough work: the pool, any order, every task once
  std::sort(order.begin(), order.end());
  CHECK(order == std::vector<int64_t>{0, 1, 2, 3, 4, 5});
  set_num_threads(before);
}

TEST_CASE("geometry helpers and tensor misuse throw clear errors", "[tensor]") {
  CHECK(contiguous_strides({2, 3, 4}) == Shape{12, 4, 1});
  CHECK(broadcast_shapes({3, 1, 5}, {4, 1}, "op") == Shape{3, 4, 5});
  CHECK_THROWS_WITH(broadcast_shapes({2, 3}, {4}, "mul"), "mul: shapes [2, 3] and [4] cannot be broadcast");
  CHECK(normalize_dim(-1, 3, "op") == 2);
  CHECK_THROWS_WITH(normalize_dim(3, 3, "softmax"), "softmax: dim 3 out of range for a tensor with 3 dims");
  CHECK_THROWS_WITH(Tensor::empty({2, -1}), Catch::Contains("empty") && Catch::Contains("[2, -1]"));
  CHECK_THROWS_WITH(Tensor().shape(), Catch::Contains("undefined"));
  const Tensor t = zeros({2, 3});
  CHECK_THROWS_WITH(t.as_strided({4, 3}, {3, 1}, 0), Catch::Contains("as_strided") && Catch::Contains("outside"));
  CHECK_THROWS_WITH(t.as_strided({2}, {1, 1}, 0), Catch::Contains("as_strided") && Catch::Contains("rank"));
  CHECK(t.as_strided({3}, {2}, 1).shares_storage(t));
  CHECK_THROWS_WITH(t.data<double>(), Catch::Contains("float32") && Catch::Contains("float64"));
  CHECK_THROWS_WITH(arange(3, 0, 0), Catch::Contains("arange") && Catch::Contains("step"));
  CHECK(arange(5, 0, -2).to_vector<int64_t>() == std::vector<int64_t>{5, 3, 1});
}
