// Reading, writing, validating and counting Llama configs.
#include "llama_config.hpp"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "../core/checked_int.hpp"
#include "../core/error.hpp"
#include "../io/json.hpp"

namespace latent::models {
namespace {

using nlohmann::json;

// context: the file being read, or "LlamaConfig" for a config built in code.
void require(bool ok, const std::string& key, const std::string& what, const std::string& context) {
  if (!ok) throw Error(context + ": key '" + key + "' " + what);
}

// Hostile configs name sizes whose products overflow 64 bits or that no machine could allocate;
// these limits refuse them before anything is built (Llama 3.1 405B has 126 layers, 4e11 parameters).
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxElements = int64_t{1} << 40;  // parameters and RoPE tables: 4 TiB as float32

using checked::add;
using checked::mul;
using CountOverflow = checked::Overflow;

int64_t count_parameters(const LlamaConfig& c) {
  const int64_t d = c.hidden_size, q_width = mul(c.num_attention_heads, c.head_dim),
                kv_width = mul(c.num_key_value_heads, c.head_dim);
  const int64_t attention = add(add(mul(d, q_width), mul(mul(2, d), kv_width)), mul(q_width, d));
  const int64_t biases = c.attention_bias ? add(add(q_width, mul(2, kv_width)), d) : 0;
  const int64_t layer = add(add(add(attention, biases), mul(mul(3, d), c.intermediate_size)), mul(2, d));
  const int64_t embedding = mul(c.vocab_size, d);
  return add(add(add(embedding, mul(c.num_hidden_layers, layer)), d), c.tie_word_embeddings ? 0 : embedding);
}

std::string sizes(const LlamaConfig& c) {
  return fmt::format("hidden_size {}, intermediate_size {}, vocab_size {}, num_hidden_layers {}, head_dim {}",
                     c.hidden_size, c.intermediate_size, c.vocab_size, c.num_hidden_layers, c.head_dim);
}

int64_t checked_parameter_count(const LlamaConfig& c, const std::string& context) {
  try {
    return count_parameters(c);
  } catch (const CountOverflow&) {
    throw Error(context + ": sizes too large: the parameter count overflows 64 bits (" + sizes(c) + ")");
  }
}

void check(const LlamaConfig& c, const std::string& context) {
  auto positive = [&](int64_t v, const char* key) {
    require(v > 0, key, "must be positive, got " + std::to_string(v), context);
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.num_hidden_layers, "num_hidden_layers");
  positive(c.num_attention_heads, "num_attention_heads");
  positive(c.num_key_value_heads, "num_key_value_heads");
  require(c.head_dim > 0, "head_dim",
          "must be positive, got " + std::to_string(c.head_dim) + " (usually hidden_size / num_attention_heads)", context);
  positive(c.max_position_embeddings, "max_position_embeddings");
  require(c.num_attention_heads % c.num_key_value_heads == 0, "num_key_value_heads",
          fmt::format("({}) must divide num_attention_heads ({}): each key/value head serves a group of query heads",
                      c.num_key_value_heads, c.num_attention_heads),
          context);
  require(c.head_dim % 2 == 0, "head_dim", "must be even (RoPE rotates pairs), got " + std::to_string(c.head_dim), context);
  require(c.rms_norm_eps > 0, "rms_norm_eps", fmt::format("must be positive, got {}", c.rms_norm_eps), context);
  require(c.rope_theta > 0, "rope_theta", fmt::format("must be positive, got {}", c.rope_theta), context);
  require(c.initializer_range >= 0, "initializer_range", fmt::format("must be >= 0, got {}", c.initializer_range),
          context);
  require(c.hidden_act == "silu", "hidden_act", "must be 'silu', got '" + c.hidden_act + "'", context);
  require(c.model_type == "llama", "model_type", "must be 'llama', got '" + c.model_type + "'", context);
  for (const auto& [value, key] : {std::pair{c.rms_norm_eps, "rms_norm_eps"}, {c.rope_theta, "rope_theta"},
                                   {c.initializer_range, "initializer_range"}})
    require(std::isfinite(value), key, fmt::format("must be finite, got {}", value), context);
  require(c.num_hidden_layers <= kMaxLayers, "num_hidden_layers",
          fmt::format("({}) exceeds latent's limit of {} layers", c.num_hidden_layers, kMaxLayers), context);
  const int64_t parameters = checked_parameter_count(c, context);
  int64_t rope_tables = 0, elements = 0;  // cos and sin, head_dim / 2 each per position
  if (__builtin_mul_overflow(c.max_position_embeddings, c.head_dim, &rope_tables) ||
      __builtin_add_overflow(parameters, rope_tables, &elements) || elements > kMaxElements)
    throw Error(fmt::format("{}: sizes too large: the model would allocate more than latent's limit of 2^40 ({}) "
                            "parameters and RoPE table entries ({}, max_position_embeddings {})",
                            context, kMaxElements, sizes(c), c.max_position_embeddings));
}

LlamaConfig from_json(const json& j, const std::string& origin) {
  if (!j.is_object()) throw Error(origin + ": expected a JSON object");
  LlamaConfig c;
  auto req_int = [&](const char* key) { return io::required<int64_t>(j, key, origin); };
  c.vocab_size = req_int("vocab_size");
  c.hidden_size = req_int("hidden_size");
  c.intermediate_size = req_int("intermediate_size");
  c.num_hidden_layers = req_int("num_hidden_layers");
  c.num_attention_heads = req_int("num_attention_heads");
  c.max_position_embeddings = req_int("max_position_embeddings");
  // transformers' own defaults for the keys older configs leave out.
  c.num_key_value_heads = io::optional<int64_t>(j, "num_key_value_heads", c.num_attention_heads, origin);
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    c.head_dim = req_int("head_dim");
  } else if (c.num_attention_heads > 0) {  // (a non-positive head count is reported by check())
    require(c.hidden_size % c.num_attention_heads == 0, "hidden_size",
            fmt::format("({}) must be divisible by num_attention_heads ({}) when head_dim is not given", c.hidden_size,
                        c.num_attention_heads),
            origin);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  c.rms_norm_eps = io::required<double>(j, "rms_norm_eps", origin);
  c.rope_theta = io::optional<double>(j, "rope_theta", 10000.0, origin);
  c.initializer_range = io::optional<double>(j, "initializer_range", 0.02, origin);
  c.tie_word_embeddings = io::optional<bool>(j, "tie_word_embeddings", false, origin);
  c.attention_bias = io::optional<bool>(j, "attention_bias", false, origin);
  c.hidden_act = io::optional<std::string>(j, "hidden_act", "silu", origin);
  c.model_type = io::optional<std::string>(j, "model_type", "llama", origin);
  // Refused rather than ignored: either would silently compute a different model.
  require(!io::optional<bool>(j, "mlp_bias", false, origin), "mlp_bias", "is true; SwiGLU without biases only", origin);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    require(false, "rope_scaling",
            "is " + io::describe_json_value(j["rope_scaling"]) + "; only plain RoPE (null) is supported", origin);
  check(c, origin);
  return c;
}

json to_json(const LlamaConfig& c) {
  json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["rope_scaling"] = nullptr;
  j["initializer_range"] = c.initializer_range;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["attention_bias"] = c.attention_bias;
  j["mlp_bias"] = false;
  j["hidden_act"] = c.hidden_act;
  return j;
}

}  // namespace

LlamaConfig LlamaConfig::from_json_file(const std::string& path) { return from_json(io::read_json_file(path), path); }

LlamaConfig LlamaConfig::from_json_string(const std::string& text, const std::string& origin) {
  return from_json(io::parse_json(text, origin), origin);
}

void LlamaConfig::to_json_file(const std::string& path) const {
  validate();
  io::write_json_file_atomic(path, to_json(*this));
}

std::string LlamaConfig::to_json_string() const { return to_json(*this).dump(2); }

void LlamaConfig::validate() const { check(*this, "LlamaConfig"); }

int64_t LlamaConfig::num_parameters() const { return checked_parameter_count(*this, "LlamaConfig"); }

}  // namespace latent::models
