// Learning-rate schedules: values at the key steps, shape of the curve, argument checks.
#include <cmath>
#include <numbers>

#include "../helpers.hpp"
#include "optim/lr_schedule.hpp"

using namespace latent;

TEST_CASE("ConstantLR is the same at every step", "[schedule]") {
  const optim::ConstantLR schedule(3e-4);
  CHECK(schedule.lr(0) == 3e-4);
  CHECK(schedule.lr(1'000'000) == 3e-4);
  CHECK_THROWS_WITH(optim::ConstantLR(-1.0), "ConstantLR: lr must be >= 0, got -1");
  CHECK_THROWS_WITH(schedule.lr(-1), "ConstantLR: step must be >= 0, got -1");
}

TEST_CASE("WarmupCosineLR: linear warm-up from max_lr / warmup, cosine to min_lr, then flat", "[schedule]") {
  const optim::WarmupCosineLR schedule(1.0, 0.1, 10, 110);
  CHECK(schedule.lr(0) == Approx(0.1));  // the first update is already useful
  CHECK(schedule.lr(4) == Approx(0.5));
  CHECK(schedule.lr(9) == Approx(1.0));   // the last warm-up step reaches max_lr
  CHECK(schedule.lr(10) == Approx(1.0));  // the cosine starts at max_lr
  CHECK(schedule.lr(35) == Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi / 4))));
  CHECK(schedule.lr(60) == Approx(0.55));  // half-way: the mean of max_lr and min_lr
  CHECK(schedule.lr(109) == Approx(0.1 + 0.45 * (1 + std::cos(std::numbers::pi * 99 / 100))));
  CHECK(schedule.lr(110) == 0.1);
  CHECK(schedule.lr(1'000'000) == 0.1);
  for (int64_t step = 10; step < 200; ++step) {
    INFO("step " << step);
    CHECK(schedule.lr(step + 1) <= schedule.lr(step));
    CHECK(schedule.lr(step) >= 0.1);
  }
  for (int64_t step = 0; step + 1 < 10; ++step) CHECK(schedule.lr(step + 1) > schedule.lr(step));
}

TEST_CASE("WarmupCosineLR edge cases and argument checks", "[schedule]") {
  const optim::WarmupCosineLR no_warmup(2.0, 0.0, 0, 4);
  CHECK(no_warmup.lr(0) == 2.0);
  CHECK(no_warmup.lr(2) == Approx(1.0));
  CHECK(no_warmup.lr(4) == 0.0);
  const optim::WarmupCosineLR warmup_only(1.0, 0.25, 4, 4);  // no decay phase: the floor after warm-up
  CHECK(warmup_only.lr(3) == 1.0);
  CHECK(warmup_only.lr(4) == 0.25);
  CHECK_THROWS_WITH(optim::WarmupCosineLR(1.0, 2.0, 0, 10),
                    "WarmupCosineLR: need 0 <= min_lr <= max_lr, got min_lr 2 and max_lr 1");
  CHECK_THROWS_WITH(optim::WarmupCosineLR(1.0, 0.0, 20, 10),
                    "WarmupCosineLR: need 0 <= warmup_steps <= total_steps, got warmup_steps 20 and total_steps 10");
  CHECK_THROWS_WITH(no_warmup.lr(-3), "WarmupCosineLR: step must be >= 0, got -3");
}
