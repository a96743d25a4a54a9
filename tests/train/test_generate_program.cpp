// latent-generate run as a user runs it on a Llama directory the library saved: the program opens
// it through models::from_pretrained and prints the library's own greedy continuation.
#include <cstdlib>

#include "../helpers.hpp"
#include "../programs.hpp"

using namespace latent;
using latent::testing::program;
using latent::testing::quote;
using latent::testing::read_file;
using latent::testing::TempDir;

TEST_CASE("latent-generate continues a prompt with a Llama directory written by save_pretrained", "[generate][llama]") {
  const std::string generate = program("LATENT_GENERATE");
  TempDir tmp("latent-generate-llama");
  models::LlamaConfig config;  // head_dim and num_key_value_heads left to their defaults
  config.vocab_size = 256, config.hidden_size = 32, config.intermediate_size = 48, config.num_hidden_layers = 2;
  config.num_attention_heads = 4, config.max_position_embeddings = 48, config.initializer_range = 0.5;
  manual_seed(11);
  models::Llama(config).save_pretrained(tmp / "llama");

  const std::string prompt = "hello", command = quote(generate) + " " + quote(tmp / "llama") + " --prompt " +
                                                quote(prompt) + " -n 12 -t 0 >" + quote(tmp / "out") + " 2>" +
                                                quote(tmp / "err");
  INFO(command);
  const int status = std::system(command.c_str());
  INFO(read_file(tmp / "err"));
  REQUIRE(status == 0);
  const std::string out = read_file(tmp / "out");
  REQUIRE(out.size() == prompt.size() + 12 + 1);
  CHECK(out.rfind(prompt, 0) == 0);
  CHECK(out.back() == '\n');

  const auto model = models::Llama::from_pretrained(tmp / "llama");
  models::GenerateOptions options;
  options.max_new_tokens = 12;
  const std::vector<int64_t> expected =
      model->generate(from_vector<int64_t>({'h', 'e', 'l', 'l', 'o'}), options).to_vector<int64_t>();
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO("byte " << i);
    CHECK(int64_t(static_cast<unsigned char>(out[i])) == expected[i]);
  }
}
