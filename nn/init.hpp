// Parameter initialisers, in place and seeded (the global generator unless one is passed), with the
// formulas of torch.nn.init.
#pragma once
#include "../core/random.hpp"
#include "../core/tensor.hpp"

namespace latent::nn::init {

enum class FanMode { FanIn, FanOut };

// fan_in = size(1) * receptive field, fan_out = size(0) * receptive field (2-D and higher).
std::pair<int64_t, int64_t> fans(const Tensor& t);
// The gain torch.nn.init.calculate_gain gives: "linear"/"sigmoid" 1, "tanh" 5/3, "relu" sqrt(2),
// "leaky_relu" sqrt(2 / (1 + slope^2)), "selu" 3/4.
double calculate_gain(const std::string& nonlinearity, double param = 0.01);

Tensor& normal_(Tensor& t, double mean = 0.0, double std = 1.0, Generator* gen = nullptr);
Tensor& uniform_(Tensor& t, double low = 0.0, double high = 1.0, Generator* gen = nullptr);
Tensor& zeros_(Tensor& t);
Tensor& ones_(Tensor& t);
Tensor& constant_(Tensor& t, double value);
// U(-b, b), b = gain * sqrt(3 / fan), gain from `nonlinearity` with slope a (PyTorch's defaults).
Tensor& kaiming_uniform_(Tensor& t, double a = 0.0, FanMode mode = FanMode::FanIn,
                         const std::string& nonlinearity = "leaky_relu", Generator* gen = nullptr);
// N(0, std^2), std = gain / sqrt(fan).
Tensor& kaiming_normal_(Tensor& t, double a = 0.0, FanMode mode = FanMode::FanIn,
                        const std::string& nonlinearity = "leaky_relu", Generator* gen = nullptr);
// U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)).
Tensor& xavier_uniform_(Tensor& t, double gain = 1.0, Generator* gen = nullptr);
// N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)).
Tensor& xavier_normal_(Tensor& t, double gain = 1.0, Generator* gen = nullptr);

// While one is alive on this thread, the random initialisers above (normal_, uniform_ and the
// kaiming/xavier ones built on them) fill zeros instead of drawing and leave the generator where it
// was, as transformers' no_init_weights does. For building a model whose every parameter is about
// to be overwritten (from_pretrained): the draws were ~90 % of such a load (docs/checkpoints.md).
class SkipInitGuard {
 public:
  SkipInitGuard();
  ~SkipInitGuard();
  SkipInitGuard(const SkipInitGuard&) = delete;
  SkipInitGuard& operator=(const SkipInitGuard&) = delete;

 private:
  bool previous_;
};
bool init_skipped();  // whether a SkipInitGuard is alive on this thread

}  // namespace latent::nn::init
