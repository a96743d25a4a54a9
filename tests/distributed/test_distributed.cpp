// Tests of data parallelism, run as `mpirun -np 2` (every rank runs every test): the process group's
// collectives, the bucketed gradient all-reduce, the sharded batch sampler, and the equivalence of
// 2 ranks x half batch with 1 process x the whole batch on a tiny DeepSeek-V3.
#include <cmath>

#include "../helpers.hpp"
#include "train/data_parallel.hpp"

using namespace latent;

namespace {

distributed::ProcessGroup& world() { return distributed::ProcessGroup::world(); }

// The largest |a - b| over the parameters and buffers (or the parameters only) of two models.
double max_difference(const nn::Module& a, const nn::Module& b, bool parameters_only = false) {
  auto as_map = [&](const nn::Module& m) {
    if (!parameters_only) return m.state_dict();
    std::map<std::string, Tensor> out;
    for (auto& [name, p] : m.named_parameters()) out[name] = p;
    return out;
  };
  const auto sa = as_map(a), sb = as_map(b);
  REQUIRE(sa.size() == sb.size());
  double worst = 0;
  for (const auto& [name, ta] : sa) {
    const auto x = ta.to(kFloat64).to_vector<double>(), y = sb.at(name).to(kFloat64).to_vector<double>();
    for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(x[i] - y[i]));
  }
  return worst;
}

}  // namespace

TEST_CASE("the test runs as several MPI ranks", "[distributed]") {
  INFO("run this executable with mpirun -np 2 (meson test does)");
  REQUIRE(distributed::mpi_available());
  REQUIRE(world().size() >= 2);
  REQUIRE(world().rank() < world().size());
  REQUIRE(world().local_size() == world().size());  // one machine
}

TEST_CASE("broadcast and all_reduce_sum give every rank the same values", "[distributed]") {
  const int rank = world().rank(), n = world().size();
  const int root = n - 1;  // not rank 0, so a root argument that is ignored fails
  Tensor f = from_vector<float>({float(rank), float(10 * rank), 0.5f}, {3});
  world().broadcast(f, root);
  testing::require_close(f, {double(root), double(10 * root), 0.5}, 0);

  Tensor i = from_vector<int64_t>({int64_t(rank) << 40, 7}, {2});
  world().broadcast(i, root);
  REQUIRE(i.to_vector<int64_t>() == std::vector<int64_t>{int64_t(root) << 40, 7});

  REQUIRE(world().broadcast(rank == root ? std::string("from the root") : std::string(5, 'x'), root) == "from the root");

  // sum_r (r + 1) = n (n + 1) / 2, and sum_r 2^-r (exact in binary) in f64
  Tensor d = from_vector<double>({double(rank + 1), std::ldexp(1.0, -rank)}, {2});
  world().all_reduce_sum(d);
  testing::require_close(d, {n * (n + 1) / 2.0, 2.0 - std::ldexp(1.0, 1 - n)}, 0);
  Tensor l = full({4}, double(rank + 1), kInt64);
  world().all_reduce_sum(l);
  REQUIRE(l.to_vector<int64_t>() == std::vector<int64_t>(4, int64_t(n) * (n + 1) / 2));
  REQUIRE(world().all_reduce_sum(std::vector<double>{1.0, double(rank)}) == std::vector<double>{double(n), n * (n - 1) / 2.0});

  REQUIRE_THROWS_WITH(world().broadcast(f, n), Catch::Contains("root " + std::to_string(n) + " out of range"));
  REQUIRE_THROWS_WITH(world().all_reduce_sum(zeros({3, 4}).transpose(0, 1)), Catch::Contains("must be contiguous"));
}

TEST_CASE("broadcast_tensors refuses lists that differ between ranks, on every rank", "[distributed]") {
  const Tensor a = zeros({2, 3}), b = zeros({world().rank() == 0 ? 4 : 5});
  REQUIRE_THROWS_WITH(distributed::broadcast_tensors(world(), {a, b}),
                      Catch::Contains("differs between ranks") && Catch::Contains("rank 0 has 2 tensors float32[2, 3] float32[4]"));
  Tensor c = full({2, 3}, double(world().rank()));
  distributed::broadcast_tensors(world(), {c, zeros({4}, kInt64)});
  testing::require_close(c, std::vector<double>(6, 0.0), 0);
}

TEST_CASE("GradientAllReduce averages gradients in reverse-order buckets of bounded size", "[distributed]") {
  const int rank = world().rank(), n = world().size();
  // p0, p1, p3: f32 (16, 8 and 12 bytes); p2: f64. Buckets of 24 bytes, filled from the last parameter.
  std::vector<Tensor> params = {zeros({4}), zeros({2}), zeros({3}, kFloat64), zeros({3})};
  for (Tensor& p : params) p.requires_grad_();
  distributed::GradientAllReduce reducer(world(), params, 24);
  // p3 alone (12 B, then p2 is f64), p2 alone, p1 (8 B) then p0 (16 B) fits in 24 B exactly.
  REQUIRE(reducer.buckets() == std::vector<std::vector<size_t>>{{3}, {2}, {1, 0}});

  // p0: rank r holds r + i; p1: only rank 0 has a gradient; p2: f64, 2^-r; p3: nobody has one.
  params[0].set_grad(from_vector<float>({float(rank), float(rank + 1), float(rank + 2), float(rank + 3)}, {4}));
  if (rank == 0) params[1].set_grad(from_vector<float>({6.0f, -2.0f}, {2}));
  params[2].set_grad(full({3}, std::ldexp(1.0, -rank), kFloat64));
  reducer.all_reduce();

  const double mean_rank = (n - 1) / 2.0;
  testing::require_close(params[0].grad(), {mean_rank, mean_rank + 1, mean_rank + 2, mean_rank + 3}, 1e-7);
  REQUIRE(params[1].grad().defined());  // the other ranks count zeros for it
  testing::require_close(params[1].grad(), {6.0 / n, -2.0 / n}, 1e-7);
  testing::require_close(params[2].grad(), std::vector<double>(3, (2.0 - std::ldexp(1.0, 1 - n)) / n), 1e-15);
  REQUIRE_FALSE(params[3].grad().defined());  // like a single process: the optimizer skips it

  REQUIRE_THROWS_WITH(distributed::GradientAllReduce(world(), {zeros({2}, kInt64)}),
                      Catch::Contains("only Float32 and Float64 parameters have gradients"));
}

TEST_CASE("a sharded sampler draws exactly its rows of the single-process batch", "[distributed]") {
  std::string text;
  for (int i = 0; i < 400; ++i) text += char('a' + (i * 7919) % 26);
  const train::TextCorpus corpus = train::TextCorpus::from_text(text);
  train::BatchSampler whole(corpus.train(), 6, 16, 42);
  train::BatchSampler first(corpus.train(), 6, 16, 42, {0, 3}), last(corpus.train(), 6, 16, 42, {2, 3});
  for (int step = 0; step < 3; ++step) {
    const Tensor all = whole.next(), a = first.next(), c = last.next();
    REQUIRE(a.shape() == Shape{2, 17});
    REQUIRE(a.to_vector<int64_t>() == all.narrow(0, 0, 2).contiguous().to_vector<int64_t>());
    REQUIRE(c.to_vector<int64_t>() == all.narrow(0, 4, 2).contiguous().to_vector<int64_t>());
    REQUIRE(a.to_vector<int64_t>() != c.to_vector<int64_t>());
  }
  REQUIRE(first.offset() == whole.offset());  // one checkpointed state for every world size
  REQUIRE_THROWS_WITH(train::BatchSampler(corpus.train(), 7, 16, 42, {0, 2}),
                      Catch::Contains("batch 7 does not split into 2 equal shards"));
  REQUIRE_THROWS_WITH(train::BatchSampler(corpus.train(), 8, 16, 42, {2, 2}), Catch::Contains("shard 2 of 2 is out of range"));
}

TEST_CASE("N ranks x batch/N train a tiny DeepSeek-V3 to the weights of 1 process x batch", "[distributed]") {
  const int rank = world().rank(), n = world().size();
  const int64_t batch = 2 * n, seq = 24, steps = 6;
  std::string text;
  for (int i = 0; i < 3000; ++i) text += char(32 + (i * i + 7 * i) % 90);
  const train::TextCorpus corpus = train::TextCorpus::from_text(text);
  models::DeepSeekV3Config config = models::DeepSeekV3Config::preset("tiny");

  // Every rank runs the single-process reference itself (no communication), and its shard of the
  // data-parallel run. Rank 1 starts from different weights: the broadcast must make them rank 0's.
  manual_seed(7);
  auto reference = std::make_shared<models::DeepSeekV3>(config);
  manual_seed(rank == 0 ? 7 : 99);
  auto replica = std::make_shared<models::DeepSeekV3>(config);
  train::DataParallel parallel(replica, world());
  REQUIRE(max_difference(*reference, *replica) == 0);

  auto make_optimizer = [](models::DeepSeekV3& model) {
    return std::make_unique<optim::AdamW>(model.parameters(), optim::AdamWOptions{1e-3, 0.9, 0.95, 1e-8, 0.1});
  };
  auto reference_optimizer = make_optimizer(*reference), replica_optimizer = make_optimizer(*replica);
  train::BatchSampler reference_sampler(corpus.train(), batch, seq, 3);
  train::BatchSampler shard_sampler(corpus.train(), batch, seq, 3, {rank, n});

  for (int64_t step = 0; step < steps; ++step) {
    const auto reference_losses = reference->loss(reference_sampler.next());
    reference_losses.total.backward();
    optim::clip_grad_norm(reference_optimizer->params(), 0.5);  // small enough to clip: the norm must be global
    reference_optimizer->step();
    reference_optimizer->zero_grad();
    reference->update_expert_bias(1e-2);

    const auto losses = replica->loss_terms(shard_sampler.next(), {0.3});  // loss()'s default mtp_lambda
    const auto global = parallel.average_losses(losses);
    INFO("step " << step);
    REQUIRE(std::abs(global.total - reference_losses.total.item()) < 1e-5);
    REQUIRE(std::abs(global.term("ce") - reference_losses.ce.item()) < 1e-5);
    REQUIRE(std::abs(global.term("balance") - reference_losses.balance.item()) < 1e-5);
    REQUIRE(std::abs(global.term("mtp") - reference_losses.mtp.item()) < 1e-5);
    losses.total.backward();
    parallel.all_reduce_gradients();
    optim::clip_grad_norm(replica_optimizer->params(), 0.5);
    replica_optimizer->step();
    replica_optimizer->zero_grad();
    parallel.after_optimizer_step(1e-2);
    // The bias update saw the whole batch's loads, summed in place: the reference's, as exact integers.
    const auto& reference_routing = reference->last_routing();
    const auto routing = replica->routing_statistics();
    REQUIRE(routing.size() == reference_routing.size());
    for (size_t l = 0; l < routing.size(); ++l)
      REQUIRE(routing[l].loads.to_vector<int64_t>() == reference_routing[l].loads.to_vector<int64_t>());
  }

  // Rounding differs (the whole batch's gradient sums run over other blocks), and AdamW's first steps
  // divide each gradient element by its own magnitude: an element that is mostly rounding noise moves
  // by up to lr either way. So the gap grows with lr, not with the steps: about 3e-6 at lr 1e-3 here.
  manual_seed(7);
  const models::DeepSeekV3 initial(config);
  CHECK(max_difference(initial, *reference, true) > 1e-3);  // training moved the weights far beyond the tolerance
  CHECK(max_difference(*reference, *replica) < 1e-5);

  // Every rank holds bitwise the same replica: rank 0's values broadcast compare equal everywhere.
  double mismatches = 0;
  for (const auto& [name, tensor] : replica->state_dict()) {
    Tensor root_copy = tensor.detach().clone().contiguous();
    world().broadcast(root_copy, 0);
    if (root_copy.to(kFloat64).to_vector<double>() != tensor.to(kFloat64).to_vector<double>()) mismatches += 1;
  }
  REQUIRE(world().all_reduce_sum(std::vector<double>{mismatches})[0] == 0);
}
