// Learning-rate schedules: argument checks and the closed forms.
#include "lr_schedule.hpp"

#include <cmath>
#include <numbers>
#include <string>

#include "../core/error.hpp"

namespace latent::optim {
namespace {
void check_step(int64_t step, const char* schedule) {
  if (step < 0) fail("{}: step must be >= 0, got {}", schedule, step);
}
}  // namespace

ConstantLR::ConstantLR(double lr) : lr_(lr) {
  if (!(lr >= 0)) fail("ConstantLR: lr must be >= 0, got {}", lr);
}

double ConstantLR::lr(int64_t step) const {
  check_step(step, "ConstantLR");
  return lr_;
}

WarmupCosineLR::WarmupCosineLR(double max_lr, double min_lr, int64_t warmup_steps, int64_t total_steps)
    : max_lr_(max_lr), min_lr_(min_lr), warmup_steps_(warmup_steps), total_steps_(total_steps) {
  if (!(min_lr >= 0 && min_lr <= max_lr))
    fail("WarmupCosineLR: need 0 <= min_lr <= max_lr, got min_lr {} and max_lr {}", min_lr, max_lr);
  if (warmup_steps < 0 || total_steps < warmup_steps)
    fail("WarmupCosineLR: need 0 <= warmup_steps <= total_steps, got warmup_steps {} and total_steps {}", warmup_steps,
         total_steps);
}

double WarmupCosineLR::lr(int64_t step) const {
  check_step(step, "WarmupCosineLR");
  if (step < warmup_steps_) return max_lr_ * static_cast<double>(step + 1) / static_cast<double>(warmup_steps_);
  if (step >= total_steps_) return min_lr_;
  const double ratio = static_cast<double>(step - warmup_steps_) / static_cast<double>(total_steps_ - warmup_steps_);
  return min_lr_ + (max_lr_ - min_lr_) * 0.5 * (1.0 + std::cos(std::numbers::pi * ratio));
}

}  // namespace latent::optim
