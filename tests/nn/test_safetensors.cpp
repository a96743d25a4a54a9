// safetensors: round trips, BF16 kept as stored and F16 widened, against hand-encoded bits, the dsv3-tiny fixture,
// one malformed file per validation rule, and atomic replacement on failed writes.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>

#include "io/atomic_file.hpp"
#include "io/safetensors.hpp"
#include "../helpers.hpp"

using namespace latent;
namespace fs = std::filesystem;
using latent::testing::TempDir;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> directory_listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Same shape, dtype and bytes (so NaN payloads and signed zeros count).
void require_identical(const Tensor& got, const Tensor& expected) {
  REQUIRE(got.shape() == expected.shape());
  REQUIRE(got.dtype() == expected.dtype());
  const Tensor a = got.contiguous(), b = expected.contiguous();
  const size_t nbytes = static_cast<size_t>(a.numel()) * dtype_size(a.dtype());
  REQUIRE(std::memcmp(a.raw_data(), b.raw_data(), nbytes) == 0);
}

// A file image: 8-byte little-endian length, header text as given (no padding), data.
std::string file_image(const std::string& header, const std::string& data) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i)
    bytes[static_cast<size_t>(i)] = static_cast<char>(static_cast<uint64_t>(header.size()) >> (8 * i));
  return bytes + header + data;
}

std::string u16_bytes(const std::vector<uint16_t>& values) {
  std::string out;
  for (uint16_t v : values) {
    out.push_back(static_cast<char>(v & 0xFF));
    out.push_back(static_cast<char>(v >> 8));
  }
  return out;
}

uint32_t float_bits(float f) { return std::bit_cast<uint32_t>(f); }

std::map<std::string, Tensor> sample_tensors() {
  const double inf = std::numeric_limits<double>::infinity();
  return {
      {"layers.0.weight", from_vector<float>({1.5f, -2.25f, 3e-39f, 1e30f, -0.0f, 7.0f}, {2, 3})},
      {"layers.0.scale", from_vector<double>({0.1, -inf, inf, 4.9e-324}, {4})},
      {"ids",
       from_vector<int64_t>({std::numeric_limits<int64_t>::min(), -1, 0, std::numeric_limits<int64_t>::max()}, {2, 2})},
      {"scalar", full({}, 2.5, kFloat32)},
      {"empty", zeros({0, 5}, kFloat64)},
      {"empty.i64", zeros({3, 0}, kInt64)},
  };
}

}  // namespace

TEST_CASE("save_safetensors then load_safetensors gives back every tensor and the metadata", "[safetensors]") {
  TempDir dir;
  const auto tensors = sample_tensors();
  const std::map<std::string, std::string> metadata{{"format", "pt"}, {"step", "12"}, {"note", "caf\xC3\xA9"}};
  io::save_safetensors(dir / "m.safetensors", tensors, metadata);

  const io::SafetensorsFile file = io::read_safetensors(dir / "m.safetensors");
  CHECK(file.metadata == metadata);
  REQUIRE(file.tensors.size() == tensors.size());
  for (const auto& [name, t] : tensors) {
    INFO(name);
    REQUIRE(file.tensors.count(name) == 1);
    require_identical(file.tensors.at(name), t);
  }
  CHECK(file.tensors.at("scalar").dim() == 0);
  CHECK(io::load_safetensors(dir / "m.safetensors").size() == tensors.size());
  CHECK(directory_listing(dir.path) == std::vector<std::string>{"m.safetensors"});
}

TEST_CASE("views are written as their contiguous values", "[safetensors]") {
  const Tensor base = arange(12, kInt64).reshape({3, 4});
  const Tensor transposed = base.transpose(0, 1);                             // strides [1, 4]
  const Tensor narrowed = base.to(kFloat64).narrow(1, 1, 2);                  // offset 1, row stride 4
  const Tensor expanded = from_vector<float>({1, 2}, {2, 1}).expand({2, 3});  // stride 0
  REQUIRE_FALSE(transposed.is_contiguous());
  REQUIRE_FALSE(narrowed.is_contiguous());
  const io::SafetensorsFile file = [&] {
    const std::string bytes = io::serialize_safetensors({{"t", transposed}, {"n", narrowed}, {"e", expanded}});
    return io::parse_safetensors(bytes.data(), bytes.size());
  }();
  CHECK(file.tensors.at("t").to_vector<int64_t>() == std::vector<int64_t>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  CHECK(file.tensors.at("t").shape() == Shape{4, 3});
  CHECK(file.tensors.at("n").to_vector<double>() == std::vector<double>{1, 2, 5, 6, 9, 10});
  CHECK(file.tensors.at("e").to_vector<float>() == std::vector<float>{1, 1, 1, 2, 2, 2});
}

TEST_CASE("the writer lays files out as the reference writer does", "[safetensors]") {
  TempDir dir;
  const std::map<std::string, Tensor> tensors{{"b", from_vector<float>({1, 2}, {2})},
                                              {"a", from_vector<int64_t>({7}, {1})}};
  io::save_safetensors(dir / "x.safetensors", tensors, {{"k", "v"}});
  const std::string bytes = read_bytes(dir / "x.safetensors");
  CHECK(bytes == io::serialize_safetensors(tensors, {{"k", "v"}}));

  // Compact JSON with sorted keys; data in name order; padded with spaces to a multiple of 8.
  std::string header = R"({"__metadata__":{"k":"v"},"a":{"data_offsets":[0,8],"dtype":"I64","shape":[1]},)"
                       R"("b":{"data_offsets":[8,16],"dtype":"F32","shape":[2]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  REQUIRE(header.size() % 8 == 0);
  std::string data(16, '\0');
  const int64_t seven = 7;
  const float one_two[2] = {1.0f, 2.0f};
  std::memcpy(data.data(), &seven, 8);
  std::memcpy(data.data() + 8, one_two, 8);
  CHECK(bytes == file_image(header, data));

  // No metadata: no "__metadata__" entry; no tensors: an empty object.
  CHECK(io::serialize_safetensors({}) == file_image("{}      ", ""));
  CHECK(io::parse_safetensors(io::serialize_safetensors({}).data(), 16).tensors.empty());
}

TEST_CASE("F16 is widened to float32 exactly and BF16 loads as bfloat16, subnormals, infinities and NaN included",
          "[safetensors]") {
  // Hand-encoded IEEE binary16 bit patterns and the float32 each denotes.
  const std::vector<std::pair<uint16_t, float>> f16 = {
      {0x0000, 0.0f},     {0x8000, -0.0f},    {0x3C00, 1.0f},      {0xC000, -2.0f},     {0x3555, 0.333251953125f},
      {0x7BFF, 65504.0f}, {0x0400, 0x1p-14f}, {0x0001, 0x1p-24f},  {0x8001, -0x1p-24f}, {0x03FF, 1023 * 0x1p-24f},
      {0x0200, 0x1p-15f}, {0x7C00, INFINITY}, {0xFC00, -INFINITY},
  };
  // bfloat16 = the top 16 bits of a binary32.
  const std::vector<std::pair<uint16_t, float>> bf16 = {
      {0x3F80, 1.0f},      {0xC049, -3.140625f}, {0x8000, -0.0f},
      {0x0001, 0x1p-133f}, {0x0080, 0x1p-126f},  {0x7F7F, 3.3895313892515355e38f},
      {0x7F80, INFINITY},  {0xFF80, -INFINITY},
  };
  std::vector<uint16_t> f16_bits, bf16_bits;
  for (auto& [bits, value] : f16) f16_bits.push_back(bits);
  for (auto& [bits, value] : bf16) bf16_bits.push_back(bits);
  f16_bits.insert(f16_bits.end(), {0x7E00, 0xFE01, 0x7C01});  // quiet NaN, negative NaN with payload, signalling NaN
  bf16_bits.insert(bf16_bits.end(), {0x7FC0, 0xFFC1});

  const size_t f16_bytes = 2 * f16_bits.size(), bf16_bytes = 2 * bf16_bits.size();
  const std::string header =
      R"({"h":{"dtype":"F16","shape":[)" + std::to_string(f16_bits.size()) + R"(],"data_offsets":[0,)" +
      std::to_string(f16_bytes) + R"(]},"b":{"dtype":"BF16","shape":[)" + std::to_string(bf16_bits.size()) +
      R"(],"data_offsets":[)" + std::to_string(f16_bytes) + "," + std::to_string(f16_bytes + bf16_bytes) + "]}}";
  const std::string image = file_image(header, u16_bytes(f16_bits) + u16_bytes(bf16_bits));
  const io::SafetensorsFile file = io::parse_safetensors(image.data(), image.size());

  const Tensor h = file.tensors.at("h"), b = file.tensors.at("b");
  REQUIRE(h.dtype() == kFloat32);
  REQUIRE(b.dtype() == kBFloat16);
  std::vector<uint16_t> stored;
  for (const bfloat16 v : b.to_vector<bfloat16>()) stored.push_back(v.bits);
  CHECK(stored == bf16_bits);  // not widened: the file's bits
  const std::vector<float> hv = h.to_vector<float>(), bv = b.to_vector<float>();
  for (size_t i = 0; i < f16.size(); ++i) {
    INFO("F16 0x" << std::hex << f16[i].first);
    CHECK(float_bits(hv[i]) == float_bits(f16[i].second));
  }
  for (size_t i = 0; i < bf16.size(); ++i) {
    INFO("BF16 0x" << std::hex << bf16[i].first);
    CHECK(float_bits(bv[i]) == float_bits(bf16[i].second));
  }
  // NaNs stay NaN with their sign; the payload moves to the top of the float32 mantissa.
  CHECK(float_bits(hv[f16.size()]) == 0x7FC00000u);
  CHECK(float_bits(hv[f16.size() + 1]) == 0xFFC02000u);
  CHECK(std::isnan(hv[f16.size() + 2]));
  CHECK(float_bits(bv[bf16.size()]) == 0x7FC00000u);
  CHECK(float_bits(bv[bf16.size() + 1]) == 0xFFC10000u);
}

TEST_CASE("bfloat16 tensors are written as BF16 and read back bit for bit", "[safetensors]") {
  const std::vector<bfloat16> values = {{0x3F80}, {0xC049}, {0x0001}, {0x7F80}, {0xFFC1}};
  const std::string image = io::serialize_safetensors({{"w", from_vector(values)}});
  CHECK(image.find(R"("dtype":"BF16")") != std::string::npos);
  CHECK(image.substr(image.size() - 10) == u16_bytes({0x3F80, 0xC049, 0x0001, 0x7F80, 0xFFC1}));
  const Tensor back = io::parse_safetensors(image.data(), image.size()).tensors.at("w");
  REQUIRE(back.dtype() == kBFloat16);
  std::vector<uint16_t> bits;
  for (const bfloat16 v : back.to_vector<bfloat16>()) bits.push_back(v.bits);
  CHECK(bits == std::vector<uint16_t>{0x3F80, 0xC049, 0x0001, 0x7F80, 0xFFC1});
}

TEST_CASE("every F16 value widens to the float32 that rounds back to it", "[safetensors]") {
  // Independent check over all 65536 patterns: a float32 built from the half's fields by ldexp.
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  const std::string header = R"({"all":{"dtype":"F16","shape":[65536],"data_offsets":[0,131072]}})";
  const std::string image = file_image(header, u16_bytes(all));
  const std::vector<float> got = io::parse_safetensors(image.data(), image.size()).tensors.at("all").to_vector<float>();
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const int exponent = (bits >> 10) & 0x1F;
    const int mantissa = bits & 0x3FF;
    const float sign = (bits & 0x8000) ? -1.0f : 1.0f;
    float expected;
    if (exponent == 0x1F)
      expected = mantissa ? NAN : sign * INFINITY;
    else if (exponent == 0)
      expected = sign * std::ldexp(static_cast<float>(mantissa), -24);
    else
      expected = sign * std::ldexp(static_cast<float>(1024 + mantissa), exponent - 25);
    INFO("F16 bits " << bits);
    if (std::isnan(expected))
      REQUIRE(std::isnan(got[bits]));
    else
      REQUIRE(float_bits(got[bits]) == float_bits(expected));
  }
}

TEST_CASE("tensors at offsets misaligned for their dtype load correctly", "[safetensors]") {
  // No header padding (length 75, odd) and a 3-element F16 first: the F32 and I64 data start at
  // addresses that are not multiples of 4 and 8.
  const std::string header =
      R"({"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"f":{"dtype":"F32","shape":[1],"data_offsets":[6,10]},)"
      R"("i":{"dtype":"I64","shape":[1],"data_offsets":[10,18]}})";
  std::string data = u16_bytes({0x3C00, 0x4000, 0x4200});
  const float f = -6.5f;
  const int64_t i = -123456789012345;
  data.append(reinterpret_cast<const char*>(&f), 4);
  data.append(reinterpret_cast<const char*>(&i), 8);
  const std::string image = file_image(header, data);
  const io::SafetensorsFile file = io::parse_safetensors(image.data(), image.size());
  CHECK(file.tensors.at("h").to_vector<float>() == std::vector<float>{1, 2, 3});
  CHECK(file.tensors.at("f").to_vector<float>() == std::vector<float>{-6.5f});
  CHECK(file.tensors.at("i").to_vector<int64_t>() == std::vector<int64_t>{i});
}

TEST_CASE("MappedSafetensors reads each tensor into any destination, converting on the way", "[safetensors]") {
  // Misaligned F32 and I64 (no header padding), BF16 read in place, F16 decoded: every path of read_into.
  const std::string header =
      R"({"h":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[8,16]},)"
      R"("f":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]},"d":{"dtype":"F64","shape":[1],"data_offsets":[32,40]}})";
  std::string data = u16_bytes({0x3C00, 0x4000, 0x4200, 0xC400}) + u16_bytes({0x3F80, 0x4000, 0x4040, 0xC080});
  const std::vector<float> f{0.5f, -1.5f, 3e-39f, 7.0f};
  const double d = 0.1;
  data.append(reinterpret_cast<const char*>(f.data()), 16);
  data.append(reinterpret_cast<const char*>(&d), 8);
  const TempDir dir;
  const std::string path = (dir.path / "m.safetensors").string();
  { std::ofstream(path, std::ios::binary) << file_image(header, data); }
  const io::MappedSafetensors file(path);
  REQUIRE(file.header().tensors.size() == 4);
  CHECK(file.loaded_dtype("h") == kFloat32);
  CHECK(file.loaded_dtype("b") == kBFloat16);

  for (const char* name : {"h", "b", "f"}) {
    INFO(name);
    const Tensor as_loaded = file.read(name);
    const std::vector<float> values = as_loaded.to_vector<float>();
    Tensor into_f32 = zeros({2, 2}), into_f64 = zeros({2, 2}, kFloat64), into_bf16 = zeros({2, 2}, kBFloat16);
    file.read_into(name, into_f32);
    file.read_into(name, into_f64);
    CHECK(into_f32.to_vector<float>() == values);
    CHECK(into_f64.to(kFloat32).to_vector<float>() == values);
    Tensor transposed = zeros({2, 2}).t();  // a destination with strides
    file.read_into(name, transposed);
    CHECK(transposed.contiguous().to_vector<float>() == values);
    file.read_into(name, into_bf16);
    CHECK(into_bf16.to_vector<float>() == as_loaded.to(kBFloat16).to_vector<float>());
  }
  CHECK(file.read("h").to_vector<float>() == std::vector<float>{1, 2, 3, -4});
  CHECK(file.read("b").to_vector<float>() == std::vector<float>{1, 2, 3, -4});
  CHECK(file.read("f").to_vector<float>() == f);
  Tensor narrowed = zeros({1});
  file.read_into("d", narrowed);
  CHECK(narrowed.to_vector<float>() == std::vector<float>{0.1f});
  CHECK_THROWS_WITH(file.read_into("f", zeros({4})), Catch::Contains("tensor 'f': has shape [2, 2], the tensor to read it into [4]"));
  CHECK_THROWS_WITH(file.read("nope"), Catch::Contains("m.safetensors: no tensor 'nope'"));
}

TEST_CASE("a file written by the Python reference layout loads with its values", "[safetensors]") {
  // good_mixed.safetensors (make_bad_files.py): F16 encoded by Python's struct, BF16, F64, I64, an
  // empty tensor, offsets not in name order, non-ASCII metadata.
  const io::SafetensorsFile file = io::read_safetensors(testing::test_data("safetensors/good_mixed.safetensors"));
  CHECK(file.metadata == std::map<std::string, std::string>{{"format", "pt"}, {"note", "h\xC3\xA9llo"}});
  REQUIRE(file.tensors.size() == 5);
  const std::vector<float> f16 = file.tensors.at("a.f16").to_vector<float>();
  CHECK(f16 == std::vector<float>{1.0f, -2.5f, 65504.0f, 0x1p-24f, 0x1p-14f, -0.0f, INFINITY});
  CHECK(std::signbit(f16[5]));
  CHECK(file.tensors.at("b.bf16").to_vector<float>() ==
        std::vector<float>{1.0f, -3.140625f, 0x1p-133f, 3.3895313892515355e38f, -INFINITY});
  CHECK(file.tensors.at("x.empty").shape() == Shape{0, 3});
  CHECK(file.tensors.at("y.f64").to_vector<double>() == std::vector<double>{0.1, -1e300, 5e-324});
  CHECK(file.tensors.at("z.i64").shape() == Shape{2, 2});
  CHECK(file.tensors.at("z.i64").to_vector<int64_t>() ==
        std::vector<int64_t>{std::numeric_limits<int64_t>::min(), -1, 0, std::numeric_limits<int64_t>::max()});

  const io::SafetensorsHeader header =
      io::read_safetensors_header(testing::test_data("safetensors/good_mixed.safetensors"));
  CHECK(header.metadata == file.metadata);
  CHECK(header.data_offset % 8 == 0);
  CHECK(header.tensors.at("z.i64").dtype == "I64");
  CHECK(header.tensors.at("z.i64").data_begin == 0);
  CHECK(header.tensors.at("a.f16").dtype == "F16");
  CHECK(header.tensors.at("a.f16").shape == Shape{7});
  CHECK(header.tensors.at("a.f16").data_end - header.tensors.at("a.f16").data_begin == 14);
}

TEST_CASE("the dsv3-tiny fixture written by Hugging Face transformers loads", "[safetensors]") {
  const std::string path = testing::test_data("dsv3-tiny/model.safetensors");
  const io::SafetensorsFile file = io::read_safetensors(path);
  CHECK(file.metadata == std::map<std::string, std::string>{{"format", "pt"}});
  CHECK(file.tensors.size() == 135);
  for (const auto& [name, t] : file.tensors) CHECK(t.dtype() == kFloat32);

  // Golden values decoded independently with Python's struct module; sums by math.fsum.
  const auto check = [&](const std::string& name, const Shape& shape, const std::vector<double>& first3, double last,
                         double sum) {
    INFO(name);
    const Tensor& t = file.tensors.at(name);
    REQUIRE(t.shape() == shape);
    const std::vector<float> v = t.to_vector<float>();
    for (size_t i = 0; i < 3; ++i) CHECK(v[i] == static_cast<float>(first3[i]));
    CHECK(v.back() == static_cast<float>(last));
    double total = 0;
    for (float x : v) total += x;
    CHECK(total == Approx(sum).epsilon(1e-12));
  };
  check("model.embed_tokens.weight", {256, 64}, {0.006626754067838192, 0.004699155688285828, 0.18365386128425598},
        -0.0006508047226816416, -31.089540100652812);
  check("model.layers.1.mlp.gate.e_score_correction_bias", {8},
        {-0.11304967850446701, -0.04475032538175583, -0.004428718239068985}, -0.00208173762075603, -0.2958456843625754);
  check("model.norm.weight", {64}, {1.0302361249923706, 1.0241169929504395, 0.9126185774803162}, 0.9064828157424927,
        63.426060140132904);

  const auto inputs = io::load_safetensors(testing::test_data("dsv3-tiny/inputs.safetensors"));
  const Tensor ids = inputs.at("input_ids");
  REQUIRE(ids.dtype() == kInt64);
  REQUIRE(ids.shape() == Shape{2, 33});
  const std::vector<int64_t> v = ids.to_vector<int64_t>();
  CHECK(std::vector<int64_t>(v.begin(), v.begin() + 5) == std::vector<int64_t>{195, 84, 241, 105, 133});
  int64_t total = 0;
  for (int64_t x : v) total += x;
  CHECK(total == 7445);

  // All-F32, so our writer's data order (by name) is the reference's (by dtype, then name): the
  // data sections must be byte-identical even though the header text differs.
  const std::string original = read_bytes(path);
  const std::string ours = io::serialize_safetensors(file.tensors, file.metadata);
  const io::SafetensorsHeader original_header = io::read_safetensors_header(path);
  const io::SafetensorsFile reparsed = io::parse_safetensors(ours.data(), ours.size());
  uint64_t our_header_length = 0;
  std::memcpy(&our_header_length, ours.data(), 8);
  CHECK(ours.substr(8 + our_header_length) == original.substr(original_header.data_offset));
  CHECK(reparsed.metadata == file.metadata);
  for (const auto& [name, t] : file.tensors) require_identical(reparsed.tensors.at(name), t);
}

TEST_CASE("every malformed file is refused with a message naming the file, the tensor and the problem",
          "[safetensors]") {
  struct Case {
    const char* file;
    const char* problem;
    bool names_tensor_a;  // the error is about tensor 'a'
  };
  const Case cases[] = {
      {"bad_empty", "file is 0 bytes, too short for the 8-byte header length", false},
      {"bad_too_short", "file is 5 bytes, too short", false},
      {"bad_header_too_large", "header length 100000001 exceeds the limit of 100000000 bytes", false},
      {"bad_header_past_end", "header length 1000 runs past the end of the file (16 bytes)", false},
      {"bad_invalid_utf8", "header: invalid JSON: not UTF-8 at line 1, column 4", false},
      {"bad_invalid_json", "header: invalid JSON at line 1", false},
      {"bad_not_object", "header must be a JSON object, got array [1,2]", false},
      {"bad_duplicate_tensor", "duplicate key 'a'", false},
      {"bad_duplicate_field", "duplicate key 'dtype' in 'a'", false},
      {"bad_metadata_not_object", "'__metadata__' must be an object of strings, got string \"format=pt\"", false},
      {"bad_metadata_not_strings", "'__metadata__' must map strings to strings; 'epoch' is number 3", false},
      {"bad_entry_not_object", "entry must be an object with dtype, shape and data_offsets, got array", true},
      {"bad_missing_dtype", "missing 'dtype'", true},
      {"bad_missing_shape", "missing 'shape'", true},
      {"bad_missing_data_offsets", "missing 'data_offsets'", true},
      {"bad_extra_key", "unexpected key 'layout'", true},
      {"bad_dtype_not_string", "'dtype' must be a string, got number 4", true},
      {"bad_unknown_dtype", "unknown dtype 'F128'", true},
      {"bad_unsupported_i32", "dtype I32 is not supported", true},
      {"bad_unsupported_bool", "dtype BOOL is not supported", true},
      {"bad_unsupported_u8", "dtype U8 is not supported", true},
      {"bad_shape_not_array", "'shape' must be an array of non-negative integers, got number 2", true},
      {"bad_shape_negative", "'shape' element 0 must be a non-negative integer, got number -2", true},
      {"bad_shape_float", "'shape' element 0 must be a non-negative integer, got number 2.0", true},
      {"bad_shape_bool", "'shape' element 0 must be a non-negative integer, got boolean true", true},
      {"bad_offsets_not_pair", "'data_offsets' must be [begin, end] with non-negative integers, got array [0,8,16]",
       true},
      {"bad_offsets_negative", "'data_offsets' must be [begin, end] with non-negative integers, got array [-8,0]",
       true},
      {"bad_offsets_reversed", "data_offsets [8, 0]: begin is after end", true},
      {"bad_offsets_past_end", "data_offsets [0, 16] run past the end of the data section (8 bytes)", true},
      {"bad_size_mismatch", "shape [3] of F32 needs 12 bytes but data_offsets [0, 8] span 8", true},
      {"bad_shape_overflow", "shape [4294967296, 4294967296, 0] has more elements than fit in 64 bits", true},
      {"bad_bytes_overflow", "shape [4611686018427387904] of F32 is more bytes than fit in 64 bits", true},
      {"bad_dimension_too_large", "'shape' element 0 = 9223372036854775808 is too large", true},
      {"bad_gap", "tensor 'b': gap: bytes [8, 12) of the data section before it belong to no tensor", false},
      {"bad_overlap", "tensor 'b': data_offsets [4, 12] overlap tensor 'a' (data_offsets [0, 8])", false},
      {"bad_trailing_bytes", "data section is 16 bytes but the tensors cover only 8 (trailing bytes)", false},
      {"bad_data_before_first_tensor", "gap: bytes [0, 8) of the data section before it belong to no tensor", true},
  };
  for (const Case& c : cases) {
    const std::string name = std::string(c.file) + ".safetensors";
    const std::string path = testing::test_data("safetensors/" + name);
    INFO(path);
    REQUIRE(fs::exists(path));
    const auto message_of = [](const auto& load) -> std::string {
      try {
        load();
      } catch (const Error& e) {
        return e.what();
      }
      return "(no error)";
    };
    const std::string from_file = message_of([&] { io::read_safetensors(path); });
    INFO(from_file);
    CHECK(from_file.find("safetensors: " + path + ": ") == 0);
    CHECK(from_file.find(c.problem) != std::string::npos);
    if (c.names_tensor_a) CHECK(from_file.find("tensor 'a': ") != std::string::npos);

    // The in-memory parser gives the same verdict, naming the source it was given.
    const std::string bytes = read_bytes(path);
    const std::string from_memory = message_of([&] { io::parse_safetensors(bytes.data(), bytes.size(), name); });
    CHECK(from_memory == "safetensors: " + name + from_file.substr(("safetensors: " + path).size()));

    // The header reader checks everything but whether latent can load the dtype.
    const std::string from_header = message_of([&] { io::read_safetensors_header(path); });
    if (std::string(c.problem).find("is not supported") != std::string::npos)
      CHECK(from_header == "(no error)");
    else
      CHECK(from_header == from_file);
  }
}

TEST_CASE("every truncation of a valid file, and any extra byte, is refused", "[safetensors]") {
  const std::string bytes = io::serialize_safetensors(sample_tensors(), {{"format", "pt"}});
  for (size_t n = 0; n < bytes.size(); ++n) {
    INFO("first " << n << " of " << bytes.size() << " bytes");
    CHECK_THROWS_AS(io::parse_safetensors(bytes.data(), n), Error);
  }
  const std::string longer = bytes + '\0';
  CHECK_THROWS_WITH(io::parse_safetensors(longer.data(), longer.size()), Catch::Contains("trailing bytes"));
}

TEST_CASE("a header nested a million levels deep is refused without exhausting the stack", "[safetensors]") {
  const std::string nested = std::string(1000000, '[') + std::string(1000000, ']');
  const std::string as_root = file_image(nested, "");
  CHECK_THROWS_WITH(io::parse_safetensors(as_root.data(), as_root.size()),
                    Catch::Contains("header must be a JSON object, got array [[[[") && Catch::EndsWith("..."));
  const std::string as_dtype = file_image(R"({"a":{"dtype":)" + nested + R"(,"shape":[],"data_offsets":[0,0]}})", "");
  CHECK_THROWS_WITH(io::parse_safetensors(as_dtype.data(), as_dtype.size()),
                    Catch::Contains("tensor 'a': 'dtype' must be a string, got array [[[["));
}

TEST_CASE("missing files and directories are refused with the path", "[safetensors]") {
  TempDir dir;
  CHECK_THROWS_WITH(io::load_safetensors(dir / "nope.safetensors"),
                    Catch::Contains(dir / "nope.safetensors") && Catch::Contains("cannot open"));
  CHECK_THROWS_WITH(io::read_safetensors(dir.path.string()), Catch::Contains("not a regular file"));
  CHECK_THROWS_WITH(io::read_safetensors_header(dir / "nope.safetensors"), Catch::Contains("cannot open"));
}

TEST_CASE("save_safetensors refuses what it cannot write, before touching the file", "[safetensors]") {
  TempDir dir;
  const std::string path = dir / "m.safetensors";
  io::save_safetensors(path, {{"w", ones({2})}});
  const std::string before = read_bytes(path);

  CHECK_THROWS_WITH(io::save_safetensors(path, {{"w", ones({3})}, {"missing", Tensor()}}),
                    Catch::Contains("save_safetensors: " + path + ": tensor 'missing' is undefined"));
  CHECK_THROWS_WITH(io::save_safetensors(path, {{"__metadata__", ones({1})}}),
                    Catch::Contains("'__metadata__' is reserved"));
  CHECK_THROWS_WITH(io::save_safetensors(path, {{"bad\xFFname", ones({1})}}), Catch::Contains("is not valid UTF-8"));
  CHECK_THROWS_WITH(io::save_safetensors(path, {{"w", ones({1})}}, {{"k", "\xC0\xAF"}}),
                    Catch::Contains("metadata value of 'k' is not valid UTF-8"));

  CHECK(read_bytes(path) == before);
  CHECK(directory_listing(dir.path) == std::vector<std::string>{"m.safetensors"});
}

TEST_CASE("a write that fails halfway leaves the old file and no temporary", "[safetensors]") {
  TempDir dir;
  const std::string path = dir / "m.safetensors";
  io::save_safetensors(path, {{"w", ones({2})}});
  const std::string before = read_bytes(path);

  SECTION("the file system refuses the data (file size limit, as on a full disk)") {
    // RLIMIT_FSIZE makes write(2) fail with EFBIG past 4096 bytes; SIGXFSZ would kill the process.
    struct rlimit saved {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    struct sigaction ignore {
    }, previous{};
    ignore.sa_handler = SIG_IGN;
    REQUIRE(::sigaction(SIGXFSZ, &ignore, &previous) == 0);
    struct rlimit small = saved;
    small.rlim_cur = 4096;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    std::string message;
    try {
      io::save_safetensors(path, {{"big", zeros({64, 1024})}});
    } catch (const Error& e) {
      message = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &saved);
    ::sigaction(SIGXFSZ, &previous, nullptr);
    CHECK(message.find(path + ": write failed") != std::string::npos);
  }
  SECTION("the target cannot be replaced (it is a directory)") {
    const std::string target = dir / "taken";
    fs::create_directory(target);
    CHECK_THROWS_WITH(io::save_safetensors(target, {{"w", ones({2})}}),
                      Catch::Contains(target + ": cannot replace it"));
    CHECK(fs::is_directory(target));
    fs::remove(target);
  }
  SECTION("the directory does not exist") {
    CHECK_THROWS_WITH(io::save_safetensors(dir / "absent/m.safetensors", {{"w", ones({2})}}),
                      Catch::Contains("cannot create temporary file"));
  }
  SECTION("the writer throws after writing part of the file") {
    CHECK_THROWS_WITH(io::write_file_atomic(path,
                                            [&](std::FILE* out) {
                                              io::write_all(out, "partial", 7, path);
                                              throw Error("writer gave up");
                                            }),
                      "writer gave up");
  }
  CHECK(read_bytes(path) == before);
  CHECK(directory_listing(dir.path) == std::vector<std::string>{"m.safetensors"});
}

TEST_CASE("write_file_atomic replaces the contents", "[safetensors]") {
  TempDir dir;
  const std::string path = dir / "a.txt";
  io::write_file_atomic(path, std::string_view("first version, longer\n"));
  io::write_file_atomic(path, std::string_view("second\n"));
  CHECK(read_bytes(path) == "second\n");
  io::write_file_atomic(path, std::string_view());
  CHECK(read_bytes(path).empty());
  CHECK(directory_listing(dir.path) == std::vector<std::string>{"a.txt"});
}

// Headers written by hand to claim what the file does not hold. Each is refused by validation; a
// loader that trusted the declared sizes would try to allocate terabytes first.
TEST_CASE("hostile headers are refused before anything is allocated for them", "[safetensors][hostile]") {
  const auto file_of = [](const std::string& header, size_t data_bytes) {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char(uint64_t(header.size()) >> (8 * i));
    return bytes + header + std::string(data_bytes, '\x7f');
  };
  const auto refused = [](const std::string& bytes, const std::string& problem) {
    INFO(bytes.substr(8));
    CHECK_THROWS_WITH(io::parse_safetensors(bytes.data(), bytes.size(), "hostile"),
                      Catch::StartsWith("safetensors: hostile: ") && Catch::Contains(problem));
  };
  // A terabyte tensor whose offsets agree with its shape, in a 16-byte data section.
  refused(file_of(R"({"a":{"dtype":"F32","shape":[262144,1048576],"data_offsets":[0,1099511627776]}})", 16),
          "data_offsets [0, 1099511627776] run past the end of the data section (16 bytes)");
  // The largest header length there is: refused by the limit, with no 64-bit wrap-around in the
  // "runs past the end" comparison.
  std::string longest(8, '\xff');
  refused(longest + "{}", "header length 18446744073709551615 exceeds the limit");
  refused(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0.0,8.0]}})", 8),
          "'data_offsets' must be [begin, end] with non-negative integers, got array [0.0,8.0]");
  refused(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,1e300]}})", 8),
          "'data_offsets' must be [begin, end] with non-negative integers");
  refused(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[NaN,8]}})", 8), "invalid JSON");
  refused(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
          "tensor 'b': data_offsets [0, 8] overlap tensor 'a' (data_offsets [0, 8])");
  // Found by fuzzing: empty, yet its dimensions multiply past int64 (latent's sizes and strides),
  // left to right or right to left.
  refused(file_of(R"({"a":{"dtype":"F32","shape":[4294947296,4294967296,0],"data_offsets":[0,0]}})", 0),
          "shape [4294947296, 4294967296, 0] has more elements than fit in 64 bits");
  refused(file_of(R"({"a":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}})", 0),
          "shape [0, 4611686018427387904, 4] has more elements than fit in 64 bits");
  // Zero elements need no bytes, however large the other dimensions.
  const std::string empty = file_of(R"({"a":{"dtype":"F64","shape":[0,9223372036854775807],"data_offsets":[0,0]}})", 0);
  CHECK(io::parse_safetensors(empty.data(), empty.size()).tensors.at("a").shape() == Shape{0, INT64_MAX});
}
