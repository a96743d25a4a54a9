// The one generation loop of every CausalLM: checks, prompt prefill, then one token per step through
// the model's own caches, each picked by models/sampling.
#include <fmt/format.h>

#include "../autograd/grad_mode.hpp"
#include "../autograd/ops.hpp"
#include "../core/factory.hpp"
#include "../core/random.hpp"
#include "causal_lm.hpp"

namespace latent::models {

Tensor CausalLM::generate(const Tensor& prompt_ids, const GenerateOptions& options,
                          const std::function<bool(int64_t)>& on_token) {
  if (prompt_ids.dtype() != kInt64 || prompt_ids.dim() != 1 || prompt_ids.numel() == 0)
    fail("generate: prompt must be a non-empty 1-D int64 tensor, got {} {}", dtype_name(prompt_ids.dtype()),
        shape_str(prompt_ids.shape()));
  if (options.max_new_tokens < 0) fail("generate: max_new_tokens must be >= 0, got {}", options.max_new_tokens);
  if (!(options.temperature >= 0)) fail("generate: temperature must be >= 0, got {}", options.temperature);
  if (options.top_k < 0) fail("generate: top_k must be >= 0, got {}", options.top_k);
  const int64_t prompt_length = prompt_ids.numel();
  if (options.max_new_tokens > max_position_embeddings() - prompt_length)  // (no overflow for huge counts)
    fail("generate: prompt of {} plus {} new tokens exceeds max_position_embeddings {}", prompt_length,
        options.max_new_tokens, max_position_embeddings());
  NoGradGuard no_grad;
  const DecodeStep decode = start_decoding(prompt_length + options.max_new_tokens);
  std::vector<int64_t> tokens = prompt_ids.to_vector<int64_t>();
  Generator gen(options.seed);
  // The prompt fills the caches in one pass; each new token then costs one position.
  Tensor logits = decode(reshape(prompt_ids, {1, prompt_length}));
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const Tensor last = narrow(logits, 1, logits.size(1) - 1, 1);
    const int64_t next = pick_next_token(last.to(kFloat64).to_vector<double>(), options.temperature, options.top_k, gen);
    tokens.push_back(next);
    if (on_token && !on_token(next)) break;
    if (step + 1 < options.max_new_tokens) logits = decode(from_vector<int64_t>({next}, {1, 1}));
  }
  return from_vector(tokens);
}

}  // namespace latent::models
