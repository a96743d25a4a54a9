// GGUF vocabularies for llama.cpp's gpt2 tokenizer: byte tokens, or a tokenizer.json's BPE.
#include "gguf_vocabulary.hpp"

#include <array>
#include <nlohmann/json.hpp>

#include "../core/error.hpp"

namespace latent::models {
namespace {

// DeepSeek-V3's tokenizer.json pre-tokenizer: three Isolated regex Splits (digits in runs of up to
// three, CJK runs, then words, punctuation and whitespace), then ByteLevel without its own regex.
// llama.cpp's "deepseek-v3" pre-tokenizer applies the same three expressions in this order
// (docs/llama_cpp.md).
const std::array<std::string, 3> kDeepSeekV3Splits = {
    "\\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
    "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
};

bool is_byte_level(const nlohmann::json& step, bool use_regex) {
  return step.is_object() && step.value("type", "") == "ByteLevel" && !step.value("add_prefix_space", true) &&
         step.value("use_regex", true) == use_regex;
}

bool is_isolated_split(const nlohmann::json& step, const std::string& regex) {
  return step.is_object() && step.value("type", "") == "Split" && step.value("behavior", "") == "Isolated" &&
         !step.value("invert", false) && step.contains("pattern") && step["pattern"].is_object() &&
         step["pattern"].value("Regex", "") == regex;
}

// The name llama.cpp knows this pre-tokenizer by.
std::string llama_cpp_pre_tokenizer(const nlohmann::json& pre) {
  if (is_byte_level(pre, true)) return "gpt-2";
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers")) {
    const nlohmann::json& steps = pre["pretokenizers"];
    bool same = steps.is_array() && steps.size() == kDeepSeekV3Splits.size() + 1 && is_byte_level(steps.back(), false);
    for (size_t i = 0; same && i < kDeepSeekV3Splits.size(); ++i) same = is_isolated_split(steps[i], kDeepSeekV3Splits[i]);
    if (same) return "deepseek-v3";
  }
  fail("export-gguf: tokenizer.json's pre_tokenizer {} is not one llama.cpp implements by name (GPT-2's ByteLevel "
       "regex, or DeepSeek-V3's Split sequence)", pre.dump().substr(0, 200));
}

}  // namespace

std::string gpt2_byte_token(uint8_t byte) {
  const auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
  int code_point = byte;
  if (!printable(byte)) {
    code_point = 256;
    for (int b = 0; b < byte; ++b) code_point += printable(b) ? 0 : 1;
  }
  std::string utf8;
  if (code_point < 0x80) {
    utf8 += static_cast<char>(code_point);
  } else {  // below U+0800: two bytes
    utf8 += static_cast<char>(0xC0 | (code_point >> 6));
    utf8 += static_cast<char>(0x80 | (code_point & 0x3F));
  }
  return utf8;
}

GgufVocabulary GgufVocabulary::bytes() {
  GgufVocabulary v;
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(gpt2_byte_token(static_cast<uint8_t>(b)));
    v.token_types.push_back(GgufTokenType::Normal);
  }
  return v;
}

GgufVocabulary GgufVocabulary::from_tokenizer(const tokenizer::Tokenizer& tokenizer) {
  // The tokenizer validated its configuration when it loaded; what is read here exists.
  const nlohmann::json& config = tokenizer.to_json();
  const nlohmann::json& model = config.at("model");
  if (model.value("ignore_merges", false))
    fail("export-gguf: tokenizer.json's BPE sets ignore_merges, which llama.cpp's gpt-2 and deepseek-v3 "
         "pre-tokenizers do not (their tokens could differ)");
  GgufVocabulary v;
  v.pre = llama_cpp_pre_tokenizer(config.at("pre_tokenizer"));
  const size_t size = static_cast<size_t>(tokenizer.vocab_size());
  v.tokens.resize(size);
  v.token_types.assign(size, GgufTokenType::Unused);
  for (const auto& [text, id] : model.at("vocab").items()) {
    v.tokens[id.get<size_t>()] = text;
    v.token_types[id.get<size_t>()] = GgufTokenType::Normal;
  }
  if (config.contains("added_tokens") && config["added_tokens"].is_array())
    for (const nlohmann::json& added : config["added_tokens"]) {
      const size_t id = added.at("id").get<size_t>();
      v.tokens[id] = added.at("content").get<std::string>();
      v.token_types[id] = added.value("special", false) ? GgufTokenType::Control : GgufTokenType::UserDefined;
    }
  for (size_t id = 0; id < size; ++id)  // ids no token has, as llama.cpp's converter pads them
    if (v.token_types[id] == GgufTokenType::Unused) v.tokens[id] = fmt::format("[PAD{}]", id);
  for (const nlohmann::json& merge : model.at("merges"))
    v.merges.push_back(merge.is_string() ? merge.get<std::string>()
                                         : merge.at(0).get<std::string>() + " " + merge.at(1).get<std::string>());
  return v;
}

}  // namespace latent::models
