// The parts of CausalLM every model shares (named loss terms, the token-id checks) and the dispatch
// from a config.json's model_type to the model class.
#include "causal_lm.hpp"

#include <fmt/format.h>

#include <filesystem>

#include "../core/error.hpp"
#include "../io/json.hpp"
#include "deepseek_v3.hpp"
#include "llama.hpp"

namespace latent::models {

const Tensor& LossTerms::term(const std::string& name) const {
  std::string known;
  for (const auto& [term_name, value] : terms) {
    if (term_name == name) return value;
    known += (known.empty() ? "" : ", ") + term_name;
  }
  fail("LossTerms::term: no term '{}' (terms: {})", name, known);
}

void CausalLM::after_optimizer_step(double) {}

std::vector<RoutingStatistics> CausalLM::routing_statistics() const { return {}; }

void CausalLM::check_ids(const Tensor& ids, const std::string& op, int64_t max_length) const {
  if (ids.dtype() != kInt64) fail("{}: token ids must be int64, got {}", op, dtype_name(ids.dtype()));
  if (ids.dim() != 2 || ids.size(1) == 0)
    fail("{}: token ids must be [batch, length] with length >= 1, got {}", op, shape_str(ids.shape()));
  if (ids.size(1) > max_length)
    fail("{}: {} positions exceed the {} available (max_position_embeddings {})", op, ids.size(1), max_length,
        max_position_embeddings());
  const int64_t vocabulary = vocab_size();
  for (int64_t id : ids.to_vector<int64_t>())
    if (id < 0 || id >= vocabulary) fail("{}: token id {} out of range [0, {})", op, id, vocabulary);
}

namespace {

enum class Family { kDeepSeekV3, kLlama };

Family family_of(const std::string& config_json) {
  const nlohmann::json j = io::read_json_file(config_json);
  if (!j.is_object()) fail("{}: expected a JSON object", config_json);
  const std::string type = io::required<std::string>(j, "model_type", config_json);
  if (type == "deepseek_v3" || type == "deepseek_v2") return Family::kDeepSeekV3;
  if (type == "llama") return Family::kLlama;
  fail("{}: key 'model_type' is '{}'; latent builds 'deepseek_v3', 'deepseek_v2' or 'llama'", config_json, type);
}

std::string config_path(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) fail("from_pretrained: '{}' is not a directory", dir);
  return (std::filesystem::path(dir) / "config.json").string();
}

}  // namespace

std::shared_ptr<CausalLM> from_pretrained(const std::string& dir) {
  switch (family_of(config_path(dir))) {
    case Family::kDeepSeekV3: return DeepSeekV3::from_pretrained(dir);
    case Family::kLlama: return Llama::from_pretrained(dir);
  }
  fail("from_pretrained: unreachable model family");
}

std::shared_ptr<CausalLM> from_config_file(const std::string& config_json) {
  switch (family_of(config_json)) {
    case Family::kDeepSeekV3: return std::make_shared<DeepSeekV3>(DeepSeekV3Config::from_json_file(config_json));
    case Family::kLlama: return std::make_shared<Llama>(LlamaConfig::from_json_file(config_json));
  }
  fail("from_config_file: unreachable model family");
}

int64_t num_parameters_of_config_file(const std::string& config_json) {
  switch (family_of(config_json)) {
    case Family::kDeepSeekV3: return DeepSeekV3Config::from_json_file(config_json).num_parameters();
    case Family::kLlama: return LlamaConfig::from_json_file(config_json).num_parameters();
  }
  fail("num_parameters_of_config_file: unreachable model family");
}

}  // namespace latent::models
