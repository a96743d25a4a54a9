// Hostile or unsupported tokenizer.json files: each refused with one line naming what is wrong.
#include "fixtures.hpp"

using namespace latent;
using namespace latent::testing;
using Catch::Matchers::Contains;
using tokenizer::Tokenizer;

namespace {

// The message of the latent::Error loading `config` throws (a failed test when it loads).
std::string refusal(const nlohmann::json& config) {
  try {
    Tokenizer::from_json(config, "t.json");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK(message.find('\n') == std::string::npos);
    return message;
  }
  FAIL("accepted: " << config.dump().substr(0, 200));
  return {};
}

}  // namespace

TEST_CASE("a merge naming an unknown token, or producing one, is refused", "[tokenizer][hostile]") {
  CHECK_THAT(refusal(small_config({}, {"a zz"})), Contains("merge 0 names") && Contains("\"zz\" (right), which is not in the vocabulary"));
  CHECK_THAT(refusal(small_config({"ab"}, {"a b", "b c"})), Contains("merge 1 names") && Contains("\"bc\" (their concatenation)"));
  CHECK_THAT(refusal(small_config({"ab"}, {"a  b"})), Contains("merge 0") && Contains("not two tokens separated by one space"));
  CHECK_THAT(refusal(small_config({"ab"}, nlohmann::json::array({nlohmann::json::array({"a", "b", "c"})}))),
             Contains("merge 0 must be"));
}

TEST_CASE("a regex PCRE2 rejects is refused with PCRE2's reason", "[tokenizer][hostile]") {
  nlohmann::json config = small_config({}, nlohmann::json::array());
  config["pre_tokenizer"] = {{"type", "Sequence"},
                             {"pretokenizers",
                              {{{"type", "Split"}, {"pattern", {{"Regex", "(\\p{L}+"}}}, {"behavior", "Isolated"}},
                               {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  CHECK_THAT(refusal(config), Contains("t.json pre_tokenizer Split: regex '(\\p{L}+' rejected at offset 7: missing closing parenthesis"));
  config["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "\\p{Nonsense}"}};
  CHECK_THAT(refusal(config), Contains("rejected at offset"));
  config["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "a"}};
  config["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  CHECK_THAT(refusal(config), Contains("Split behavior 'Sideways' is not one of"));
}

TEST_CASE("duplicate ids and ids out of range are refused", "[tokenizer][hostile]") {
  nlohmann::json config = small_config({"ab"}, {"a b"});
  config["model"]["vocab"]["zz"] = 97;
  CHECK_THAT(refusal(config), Contains("id 97 given to both"));
  config = small_config({"ab"}, {"a b"});
  config["model"]["vocab"]["ab"] = 1 << 30;
  CHECK_THAT(refusal(config), Contains("id 1073741824 of token string \"ab\" out of range"));
  config = small_config({"ab"}, {"a b"});
  config["model"]["vocab"]["ab"] = -3;
  CHECK_THAT(refusal(config), Contains("id -3"));
  config = small_config({}, nlohmann::json::array(), tokenizer::PreTokenizer::gpt2_json(),
                        {{{"id", 300}, {"content", "<x>"}}, {{"id", 300}, {"content", "<y>"}}});
  CHECK_THAT(refusal(config), Contains("added_tokens: id 300 given to both string \"<x>\" and string \"<y>\""));
  config["added_tokens"][1] = {{"id", 301}, {"content", "<x>"}};
  CHECK_THAT(refusal(config), Contains("string \"<x>\" added twice (ids 300 and 301)"));
  config = small_config({}, nlohmann::json::array());
  config["model"]["vocab"].erase("Ġ");
  CHECK_THAT(refusal(config), Contains("vocabulary lacks byte 0x20"));
}

TEST_CASE("malformed JSON and unsupported components are refused by name", "[tokenizer][hostile]") {
  CHECK_THROWS_WITH(Tokenizer::from_json_string("{\"model\": ", "t.json"), Contains("t.json: invalid JSON at line 1"));
  CHECK_THROWS_WITH(Tokenizer::from_json_string("[1, 2]", "t.json"), Contains("t.json: expected a JSON object"));
  const auto with = [](const char* key, const nlohmann::json& value) {
    nlohmann::json config = small_config({}, nlohmann::json::array());
    config[key] = value;
    return config;
  };
  CHECK_THAT(refusal(with("normalizer", {{"type", "NFC"}})), Contains("normalizer: 'NFC' is not supported"));
  CHECK_THAT(refusal(with("pre_tokenizer", {{"type", "Whitespace"}})), Contains("pre-tokenizer 'Whitespace' is not supported"));
  CHECK_THAT(refusal(with("pre_tokenizer", nullptr)), Contains("pre_tokenizer: null is not supported"));
  CHECK_THAT(refusal(with("decoder", {{"type", "WordPiece"}})), Contains("decoder: 'WordPiece' is not supported"));
  CHECK_THAT(refusal(with("pre_tokenizer", {{"type", "Sequence"},
                                            {"pretokenizers", {tokenizer::PreTokenizer::gpt2_json(),
                                                               {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Isolated"}}}}})),
             Contains("ByteLevel must be the last pre-tokenizer"));
  nlohmann::json config = small_config({}, nlohmann::json::array());
  config["model"]["type"] = "WordPiece";
  CHECK_THAT(refusal(config), Contains("model type 'WordPiece' is not supported"));
  config = small_config({}, nlohmann::json::array());
  config["model"]["dropout"] = 0.1;
  CHECK_THAT(refusal(config), Contains("dropout 0.1 is not supported"));
  config = small_config({}, nlohmann::json::array(), tokenizer::PreTokenizer::gpt2_json(),
                        {{{"id", 256}, {"content", "<m>"}, {"lstrip", true}}});
  CHECK_THAT(refusal(config), Contains("lstrip of string \"<m>\" is not supported"));
}
