// JSON helpers: typed required/optional lookups and their messages, strict parsing with line and
// column, duplicate keys, UTF-8 checks, atomic pretty writing.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "io/json.hpp"
#include "../helpers.hpp"

using namespace latent;
using nlohmann::json;
namespace fs = std::filesystem;
using latent::testing::TempDir;

namespace {

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  REQUIRE(out);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const json kConfig = json::parse(R"({
  "hidden_size": 64, "rope_theta": 10000, "rms_norm_eps": 1e-6, "norm_topk_prob": true,
  "model_type": "deepseek_v3", "q_lora_rank": null, "ratio": 3.5, "whole_float": 3.0, "flag_as_int": 1,
  "negative": -3, "huge": 10000000000, "beyond_int64": 18446744073709551615,
  "dims": [1, 2, 3], "mixed": [1, "two", 3], "weights": {"a": 0.5, "b": 2}, "rope_scaling": {"factor": 40}
})");

}  // namespace

TEST_CASE("required reads each type and names the key when it is missing", "[json]") {
  CHECK(io::required<int64_t>(kConfig, "hidden_size", "config.json") == 64);
  CHECK(io::required<int>(kConfig, "negative", "config.json") == -3);
  CHECK(io::required<double>(kConfig, "rms_norm_eps", "config.json") == 1e-6);
  CHECK(io::required<double>(kConfig, "rope_theta", "config.json") == 10000.0);  // integers are fine for doubles
  CHECK(io::required<float>(kConfig, "ratio", "config.json") == 3.5f);
  CHECK(io::required<bool>(kConfig, "norm_topk_prob", "config.json"));
  CHECK(io::required<std::string>(kConfig, "model_type", "config.json") == "deepseek_v3");
  CHECK(io::required<std::vector<int64_t>>(kConfig, "dims", "config.json") == std::vector<int64_t>{1, 2, 3});
  CHECK(io::required<std::map<std::string, double>>(kConfig, "weights", "config.json") ==
        std::map<std::string, double>{{"a", 0.5}, {"b", 2.0}});
  CHECK(io::required<json>(kConfig, "rope_scaling", "config.json")["factor"] == 40);
  CHECK(io::required<uint64_t>(kConfig, "beyond_int64", "config.json") == 18446744073709551615ull);

  CHECK_THROWS_WITH(io::required<int64_t>(kConfig, "vocab_size", "config.json"),
                    "config.json: key 'vocab_size' missing");
  CHECK_THROWS_WITH(io::required<int64_t>(kConfig, "vocab_size", ""), "key 'vocab_size' missing");
}

TEST_CASE("integers must be integers; floats accept integers; booleans are neither", "[json]") {
  const json j = {{"hidden_size", "abc"}};
  CHECK_THROWS_WITH(io::required<int64_t>(j, "hidden_size", "config.json"),
                    "config.json: key 'hidden_size' must be an integer, got string \"abc\"");
  CHECK_THROWS_WITH(io::required<int64_t>(kConfig, "ratio", "config.json"),
                    "config.json: key 'ratio' must be an integer, got number 3.5");
  CHECK_THROWS_WITH(io::required<int64_t>(kConfig, "whole_float", "config.json"),
                    "config.json: key 'whole_float' must be an integer, got number 3.0");
  CHECK_THROWS_WITH(io::required<int64_t>(kConfig, "norm_topk_prob", "config.json"),
                    "config.json: key 'norm_topk_prob' must be an integer, got boolean true");
  CHECK_THROWS_WITH(io::required<double>(kConfig, "norm_topk_prob", "config.json"),
                    "config.json: key 'norm_topk_prob' must be a number, got boolean true");
  CHECK_THROWS_WITH(io::required<bool>(kConfig, "flag_as_int", "config.json"),
                    "config.json: key 'flag_as_int' must be a boolean, got number 1");
  CHECK_THROWS_WITH(io::required<int64_t>(kConfig, "q_lora_rank", "config.json"),
                    "config.json: key 'q_lora_rank' must be an integer, got null");
  CHECK_THROWS_WITH(io::required<std::string>(kConfig, "dims", "config.json"),
                    "config.json: key 'dims' must be a string, got array [1,2,3]");
  CHECK_THROWS_WITH(io::required<std::vector<int64_t>>(kConfig, "mixed", "config.json"),
                    "config.json: key 'mixed'[1] must be an integer, got string \"two\"");
  CHECK_THROWS_WITH((io::required<std::map<std::string, int64_t>>(kConfig, "weights", "config.json")),
                    "config.json: key 'weights'['a'] must be an integer, got number 0.5");
}

TEST_CASE("integers out of the target type's range are refused with the range", "[json]") {
  CHECK_THROWS_WITH(io::required<int32_t>(kConfig, "huge", "config.json"),
                    "config.json: key 'huge' must be an integer in [-2147483648, 2147483647], got number 10000000000");
  CHECK_THROWS_WITH(io::required<uint32_t>(kConfig, "negative", "config.json"),
                    "config.json: key 'negative' must be an integer in [0, 4294967295], got number -3");
  CHECK_THROWS_WITH(io::required<int64_t>(kConfig, "beyond_int64", "config.json"),
                    Catch::Contains("must be an integer in [-9223372036854775808, 9223372036854775807]"));
  CHECK(io::required<int64_t>(kConfig, "huge", "config.json") == 10000000000);
}

TEST_CASE("optional falls back on absent or null keys and still checks present ones", "[json]") {
  CHECK(io::optional<int64_t>(kConfig, "hidden_size", 7, "config.json") == 64);
  CHECK(io::optional<int64_t>(kConfig, "vocab_size", 7, "config.json") == 7);
  CHECK(io::optional<int64_t>(kConfig, "q_lora_rank", 0, "config.json") == 0);  // HF writes null for "not set"
  CHECK(io::optional<double>(kConfig, "rope_theta", 1, "config.json") == 10000.0);
  CHECK(io::optional<std::string>(kConfig, "hidden_act", "silu", "config.json") == "silu");
  CHECK_THROWS_WITH(io::optional<int64_t>(kConfig, "ratio", 1, "config.json"),
                    "config.json: key 'ratio' must be an integer, got number 3.5");
  const json rope = io::required<json>(kConfig, "rope_scaling", "config.json");
  CHECK_THROWS_WITH(io::required<std::string>(rope, "type", "config.json: rope_scaling"),
                    "config.json: rope_scaling: key 'type' missing");
}

TEST_CASE("lookups in something that is not an object say what it is", "[json]") {
  CHECK_THROWS_WITH(io::required<int64_t>(json::array({1, 2}), "hidden_size", "config.json"),
                    "config.json: expected a JSON object, got array [1,2]");
  CHECK_THROWS_WITH(io::optional<int64_t>(json(), "hidden_size", 1, "config.json"),
                    "config.json: expected a JSON object, got null");
  const json long_string = {{"x", std::string(200, 'a')}};
  CHECK_THROWS_WITH(io::required<int64_t>(long_string, "x", "c"),
                    "c: key 'x' must be an integer, got string \"" + std::string(59, 'a') + "...");
}

TEST_CASE("parse errors give the file, line and column", "[json]") {
  TempDir dir;
  const std::string path = dir / "config.json";
  write_text(path, "{\n  \"hidden_size\": 64,\n  \"vocab_size\": ,\n}\n");
  CHECK_THROWS_WITH(io::read_json_file(path),
                    Catch::StartsWith(path + ": invalid JSON at line 3, column 17: syntax error while parsing value"));

  write_text(path, "");
  CHECK_THROWS_WITH(io::read_json_file(path), Catch::StartsWith(path + ": invalid JSON at line 1, column 1"));
  write_text(path, "{\"a\": 1} trailing");
  CHECK_THROWS_WITH(io::read_json_file(path),
                    Catch::StartsWith(path + ": invalid JSON at line 1, column 12: syntax error"));
  write_text(path, "{\"a\": 1,\n \"b\": {\"c\": 1, \"c\": 2}}");
  CHECK_THROWS_WITH(io::read_json_file(path), path + ": invalid JSON: duplicate key 'c' in 'b'");
  write_text(path, "{\"a\": 1, \"a\": 1}");
  CHECK_THROWS_WITH(io::read_json_file(path), path + ": invalid JSON: duplicate key 'a'");
  write_text(path, "{\n\"a\": \"\xFF\"}");
  CHECK_THROWS_WITH(io::read_json_file(path), path + ": invalid JSON: not UTF-8 at line 2, column 7");
  // Same key in sibling objects is fine.
  write_text(path, "{\"x\": {\"k\": 1}, \"y\": {\"k\": 2}, \"z\": [{\"k\": 3}, {\"k\": 4}]}");
  CHECK(io::read_json_file(path)["z"][1]["k"] == 4);

  CHECK_THROWS_WITH(io::read_json_file(dir / "missing.json"),
                    Catch::StartsWith(dir / "missing.json" + ": cannot open: "));
}

TEST_CASE("write_json_file_atomic writes pretty JSON that reads back equal", "[json]") {
  TempDir dir;
  const std::string path = dir / "trainer_state.json";
  const json state = {{"step", 120}, {"loss", 2.5}, {"name", "caf\xC3\xA9"}, {"betas", {0.9, 0.95}}, {"done", false}};
  io::write_json_file_atomic(path, state);
  CHECK(read_text(path) ==
        "{\n  \"betas\": [\n    0.9,\n    0.95\n  ],\n  \"done\": false,\n  \"loss\": 2.5,\n  \"name\": "
        "\"caf\xC3\xA9\",\n"
        "  \"step\": 120\n}\n");
  CHECK(io::read_json_file(path) == state);
  CHECK_THROWS_WITH(io::write_json_file_atomic(path, json{{"bad", "\xFF"}}),
                    Catch::Contains(path + ": cannot write JSON"));
  CHECK(io::read_json_file(path) == state);
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
}

TEST_CASE("find_invalid_utf8 accepts UTF-8 and points at the first bad sequence", "[json]") {
  CHECK_FALSE(io::find_invalid_utf8("plain ascii"));
  CHECK_FALSE(io::find_invalid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF"));  // é € 😀 U+10FFFF
  CHECK(io::find_invalid_utf8("ab\x80") == 2u);            // continuation byte without a lead
  CHECK(io::find_invalid_utf8("a\xC0\xAF") == 1u);         // overlong '/'
  CHECK(io::find_invalid_utf8("\xE0\x80\xAF") == 0u);      // overlong, 3 bytes
  CHECK(io::find_invalid_utf8("x\xED\xA0\x80") == 1u);     // UTF-16 surrogate D800
  CHECK(io::find_invalid_utf8("\xF4\x90\x80\x80") == 0u);  // above U+10FFFF
  CHECK(io::find_invalid_utf8("\xF5\x80\x80\x80") == 0u);  // lead byte that never occurs
  CHECK(io::find_invalid_utf8("ok\xE2\x82") == 2u);        // truncated at the end
  CHECK(io::find_invalid_utf8("\xE2\x28\xA1") == 0u);      // bad continuation
  CHECK(io::find_invalid_utf8(std::string_view("a\0b", 3)) == std::nullopt);
}
