// Reading, writing, validating and counting Llama configs.
#include "llama_config.hpp"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "../core/checked_int.hpp"
#include "../core/error.hpp"
#include "../io/json.hpp"
#include "config_table.hpp"

namespace latent::models {
namespace {

using nlohmann::json;

using Config = LlamaConfig;
using config_table::Check;
using config_table::Presence;

// Every plain config.json key (transformers' defaults for those older configs leave out). Written
// too: architectures, and rope_scaling and mlp_bias, which latent supports only as null and false.
const config_table::Key<Config> kKeys[] = {
    {"vocab_size", &Config::vocab_size, Presence::kRequired, Check::kPositive},
    {"hidden_size", &Config::hidden_size, Presence::kRequired, Check::kPositive},
    {"intermediate_size", &Config::intermediate_size, Presence::kRequired, Check::kPositive},
    {"num_hidden_layers", &Config::num_hidden_layers, Presence::kRequired, Check::kPositive},
    {"num_attention_heads", &Config::num_attention_heads, Presence::kRequired, Check::kPositive},
    {"num_key_value_heads", &Config::num_key_value_heads, Presence::kOptional, Check::kPositive},
    {"head_dim", &Config::head_dim, Presence::kOptional, Check::kPositive},
    {"max_position_embeddings", &Config::max_position_embeddings, Presence::kRequired, Check::kPositive},
    {"rms_norm_eps", &Config::rms_norm_eps, Presence::kRequired, Check::kFinitePositive},
    {"rope_theta", &Config::rope_theta, Presence::kOptional, Check::kFinitePositive},
    {"initializer_range", &Config::initializer_range, Presence::kOptional, Check::kFiniteNonNegative},
    {"tie_word_embeddings", &Config::tie_word_embeddings, Presence::kOptional},
    {"attention_bias", &Config::attention_bias, Presence::kOptional},
    {"hidden_act", &Config::hidden_act, Presence::kOptional},
    {"model_type", &Config::model_type, Presence::kOptional},
};

// context: the file being read, or "LlamaConfig" for a config built in code.
void require(bool ok, const std::string& key, const std::string& what, const std::string& context) {
  if (!ok) fail("{}: key '{}' {}", context, key, what);
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
    fail("{}: sizes too large: the parameter count overflows 64 bits ({})", context, sizes(c));
  }
}

LlamaConfig resolve(LlamaConfig c, const std::string& context) {
  if (c.num_key_value_heads == 0) c.num_key_value_heads = c.num_attention_heads;
  if (c.head_dim == 0 && c.num_attention_heads > 0) {  // (a non-positive head count is reported by check())
    require(c.hidden_size % c.num_attention_heads == 0, "hidden_size",
            fmt::format("({}) must be divisible by num_attention_heads ({}) when head_dim is not given", c.hidden_size,
                        c.num_attention_heads),
            context);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  return c;
}

// c resolved.
void check(const LlamaConfig& c, const std::string& context) {
  config_table::check(c, kKeys, context);
  require(c.num_attention_heads % c.num_key_value_heads == 0, "num_key_value_heads",
          fmt::format("({}) must divide num_attention_heads ({}): each key/value head serves a group of query heads",
                      c.num_key_value_heads, c.num_attention_heads),
          context);
  require(c.head_dim % 2 == 0, "head_dim", "must be even (RoPE rotates pairs), got " + std::to_string(c.head_dim), context);
  require(c.hidden_act == "silu", "hidden_act", "must be 'silu', got '" + c.hidden_act + "'", context);
  require(c.model_type == "llama", "model_type", "must be 'llama', got '" + c.model_type + "'", context);
  require(c.num_hidden_layers <= kMaxLayers, "num_hidden_layers",
          fmt::format("({}) exceeds latent's limit of {} layers", c.num_hidden_layers, kMaxLayers), context);
  const int64_t parameters = checked_parameter_count(c, context);
  int64_t rope_tables = 0, elements = 0;  // cos and sin, head_dim / 2 each per position
  if (__builtin_mul_overflow(c.max_position_embeddings, c.head_dim, &rope_tables) ||
      __builtin_add_overflow(parameters, rope_tables, &elements) || elements > kMaxElements)
    fail("{}: sizes too large: the model would allocate more than latent's limit of 2^40 ({}) "
                            "parameters and RoPE table entries ({}, max_position_embeddings {})",
        context, kMaxElements, sizes(c), c.max_position_embeddings);
}

LlamaConfig from_json(const json& j, const std::string& origin) {
  if (!j.is_object()) fail("{}: expected a JSON object", origin);
  LlamaConfig c;
  config_table::read(c, j, kKeys, origin);
  c = resolve(c, origin);
  // Refused rather than ignored: either would silently compute a different model.
  require(!io::optional<bool>(j, "mlp_bias", false, origin), "mlp_bias", "is true; SwiGLU without biases only", origin);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    require(false, "rope_scaling",
            "is " + io::describe_json_value(j["rope_scaling"]) + "; only plain RoPE (null) is supported", origin);
  c.quantization_config = read_quantization_config(j, origin);
  check(c, origin);
  return c;
}

json to_json(const LlamaConfig& c) {
  json j;
  config_table::write(c.resolved(), j, kKeys);
  j["architectures"] = {"LlamaForCausalLM"};
  j["rope_scaling"] = nullptr;
  j["mlp_bias"] = false;
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

LlamaConfig LlamaConfig::resolved() const { return resolve(*this, "LlamaConfig"); }

void LlamaConfig::validate() const { check(resolved(), "LlamaConfig"); }

int64_t LlamaConfig::num_parameters() const { return checked_parameter_count(resolved(), "LlamaConfig"); }

}  // namespace latent::models
