// The GGUF writer and reader (round trips, hand-built files, every malformation refused) and the
// exporter's layout (keys, split kv_b_proj, stacked experts, MTP left out) and refusals, without llama.cpp.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <bit>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <latent/latent.hpp>

#include "../helpers.hpp"
#include "../programs.hpp"
#include "../tokenizer/fixtures.hpp"

using namespace latent;
using io::GgmlType;
using io::GgufFile;
using io::GgufValue;
using io::GgufValueType;
using latent::testing::program;
using latent::testing::quote;
using latent::testing::TempDir;
using latent::testing::test_data;

namespace {

// Little-endian bytes built by hand, independent of the writer.
struct Bytes {
  std::string data;
  template <class T> Bytes& put(T v) {
    data.append(reinterpret_cast<const char*>(&v), sizeof v);
    return *this;
  }
  Bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    data += s;
    return *this;
  }
  Bytes& pad_to(size_t alignment) {
    data.append((alignment - data.size() % alignment) % alignment, '\0');
    return *this;
  }
};

// A valid file: one uint32 key, one F32 tensor [2] (ggml dims {2}) at offset 0.
Bytes minimal_file(uint32_t version = 3) {
  Bytes b;
  b.put<uint32_t>(0x46554747).put<uint32_t>(version).put<uint64_t>(1).put<uint64_t>(1);
  b.str("a.key").put<uint32_t>(4).put<uint32_t>(7);
  b.str("t").put<uint32_t>(1).put<uint64_t>(2).put<uint32_t>(0).put<uint64_t>(0);
  b.pad_to(32).put<float>(1.5f).put<float>(-2.0f);
  return b;
}

std::string parse_error(const std::string& bytes) {
  try {
    io::parse_gguf(bytes.data(), bytes.size(), "test.gguf");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

GgufFile every_type_file() {
  GgufFile f;
  f.metadata = {
      {"u8", GgufValue::uint8(200)},         {"i8", GgufValue::int8(-100)},
      {"u16", GgufValue::uint16(60000)},     {"i16", GgufValue::int16(-30000)},
      {"u32", GgufValue::uint32(4000000000u)}, {"i32", GgufValue::int32(-2000000000)},
      {"u64", GgufValue::uint64(1ull << 60)}, {"i64", GgufValue::int64(-(1ll << 60))},
      {"f32", GgufValue::float32(0.1f)},     {"f64", GgufValue::float64(0.1)},
      {"bool", GgufValue::boolean(true)},    {"str", GgufValue::string("héllo")},
      {"strings", GgufValue::strings({"a", "", "Ġb"})}, {"empty", GgufValue::strings({})},
      {"ints", GgufValue::int32s({1, -2, 3})},
      {"floats", GgufValue::array(GgufValueType::Float32, {GgufValue::float32(1.5f), GgufValue::float32(-0.25f)})},
  };
  f.tensors = {
      {"matrix", from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3}), GgmlType::F32},
      {"half", from_vector<float>({0.5f, -1.0f, 65504.0f, 0.0f}, {4}), GgmlType::F16},
      {"brain", from_vector<float>({1.0f, -3.0f, 0.15625f, 256.0f, 1e30f, -1e-30f}, {1, 2, 3}), GgmlType::BF16},
      {"four_d", from_vector<float>(std::vector<float>(16, 0.25f), {2, 2, 2, 2}), GgmlType::F32},
  };
  return f;
}

}  // namespace

TEST_CASE("gguf: 16-bit conversions match hand-computed bit patterns", "[gguf]") {
  CHECK(io::float_to_bfloat16_bits(1.0f) == 0x3F80);
  CHECK(io::float_to_bfloat16_bits(1.0f / 3.0f) == 0x3EAB);                         // 0x3EAAAAAB rounds up
  CHECK(io::float_to_bfloat16_bits(std::bit_cast<float>(0x3F808000u)) == 0x3F80);  // tie: stays even
  CHECK(io::float_to_bfloat16_bits(std::bit_cast<float>(0x3F818000u)) == 0x3F82);  // tie: up to even
  CHECK(io::float_to_half_bits(1.0f) == 0x3C00);
  CHECK(io::float_to_half_bits(0.1f) == 0x2E66);
  CHECK(io::float_to_half_bits(1.0f / 3.0f) == 0x3555);
  CHECK(io::float_to_half_bits(65504.0f) == 0x7BFF);
  CHECK(io::float_to_half_bits(65519.0f) == 0x7BFF);
  CHECK(io::float_to_half_bits(65520.0f) == 0x7C00);                 // the tie past the largest: infinity
  CHECK(io::float_to_half_bits(std::ldexp(1.0f, -24)) == 0x0001);    // smallest subnormal
  CHECK(io::float_to_half_bits(std::ldexp(1.0f, -25)) == 0x0000);    // half of it: tie to even (zero)
  CHECK(io::float_to_half_bits(std::ldexp(3.0f, -26)) == 0x0001);    // 0.75 units: up
  CHECK(io::float_to_half_bits(-2.0f) == 0xC000);
  CHECK(io::half_bits_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(io::half_bits_to_float(0x7BFF) == 65504.0f);
  CHECK(io::half_bits_to_float(0x3555) == 0.333251953125f);
  CHECK(io::bfloat16_bits_to_float(0x3EAB) == 0.333984375f);
  CHECK(std::isnan(io::half_bits_to_float(io::float_to_half_bits(std::nanf("")))));
  CHECK(std::isnan(io::bfloat16_bits_to_float(io::float_to_bfloat16_bits(std::nanf("")))));
}

TEST_CASE("gguf: every value type and tensor type round-trips through a file", "[gguf]") {
  TempDir tmp("latent-gguf");
  const GgufFile f = every_type_file();
  io::write_gguf(tmp / "all.gguf", f);
  const GgufFile back = io::read_gguf(tmp / "all.gguf");
  REQUIRE(back.metadata == f.metadata);
  REQUIRE(back.tensors.size() == f.tensors.size());
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    CHECK(back.tensors[i].name == f.tensors[i].name);
    CHECK(back.tensors[i].type == f.tensors[i].type);
    CHECK(back.tensors[i].values.shape() == f.tensors[i].values.shape());
  }
  // Every value was chosen exactly representable in its type, except two bf16 ones rounded by hand.
  CHECK(back.tensors[0].values.to_vector<float>() == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(back.tensors[1].values.to_vector<float>() == std::vector<float>{0.5f, -1.0f, 65504.0f, 0.0f});
  const std::vector<float> brain = back.tensors[2].values.to_vector<float>();
  CHECK(brain[0] == 1.0f);
  CHECK(brain[2] == 0.15625f);
  CHECK(brain[4] == std::bit_cast<float>(0x714A0000u));  // 1e30f = 0x7149F2CA: low half above a tie, up
  CHECK(brain[5] == std::bit_cast<float>(0x8DA20000u));  // -1e-30f = 0x8DA24260: low half below a tie, down
  CHECK(back.find("general.alignment") == nullptr);
  CHECK(back.alignment() == 32);
}

TEST_CASE("gguf: the bytes follow the format (header, ggml dim order, aligned data)", "[gguf]") {
  GgufFile f;
  f.metadata = {{"general.alignment", GgufValue::uint32(64)}, {"k", GgufValue::string("v")}};
  f.tensors = {{"a", from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3}), GgmlType::F32},
               {"b", from_vector<float>({7}, {1}), GgmlType::F32}};
  const std::string bytes = io::serialize_gguf(f);
  Bytes expected;
  expected.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(2).put<uint64_t>(2);
  expected.str("general.alignment").put<uint32_t>(4).put<uint32_t>(64);
  expected.str("k").put<uint32_t>(8).str("v");
  expected.str("a").put<uint32_t>(2).put<uint64_t>(3).put<uint64_t>(2).put<uint32_t>(0).put<uint64_t>(0);
  expected.str("b").put<uint32_t>(1).put<uint64_t>(1).put<uint32_t>(0).put<uint64_t>(64);  // 24 bytes, next at 64
  expected.pad_to(64);
  for (float v : {1, 2, 3, 4, 5, 6}) expected.put<float>(v);
  expected.pad_to(64).put<float>(7).pad_to(64);
  CHECK(bytes == expected.data);
  CHECK(bytes.substr(0, 4) == "GGUF");
}

TEST_CASE("gguf: a hand-built file parses", "[gguf]") {
  const Bytes b = minimal_file();
  const GgufFile f = io::parse_gguf(b.data.data(), b.data.size());
  REQUIRE(f.metadata.size() == 1);
  CHECK(f.find("a.key")->as_uint() == 7);
  REQUIRE(f.tensors.size() == 1);
  CHECK(f.tensors[0].values.to_vector<float>() == std::vector<float>{1.5f, -2.0f});
}

TEST_CASE("gguf: every truncation of a valid file is refused with an error", "[gguf]") {
  const std::string bytes = io::serialize_gguf(every_type_file());
  for (size_t n = 0; n < bytes.size(); n += (n < 600 ? 1 : 7)) {
    INFO("prefix of " << n << " bytes");
    CHECK(parse_error(bytes.substr(0, n)) != "");
  }
}

TEST_CASE("gguf: malformed files are refused naming what is wrong", "[gguf]") {
  CHECK_THAT(parse_error("GGUX" + minimal_file().data.substr(4)), Catch::Contains("not a GGUF file"));
  CHECK_THAT(parse_error(minimal_file(2).data), Catch::Contains("version 2 is not supported"));
  {  // unknown value type 13
    Bytes b;
    b.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1).str("k").put<uint32_t>(13).put<uint32_t>(0);
    CHECK_THAT(parse_error(b.data), Catch::Contains("unknown value type 13"));
  }
  {  // nested array
    Bytes b;
    b.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1).str("k").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(0);
    CHECK_THAT(parse_error(b.data), Catch::Contains("nested arrays"));
  }
  {  // an array count far beyond the file
    Bytes b;
    b.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1).str("k").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(1ull << 62);
    CHECK_THAT(parse_error(b.data), Catch::Contains("runs past the end"));
  }
  {  // duplicate key; bool byte 2
    Bytes b;
    b.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(2);
    b.str("k").put<uint32_t>(7).put<uint8_t>(1).str("k").put<uint32_t>(7).put<uint8_t>(1);
    CHECK_THAT(parse_error(b.data), Catch::Contains("duplicate metadata key 'k'"));
    Bytes c;
    c.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1).str("k").put<uint32_t>(7).put<uint8_t>(2);
    CHECK_THAT(parse_error(c.data), Catch::Contains("neither 0 nor 1"));
  }
  {  // alignment 48
    Bytes b;
    b.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(48);
    CHECK_THAT(parse_error(b.data), Catch::Contains("not a power of two"));
  }
  const auto tensor_file = [](uint32_t n_dims, uint64_t dim, uint32_t type, uint64_t offset, size_t data_bytes) {
    Bytes b;
    b.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(1).put<uint64_t>(0);
    b.str("t").put<uint32_t>(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) b.put<uint64_t>(dim);
    b.put<uint32_t>(type).put<uint64_t>(offset).pad_to(32);
    b.data.append(data_bytes, '\0');
    return b.data;
  };
  CHECK(parse_error(tensor_file(1, 4, 0, 0, 16)) == "");
  CHECK_THAT(parse_error(tensor_file(5, 1, 0, 0, 16)), Catch::Contains("has 5 dims"));
  CHECK_THAT(parse_error(tensor_file(1, 4, 2, 0, 16)), Catch::Contains("ggml type 2"));
  CHECK_THAT(parse_error(tensor_file(1, 4, 0, 8, 64)), Catch::Contains("not a multiple of the alignment"));
  CHECK_THAT(parse_error(tensor_file(1, 4, 0, 0, 15)), Catch::Contains("runs past the data section"));
  CHECK_THAT(parse_error(tensor_file(2, 1ull << 40, 0, 0, 16)), Catch::Contains("overflows"));
  {  // two tensors over the same bytes
    Bytes b;
    b.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(2).put<uint64_t>(0);
    b.str("x").put<uint32_t>(1).put<uint64_t>(16).put<uint32_t>(0).put<uint64_t>(0);
    b.str("y").put<uint32_t>(1).put<uint64_t>(4).put<uint32_t>(0).put<uint64_t>(32);
    b.pad_to(32).data.append(64, '\0');
    CHECK_THAT(parse_error(b.data), Catch::Contains("overlap"));
  }
}

TEST_CASE("gguf: the writer refuses what GGUF or llama.cpp cannot hold, leaving no file", "[gguf]") {
  TempDir tmp("latent-gguf-refuse");
  const auto refused = [&](const GgufFile& f, const std::string& message) {
    const std::string path = tmp / "out.gguf";
    CHECK_THROWS_WITH(io::write_gguf(path, f), Catch::Contains(message));
    CHECK(std::filesystem::is_empty(tmp.path));
  };
  const Tensor t = from_vector<float>({1, 2}, {2});
  refused({{{"k", GgufValue::uint8(1)}, {"k", GgufValue::uint8(2)}}, {}}, "duplicate metadata key 'k'");
  refused({{{"general.alignment", GgufValue::uint64(32)}}, {}}, "general.alignment must be uint32");
  refused({{}, {{std::string(64, 'n'), t, GgmlType::F32}}}, "GGUF allows 63");
  refused({{}, {{"a", t, GgmlType::F32}, {"a", t, GgmlType::F32}}}, "duplicate tensor 'a'");
  refused({{}, {{"a", zeros({1, 1, 1, 1, 1}), GgmlType::F32}}}, "5 dims");
  refused({{}, {{"a", arange(3), GgmlType::F32}}}, "int64");
  refused({{}, {{"a", from_vector<float>({1, 70000}, {2}), GgmlType::F16}}}, "beyond float16's range");
  CHECK_THROWS_WITH(GgufValue::array(GgufValueType::Int32, {GgufValue::uint32(1)}), Catch::Contains("array of int32 has a uint32"));
  CHECK_THROWS_WITH(io::write_gguf(tmp / "missing/dir/out.gguf", GgufFile{}), Catch::Contains("missing/dir/out.gguf"));
}

namespace {

const io::GgufTensor& tensor(const GgufFile& f, const std::string& name) {
  const io::GgufTensor* t = f.find_tensor(name);
  if (t == nullptr) FAIL("no tensor " << name);
  return *t;
}

}  // namespace

TEST_CASE("export: DeepSeek-V3 as deepseek2 with llama.cpp's keys and layouts", "[gguf][export]") {
  TempDir tmp("latent-gguf-export");
  models::export_gguf(test_data("dsv3-tiny"), tmp / "m.gguf");
  const GgufFile f = io::read_gguf(tmp / "m.gguf");
  const auto u = [&](const std::string& key) {
    const GgufValue* v = f.find("deepseek2." + key);
    if (v == nullptr) FAIL("no key deepseek2." << key);
    REQUIRE(v->type() == GgufValueType::UInt32);
    return v->as_uint();
  };
  const auto fl = [&](const std::string& key) { return f.find("deepseek2." + key)->as_float(); };
  // Expected values from tests/data/dsv3-tiny/config.json, derived by hand.
  CHECK(f.find("general.architecture")->as_string() == "deepseek2");
  CHECK(u("block_count") == 3);  // the MTP layer is not a block
  CHECK(u("context_length") == 128);
  CHECK(u("embedding_length") == 64);
  CHECK(u("feed_forward_length") == 128);
  CHECK(u("attention.head_count") == 4);
  CHECK(u("attention.head_count_kv") == 1);
  CHECK(u("attention.key_length") == 16 + 8);
  CHECK(u("attention.value_length") == 16);
  CHECK(u("attention.key_length_mla") == 16 + 8);
  CHECK(u("attention.value_length_mla") == 16);
  CHECK(u("attention.q_lora_rank") == 32);
  CHECK(u("attention.kv_lora_rank") == 16);
  CHECK(u("leading_dense_block_count") == 1);
  CHECK(u("expert_feed_forward_length") == 32);
  CHECK(u("expert_count") == 8);
  CHECK(u("expert_used_count") == 2);
  CHECK(u("expert_shared_count") == 1);
  CHECK(u("expert_group_count") == 4);
  CHECK(u("expert_group_used_count") == 2);
  CHECK(u("expert_gating_func") == 2);  // sigmoid
  CHECK(f.find("deepseek2.expert_weights_norm")->as_bool());
  CHECK(fl("expert_weights_scale") == 2.5);
  CHECK(u("rope.dimension_count") == 8);
  CHECK(fl("rope.freq_base") == 10000.0);
  CHECK(fl("attention.layer_norm_rms_epsilon") == double(1e-6f));
  CHECK(f.find("deepseek2.rope.scaling.type")->as_string() == "yarn");
  CHECK(fl("rope.scaling.factor") == 4.0);
  CHECK(u("rope.scaling.original_context_length") == 32);
  CHECK(fl("rope.scaling.yarn_beta_fast") == 32.0);
  CHECK(fl("rope.scaling.yarn_beta_slow") == 1.0);
  CHECK(fl("rope.scaling.yarn_log_multiplier") == double(0.1f));

  // The byte vocabulary in GPT-2's spelling.
  const auto& tokens = f.find("tokenizer.ggml.tokens")->as_array();
  REQUIRE(tokens.size() == 256);
  CHECK(tokens['A'].as_string() == "A");
  CHECK(tokens[' '].as_string() == "\xC4\xA0");  // U+0120 'Ġ'
  CHECK(tokens[0].as_string() == "\xC4\x80");    // U+0100
  CHECK(tokens[0xAD].as_string() == "\xC5\x83");  // soft hyphen: the 68th unprintable byte, U+0143
  CHECK(tokens[0xFF].as_string() == "\xC3\xBF");  // printable Latin-1 stands for itself
  CHECK(f.find("tokenizer.ggml.model")->as_string() == "gpt2");
  CHECK(f.find("tokenizer.ggml.merges")->element_type() == GgufValueType::String);
  CHECK(f.find("tokenizer.ggml.merges")->as_array().empty());
  CHECK(f.find("tokenizer.ggml.token_type")->as_array()[65] == GgufValue::int32(1));

  // Tensors: kv_b_proj split per head, experts stacked, no MTP tensors.
  const auto weights = io::load_safetensors(test_data("dsv3-tiny/model.safetensors"));
  const std::vector<float> kv_b = weights.at("model.layers.1.self_attn.kv_b_proj.weight").to_vector<float>();  // [4*32, 16]
  const io::GgufTensor& k_b = tensor(f, "blk.1.attn_k_b.weight");
  const io::GgufTensor& v_b = tensor(f, "blk.1.attn_v_b.weight");
  CHECK(k_b.values.shape() == Shape{4, 16, 16});  // [head, rank, nope]
  CHECK(v_b.values.shape() == Shape{4, 16, 16});  // [head, v, rank]
  const std::vector<float> kb = k_b.values.to_vector<float>(), vb = v_b.values.to_vector<float>();
  for (int h = 0; h < 4; ++h)
    for (int r = 0; r < 16; ++r)
      for (int n = 0; n < 16; ++n) {
        REQUIRE(kb[(h * 16 + r) * 16 + n] == kv_b[(h * 32 + n) * 16 + r]);
        REQUIRE(vb[(h * 16 + n) * 16 + r] == kv_b[(h * 32 + 16 + n) * 16 + r]);
      }
  const io::GgufTensor& up = tensor(f, "blk.2.ffn_up_exps.weight");
  CHECK(up.values.shape() == Shape{8, 32, 64});
  CHECK(narrow(up.values, 0, 5, 1).contiguous().to_vector<float>() == weights.at("model.layers.2.mlp.experts.5.up_proj.weight").to_vector<float>());
  CHECK(tensor(f, "blk.1.exp_probs_b.bias").values.to_vector<float>() ==
        weights.at("model.layers.1.mlp.gate.e_score_correction_bias").to_vector<float>());
  CHECK(tensor(f, "blk.0.ffn_gate.weight").values.shape() == Shape{128, 64});
  CHECK(f.find_tensor("blk.0.ffn_gate_inp.weight") == nullptr);  // layer 0 is dense
  CHECK(f.find_tensor("blk.1.attn_kv_b.weight") == nullptr);
  for (const io::GgufTensor& t : f.tensors) CHECK(!t.name.starts_with("blk.3."));
  // token_embd, output_norm, output; a dense block has 10 attention and norm tensors + 3 FFN ones, an
  // MoE block the same 10 + router, bias, 3 stacked experts and 3 shared-expert tensors.
  CHECK(f.tensors.size() == 3 + 13 + 2 * 18);
}

TEST_CASE("export: bf16 keeps norms, biases and the router in f32 and rounds the matrices", "[gguf][export]") {
  TempDir tmp("latent-gguf-bf16");
  models::GgufExportOptions options;
  options.dtype = GgmlType::BF16;
  models::export_gguf(test_data("dsv3-tiny"), tmp / "m.gguf", options);
  const GgufFile f = io::read_gguf(tmp / "m.gguf");
  CHECK(f.find("general.file_type")->as_uint() == 32);
  for (const io::GgufTensor& t : f.tensors) {
    INFO(t.name);
    const bool f32 = t.values.dim() == 1 || t.name.find("ffn_gate_inp") != std::string::npos;
    CHECK(t.type == (f32 ? GgmlType::F32 : GgmlType::BF16));
  }
  const std::vector<float> exact = io::load_safetensors(test_data("dsv3-tiny/model.safetensors")).at("model.embed_tokens.weight").to_vector<float>();
  const std::vector<float> rounded = tensor(f, "token_embd.weight").values.to_vector<float>();
  REQUIRE(rounded.size() == exact.size());
  for (size_t i = 0; i < exact.size(); ++i) {
    REQUIRE((std::bit_cast<uint32_t>(rounded[i]) & 0xFFFF) == 0);             // a bf16 value
    REQUIRE(std::abs(rounded[i] - exact[i]) <= std::ldexp(std::abs(exact[i]), -8));  // within half a bf16 ulp
  }
}

TEST_CASE("export: configurations llama.cpp computes differently are refused in one line", "[gguf][export]") {
  TempDir tmp("latent-gguf-unsupported");
  const auto refusal = [&](const std::string& source, const std::function<void(nlohmann::json&)>& edit) {
    const std::filesystem::path dir = tmp.path / "model";
    std::filesystem::remove_all(dir);
    std::filesystem::create_directory(dir);
    std::filesystem::copy_file(test_data(source + "/model.safetensors"), dir / "model.safetensors");
    nlohmann::json config = io::read_json_file(test_data(source + "/config.json"));
    edit(config);
    io::write_json_file_atomic((dir / "config.json").string(), config);
    std::string message;
    try {
      models::export_gguf(dir.string(), tmp / "out.gguf");
    } catch (const Error& e) {
      message = e.what();
    }
    CHECK(!std::filesystem::exists(tmp / "out.gguf"));
    CHECK(message.find('\n') == std::string::npos);
    return message;
  };
  CHECK_THAT(refusal("dsv2-softmax", [](nlohmann::json&) {}), Catch::Contains("topk_method 'group_limited_greedy'"));
  CHECK_THAT(refusal("dsv3-tiny", [](nlohmann::json& c) { c["rope_scaling"]["mscale"] = 0.5; }),
             Catch::Contains("YaRN mscale 0.5 with mscale_all_dim 1"));
}

TEST_CASE("export: a tokenizer.json's vocabulary as llama.cpp's gpt2 tokenizer", "[gguf][export]") {
  using models::GgufTokenType;
  using models::GgufVocabulary;
  using latent::testing::real_tokenizer;
  using latent::testing::small_config;

  // GPT-2: its ByteLevel regex is llama.cpp's "gpt-2"; 50,000 merges, the first "Ġ t"; ids as in the
  // published vocabulary ("Ġthe" 262); <|endoftext|> (50256) a special added token.
  const GgufVocabulary gpt2 = GgufVocabulary::from_tokenizer(real_tokenizer("gpt2"));
  CHECK(gpt2.pre == "gpt-2");
  REQUIRE(gpt2.tokens.size() == 50257);
  REQUIRE(gpt2.token_types.size() == 50257);
  CHECK(gpt2.tokens[0] == "!");
  CHECK(gpt2.tokens[262] == "\u0120the");
  CHECK(gpt2.tokens[50256] == "<|endoftext|>");
  CHECK(gpt2.token_types[262] == GgufTokenType::Normal);
  CHECK(gpt2.token_types[50256] == GgufTokenType::Control);
  REQUIRE(gpt2.merges.size() == 50000);
  CHECK(gpt2.merges[0] == "\u0120 t");

  // DeepSeek-V3: its three Splits are llama.cpp's "deepseek-v3"; 127,741 merges; ids that no token
  // has are padded as llama.cpp's converter pads them.
  const tokenizer::Tokenizer& deepseek = real_tokenizer("deepseek_v3");
  const GgufVocabulary v3 = GgufVocabulary::from_tokenizer(deepseek);
  CHECK(v3.pre == "deepseek-v3");
  REQUIRE(static_cast<int64_t>(v3.tokens.size()) == deepseek.vocab_size());
  CHECK(v3.merges.size() == 127741);
  const int64_t bos = *deepseek.token_to_id("<\uff5cbegin\u2581of\u2581sentence\uff5c>");
  CHECK(v3.tokens[static_cast<size_t>(bos)] == "<\uff5cbegin\u2581of\u2581sentence\uff5c>");
  CHECK(v3.token_types[static_cast<size_t>(bos)] == GgufTokenType::Control);
  int64_t padded = 0;
  for (size_t id = 0; id < v3.tokens.size(); ++id)
    if (v3.token_types[id] == GgufTokenType::Unused) {
      CHECK(v3.tokens[id] == fmt::format("[PAD{}]", id));
      CHECK(!deepseek.token_to_id(v3.tokens[id]).has_value());
      ++padded;
    }
  INFO(padded << " ids without a token");

  // A small vocabulary by hand: merges as pairs, a non-special added token, a hole in the ids.
  nlohmann::json config = small_config({"ab"}, nlohmann::json::array({nlohmann::json::array({"a", "b"})}));
  config["added_tokens"] = {{{"id", 259}, {"content", "<tool>"}, {"special", false}}};
  const GgufVocabulary small = GgufVocabulary::from_tokenizer(tokenizer::Tokenizer::from_json(config));
  REQUIRE(small.tokens.size() == 260);
  CHECK(small.tokens[256] == "ab");
  CHECK(small.merges == std::vector<std::string>{"a b"});
  CHECK(small.tokens[257] == "[PAD257]");
  CHECK(small.token_types[258] == GgufTokenType::Unused);
  CHECK(small.tokens[259] == "<tool>");
  CHECK(small.token_types[259] == GgufTokenType::UserDefined);

  // What llama.cpp would cut or merge differently is refused, naming it.
  nlohmann::json prefix = small_config({}, nlohmann::json::array());
  prefix["pre_tokenizer"]["add_prefix_space"] = true;
  CHECK_THROWS_WITH(GgufVocabulary::from_tokenizer(tokenizer::Tokenizer::from_json(prefix)), Catch::Contains("pre_tokenizer"));
  nlohmann::json ignore = small_config({}, nlohmann::json::array());
  ignore["model"]["ignore_merges"] = true;
  CHECK_THROWS_WITH(GgufVocabulary::from_tokenizer(tokenizer::Tokenizer::from_json(ignore)), Catch::Contains("ignore_merges"));
}

TEST_CASE("latent-export-gguf: hostile input gives one line and leaves no file", "[gguf][export]") {
  TempDir tmp("latent-gguf-cli");
  const std::string exe = quote(program("LATENT_EXPORT_GGUF"));
  const auto run = [&](const std::string& args) {
    const std::string log = tmp / "stderr.txt";
    const int status = std::system((exe + " " + args + " 2>" + quote(log)).c_str());
    return std::pair{status, latent::testing::read_file(log)};
  };
  const auto one_line = [](const std::string& s) { return !s.empty() && s.find('\n') == s.size() - 1; };

  auto [status, err] = run(quote(tmp.path.string()) + " " + quote(tmp / "a.gguf"));  // no config.json
  CHECK(status != 0);
  CHECK(one_line(err));
  CHECK_THAT(err, Catch::Contains("not a model directory"));
  CHECK(!std::filesystem::exists(tmp / "a.gguf"));

  // A tensor of the wrong shape.
  const std::filesystem::path bad = tmp.path / "bad";
  std::filesystem::create_directory(bad);
  std::filesystem::copy_file(test_data("llama-tiny/config.json"), bad / "config.json");
  auto weights = io::load_safetensors(test_data("llama-tiny/model.safetensors"));
  weights["model.layers.1.mlp.up_proj.weight"] = zeros({64, 31});
  io::save_safetensors((bad / "model.safetensors").string(), weights);
  std::tie(status, err) = run(quote(bad.string()) + " " + quote(tmp / "b.gguf"));
  CHECK(status != 0);
  CHECK(one_line(err));
  CHECK_THAT(err, Catch::Contains("up_proj"));
  CHECK(!std::filesystem::exists(tmp / "b.gguf"));

  // An output path that cannot be written.
  std::tie(status, err) = run(quote(test_data("llama-tiny")) + " " + quote(tmp / "no/such/dir/c.gguf"));
  CHECK(status != 0);
  CHECK(one_line(err));
  CHECK_THAT(err, Catch::Contains("c.gguf"));

  // A readable model writes a file; a bad --dtype is refused by the command line.
  std::tie(status, err) = run(quote(test_data("llama-tiny")) + " " + quote(tmp / "d.gguf") + " --dtype f16");
  CHECK(status == 0);
  CHECK(io::read_gguf(tmp / "d.gguf").find("general.architecture")->as_string() == "llama");
  std::tie(status, err) = run(quote(test_data("llama-tiny")) + " " + quote(tmp / "e.gguf") + " --dtype q4");
  CHECK(status != 0);
  CHECK(!std::filesystem::exists(tmp / "e.gguf"));
}
