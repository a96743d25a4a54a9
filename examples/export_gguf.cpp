// latent-export-gguf: writes a model directory (DeepSeek-V3 or Llama) as a GGUF file llama.cpp runs,
// with the directory's tokenizer.json as its vocabulary when the model was trained with one
// (train::load_tokenizer), else the 256 byte tokens.
#include <cstdio>
#include <map>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <latent/latent.hpp>

using namespace latent;

int main(int argc, char** argv) {
  CLI::App app{"latent-export-gguf: a model directory as GGUF for llama.cpp (deepseek2 / llama architectures)"};
  std::string dir, out, dtype = "f32";
  app.add_option("model", dir, "model directory (config.json + model.safetensors)")->required();
  app.add_option("output", out, "the GGUF file to write (replaced atomically)")->required();
  app.add_option("--dtype", dtype, "element type of the weight matrices (norms, biases and the router stay f32)")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    const std::map<std::string, io::GgmlType> types{
        {"f32", io::GgmlType::F32}, {"bf16", io::GgmlType::BF16}, {"f16", io::GgmlType::F16}};
    models::GgufExportOptions options;
    options.dtype = types.at(dtype);
    const std::optional<tokenizer::Tokenizer> tokenizer = train::load_tokenizer(dir);
    options.vocabulary = tokenizer ? models::GgufVocabulary::from_tokenizer(*tokenizer) : models::GgufVocabulary::bytes();
    models::export_gguf(dir, out, options);
  } catch (const std::exception& e) {
    fmt::print(stderr, "latent-export-gguf: {}\n", e.what());
    return 1;
  }
  return 0;
}
