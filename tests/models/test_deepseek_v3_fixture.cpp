// DeepSeek-V3 against golden values from an independent PyTorch implementation of docs/deepseek_v3.md
// (tests/data/dsv3-tiny, shared fixture; tests/data/README.md lists the others): logits, the four
// losses, every gradient, routing and loads, the bias update, one AdamW step and greedy decoding.
#include "deepseek_fixture.hpp"

using namespace latent;
using latent::testing::DeepSeekFixture;
using latent::testing::load_deepseek_fixture;
using latent::testing::require_close;
using latent::testing::test_data;

namespace {

constexpr double kTol = 1e-4;  // f32 model against float64 references (~3e-6 is typical)

// An expert that received no token has no gradient; the reference reports zeros.
Tensor grad_or_zeros(const Tensor& p) { return p.grad().defined() ? p.grad() : zeros(p.shape(), p.dtype()); }

void check_against_fixture(const std::string& name) {
  DeepSeekFixture f = load_deepseek_fixture(name);
  models::DeepSeekV3& model = *f.model;
  const Tensor ids = f.inputs.at("input_ids");
  const int64_t T = ids.size(1) - 1;

  SECTION("logits") {
    NoGradGuard no_grad;
    require_close(model.forward(narrow(ids, 1, 0, T)), f.expected.at("logits"), kTol);
  }

  SECTION("losses, gradients, routing, bias update and one AdamW step") {
    const auto losses = model.loss(ids, f.mtp_lambda);
    CHECK(losses.ce.item() == Approx(f.expected.at("loss_ce").item()).margin(kTol));
    CHECK(losses.balance.item() == Approx(f.expected.at("loss_balance").item()).margin(kTol));
    CHECK(losses.mtp.item() == Approx(f.expected.at("loss_mtp").item()).margin(kTol));
    CHECK(losses.total.item() == Approx(f.expected.at("loss_total").item()).margin(kTol));
    losses.total.backward();

    int checked = 0;
    for (auto& [pname, p] : model.named_parameters()) {
      INFO("gradient of " << pname);
      require_close(grad_or_zeros(p), f.expected.at("grad." + pname), kTol);
      ++checked;
    }
    int expected_grads = 0;
    for (auto& [key, _] : f.expected) expected_grads += key.rfind("grad.", 0) == 0;
    CHECK(checked == expected_grads);

    for (const auto& routing : model.last_routing()) {
      INFO("routing of " << routing.name);
      if (f.expected.count("routing." + routing.name))
        CHECK(routing.expert_ids.to_vector<int64_t>() == f.expected.at("routing." + routing.name).to_vector<int64_t>());
      CHECK(routing.loads.to_vector<int64_t>() == f.expected.at("load." + routing.name).to_vector<int64_t>());
    }

    if (model.config().topk_method == models::TopkMethod::kNoauxTc) {
      model.update_expert_bias(0.001);
      for (auto& [bname, b] : model.named_buffers()) {
        INFO("bias " << bname);
        require_close(b, f.expected.at("bias_after." + bname), 1e-6);
      }
    }

    optim::AdamWOptions options;
    options.lr = 1e-3, options.beta1 = 0.9, options.beta2 = 0.95, options.eps = 1e-8, options.weight_decay = 0.1;
    std::vector<Tensor> params;
    for (auto& [pname, p] : model.named_parameters()) {
      if (!p.grad().defined()) p.set_grad(zeros(p.shape(), p.dtype()));  // as the reference: zero, not absent
      params.push_back(p);
    }
    optim::AdamW adamw(params, options);
    adamw.step();
    for (auto& [pname, p] : model.named_parameters()) {
      INFO("after AdamW: " << pname);
      require_close(p, f.expected.at("after_adamw." + pname), kTol);
    }
  }

  SECTION("greedy generation uses the absorbed cache and matches") {
    models::DeepSeekV3::GenerateOptions options;
    options.max_new_tokens = f.expected.at("greedy_ids").numel() - f.inputs.at("prompt_ids").numel();
    CHECK(model.generate(f.inputs.at("prompt_ids"), options).to_vector<int64_t>() ==
          f.expected.at("greedy_ids").to_vector<int64_t>());
  }
}

}  // namespace

TEST_CASE("dsv3-tiny: the shared golden fixture", "[dsv3][fixture]") { check_against_fixture("dsv3-tiny"); }

// Our own PyTorch fixtures (tests/data/make_fixtures.py): plain q_proj, one group, two MTP modules,
// no YaRN, unnormalised weights, an idle expert; and DeepSeek-V2 softmax routing with group-limited
// greedy selection and the expert-level balance loss.
TEST_CASE("dsv3-variant: no q-LoRA, one group, MTP depth 2", "[dsv3][fixture]") { check_against_fixture("dsv3-variant"); }
TEST_CASE("dsv2-softmax: V2 softmax routing and aux loss", "[dsv3][fixture]") { check_against_fixture("dsv2-softmax"); }
