// DeepSeek-V3 and Llama to GGUF: llama.cpp's hyperparameter keys and tensor layouts, the checks that
// refuse what its deepseek2 graph computes differently, and the byte-level vocabulary.
#include "gguf_export.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "../autograd/grad_mode.hpp"
#include "../autograd/ops.hpp"
#include "../io/json.hpp"

namespace latent::models {

namespace {

using io::GgufValue;

// Collects metadata and tensors; every tensor of the model's state must be placed or skipped on
// purpose, so a parameter this file does not know about is an error rather than a silent omission.
class GgufBuilder {
 public:
  GgufBuilder(std::string architecture, std::map<std::string, Tensor> state, const GgufExportOptions& options)
      : arch_(std::move(architecture)), state_(std::move(state)), options_(options) {
    set("general.architecture", GgufValue::string(arch_));
    set("general.name", GgufValue::string(options.name));
    set("general.file_type", GgufValue::uint32(file_type(options.dtype)));
  }

  void set(const std::string& key, GgufValue value) { file_.metadata.emplace_back(key, std::move(value)); }
  // "{arch}.<key>" entries, with the value types llama.cpp's loader checks.
  void u32(const std::string& key, int64_t value) {
    if (value < 0 || value > std::numeric_limits<uint32_t>::max())
      fail("export-gguf: {}.{} = {} does not fit GGUF's uint32", arch_, key, value);
    set(arch_ + "." + key, GgufValue::uint32(static_cast<uint32_t>(value)));
  }
  void f32(const std::string& key, double value) { set(arch_ + "." + key, GgufValue::float32(static_cast<float>(value))); }
  void boolean(const std::string& key, bool value) { set(arch_ + "." + key, GgufValue::boolean(value)); }
  void string(const std::string& key, const std::string& value) { set(arch_ + "." + key, GgufValue::string(value)); }

  // The sizes every architecture states, under llama.cpp's key names.
  struct Shape {
    int64_t block_count, context_length, embedding_length, feed_forward_length, head_count, head_count_kv, key_length,
        value_length;
    double rms_norm_eps;
  };
  void shape(const Shape& s) {
    for (const auto& [key, value] : {std::pair{"block_count", s.block_count}, {"context_length", s.context_length},
                                     {"embedding_length", s.embedding_length}, {"feed_forward_length", s.feed_forward_length},
                                     {"attention.head_count", s.head_count}, {"attention.head_count_kv", s.head_count_kv},
                                     {"attention.key_length", s.key_length}, {"attention.value_length", s.value_length}})
      u32(key, value);
    f32("attention.layer_norm_rms_epsilon", s.rms_norm_eps);
  }

  // The tensors every architecture stores around its blocks: token_embd; per block the two norms
  // and what `block` adds; output_norm, and output unless tied (llama.cpp then reuses token_embd).
  using Block = std::function<void(int64_t layer, const std::string& hf, const std::string& blk)>;
  void add_blocks(int64_t count, bool tied_output, const Block& block) {
    add("token_embd.weight", "model.embed_tokens.weight");
    for (int64_t l = 0; l < count; ++l) {
      const std::string hf = fmt::format("model.layers.{}.", l), blk = fmt::format("blk.{}.", l);
      add(blk + "attn_norm.weight", hf + "input_layernorm.weight");
      add(blk + "ffn_norm.weight", hf + "post_attention_layernorm.weight");
      block(l, hf, blk);
    }
    add("output_norm.weight", "model.norm.weight");
    if (!tied_output) add("output.weight", "lm_head.weight");
  }

  bool has(const std::string& hf_name) const { return state_.count(hf_name) != 0; }
  Tensor take(const std::string& hf_name) {
    const auto it = state_.find(hf_name);
    if (it == state_.end()) fail("export-gguf: the model has no tensor '{}'", hf_name);
    taken_.insert(hf_name);
    return it->second;
  }
  void skip(const std::string& hf_name) { taken_.insert(hf_name); }

  // Matrices take the requested dtype; 1-D tensors, norms, biases and the router stay F32, as
  // llama.cpp's converter keeps them (its kernels take those in F32).
  void add(const std::string& name, const Tensor& values) {
    const bool keep_f32 = values.dim() <= 1 || name.ends_with("_norm.weight") || name.find("ffn_gate_inp") != std::string::npos ||
                          !name.ends_with(".weight");
    file_.tensors.push_back({name, values, keep_f32 ? io::GgmlType::F32 : options_.dtype});
  }
  void add(const std::string& name, const std::string& hf_name) { add(name, take(hf_name)); }

  void vocabulary(int64_t vocab_size) {
    GgufVocabulary v = options_.vocabulary ? *options_.vocabulary : GgufVocabulary::bytes();
    if (v.token_types.size() != v.tokens.size())
      fail("export-gguf: vocabulary has {} tokens but {} token types", v.tokens.size(), v.token_types.size());
    if (static_cast<int64_t>(v.tokens.size()) > vocab_size)
      fail("export-gguf: the vocabulary has {} tokens, the model's vocab_size is {}", v.tokens.size(), vocab_size);
    for (int64_t id = static_cast<int64_t>(v.tokens.size()); id < vocab_size; ++id) {
      v.tokens.push_back(fmt::format("[PAD{}]", id));
      v.token_types.push_back(GgufTokenType::Unused);
    }
    std::vector<int32_t> types;
    for (GgufTokenType t : v.token_types) types.push_back(static_cast<int32_t>(t));
    set("tokenizer.ggml.model", GgufValue::string("gpt2"));
    set("tokenizer.ggml.pre", GgufValue::string(v.pre));
    set("tokenizer.ggml.tokens", GgufValue::strings(v.tokens));
    set("tokenizer.ggml.token_type", GgufValue::int32s(types));
    // llama.cpp refuses a gpt2 vocabulary without this key, even an empty one.
    set("tokenizer.ggml.merges", GgufValue::strings(v.merges));
    for (const auto& [key, id] : {std::pair{"tokenizer.ggml.bos_token_id", v.bos_token_id},
                                  std::pair{"tokenizer.ggml.eos_token_id", v.eos_token_id}}) {
      if (!id) continue;
      if (*id < 0 || *id >= vocab_size) fail("export-gguf: {} {} is not a token id below {}", key, *id, vocab_size);
      set(key, GgufValue::uint32(static_cast<uint32_t>(*id)));
    }
    set("tokenizer.ggml.add_bos_token", GgufValue::boolean(v.add_bos_token));
  }

  // Everything the model holds must have been placed or skipped on purpose.
  io::GgufFile finish() {
    for (const auto& [name, tensor] : state_)
      if (!taken_.count(name)) fail("export-gguf: no GGUF place for the model's tensor '{}'", name);
    return std::move(file_);
  }

 private:
  static uint32_t file_type(io::GgmlType t) {  // llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_BF16
    return t == io::GgmlType::F32 ? 0 : t == io::GgmlType::F16 ? 1 : 32;
  }

  std::string arch_;
  std::map<std::string, Tensor> state_;
  const GgufExportOptions& options_;
  std::set<std::string> taken_;
  io::GgufFile file_;
};

[[noreturn]] void unsupported(const std::string& what) { fail("export-gguf: llama.cpp cannot represent {}", what); }

// What llama.cpp's deepseek2 graph computes differently from latent's DeepSeek-V3 / V2 (read in its
// src/models/deepseek2.cpp, src/llama-graph.cpp build_moe_ffn and src/llama-context.cpp).
void check_deepseek_representable(const DeepSeekV3Config& c) {
  if (c.hidden_act != "silu") unsupported("hidden_act '" + c.hidden_act + "' (deepseek2 uses SiLU)");
  // It makes every layer from leading_dense_block_count on an MoE layer.
  for (int64_t l = c.first_k_dense_replace; l < c.num_hidden_layers; ++l)
    if (!c.is_moe_layer(l)) unsupported(fmt::format("moe_layer_freq {} (layer {} is dense after the leading dense layers)", c.moe_layer_freq, l));
  // It takes 26- and 27-layer (and 48-layer, 128256-token) models for DeepSeek-V2-Lite and never
  // reads their q_lora_rank.
  const bool lite = c.num_hidden_layers == 26 || c.num_hidden_layers == 27 || (c.num_hidden_layers == 48 && c.vocab_size == 128256);
  if (lite && c.q_lora_rank > 0)
    unsupported(fmt::format("q_lora_rank {} with num_hidden_layers {} (it reads such models as DeepSeek-V2-Lite, without q compression)",
                            c.q_lora_rank, c.num_hidden_layers));
  const bool groups_matter = c.n_group > 1 && c.topk_group < c.n_group && c.topk_method != TopkMethod::kGreedy;
  // It scores a group by the sum of its two best experts: V3's rule, not V2's best expert.
  if (groups_matter && c.topk_method != TopkMethod::kNoauxTc)
    unsupported(fmt::format("topk_method '{}' with n_group > topk_group (it scores groups by their top-2 sum, V2 by the best expert)",
                            to_string(c.topk_method)));
  if (groups_matter && c.n_routed_experts / c.n_group < 2)
    unsupported(fmt::format("groups of {} expert (it scores a group by its top-2 experts)", c.n_routed_experts / c.n_group));
  if (c.rope_scaling && c.rope_scaling->factor > 1) {
    const nn::YarnConfig& y = *c.rope_scaling;
    // It derives both YaRN magnitudes from mscale_all_dim, assuming mscale equals it.
    if (y.mscale != y.mscale_all_dim || y.mscale_all_dim == 0)
      unsupported(fmt::format("YaRN mscale {} with mscale_all_dim {} (it assumes mscale == mscale_all_dim != 0)", y.mscale, y.mscale_all_dim));
  }
}

// The weights llama.cpp applies to the selected experts. latent: sigmoid scores are normalised when
// norm_topk_prob, then scaled; softmax (V2) weights are either normalised (norm_topk_prob, top-k > 1)
// or scaled, never both.
std::pair<bool, double> expert_weighting(const DeepSeekV3Config& c) {
  if (c.scoring_func == ScoringFunc::kSigmoid) return {c.norm_topk_prob, c.routed_scaling_factor};
  if (c.norm_topk_prob && c.num_experts_per_tok > 1) return {true, 1.0};
  return {false, c.routed_scaling_factor};
}

}  // namespace

io::GgufFile deepseek_v3_to_gguf(const DeepSeekV3& model, const GgufExportOptions& options) {
  const DeepSeekV3Config& c = model.config();
  check_deepseek_representable(c);
  NoGradGuard no_grad;
  GgufBuilder g("deepseek2", model.state_dict(), options);

  // MLA runs as multi-query attention over the compressed latent: one "KV head" whose key is the
  // latent plus the shared RoPE key and whose value is the latent; the per-head sizes go in *_mla.
  g.shape({c.num_hidden_layers, c.max_position_embeddings, c.hidden_size, c.intermediate_size, c.num_attention_heads,
           /*head_count_kv=*/1, c.kv_lora_rank + c.qk_rope_head_dim, c.kv_lora_rank, c.rms_norm_eps});
  g.u32("attention.key_length_mla", c.qk_head_dim());
  g.u32("attention.value_length_mla", c.v_head_dim);
  g.u32("attention.q_lora_rank", c.q_lora_rank);  // 0: a plain q_proj (attn_q)
  g.u32("attention.kv_lora_rank", c.kv_lora_rank);
  g.u32("vocab_size", c.vocab_size);
  g.u32("leading_dense_block_count", c.first_k_dense_replace);
  g.u32("expert_feed_forward_length", c.moe_intermediate_size);
  g.u32("expert_count", c.n_routed_experts);
  g.u32("expert_used_count", c.num_experts_per_tok);
  g.u32("expert_shared_count", c.n_shared_experts);
  // Group selection off (one group) where it cannot change the choice: llama.cpp requires
  // expert_group_used_count < expert_group_count whenever the count exceeds 1.
  const bool groups_matter = c.n_group > 1 && c.topk_group < c.n_group && c.topk_method != TopkMethod::kGreedy;
  g.u32("expert_group_count", groups_matter ? c.n_group : 1);
  g.u32("expert_group_used_count", groups_matter ? c.topk_group : 1);
  g.u32("expert_gating_func", c.scoring_func == ScoringFunc::kSigmoid ? 2 : 1);  // LLAMA_EXPERT_GATING_FUNC_TYPE_*
  const auto [normalise, scale] = expert_weighting(c);
  g.boolean("expert_weights_norm", normalise);
  g.f32("expert_weights_scale", scale);
  g.u32("rope.dimension_count", c.qk_rope_head_dim);
  g.f32("rope.freq_base", c.rope_theta);
  if (c.rope_scaling) {
    const nn::YarnConfig& y = *c.rope_scaling;
    g.string("rope.scaling.type", "yarn");
    g.f32("rope.scaling.factor", y.factor);
    g.u32("rope.scaling.original_context_length", y.original_max_position_embeddings);
    g.f32("rope.scaling.yarn_beta_fast", y.beta_fast);
    g.f32("rope.scaling.yarn_beta_slow", y.beta_slow);
    // The converter stores 0.1 * mscale_all_dim for deepseek2 and the loader divides the 0.1 out.
    g.f32("rope.scaling.yarn_log_multiplier", 0.1 * y.mscale_all_dim);
  }
  g.vocabulary(c.vocab_size);

  g.add_blocks(c.num_hidden_layers, c.tie_word_embeddings, [&](int64_t l, const std::string& hf, const std::string& blk) {
    const std::string attn = hf + "self_attn.";
    if (c.q_lora_rank > 0) {
      g.add(blk + "attn_q_a.weight", attn + "q_a_proj.weight");
      g.add(blk + "attn_q_a_norm.weight", attn + "q_a_layernorm.weight");
      g.add(blk + "attn_q_b.weight", attn + "q_b_proj.weight");
    } else {
      g.add(blk + "attn_q.weight", attn + "q_proj.weight");
    }
    g.add(blk + "attn_kv_a_mqa.weight", attn + "kv_a_proj_with_mqa.weight");
    g.add(blk + "attn_kv_a_norm.weight", attn + "kv_a_layernorm.weight");
    // kv_b_proj [H * (nope + v), rank] splits per head into the key part, transposed for the
    // absorbed q.k product ([H, rank, nope]), and the value part ([H, v, rank]).
    const Tensor kv_b = reshape(g.take(attn + "kv_b_proj.weight"),
                                {c.num_attention_heads, c.qk_nope_head_dim + c.v_head_dim, c.kv_lora_rank});
    g.add(blk + "attn_k_b.weight", transpose(narrow(kv_b, 1, 0, c.qk_nope_head_dim), 1, 2).contiguous());
    g.add(blk + "attn_v_b.weight", narrow(kv_b, 1, c.qk_nope_head_dim, c.v_head_dim).contiguous());
    g.add(blk + "attn_output.weight", attn + "o_proj.weight");

    const std::string mlp = hf + "mlp.";
    if (!c.is_moe_layer(l)) {
      for (const char* p : {"gate", "up", "down"}) g.add(fmt::format("{}ffn_{}.weight", blk, p), fmt::format("{}{}_proj.weight", mlp, p));
      return;
    }
    g.add(blk + "ffn_gate_inp.weight", mlp + "gate.weight");
    if (g.has(mlp + "gate.e_score_correction_bias")) g.add(blk + "exp_probs_b.bias", mlp + "gate.e_score_correction_bias");
    for (const char* p : {"gate", "up", "down"}) {
      std::vector<Tensor> experts;
      for (int64_t e = 0; e < c.n_routed_experts; ++e) {
        const Tensor w = g.take(fmt::format("{}experts.{}.{}_proj.weight", mlp, e, p));
        experts.push_back(reshape(w, {1, w.size(0), w.size(1)}));
      }
      g.add(fmt::format("{}ffn_{}_exps.weight", blk, p), cat(experts, 0));  // [E, out, in]
      if (c.n_shared_experts > 0)
        g.add(fmt::format("{}ffn_{}_shexp.weight", blk, p), fmt::format("{}shared_experts.{}_proj.weight", mlp, p));
    }
  });

  // The MTP modules stay out (llama.cpp's converter drops them for this architecture).
  for (const auto& [name, tensor] : model.state_dict())
    for (int64_t l = c.num_hidden_layers; l < c.num_hidden_layers + c.num_nextn_predict_layers; ++l)
      if (name.starts_with(fmt::format("model.layers.{}.", l))) g.skip(name);
  return g.finish();
}

io::GgufFile llama_to_gguf(const Llama& model, const GgufExportOptions& options) {
  const LlamaConfig& c = model.config();
  if (c.hidden_act != "silu") unsupported("hidden_act '" + c.hidden_act + "' (llama uses SiLU)");
  NoGradGuard no_grad;
  // state_dict() holds q/k rows in adjacent-pair RoPE order, which is the order llama.cpp's converter
  // permutes Hugging Face's rotate_half rows into.
  GgufBuilder g("llama", model.state_dict(), options);
  g.shape({c.num_hidden_layers, c.max_position_embeddings, c.hidden_size, c.intermediate_size, c.num_attention_heads,
           c.num_key_value_heads, c.head_dim, c.head_dim, c.rms_norm_eps});
  g.u32("rope.dimension_count", c.head_dim);
  g.f32("rope.freq_base", c.rope_theta);
  g.u32("vocab_size", c.vocab_size);
  g.vocabulary(c.vocab_size);

  g.add_blocks(c.num_hidden_layers, c.tie_word_embeddings, [&](int64_t, const std::string& hf, const std::string& blk) {
    for (const auto& [gguf, proj] : {std::pair{"attn_q", "q_proj"}, {"attn_k", "k_proj"}, {"attn_v", "v_proj"}, {"attn_output", "o_proj"}}) {
      g.add(fmt::format("{}{}.weight", blk, gguf), fmt::format("{}self_attn.{}.weight", hf, proj));
      if (c.attention_bias) g.add(fmt::format("{}{}.bias", blk, gguf), fmt::format("{}self_attn.{}.bias", hf, proj));
    }
    for (const char* p : {"gate", "up", "down"}) g.add(fmt::format("{}ffn_{}.weight", blk, p), fmt::format("{}mlp.{}_proj.weight", hf, p));
  });
  return g.finish();
}

void export_gguf(const std::string& model_dir, const std::string& path, const GgufExportOptions& options) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(model_dir)) fail("export-gguf: '{}' is not a directory", model_dir);
  const fs::path config = fs::path(model_dir) / "config.json";
  if (!fs::is_regular_file(config)) fail("export-gguf: '{}' is not a model directory: it has no config.json", model_dir);
  if (!options.vocabulary && fs::exists(fs::path(model_dir) / "tokenizer.json"))
    fail("export-gguf: '{}' has a tokenizer.json; pass its vocabulary (GgufExportOptions::vocabulary = "
         "GgufVocabulary::from_tokenizer(...), or GgufVocabulary::bytes() if it is not the model's)", model_dir);
  const nlohmann::json j = io::read_json_file(config.string());
  const std::string model_type = j.contains("model_type") && j["model_type"].is_string() ? j["model_type"].get<std::string>() : "";
  io::GgufFile file;
  if (model_type == "llama") {
    file = llama_to_gguf(*Llama::from_pretrained(model_dir), options);
  } else if (model_type == "deepseek_v3" || model_type == "deepseek_v2") {
    file = deepseek_v3_to_gguf(*DeepSeekV3::from_pretrained(model_dir), options);
  } else {
    fail("export-gguf: {}: model_type '{}' is not exportable (deepseek_v3, deepseek_v2 or llama)", config.string(), model_type);
  }
  io::write_gguf(path, file);
}

}  // namespace latent::models
