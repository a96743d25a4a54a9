// Optimizer state dicts and files: contents, bitwise-exact resume, strict loading.
#include <cstdio>
#include <filesystem>

#include "io/safetensors.hpp"
#include "optim/adam.hpp"
#include "optim/sgd.hpp"
#include "problem.hpp"

using namespace latent;
using latent::testing::Regression;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("latent_test_optim_" + name)).string();
}

void require_error(const std::function<void()>& fn, const std::string& text) {
  try {
    fn();
    FAIL("expected an error containing: " << text);
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find(text) != std::string::npos);
  }
}

// Parameters of `r`'s shapes holding `r`'s current values, as a resumed run would load them.
Regression copy_of(const Regression& r) {
  Regression fresh(r.w.dtype());
  fresh.w.copy_(r.w.detach());
  fresh.b.copy_(r.b.detach());
  return fresh;
}

std::vector<std::string> keys(const std::map<std::string, Tensor>& state) {
  std::vector<std::string> out;
  for (const auto& [key, _] : state) out.push_back(key);
  return out;
}

}  // namespace

TEST_CASE("state_dict lists groups, hyperparameters and per-parameter buffers", "[optim]") {
  Regression r;
  optim::AdamW opt({{{r.w}, {.lr = 0.01, .weight_decay = 0.1}}, {{r.b}, {.lr = 0.02, .weight_decay = 0.0}}});
  CHECK(keys(opt.state_dict()) == std::vector<std::string>{"group.0.beta1", "group.0.beta2", "group.0.eps",
                                                           "group.0.lr", "group.0.params", "group.0.weight_decay",
                                                           "group.1.beta1", "group.1.beta2", "group.1.eps",
                                                           "group.1.lr", "group.1.params", "group.1.weight_decay"});
  r.backward();
  const std::vector<double> grad_b = r.b.grad().to_vector<double>();
  opt.step();
  const auto state = opt.state_dict();
  CHECK(state.size() == 12 + 6);
  CHECK(state.at("group.1.params").to_vector<int64_t>() == std::vector<int64_t>{1});
  CHECK(state.at("group.1.lr").item() == 0.02);
  CHECK(state.at("group.0.weight_decay").item() == 0.1);
  CHECK(state.at("state.1.step").dtype() == kInt64);
  CHECK(state.at("state.1.step").dim() == 0);
  CHECK(state.at("state.1.step").item() == 1);
  CHECK(state.at("state.0.exp_avg").shape() == Shape{3, 2});
  // After one step, m = (1 - beta1) g and v = (1 - beta2) g^2.
  testing::require_close(state.at("state.1.exp_avg"), {0.1 * grad_b[0], 0.1 * grad_b[1]}, 1e-15);
  testing::require_close(state.at("state.1.exp_avg_sq"), {1e-3 * grad_b[0] * grad_b[0], 1e-3 * grad_b[1] * grad_b[1]},
                         1e-12);

  optim::SGD sgd({r.w, r.b}, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
  r.backward();
  sgd.step();
  const auto sgd_state = sgd.state_dict();
  CHECK(sgd_state.at("group.0.nesterov").item() == 1.0);
  CHECK(sgd_state.at("group.0.momentum").item() == 0.9);
  CHECK(sgd_state.count("state.0.momentum_buffer") == 1);
}

TEST_CASE("save after k steps, load into a fresh optimizer, continue: bitwise the uninterrupted run", "[optim]") {
  const int k = 3, rest = 4;
  auto check_resume = [&](auto make_optimizer, DType dtype) {
    Regression straight(dtype);
    auto uninterrupted = make_optimizer(straight);
    straight.train(*uninterrupted, k + rest);

    Regression first(dtype);
    auto before = make_optimizer(first);
    first.train(*before, k);
    const std::string path = temp_path("resume.safetensors");
    before->save(path);

    Regression second = copy_of(first);
    auto after = make_optimizer(second);
    after->set_lr(123.0);  // overwritten by the file's hyperparameters
    after->load(path);
    std::remove(path.c_str());
    second.train(*after, rest);

    if (dtype == kFloat32) {
      CHECK(second.w.to_vector<float>() == straight.w.to_vector<float>());
      CHECK(second.b.to_vector<float>() == straight.b.to_vector<float>());
    } else {
      CHECK(second.values() == straight.values());
    }
    // The run actually moved, so equality is not vacuous.
    CHECK(second.values() != Regression(dtype).values());
  };
  for (DType dtype : {kFloat32, kFloat64}) {
    INFO(dtype_name(dtype));
    check_resume(
        [](const Regression& r) {
          return std::make_unique<optim::AdamW>(std::vector<optim::ParamGroup<optim::AdamWOptions>>{
              {{r.w}, {.lr = 0.01, .weight_decay = 0.1}}, {{r.b}, {.lr = 0.05, .weight_decay = 0.0}}});
        },
        dtype);
    check_resume(
        [](const Regression& r) {
          return std::make_unique<optim::Adam>(std::vector<Tensor>{r.w, r.b},
                                               optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1});
        },
        dtype);
    check_resume(
        [](const Regression& r) {
          return std::make_unique<optim::SGD>(
              std::vector<Tensor>{r.w, r.b},
              optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true});
        },
        dtype);
  }
}

TEST_CASE("a resumed run that skipped the load would differ (the resume test can fail)", "[optim]") {
  Regression straight;
  optim::AdamW a({straight.w, straight.b}, {.lr = 0.01});
  straight.train(a, 6);
  Regression first;
  optim::AdamW b({first.w, first.b}, {.lr = 0.01});
  first.train(b, 3);
  Regression second = copy_of(first);
  optim::AdamW fresh({second.w, second.b}, {.lr = 0.01});  // no load: moments and step counts restart
  second.train(fresh, 3);
  CHECK(second.values() != straight.values());
}

TEST_CASE("loaded state is copied and hyperparameters restored", "[optim]") {
  Regression r;
  optim::AdamW opt({r.w, r.b}, {.lr = 0.5, .beta1 = 0.8});
  r.train(opt, 2);
  std::map<std::string, Tensor> state = opt.state_dict();
  Regression other = copy_of(r);
  optim::AdamW loaded({other.w, other.b});
  loaded.load_state_dict(state);
  CHECK(loaded.lr() == 0.5);
  CHECK(loaded.options(0).beta1 == 0.8);
  CHECK(loaded.step_count(1) == 2);
  const std::vector<double> exp_avg = state.at("state.0.exp_avg").to_vector<double>();
  state.at("state.0.exp_avg").fill_(7.0);  // the caller's tensors are not the optimizer's
  CHECK(loaded.state_dict().at("state.0.exp_avg").to_vector<double>() == exp_avg);
}

TEST_CASE("load_state_dict refuses mismatched layouts and changes nothing", "[optim]") {
  Regression r;
  optim::AdamW opt({r.w, r.b}, {.lr = 0.01});
  r.train(opt, 2);
  const auto state = opt.state_dict();

  SECTION("a parameter of another shape") {
    Tensor w = zeros({2, 3}, kFloat64).requires_grad_(), b = zeros({2}, kFloat64).requires_grad_();
    optim::AdamW other({w, b}, {.lr = 0.3});
    const auto before = other.state_dict();
    require_error([&] { other.load_state_dict(state); },
                  "AdamW.load_state_dict: state.0.exp_avg has shape [3, 2], parameter 0 has shape [2, 3]");
    CHECK(keys(other.state_dict()) == keys(before));
    CHECK(other.lr() == 0.3);
  }
  SECTION("a different number of parameters") {
    Tensor extra = zeros({4}, kFloat64).requires_grad_();
    optim::AdamW other({r.w, r.b, extra});
    require_error([&] { other.load_state_dict(state); },
                  "AdamW.load_state_dict: parameter group 0 has 3 parameters, the checkpoint's has 2");
    optim::AdamW fewer({r.w});
    require_error([&] { fewer.load_state_dict(state); }, "parameter group 0 has 1 parameter, the checkpoint's has 2");
  }
  SECTION("a different number of groups") {
    optim::AdamW other({{{r.w}, {}}, {{r.b}, {}}});
    require_error([&] { other.load_state_dict(state); },
                  "AdamW.load_state_dict: the checkpoint has 1 parameter group, the optimizer 2");
    require_error([&] { opt.load_state_dict(other.state_dict()); },
                  "AdamW.load_state_dict: the checkpoint has 2 parameter groups, the optimizer 1");
  }
  SECTION("another optimizer's state: unexpected and missing keys, all listed") {
    optim::SGD sgd({r.w, r.b}, {.lr = 0.1, .momentum = 0.9});
    require_error([&] { sgd.load_state_dict(state); },
                  "SGD.load_state_dict: missing keys: group.0.momentum, group.0.dampening, group.0.nesterov; "
                  "unexpected keys: group.0.beta1, group.0.beta2, group.0.eps, state.0.exp_avg, state.0.exp_avg_sq, "
                  "state.1.exp_avg, state.1.exp_avg_sq;");
  }
  SECTION("incomplete or malformed entries") {
    auto broken = state;
    broken.erase("state.1.exp_avg_sq");
    require_error([&] { opt.load_state_dict(broken); }, "missing keys: state.1.exp_avg_sq;");
    broken = state;
    broken.erase("state.0.step");
    require_error([&] { opt.load_state_dict(broken); }, "missing keys: state.0.step;");
    broken = state;
    broken["state.9.exp_avg"] = zeros({2}, kFloat64);
    require_error([&] { opt.load_state_dict(broken); },
                  "state.9.exp_avg refers to parameter 9, the optimizer has 2 parameters");
    broken = state;
    broken["state.x.exp_avg"] = zeros({2}, kFloat64);
    require_error([&] { opt.load_state_dict(broken); }, "unexpected keys: state.x.exp_avg;");
    broken = state;
    broken["group.0.beta1"] = scalar_tensor(1.5, kFloat64);
    const auto before = opt.state_dict();
    require_error([&] { opt.load_state_dict(broken); },
                  "AdamW.load_state_dict: AdamW: beta1 must be in [0, 1), got 1.5");
    CHECK(opt.options(0).beta1 == 0.9);
  }
  SECTION("a file that is not optimizer state") {
    const std::string path = temp_path("weights.safetensors");
    io::save_safetensors(path, {{"weight", zeros({2})}}, {{"format", "pt"}});
    require_error([&] { opt.load(path); }, "holds 'pt' data, not optimizer state");
    std::remove(path.c_str());
    require_error([&] { opt.load(path); }, path);
  }
}

TEST_CASE("SGD without momentum has no buffers; its state still round-trips", "[optim]") {
  Regression r;
  optim::SGD opt({r.w, r.b}, {.lr = 0.1});
  r.train(opt, 2);
  const auto state = opt.state_dict();
  CHECK(state.count("state.0.momentum_buffer") == 0);
  CHECK(state.at("state.0.step").item() == 2);
  optim::SGD other({r.w, r.b});
  other.load_state_dict(state);
  CHECK(other.lr() == 0.1);
  CHECK(other.step_count(0) == 2);
}
