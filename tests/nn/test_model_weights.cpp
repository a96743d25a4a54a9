// A model directory's weight files: FP8 block scales against hand-computed products (partial edge
// blocks included), sharded saves read back with their index, stale files of earlier saves, and
// every hostile index or scale refused with a one-line error (docs/checkpoints.md).
#include <filesystem>
#include <fstream>

#include "io/fp8_blocks.hpp"
#include "io/json.hpp"
#include "io/safetensors.hpp"
#include "io/sharded_safetensors.hpp"
#include "../helpers.hpp"
#include "../raw_safetensors.hpp"

using namespace latent;
namespace fs = std::filesystem;
using latent::testing::f32_bytes;
using latent::testing::raw_safetensors;
using latent::testing::RawTensor;
using latent::testing::TempDir;

namespace {

std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Loads a directory's weights with FP8 scales applied, as models::load_model_tensors does.
std::map<std::string, Tensor> load_dequantized(const std::string& dir, const io::Fp8BlockSize* block) {
  io::ModelWeights w = io::read_model_weights(dir, "test");
  io::dequantize_fp8_weights(w.tensors, w.file_dtypes, block, dir);
  return w.tensors;
}

std::map<std::string, Tensor> sample_state(double offset = 0.5) {
  std::map<std::string, Tensor> state;
  for (int i = 0; i < 7; ++i)
    state[fmt::format("t{}", i)] = full({4, 4}, i + offset, kFloat32);  // 64 bytes each
  state["ids"] = from_vector<int64_t>({1, 2, static_cast<int64_t>(offset * 4)}, {3});
  return state;
}

void require_same_state(const std::map<std::string, Tensor>& got, const std::map<std::string, Tensor>& expected) {
  REQUIRE(got.size() == expected.size());
  for (const auto& [name, t] : expected) {
    INFO(name);
    REQUIRE(got.count(name));
    REQUIRE(got.at(name).dtype() == t.dtype());
    REQUIRE(got.at(name).shape() == t.shape());
    CHECK(got.at(name).to(kFloat64).to_vector<double>() == t.to(kFloat64).to_vector<double>());
  }
}

}  // namespace

TEST_CASE("FP8 block scales multiply each block, edge blocks partial", "[model_weights][fp8]") {
  // W [3, 5] of E4M3 codes 0x38 (1.0) in [2, 2] blocks: 2 x 3 blocks, the last row and column partial.
  TempDir dir;
  const std::string codes(15, '\x38');
  dir.write("model.safetensors",
            raw_safetensors({{"w", "F8_E4M3", {3, 5}, codes},
                      {"w_scale_inv", "F32", {2, 3}, f32_bytes({1, 2, 3, 4, 5, 6})},
                      {"norm", "F32", {2}, f32_bytes({0.5f, 0.25f})}}));
  const io::Fp8BlockSize block{2, 2};
  const auto tensors = load_dequantized(dir.path.string(), &block);
  REQUIRE(tensors.size() == 2);  // the scale is consumed
  CHECK(tensors.at("w").to_vector<float>() == std::vector<float>{1, 1, 2, 2, 3,  //
                                                                 1, 1, 2, 2, 3,  //
                                                                 4, 4, 5, 5, 6});
  CHECK(tensors.at("norm").to_vector<float>() == std::vector<float>{0.5f, 0.25f});
}

TEST_CASE("FP8 codes and scales combine exactly: 448 * 0.5, subnormal * 1024, -1.5 * 3", "[model_weights][fp8]") {
  TempDir dir;
  // W [2, 3] in [1, 2] blocks: scales [2, 2]; codes 0x7E = 448, 0x01 = 2^-9, 0xBC = -1.5.
  dir.write("model.safetensors", raw_safetensors({{"w", "F8_E4M3", {2, 3}, std::string("\x7E\x01\xBC\x38\x40\x00", 6)},
                                           {"w_scale_inv", "F32", {2, 2}, f32_bytes({0.5f, 3, 1024, -2})}}));
  const io::Fp8BlockSize block{1, 2};
  CHECK(load_dequantized(dir.path.string(), &block).at("w").to_vector<float>() ==
        std::vector<float>{224.0f, 0.0009765625f, -4.5f, 1024.0f, 2048.0f, -0.0f});
}

TEST_CASE("hostile FP8 weights are refused with one line naming the tensor", "[model_weights][fp8][hostile]") {
  TempDir dir;
  const io::Fp8BlockSize block{2, 2};
  const std::string codes(6, '\x38');
  const auto refused = [&](const std::vector<RawTensor>& tensors, const io::Fp8BlockSize* b, const std::string& message) {
    dir.write("model.safetensors", raw_safetensors(tensors));
    INFO(message);
    CHECK_THROWS_WITH(load_dequantized(dir.path.string(), b), Catch::Contains(message));
  };
  refused({{"w", "F8_E4M3", {2, 3}, codes}}, &block, "'w' is F8_E4M3 but its block scale 'w_scale_inv' is missing");
  refused({{"w", "F8_E4M3", {2, 3}, codes}, {"w_scale_inv", "F32", {2, 2}, f32_bytes({1, 1, 1, 1})}}, &block,
          "'w_scale_inv' has shape [2, 2] but 'w' [2, 3] in [2, 2] blocks needs [1, 2]");
  refused({{"w", "F8_E4M3", {2, 3}, codes}, {"w_scale_inv", "BF16", {1, 2}, std::string(4, '\0')}}, &block,
          "'w_scale_inv' is BF16; block scales must be F32");
  refused({{"w", "F8_E4M3", {2, 3}, codes}, {"w_scale_inv", "F32", {1, 2}, f32_bytes({1, 1})}}, nullptr,
          "'w' is F8_E4M3 but config.json has no quantization_config.weight_block_size");
  refused({{"w", "F32", {1}, f32_bytes({1})}, {"w_scale_inv", "F32", {1, 1}, f32_bytes({1})}}, &block,
          "block scale 'w_scale_inv' belongs to 'w', which is F32, not F8_E4M3");
  refused({{"v_scale_inv", "F32", {1, 1}, f32_bytes({1})}}, &block, "block scale 'v_scale_inv' has no weight 'v'");
  refused({{"w", "F8_E4M3", {6}, codes}, {"w_scale_inv", "F32", {1, 1}, f32_bytes({1})}}, &block,
          "FP8 tensor 'w' has shape [6]; block scales apply to matrices only");
  refused({{"w", "F8_E4M3FN", {2, 3}, codes}}, &block, "tensor 'w': unknown dtype 'F8_E4M3FN'");
}

TEST_CASE("a sharded save writes model-0000i-of-0000N files and an index that read back", "[model_weights][shards]") {
  TempDir dir;
  const auto state = sample_state();  // 7 x 64 bytes + 24
  io::save_model_weights(dir.path.string(), state, {{"format", "pt"}}, 200);  // 3 of 64 per shard
  CHECK(listing(dir.path) == std::vector<std::string>{"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                                      "model-00003-of-00003.safetensors", "model.safetensors.index.json"});
  const nlohmann::json index = io::read_json_file(dir / "model.safetensors.index.json");
  CHECK(index["metadata"]["total_size"] == 7 * 64 + 24);
  // Name order: ids, t0, t1 | t2, t3, t4 | t5, t6 (ids 24 + 2 x 64 fits 200; a third 64 would not).
  CHECK(index["weight_map"]["ids"] == "model-00001-of-00003.safetensors");
  CHECK(index["weight_map"]["t1"] == "model-00001-of-00003.safetensors");
  CHECK(index["weight_map"]["t2"] == "model-00002-of-00003.safetensors");
  CHECK(index["weight_map"]["t6"] == "model-00003-of-00003.safetensors");
  CHECK(io::read_safetensors(dir / "model-00002-of-00003.safetensors").metadata.at("format") == "pt");
  require_same_state(io::read_model_weights(dir.path.string(), "test").tensors, state);

  SECTION("a tensor larger than the limit gets a shard of its own") {
    TempDir other;
    io::save_model_weights(other.path.string(), state, {}, 10);
    CHECK(io::read_json_file(other / "model.safetensors.index.json")["weight_map"]["t6"] ==
          "model-00008-of-00008.safetensors");
    require_same_state(io::read_model_weights(other.path.string(), "test").tensors, state);
  }
}

TEST_CASE("files of an earlier save never mix into a later one", "[model_weights][shards]") {
  TempDir dir;
  const auto first = sample_state(0.5), second = sample_state(0.75);  // same names and sizes, other values
  SECTION("sharded, then one file: the index and its shards are removed") {
    io::save_model_weights(dir.path.string(), first, {}, 200);
    io::save_model_weights(dir.path.string(), second, {}, 0);
    CHECK(listing(dir.path) == std::vector<std::string>{"model.safetensors"});
    require_same_state(io::read_model_weights(dir.path.string(), "test").tensors, second);
  }
  SECTION("one file, then sharded: model.safetensors is removed") {
    io::save_model_weights(dir.path.string(), first, {}, 0);
    io::save_model_weights(dir.path.string(), second, {}, 400);
    CHECK(!fs::exists(dir / "model.safetensors"));
    require_same_state(io::read_model_weights(dir.path.string(), "test").tensors, second);
  }
  SECTION("three shards, then two: the -of-00003 files are removed") {
    io::save_model_weights(dir.path.string(), first, {}, 200);
    io::save_model_weights(dir.path.string(), second, {}, 300);
    CHECK(listing(dir.path) == std::vector<std::string>{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                                        "model.safetensors.index.json"});
    require_same_state(io::read_model_weights(dir.path.string(), "test").tensors, second);
  }
  SECTION("a save that fails while writing leaves the directory as it was") {
    io::save_model_weights(dir.path.string(), first, {}, 200);
    const auto before = listing(dir.path);
    auto broken = second;
    broken["zz.undefined"] = Tensor();
    CHECK_THROWS_WITH(io::save_model_weights(dir.path.string(), broken, {}, 200), Catch::Contains("'zz.undefined' is undefined"));
    CHECK(listing(dir.path) == before);
    require_same_state(io::read_model_weights(dir.path.string(), "test").tensors, first);
  }
  SECTION("a crashed save's staging directory goes; files an old index names that are not weights stay") {
    fs::create_directories(dir.path / ".model-weights.tmp.999999");
    dir.write(".model-weights.tmp.999999/model-00001-of-00002.safetensors", "partial");
    dir.write("config.json", "{}");
    dir.write("model.safetensors.index.json", R"({"weight_map": {"a": "config.json", "b": "model-00009-of-00009.safetensors"}})");
    dir.write("model-00009-of-00009.safetensors", "stale");
    io::save_model_weights(dir.path.string(), second, {}, 0);
    CHECK(listing(dir.path) == std::vector<std::string>{"config.json", "model.safetensors"});
  }
  SECTION("a shard of another save (an interrupted one) is refused, not mixed in") {
    io::save_model_weights(dir.path.string(), first, {}, 200);
    TempDir other;
    io::save_model_weights(other.path.string(), second, {}, 200);
    fs::copy_file(other / "model-00002-of-00003.safetensors", dir / "model-00002-of-00003.safetensors",
                  fs::copy_options::overwrite_existing);
    CHECK_THROWS_WITH(io::read_model_weights(dir.path.string(), "test"),
                      Catch::Contains("shard 'model-00002-of-00003.safetensors' is not from the save that wrote"));
  }
}

// Written as the bytes of tensor data; read but not compared, as Hugging Face's loaders do not compare
// it (published indices count in-memory storages instead).
TEST_CASE("an index's total_size, right, wrong or absent, does not decide whether it loads", "[model_weights][shards]") {
  TempDir dir;
  dir.write("one.safetensors", raw_safetensors({{"a", "F32", {1}, f32_bytes({1})}, {"b", "BF16", {3}, std::string(6, '\0')}}));
  for (const char* metadata : {R"({"total_size": 10})", R"({"total_size": 11})", R"({"total_size": 5})",
                               R"({"total_size": null})", R"({})"}) {
    INFO(metadata);
    dir.write("model.safetensors.index.json",
              std::string(R"({"weight_map": {"a": "one.safetensors", "b": "one.safetensors"}, "metadata": )") + metadata + "}");
    CHECK(io::read_model_weights(dir.path.string(), "test").tensors.size() == 2);
  }
}

TEST_CASE("hostile indexes are refused with one line naming the file and the problem", "[model_weights][shards][hostile]") {
  TempDir dir;
  const std::string a = raw_safetensors({{"a", "F32", {1}, f32_bytes({1})}});
  const std::string ab = raw_safetensors({{"a", "F32", {1}, f32_bytes({1})}, {"b", "F32", {1}, f32_bytes({2})}});
  dir.write("one.safetensors", a);
  dir.write("both.safetensors", ab);
  const auto refused = [&](const std::string& index, const std::string& message) {
    dir.write("model.safetensors.index.json", index);
    INFO(index);
    CHECK_THROWS_WITH(io::read_model_weights(dir.path.string(), "from_pretrained"), Catch::Contains(message));
  };
  refused(R"({"weight_map": {"a": "missing.safetensors"}})", "lists shard 'missing.safetensors', which is missing");
  refused(R"({"weight_map": {"a": "one.safetensors", "c": "one.safetensors"}})",
          "lists tensor 'c' in shard 'one.safetensors', which does not hold it");
  refused(R"({"weight_map": {"a": "one.safetensors", "b": "both.safetensors"}})",
          "tensor 'a' is in shard 'both.safetensors' but");
  refused(R"({"weight_map": {"a": "both.safetensors"}})", "shard 'both.safetensors' holds tensor 'b', which");
  refused(R"({"weight_map": {"a": "one.safetensors", "a": "one.safetensors"}})", "duplicate key 'a'");
  refused(R"({"weight_map": {"a": "../one.safetensors"}})",
          "weight_map['a'] = '../one.safetensors' is not a plain file name inside the directory");
  refused(R"({"weight_map": {"a": ".."}})", "is not a plain file name");
  refused(R"({"weight_map": {"a": "/etc/passwd"}})", "is not a plain file name");
  // Longer than any file system's NAME_MAX: looking it up fails with ENAMETOOLONG (found by fuzzing).
  refused(R"({"weight_map": {"a": ")" + std::string(300, 'x') + R"("}})", "cannot look up");
  refused(R"({"metadata": {"total_size": 4}})", "key 'weight_map' missing");
  refused(R"({"weight_map": {"a": 3}})", "must be a string");
  refused(R"({"weight_map": {"a": "one.safetensors"}, "metadata": {"total_size": -1}})", "total_size");
  refused(R"([1])", "an index must be a JSON object");
  fs::remove(dir / "model.safetensors.index.json");
  CHECK_THROWS_WITH(io::read_model_weights(dir.path.string(), "from_pretrained"),
                    Catch::Contains("no model.safetensors or model.safetensors.index.json in"));
}
