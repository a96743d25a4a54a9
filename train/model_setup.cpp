// Building, loading, checking and describing the zoo's models for training.
#include "model_setup.hpp"

#include <unistd.h>

#include <filesystem>

#include <fmt/format.h>

#include "../core/random.hpp"
#include "../io/json.hpp"
#include "../models/deepseek_v3.hpp"
#include "../models/llama.hpp"

namespace latent::train {

namespace fs = std::filesystem;

namespace {

// Refuses models whose f32 weights, gradients and two AdamW moments cannot fit in this machine.
void check_memory(int64_t parameters, const std::string& name) {
  const double bytes = 16.0 * double(parameters);
  const double physical = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  if (physical > 0 && bytes > physical)
    fail("{}: {} parameters need about {:.1f} GB for f32 weights, gradients and AdamW moments; "
         "this machine has {:.1f} GB",
         name, parameters, bytes / 1e9, physical / 1e9);
}

bool is_deepseek(const std::string& model_type) { return model_type == "deepseek_v3" || model_type == "deepseek_v2"; }

// The loss weights only DeepSeek-V3 has: given for another model they would silently do nothing.
void refuse_deepseek_flags(const TrainerOptions& o, const std::string& model_type) {
  for (const char* flag : {"--aux-alpha", "--mtp-lambda", "--bias-gamma"})
    if (o.given.count(flag))
      fail("{} weights a DeepSeek-V3 loss term; the {} model has none", flag, model_type);
}

std::shared_ptr<models::CausalLM> build_deepseek(models::DeepSeekV3Config config, const TrainerOptions& o,
                                                 const std::string& name) {
  if (o.given.count("--aux-alpha") || o.config_file.empty()) config.aux_loss_alpha = o.aux_alpha;
  check_memory(config.num_parameters(), name);
  manual_seed(o.seed);
  return std::make_shared<models::DeepSeekV3>(config);
}

std::shared_ptr<models::CausalLM> build_llama(const models::LlamaConfig& config, const TrainerOptions& o,
                                              const std::string& name) {
  refuse_deepseek_flags(o, config.model_type);
  check_memory(config.num_parameters(), name);
  manual_seed(o.seed);
  return std::make_shared<models::Llama>(config);
}

// The "model_type" of a config.json; DeepSeek-V3's reader takes its absence as "deepseek_v3".
std::string config_model_type(const std::string& path) {
  return io::optional<std::string>(io::read_json_file(path), "model_type", "deepseek_v3", path);
}

}  // namespace

models::LlamaConfig llama_preset(const std::string& name) {
  models::LlamaConfig c;
  c.vocab_size = 256;
  if (name == "tiny") {
    c.hidden_size = 64, c.intermediate_size = 128, c.num_hidden_layers = 2, c.num_attention_heads = 4;
    c.num_key_value_heads = 2, c.head_dim = 16, c.max_position_embeddings = 128;
  } else if (name == "small") {
    c.hidden_size = 256, c.intermediate_size = 768, c.num_hidden_layers = 4, c.num_attention_heads = 8;
    c.num_key_value_heads = 4, c.head_dim = 32, c.max_position_embeddings = 1024;
  } else {
    fail("llama: unknown preset '{}' (known: tiny, small)", name);
  }
  c.validate();
  return c;
}

std::shared_ptr<models::CausalLM> build_model(const TrainerOptions& o, int64_t vocab_size) {
  if (o.config_file.empty()) {
    const std::string name = "--preset " + o.preset;
    auto sized = [vocab_size](auto config) {  // the preset with the data's vocabulary
      config.vocab_size = vocab_size;
      config.validate();
      return config;
    };
    if (is_deepseek(o.model_type)) return build_deepseek(sized(models::DeepSeekV3Config::preset(o.preset)), o, name);
    if (o.model_type == "llama") return build_llama(sized(llama_preset(o.preset)), o, name);
    fail("--model-type must be 'deepseek_v3' or 'llama', got '{}'", o.model_type);
  }
  const std::string name = "--config " + o.config_file;
  const std::string model_type = config_model_type(o.config_file);
  if (o.given.count("--model-type") && model_type != o.model_type)
    fail("--model-type {} but {} describes a {} model", o.model_type, o.config_file, model_type);
  if (model_type == "llama") return build_llama(models::LlamaConfig::from_json_file(o.config_file), o, name);
  return build_deepseek(models::DeepSeekV3Config::from_json_file(o.config_file), o, name);  // refuses other types
}

std::shared_ptr<models::CausalLM> load_model(const TrainerOptions& o, const std::string& dir) {
  if (fs::is_directory(dir))  // (from_pretrained words the error when it is not)
    check_memory(models::num_parameters_of_config_file((fs::path(dir) / "config.json").string()), dir);
  std::shared_ptr<models::CausalLM> model = models::from_pretrained(dir);
  if (const auto* deepseek = dynamic_cast<const models::DeepSeekV3*>(model.get())) {
    const double alpha = deepseek->config().aux_loss_alpha;
    if (o.given.count("--aux-alpha") && o.aux_alpha != alpha)
      fail("--aux-alpha {} differs from aux_loss_alpha {} in {}/config.json; the model's config cannot change "
           "on --resume or --init-from", o.aux_alpha, alpha, dir);
  } else {
    refuse_deepseek_flags(o, model->model_type());
  }
  return model;
}

void check_model_for_data(const models::CausalLM& model, const TrainerOptions& o, int64_t vocab_size) {
  if (o.seq > model.max_position_embeddings())
    fail("--seq {} exceeds max_position_embeddings {} of the model", o.seq, model.max_position_embeddings());
  if (const auto* deepseek = dynamic_cast<const models::DeepSeekV3*>(&model))
    if (o.seq <= deepseek->config().num_nextn_predict_layers)
      fail("--seq {} leaves no position for {} MTP module(s)", o.seq, deepseek->config().num_nextn_predict_layers);
  if (model.vocab_size() >= vocab_size) return;
  if (o.tokenizer.empty()) fail("byte-level training needs vocab_size >= 256, the model has {}", model.vocab_size());
  fail("the tokenizer has {} ids but the model's vocab_size is {}", vocab_size, model.vocab_size());
}

ModelDescription describe_model(const models::CausalLM& model, const TrainerOptions& o) {
  ModelDescription d;
  const std::string shapes = fmt::format("shapes: ids [{}, {}] -> logits [{}, {}, {}]", o.batch, o.seq + 1, o.batch, o.seq,
                                         model.vocab_size());
  if (const auto* deepseek = dynamic_cast<const models::DeepSeekV3*>(&model)) {
    const models::DeepSeekV3Config& c = deepseek->config();
    d.family = "DeepSeek-V3";
    d.lines.push_back(fmt::format("config: hidden {}, {} layers ({} dense), {} heads, q_lora {}, kv_lora {}, qk nope/rope {}/{}, v {}",
                                  c.hidden_size, c.num_hidden_layers, c.first_k_dense_replace, c.num_attention_heads,
                                  c.q_lora_rank, c.kv_lora_rank, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim));
    d.lines.push_back(fmt::format("        {} routed experts (top-{}, {} groups keep {}) + {} shared, width {}; MTP depth {}; {} routing",
                                  c.n_routed_experts, c.num_experts_per_tok, c.n_group, c.topk_group, c.n_shared_experts,
                                  c.moe_intermediate_size, c.num_nextn_predict_layers, c.topk_method));
    d.lines.push_back(fmt::format("parameters: {} total, {} activated per token (main model); {} trainable incl. MTP",
                                  c.num_parameters(), c.num_activated_parameters(), model.num_parameters()));
    std::string mtp;
    for (int64_t k = 1; k <= c.num_nextn_predict_layers; ++k)
      mtp += fmt::format(", MTP {} logits [{}, {}, {}]", k, o.batch, o.seq - k, c.vocab_size);
    d.lines.push_back(shapes + mtp);
    d.loss_settings = fmt::format(", aux_alpha {}, mtp_lambda {}, bias_gamma {}", c.aux_loss_alpha, o.mtp_lambda, o.bias_gamma);
    d.hyperparameters = {{"aux_alpha", c.aux_loss_alpha}, {"mtp_lambda", o.mtp_lambda}, {"bias_gamma", o.bias_gamma}};
  } else if (const auto* llama = dynamic_cast<const models::Llama*>(&model)) {
    const models::LlamaConfig& c = llama->config();
    d.family = "Llama";
    d.lines.push_back(fmt::format("config: hidden {}, {} layers, {} heads ({} key-value) of {}, MLP width {}{}",
                                  c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
                                  c.head_dim, c.intermediate_size, c.tie_word_embeddings ? ", tied embeddings" : ""));
    d.lines.push_back(fmt::format("parameters: {} total", model.num_parameters()));
    d.lines.push_back(shapes);
  } else {
    d.family = model.model_type();
    d.lines.push_back(fmt::format("parameters: {} total", model.num_parameters()));
    d.lines.push_back(shapes);
  }
  if (d.hyperparameters.is_null()) d.hyperparameters = nlohmann::json::object();
  return d;
}

std::string default_out_base(const TrainerOptions& o) {
  if (!o.init_from.empty()) {
    const fs::path dir = fs::path(o.init_from).lexically_normal();
    const std::string name = (dir.has_filename() ? dir : dir.parent_path()).filename().string();
    return (config_model_type((dir / "config.json").string()) == "llama" ? "runs/llama-" : "runs/dsv3-") + name;
  }
  const std::string type = o.config_file.empty() ? o.model_type : config_model_type(o.config_file);
  return (type == "llama" ? "runs/llama-" : "runs/dsv3-") +
         (o.config_file.empty() ? o.preset : fs::path(o.config_file).stem().string());
}

}  // namespace latent::train
