// Reading, writing, validating and counting DeepSeek-V3 configs.
#include "deepseek_v3_config.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "../core/checked_int.hpp"
#include "../core/error.hpp"
#include "../io/json.hpp"
#include "config_table.hpp"

namespace latent::models {
namespace {

using nlohmann::json;

using Config = DeepSeekV3Config;
using config_table::Check;
using config_table::Presence;

// Every plain config.json key. Written too: architectures, num_key_value_heads, attention_bias, seq_aux
// and rope_scaling, which latent fixes or reads as a nested object.
const config_table::Key<Config, ScoringFunc, TopkMethod> kKeys[] = {
    {"vocab_size", &Config::vocab_size, Presence::kRequired, Check::kPositive},
    {"hidden_size", &Config::hidden_size, Presence::kRequired, Check::kPositive},
    {"intermediate_size", &Config::intermediate_size, Presence::kRequired, Check::kNonNegative},
    {"moe_intermediate_size", &Config::moe_intermediate_size, Presence::kRequired, Check::kNonNegative},
    {"num_hidden_layers", &Config::num_hidden_layers, Presence::kRequired, Check::kPositive},
    {"first_k_dense_replace", &Config::first_k_dense_replace, Presence::kRequired, Check::kNonNegative},
    {"moe_layer_freq", &Config::moe_layer_freq, Presence::kOptional, Check::kPositive},
    {"num_attention_heads", &Config::num_attention_heads, Presence::kRequired, Check::kPositive},
    // HF writes null for "no query compression"; the official code writes 0.
    {"q_lora_rank", &Config::q_lora_rank, Presence::kRequiredOrNull, Check::kNonNegative, true},
    {"kv_lora_rank", &Config::kv_lora_rank, Presence::kRequired, Check::kPositive},
    {"qk_nope_head_dim", &Config::qk_nope_head_dim, Presence::kRequired, Check::kPositive},
    {"qk_rope_head_dim", &Config::qk_rope_head_dim, Presence::kRequired, Check::kPositive},
    {"v_head_dim", &Config::v_head_dim, Presence::kRequired, Check::kPositive},
    {"n_routed_experts", &Config::n_routed_experts, Presence::kRequired, Check::kNonNegative},
    {"n_shared_experts", &Config::n_shared_experts, Presence::kRequired, Check::kNonNegative},
    {"num_experts_per_tok", &Config::num_experts_per_tok, Presence::kRequired, Check::kNonNegative},
    {"n_group", &Config::n_group, Presence::kRequired, Check::kNonNegative},
    {"topk_group", &Config::topk_group, Presence::kRequired, Check::kNonNegative},
    {"max_position_embeddings", &Config::max_position_embeddings, Presence::kRequired, Check::kPositive},
    {"num_nextn_predict_layers", &Config::num_nextn_predict_layers, Presence::kOptional, Check::kNonNegative},
    {"routed_scaling_factor", &Config::routed_scaling_factor, Presence::kRequired, Check::kFinite},
    {"rope_theta", &Config::rope_theta, Presence::kRequired, Check::kFinitePositive},
    {"rms_norm_eps", &Config::rms_norm_eps, Presence::kRequired, Check::kFinitePositive},
    {"aux_loss_alpha", &Config::aux_loss_alpha, Presence::kOptional, Check::kFinite},
    {"initializer_range", &Config::initializer_range, Presence::kOptional, Check::kFinite},
    {"norm_topk_prob", &Config::norm_topk_prob, Presence::kRequired},
    {"tie_word_embeddings", &Config::tie_word_embeddings, Presence::kOptional},
    {"scoring_func", &Config::scoring_func, Presence::kOptional},
    {"topk_method", &Config::topk_method, Presence::kOptional},
    {"hidden_act", &Config::hidden_act, Presence::kOptional},
    {"model_type", &Config::model_type, Presence::kOptional},
};

DeepSeekV3Config from_json(const json& j, const std::string& origin) {
  if (!j.is_object()) fail("{}: expected a JSON object", origin);
  DeepSeekV3Config c;
  config_table::read(c, j, kKeys, origin);
  // V2 configs from before topk_method existed route greedily.
  if (io::optional<std::string>(j, "topk_method", "", origin).empty() && c.scoring_func == ScoringFunc::kSoftmax)
    c.topk_method = TopkMethod::kGreedy;
  if (io::optional<bool>(j, "attention_bias", false, origin))
    fail("{}: key 'attention_bias' is true; MLA projections without biases are supported only", origin);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const json& r = j["rope_scaling"];
    const std::string where = origin + " rope_scaling";
    if (!r.is_object()) fail("{}: key 'rope_scaling' must be an object or null", origin);
    const std::string type = r.contains("type") ? io::required<std::string>(r, "type", where)
                                                : io::required<std::string>(r, "rope_type", where);
    if (type != "yarn") fail("{}: key 'rope_scaling.type' is '{}'; only 'yarn' is supported", origin, type);
    nn::YarnConfig y;
    y.factor = io::required<double>(r, "factor", where);
    y.original_max_position_embeddings = io::required<int64_t>(r, "original_max_position_embeddings", where);
    y.beta_fast = io::optional<double>(r, "beta_fast", 32.0, where);
    y.beta_slow = io::optional<double>(r, "beta_slow", 1.0, where);
    y.mscale = io::optional<double>(r, "mscale", 1.0, where);
    y.mscale_all_dim = io::optional<double>(r, "mscale_all_dim", 0.0, where);
    c.rope_scaling = y;
  }
  c.quantization_config = read_quantization_config(j, origin);
  c.validate();
  return c;
}

json to_json(const DeepSeekV3Config& c) {
  json j;
  config_table::write(c, j, kKeys);
  j["architectures"] = {c.model_type == "deepseek_v2" ? "DeepseekV2ForCausalLM" : "DeepseekV3ForCausalLM"};
  j["num_key_value_heads"] = c.num_attention_heads;
  j["attention_bias"] = false;
  j["seq_aux"] = true;
  if (c.rope_scaling) {
    const nn::YarnConfig& y = *c.rope_scaling;
    j["rope_scaling"] = {{"type", "yarn"},           {"factor", y.factor},
                         {"original_max_position_embeddings", y.original_max_position_embeddings},
                         {"beta_fast", y.beta_fast}, {"beta_slow", y.beta_slow},
                         {"mscale", y.mscale},       {"mscale_all_dim", y.mscale_all_dim}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  return j;
}

void require(bool ok, const std::string& key, const std::string& what) {
  if (!ok) fail("config: key '{}' {}", key, what);
}

// Hostile configs name sizes whose products do not fit in 64 bits (hidden_size 2^62) or that no
// machine could allocate (hidden_size 10^12); these limits refuse them before anything is built.
// They are far above any released model: DeepSeek-V3 has 61 + 1 layers, 256 experts and 6.7e11
// parameters.
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxExperts = 65536;
constexpr int64_t kMaxElements = int64_t{1} << 40;  // parameters and RoPE tables: 4 TiB as float32

using checked::add;
using checked::mul;
using CountOverflow = checked::Overflow;

// Layers l in [first_k_dense_replace, num_hidden_layers) with l % moe_layer_freq == 0, counted
// without a loop over a (possibly hostile) layer count.
int64_t num_moe_layers(const DeepSeekV3Config& c) {
  const auto multiples_below = [&](int64_t n) { return n > 0 ? (n - 1) / c.moe_layer_freq + 1 : 0; };
  const int64_t first = std::clamp<int64_t>(c.first_k_dense_replace, 0, c.num_hidden_layers);
  return multiples_below(c.num_hidden_layers) - multiples_below(first);
}

// The parameter counts of docs/deepseek_v3.md, and the elements a model of this config allocates
// (MTP modules and RoPE tables included). Throws CountOverflow past int64.
struct ParameterCounts {
  int64_t main_model, activated, allocated;
};
ParameterCounts parameter_counts_unchecked(const DeepSeekV3Config& c) {
  const int64_t d = c.hidden_size, H = c.num_attention_heads, qk = add(c.qk_nope_head_dim, c.qk_rope_head_dim);
  const int64_t q = c.q_lora_rank > 0 ? add(add(mul(d, c.q_lora_rank), c.q_lora_rank), mul(mul(c.q_lora_rank, H), qk))
                                      : mul(mul(d, H), qk);
  const int64_t attention =
      add(add(add(add(q, mul(d, add(c.kv_lora_rank, c.qk_rope_head_dim))), c.kv_lora_rank),
              mul(mul(c.kv_lora_rank, H), add(c.qk_nope_head_dim, c.v_head_dim))),
          mul(mul(H, c.v_head_dim), d));
  const int64_t expert = mul(mul(3, d), c.moe_intermediate_size);
  const int64_t gate = add(mul(c.n_routed_experts, d), c.topk_method == TopkMethod::kNoauxTc ? c.n_routed_experts : 0);
  const int64_t norms = mul(2, d);
  const int64_t dense_layer = add(add(attention, mul(mul(3, d), c.intermediate_size)), norms);
  const int64_t moe_layer = add(add(add(attention, mul(add(c.n_routed_experts, c.n_shared_experts), expert)), gate), norms);
  const int64_t moe_layer_active =
      add(add(add(attention, mul(add(c.num_experts_per_tok, c.n_shared_experts), expert)), gate), norms);
  const int64_t moe_layers = num_moe_layers(c), dense_layers = c.num_hidden_layers - moe_layers;
  const int64_t embed = mul(c.vocab_size, d);

  ParameterCounts n{};
  n.main_model = add(add(add(mul(moe_layers, moe_layer), mul(dense_layers, dense_layer)), add(embed, d)),
                     c.tie_word_embeddings ? 0 : embed);
  n.activated = add(add(add(mul(moe_layers, moe_layer_active), mul(dense_layers, dense_layer)), mul(2, embed)), d);
  // An MTP module: an MoE layer, two norms and eh_proj [d, 2d]; its embedding and head are shared.
  const int64_t mtp_module = add(add(moe_layer, norms), mul(2, mul(d, d)));
  const int64_t rope_tables = mul(c.max_position_embeddings, c.qk_rope_head_dim);  // cos and sin, half each
  n.allocated = add(add(n.main_model, mul(c.num_nextn_predict_layers, mtp_module)), rope_tables);
  return n;
}

ParameterCounts parameter_counts(const DeepSeekV3Config& c) {
  try {
    return parameter_counts_unchecked(c);
  } catch (const CountOverflow&) {
    fail("config: sizes too large: the parameter count of hidden_size {}, vocab_size {}, "
                            "num_hidden_layers {}, n_routed_experts {} x moe_intermediate_size {} overflows 64 bits",
        c.hidden_size, c.vocab_size, c.num_hidden_layers, c.n_routed_experts, c.moe_intermediate_size);
  }
}

void check_model_size(const DeepSeekV3Config& c) {
  const int64_t elements = parameter_counts(c).allocated;
  if (elements > kMaxElements)
    fail("config: sizes too large: the model would allocate {} parameters and RoPE table entries, "
                            "more than latent's limit of 2^40 ({}); hidden_size {}, vocab_size {}, num_hidden_layers {}, "
                            "max_position_embeddings {}",
        elements, kMaxElements, c.hidden_size, c.vocab_size, c.num_hidden_layers, c.max_position_embeddings);
}

}  // namespace

std::string_view to_string(ScoringFunc scoring_func) { return config_table::enum_to_string(scoring_func); }
std::string_view to_string(TopkMethod topk_method) { return config_table::enum_to_string(topk_method); }

DeepSeekV3Config DeepSeekV3Config::from_json_file(const std::string& path) { return from_json(io::read_json_file(path), path); }

DeepSeekV3Config DeepSeekV3Config::from_json_string(const std::string& text, const std::string& origin) {
  return from_json(io::parse_json(text, origin), origin);
}

void DeepSeekV3Config::to_json_file(const std::string& path) const {
  validate();
  io::write_json_file_atomic(path, to_json(*this));
}

std::string DeepSeekV3Config::to_json_string() const { return to_json(*this).dump(2); }

void DeepSeekV3Config::validate() const {
  config_table::check(*this, kKeys, "config");
  auto positive = [](int64_t v, const char* key) { require(v > 0, key, "must be positive, got " + std::to_string(v)); };
  require(qk_rope_head_dim % 2 == 0, "qk_rope_head_dim", "must be even (RoPE rotates pairs), got " + std::to_string(qk_rope_head_dim));
  require(hidden_act == "silu", "hidden_act", "must be 'silu', got '" + hidden_act + "'");
  if (num_hidden_layers > num_moe_layers(*this)) positive(intermediate_size, "intermediate_size");
  require(num_hidden_layers + num_nextn_predict_layers <= kMaxLayers, "num_hidden_layers",
          fmt::format("({}) plus num_nextn_predict_layers ({}) exceeds latent's limit of {} layers", num_hidden_layers,
                      num_nextn_predict_layers, kMaxLayers));
  if (num_nextn_predict_layers > 0 || num_moe_layers(*this) > 0) {
    positive(moe_intermediate_size, "moe_intermediate_size");
    positive(n_routed_experts, "n_routed_experts");
    require(n_routed_experts <= kMaxExperts, "n_routed_experts",
            fmt::format("({}) exceeds latent's limit of {} experts per layer", n_routed_experts, kMaxExperts));
    positive(num_experts_per_tok, "num_experts_per_tok");
    positive(n_group, "n_group");
    positive(topk_group, "topk_group");
    require(routed_scaling_factor > 0, "routed_scaling_factor", fmt::format("must be positive, got {}", routed_scaling_factor));
    require(n_routed_experts % n_group == 0, "n_routed_experts",
            fmt::format("({}) must be divisible by n_group ({})", n_routed_experts, n_group));
    require(topk_group <= n_group, "topk_group",
            fmt::format("({}) must not exceed n_group ({})", topk_group, n_group));
    const bool grouped = topk_method != TopkMethod::kGreedy && n_group > 1;
    const int64_t selectable = grouped ? topk_group * (n_routed_experts / n_group) : n_routed_experts;
    require(num_experts_per_tok <= selectable, "num_experts_per_tok",
            fmt::format("({}) exceeds the {} experts the kept groups offer", num_experts_per_tok, selectable));
  }
  if (rope_scaling) {
    for (const auto& [value, key] : {std::pair{rope_scaling->factor, "rope_scaling.factor"},
                                     {rope_scaling->beta_fast, "rope_scaling.beta_fast"},
                                     {rope_scaling->beta_slow, "rope_scaling.beta_slow"},
                                     {rope_scaling->mscale, "rope_scaling.mscale"},
                                     {rope_scaling->mscale_all_dim, "rope_scaling.mscale_all_dim"}})
      require(std::isfinite(value), key, fmt::format("must be finite, got {}", value));
    require(rope_scaling->factor > 0, "rope_scaling.factor", "must be positive");
    require(rope_scaling->original_max_position_embeddings > 0, "rope_scaling.original_max_position_embeddings",
            "must be positive");
    require(rope_scaling->beta_fast > 0 && rope_scaling->beta_slow > 0, "rope_scaling.beta_fast",
            "and beta_slow must be positive");
  }
  check_model_size(*this);
}

int64_t DeepSeekV3Config::num_parameters() const { return parameter_counts(*this).main_model; }

int64_t DeepSeekV3Config::num_activated_parameters() const { return parameter_counts(*this).activated; }

DeepSeekV3Config DeepSeekV3Config::preset(const std::string& name) {
  DeepSeekV3Config c;
  if (name == "tiny") {  // the golden fixture's model (tests/data/dsv3-tiny/config.json)
    c.vocab_size = 256, c.hidden_size = 64, c.intermediate_size = 128, c.moe_intermediate_size = 32;
    c.num_hidden_layers = 3, c.first_k_dense_replace = 1, c.num_attention_heads = 4, c.q_lora_rank = 32;
    c.kv_lora_rank = 16, c.qk_nope_head_dim = 16, c.qk_rope_head_dim = 8, c.v_head_dim = 16;
    c.n_routed_experts = 8, c.n_shared_experts = 1, c.num_experts_per_tok = 2, c.n_group = 4, c.topk_group = 2;
    c.max_position_embeddings = 128, c.num_nextn_predict_layers = 1, c.routed_scaling_factor = 2.5;
    c.aux_loss_alpha = 0.01;
    c.rope_scaling = nn::YarnConfig{4.0, 32, 32.0, 1.0, 1.0, 1.0};
  } else if (name == "small") {  // the training example's and the benchmark's model
    c.vocab_size = 256, c.hidden_size = 256, c.intermediate_size = 768, c.moe_intermediate_size = 128;
    c.num_hidden_layers = 4, c.first_k_dense_replace = 1, c.num_attention_heads = 8, c.q_lora_rank = 128;
    c.kv_lora_rank = 64, c.qk_nope_head_dim = 32, c.qk_rope_head_dim = 16, c.v_head_dim = 32;
    c.n_routed_experts = 16, c.n_shared_experts = 1, c.num_experts_per_tok = 4, c.n_group = 4, c.topk_group = 2;
    c.max_position_embeddings = 1024, c.num_nextn_predict_layers = 1, c.routed_scaling_factor = 2.5;
    c.aux_loss_alpha = 1e-4;
  } else if (name == "deepseek-v3-671b") {  // the released config; for counting only
    c.vocab_size = 129280, c.hidden_size = 7168, c.intermediate_size = 18432, c.moe_intermediate_size = 2048;
    c.num_hidden_layers = 61, c.first_k_dense_replace = 3, c.num_attention_heads = 128, c.q_lora_rank = 1536;
    c.kv_lora_rank = 512, c.qk_nope_head_dim = 128, c.qk_rope_head_dim = 64, c.v_head_dim = 128;
    c.n_routed_experts = 256, c.n_shared_experts = 1, c.num_experts_per_tok = 8, c.n_group = 8, c.topk_group = 4;
    c.max_position_embeddings = 163840, c.num_nextn_predict_layers = 1, c.routed_scaling_factor = 2.5;
    c.aux_loss_alpha = 0.001;
    c.rope_scaling = nn::YarnConfig{40.0, 4096, 32.0, 1.0, 1.0, 1.0};
  } else {
    fail("DeepSeekV3Config: unknown preset '{}' (known: tiny, small, deepseek-v3-671b)", name);
  }
  c.validate();
  return c;
}

}  // namespace latent::models
