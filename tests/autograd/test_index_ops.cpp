// Indexing ops: index_select, gather, scatter_add, index_add, embedding — values, accumulation of
// duplicate indices, gradients, and errors for bad ids and index dtypes.
#include "../helpers.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

Tensor ids(const std::vector<int64_t>& v, const Shape& shape) { return from_vector<int64_t>(v, shape); }
Tensor ids(const std::vector<int64_t>& v) { return from_vector<int64_t>(v); }

}  // namespace

TEST_CASE("index_select picks rows or columns, repeats and negatives included", "[index]") {
  for (DType dt : {kFloat32, kFloat64}) {
    const Tensor x = arange(12, dt).reshape({3, 4});
    require_close(index_select(x, 0, ids({2, 0, 2})), {8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11});
    require_close(index_select(x, 1, ids({3, -4})), {3, 0, 7, 4, 11, 8});
    require_close(index_select(x.transpose(0, 1), 0, ids({1})), {1, 5, 9});  // strided input
    CHECK(index_select(x, -1, ids({}, {0})).shape() == Shape{3, 0});
  }
  require_close(index_select(arange(5), 0, ids({4, 4})), {4, 4});  // int64 data too
}

TEST_CASE("gather follows torch.gather", "[index]") {
  const Tensor x = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  // out[i][j] = x[i][index[i][j]]
  require_close(gather(x, 1, ids({2, 0, 1, 1}, {2, 2})), {3, 1, 5, 5});
  // out[i][j] = x[index[i][j]][j]; the index may be smaller than x outside dim.
  require_close(gather(x, 0, ids({1, 0}, {1, 2})), {4, 2});
  require_close(gather(x.transpose(0, 1), 1, ids({1, 0, 0}, {3, 1})), {4, 2, 3});
}

TEST_CASE("scatter_add and index_add accumulate duplicate indices", "[index]") {
  const Tensor base = zeros({2, 3}, kFloat64) + 0.5;
  const Tensor src = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  // out[i][index[i][j]] += src[i][j]: row 0 sends 1 and 2 to column 1, row 1 sends all to column 0.
  const Tensor s = scatter_add(base, 1, ids({1, 1, 2, 0, 0, 0}, {2, 3}), src);
  require_close(s, {0.5, 3.5, 3.5, 15.5, 0.5, 0.5});
  require_close(base, {0.5, 0.5, 0.5, 0.5, 0.5, 0.5});  // out of place
  // A smaller index uses only the matching corner of src.
  require_close(scatter_add(zeros({2, 3}, kFloat64), 0, ids({1, 1}, {1, 2}), src), {0, 0, 0, 1, 2, 0});
  // index_add: out[index[j]] += src[j] along dim 0; index 0 appears twice.
  const Tensor rows = from_vector<double>({1, 1, 10, 10, 100, 100}, {3, 2});
  require_close(index_add(zeros({2, 2}, kFloat64), 0, ids({0, 1, 0}), rows), {101, 101, 10, 10});
  require_close(index_add(zeros({2, 2}, kFloat64), 1, ids({1, 1}), from_vector<double>({1, 2, 3, 4}, {2, 2})),
                {0, 3, 0, 7});
}

TEST_CASE("embedding looks up rows for ids of any shape", "[index]") {
  const Tensor weight = arange(8, kFloat32).reshape({4, 2});
  const Tensor out = embedding(weight, ids({3, 0, 3, 1, 2, 2}, {2, 3}));
  CHECK(out.shape() == Shape{2, 3, 2});
  require_close(out, {6, 7, 0, 1, 6, 7, 2, 3, 4, 5, 4, 5});
  CHECK(embedding(weight, ids({1})).shape() == Shape{1, 2});
  CHECK(embedding(weight, from_vector<int64_t>({2}, {})).shape() == Shape{2});
  // Gradient: every occurrence of an id adds its row of the incoming gradient.
  const Tensor w = zeros({4, 2}, kFloat64).requires_grad_();
  const Tensor g = from_vector<double>({1, 2, 3, 4, 5, 6}, {3, 2});
  sum(embedding(w, ids({2, 0, 2})) * g).backward();
  require_close(w.grad(), {3, 4, 0, 0, 6, 8, 0, 0});
}

TEST_CASE("index op gradients pass gradcheck, duplicates and strided inputs included", "[index][gradcheck]") {
  const Tensor x = randn64({4, 5}, 1), src = randn64({4, 5}, 2), rows = randn64({3, 5}, 3);
  const Tensor dup = ids({1, 3, 1});
  const Tensor gather_index = ids({0, 4, 4, 1, 2, 2, 3, 0, 1, 1, 1, 1}, {4, 3});
  CHECK(autograd::gradcheck([&](auto& v) { return index_select(v[0], 0, dup); }, {x}));
  CHECK(autograd::gradcheck([&](auto& v) { return index_select(v[0].transpose(0, 1), 1, dup); }, {x}));
  CHECK(autograd::gradcheck([&](auto& v) { return gather(v[0], 1, gather_index); }, {x}));
  CHECK(autograd::gradcheck([&](auto& v) { return gather(v[0].transpose(0, 1), 0, ids({3, 2, 3, 0}, {1, 4})); }, {x}));
  CHECK(autograd::gradcheck([&](auto& v) { return scatter_add(v[0], 1, gather_index, v[1]); }, {x, src}));
  CHECK(autograd::gradcheck([&](auto& v) { return index_add(v[0], 0, dup, v[1]); }, {x, rows}));
  CHECK(autograd::gradcheck(
      [&](auto& v) {
        return index_add(v[0], 1, ids({4, 0, 4}), v[1].transpose(0, 1).narrow(0, 0, 4));
      },
      {x, randn64({3, 5}, 4)}));
  CHECK(autograd::gradcheck([&](auto& v) { return embedding(v[0], ids({3, 3, 0, 2, 3, 1}, {3, 2})); }, {x}));
}

TEST_CASE("index errors name the op, the bad id and the valid range", "[index]") {
  const Tensor weight = zeros({256, 4});
  CHECK_THROWS_WITH(embedding(weight, ids({1, 300})), "embedding: id 300 out of range [0, 256)");
  CHECK_THROWS_WITH(embedding(weight, ids({-1})), "embedding: id -1 out of range [0, 256)");
  CHECK_THROWS_WITH(embedding(weight, from_vector<float>({1})),
                    Catch::Contains("embedding") && Catch::Contains("int64") && Catch::Contains("float32"));
  CHECK_THROWS_WITH(embedding(zeros({4}), ids({1})), Catch::Contains("embedding") && Catch::Contains("[4]"));
  const Tensor x = zeros({3, 4});
  CHECK_THROWS_WITH(index_select(x, 0, ids({3})),
                    Catch::Contains("index_select") && Catch::Contains("3 out of range [0, 3)"));
  CHECK_THROWS_WITH(index_select(x, 1, ids({-5})), Catch::Contains("index_select") && Catch::Contains("-5"));
  CHECK_THROWS_WITH(index_select(x, 0, from_vector<double>({0})),
                    Catch::Contains("index_select") && Catch::Contains("int64"));
  CHECK_THROWS_WITH(index_select(x, 0, ids({0, 1}, {1, 2})), Catch::Contains("1-D"));
  CHECK_THROWS_WITH(index_select(x, 2, ids({0})), Catch::Contains("index_select") && Catch::Contains("dim 2"));
  CHECK_THROWS_WITH(gather(x, 1, ids({4}, {1, 1})),
                    Catch::Contains("gather") && Catch::Contains("4 out of range [0, 4)"));
  CHECK_THROWS_WITH(gather(x, 1, ids({0})), Catch::Contains("gather") && Catch::Contains("rank"));
  CHECK_THROWS_WITH(gather(x, 1, ids({0, 0, 0, 0, 0}, {5, 1})), Catch::Contains("gather") && Catch::Contains("[5, 1]"));
  CHECK_THROWS_WITH(gather(x, 0, arange(4, kFloat32).reshape({1, 4})),
                    Catch::Contains("gather") && Catch::Contains("int64"));
  CHECK_THROWS_WITH(scatter_add(x, 0, ids({3}, {1, 1}), zeros({1, 1})),
                    Catch::Contains("scatter_add") && Catch::Contains("out of range"));
  CHECK_THROWS_WITH(scatter_add(x, 0, ids({0}, {1, 1}), zeros({1, 1}, kFloat64)),
                    Catch::Contains("scatter_add") && Catch::Contains("dtype"));
  CHECK_THROWS_WITH(scatter_add(x, 0, ids({0, 0}, {1, 2}), zeros({1, 1})),
                    Catch::Contains("scatter_add") && Catch::Contains("src"));
  CHECK_THROWS_WITH(index_add(x, 0, ids({0}), zeros({2, 4})),
                    Catch::Contains("index_add") && Catch::Contains("[1, 4]"));
  CHECK_THROWS_WITH(index_add(x, 0, ids({7}), zeros({1, 4})),
                    Catch::Contains("index_add") && Catch::Contains("7 out of range"));
}
