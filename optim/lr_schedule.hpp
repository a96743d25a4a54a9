// Learning-rate schedules: pure functions of the step number, so a resumed run gets the same rates.
#pragma once
#include <cstdint>

namespace latent::optim {

// Steps are counted from 0: lr(step) is the rate for the update that follows `step` completed ones.
// A training loop calls opt.set_lr(schedule.lr(step)) before opt.step().
class LRSchedule {
 public:
  virtual ~LRSchedule() = default;
  virtual double lr(int64_t step) const = 0;  // step >= 0
};

class ConstantLR : public LRSchedule {
 public:
  explicit ConstantLR(double lr);
  double lr(int64_t step) const override;

 private:
  double lr_;
};

// Linear warm-up, then a half cosine down to a floor (llm.c's convention for the warm-up):
//   step < warmup_steps:            max_lr * (step + 1) / warmup_steps
//   warmup_steps <= step < total:   min_lr + (max_lr - min_lr) * (1 + cos(pi * r)) / 2,
//                                   r = (step - warmup_steps) / (total_steps - warmup_steps)
//   step >= total_steps:            min_lr
// The first update already uses max_lr / warmup_steps (an update at lr 0 would be wasted), the last
// warm-up step reaches max_lr, and the cosine starts from max_lr at step warmup_steps. total_steps
// counts the warm-up. warmup_steps = 0 gives a plain cosine decay.
class WarmupCosineLR : public LRSchedule {
 public:
  WarmupCosineLR(double max_lr, double min_lr, int64_t warmup_steps, int64_t total_steps);
  double lr(int64_t step) const override;

 private:
  double max_lr_, min_lr_;
  int64_t warmup_steps_, total_steps_;
};

}  // namespace latent::optim
