// GGUF v3, llama.cpp's model file: typed metadata (scalars, strings, arrays), tensor infos and
// aligned tensor data (F32, F16, BF16), written atomically and read back with strict validation.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "../core/tensor.hpp"

namespace latent::io {

// The value types of the format, numbered as in the file.
enum class GgufValueType : uint32_t {
  UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
  String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
};
const char* gguf_type_name(GgufValueType type);

// One metadata value. Integers keep their file type (llama.cpp checks it: a key it reads as uint32
// must be stored as uint32); arrays hold scalars or strings of one element type (llama.cpp reads no
// nested arrays, so neither writer nor reader accepts them).
class GgufValue {
 public:
  static GgufValue uint8(uint8_t v);
  static GgufValue int8(int8_t v);
  static GgufValue uint16(uint16_t v);
  static GgufValue int16(int16_t v);
  static GgufValue uint32(uint32_t v);
  static GgufValue int32(int32_t v);
  static GgufValue uint64(uint64_t v);
  static GgufValue int64(int64_t v);
  static GgufValue float32(float v);
  static GgufValue float64(double v);
  static GgufValue boolean(bool v);
  static GgufValue string(std::string v);
  // Throws latent::Error when an element's type differs from element_type or is itself an array.
  static GgufValue array(GgufValueType element_type, std::vector<GgufValue> elements);
  static GgufValue strings(const std::vector<std::string>& values);
  static GgufValue int32s(const std::vector<int32_t>& values);

  GgufValueType type() const { return type_; }
  GgufValueType element_type() const { return element_type_; }  // arrays only
  // Accessors throw latent::Error naming both types on a mismatch.
  uint64_t as_uint() const;   // unsigned integer types
  int64_t as_int() const;     // signed integer types
  double as_float() const;    // Float32, Float64
  bool as_bool() const;
  const std::string& as_string() const;
  const std::vector<GgufValue>& as_array() const;

  bool operator==(const GgufValue& other) const = default;

 private:
  GgufValue(GgufValueType type, std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<GgufValue>> v)
      : type_(type), value_(std::move(v)) {}
  GgufValueType type_ = GgufValueType::UInt32, element_type_ = GgufValueType::UInt32;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<GgufValue>> value_;
};

// ggml's element types for the data latent writes, numbered as in the file.
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, BF16 = 30 };
const char* ggml_type_name(GgmlType type);

// A tensor as PyTorch would hold it: `values` row-major with shape [d0, ..., dn-1]. The file stores
// ggml's dims, innermost first ([dn-1, ..., d0]), and the values converted to `type` (F16 and BF16
// round to nearest even). Read back, `values` is float32 (F16/BF16 widened exactly).
struct GgufTensor {
  std::string name;
  Tensor values;
  GgmlType type = GgmlType::F32;
};

struct GgufFile {
  std::vector<std::pair<std::string, GgufValue>> metadata;  // in file order
  std::vector<GgufTensor> tensors;                          // in file order

  const GgufValue* find(const std::string& key) const;  // null when absent
  const GgufTensor* find_tensor(const std::string& name) const;
  // general.alignment when present (a power-of-two uint32), else 32.
  uint64_t alignment() const;
};

inline constexpr uint32_t kGgufVersion = 3;
inline constexpr uint64_t kGgufDefaultAlignment = 32;
inline constexpr size_t kGgufMaxNameBytes = 63;  // ggml keeps names in char[64]
inline constexpr size_t kGgufMaxDims = 4;

// Writes `file` as GGUF v3: header, metadata, tensor infos, then each tensor's data at an offset
// that is a multiple of alignment(). The file is replaced atomically (write_file_atomic). Refused
// before anything is written, with latent::Error naming the key or tensor: duplicate or empty keys
// and names, names over 63 bytes, more than 4 dims, undefined or integer tensors, a general.alignment
// that is not a power-of-two uint32, and F16 values beyond its range (65504).
void write_gguf(const std::string& path, const GgufFile& file);
std::string serialize_gguf(const GgufFile& file);  // the bytes write_gguf writes

// Parses a whole GGUF v3 file whose tensors are F32, F16 or BF16. Every malformation (bad magic or
// version, truncation, unknown value or tensor types, nested arrays, duplicate keys or names,
// misaligned or out-of-range or overlapping data) throws latent::Error naming the file and the item.
GgufFile read_gguf(const std::string& path);
GgufFile parse_gguf(const void* data, size_t size, const std::string& source = "<memory>");

// IEEE conversions the writer uses, round to nearest even (NaN stays NaN).
uint16_t float_to_bfloat16_bits(float value);
uint16_t float_to_half_bits(float value);
float bfloat16_bits_to_float(uint16_t bits);
float half_bits_to_float(uint16_t bits);

}  // namespace latent::io
