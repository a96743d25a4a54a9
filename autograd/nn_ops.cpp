// Softmax family, normalisation, losses and dropout, composed from the primitive ops.
#include "nn_ops.hpp"

#include "../core/factory.hpp"
#include "elementwise.hpp"
#include "index_ops.hpp"
#include "reduce.hpp"
#include "shape_ops.hpp"

namespace latent {

Tensor softmax(const Tensor& x, int64_t dim) {
  dim = normalize_dim(dim, x.dim(), "softmax");
  const Tensor e = exp(x - amax(x, {dim}, true).detach());  // shifted for range; the shift cancels
  return e / sum(e, {dim}, true);
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  dim = normalize_dim(dim, x.dim(), "log_softmax");
  const Tensor shifted = x - amax(x, {dim}, true).detach();
  return shifted - log(sum(exp(shifted), {dim}, true));
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  if (x.dim() == 0 || weight.shape() != Shape{x.size(-1)})
    throw Error("rms_norm: weight " + shape_str(weight.shape()) + " does not match the last dim of " + shape_str(x.shape()));
  return x * rsqrt(mean(square(x), {-1}, true) + eps) * weight;
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  if (x.dim() == 0) throw Error("layer_norm: input must have at least one dim");
  for (const Tensor* p : {&weight, &bias})
    if (p->defined() && p->shape() != Shape{x.size(-1)})
      throw Error("layer_norm: weight/bias " + shape_str(p->shape()) + " does not match the last dim of " + shape_str(x.shape()));
  const Tensor centered = x - mean(x, {-1}, true);
  Tensor y = centered * rsqrt(mean(square(centered), {-1}, true) + eps);
  if (weight.defined()) y = y * weight;
  if (bias.defined()) y = y + bias;
  return y;
}

Tensor nll_loss(const Tensor& log_probs, const Tensor& targets, int64_t ignore_index) {
  if (log_probs.dim() != 2) throw Error("nll_loss: input must be [N, C], got " + shape_str(log_probs.shape()));
  if (targets.dtype() != kInt64 || targets.shape() != Shape{log_probs.size(0)})
    throw Error("nll_loss: targets must be int64 [" + std::to_string(log_probs.size(0)) + "], got " +
                dtype_name(targets.dtype()) + " " + shape_str(targets.shape()));
  const int64_t classes = log_probs.size(1);
  std::vector<int64_t> ids = targets.to_vector<int64_t>();
  std::vector<double> keep(ids.size(), 1.0);
  int64_t kept = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] == ignore_index) { keep[i] = 0.0; ids[i] = 0; continue; }
    if (ids[i] < 0 || ids[i] >= classes)
      throw Error("nll_loss: target " + std::to_string(ids[i]) + " out of range [0, " + std::to_string(classes) + ")");
    ++kept;
  }
  const Tensor picked = gather(log_probs, 1, from_vector(ids, {static_cast<int64_t>(ids.size()), 1}));
  const Tensor weights = from_vector(keep, {static_cast<int64_t>(keep.size()), 1}).to(log_probs.dtype());
  return neg(sum(picked * weights)) / static_cast<double>(std::max<int64_t>(kept, 1));
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  if (logits.dim() != 2) throw Error("cross_entropy: logits must be [N, C], got " + shape_str(logits.shape()));
  return nll_loss(log_softmax(logits, 1), targets, ignore_index);
}

Tensor mse_loss(const Tensor& input, const Tensor& target) {
  if (input.shape() != target.shape())
    throw Error("mse_loss: input " + shape_str(input.shape()) + " and target " + shape_str(target.shape()) + " differ");
  return mean(square(input - target));
}

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  if (p < 0 || p > 1) throw Error("dropout: p must be in [0, 1], got " + std::to_string(p));
  if (!training || p == 0) return x;
  if (p == 1) return x * 0.0;
  const Tensor keep = to(ge(rand(x.shape(), x.dtype(), gen), full({}, p, x.dtype())), x.dtype());
  return x * keep * (1.0 / (1.0 - p));
}

}  // namespace latent
