// GGUF v3 writing (metadata, tensor infos, aligned F32/F16/BF16 data) and strict parsing.
#include "gguf.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <set>

#include "atomic_file.hpp"

namespace latent::io {

static_assert(std::endian::native == std::endian::little, "GGUF is little-endian; values are copied as they are");

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32

bool is_integer(GgufValueType t) {
  switch (t) {
    case GgufValueType::UInt8: case GgufValueType::Int8: case GgufValueType::UInt16: case GgufValueType::Int16:
    case GgufValueType::UInt32: case GgufValueType::Int32: case GgufValueType::UInt64: case GgufValueType::Int64:
      return true;
    default:
      return false;
  }
}
bool is_signed(GgufValueType t) {
  return t == GgufValueType::Int8 || t == GgufValueType::Int16 || t == GgufValueType::Int32 ||
         t == GgufValueType::Int64;
}
size_t scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::UInt8: case GgufValueType::Int8: case GgufValueType::Bool: return 1;
    case GgufValueType::UInt16: case GgufValueType::Int16: return 2;
    case GgufValueType::UInt32: case GgufValueType::Int32: case GgufValueType::Float32: return 4;
    case GgufValueType::UInt64: case GgufValueType::Int64: case GgufValueType::Float64: return 8;
    default: return 0;  // strings and arrays have no fixed size
  }
}
bool is_known_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::Float64); }

size_t ggml_type_size(GgmlType t) { return t == GgmlType::F32 ? 4 : 2; }
bool is_known_ggml_type(uint32_t t) { return t == 0 || t == 1 || t == 30; }

uint64_t align_up(uint64_t n, uint64_t alignment) { return (n + alignment - 1) / alignment * alignment; }

void check_alignment_value(const GgufValue& v, const std::string& where) {
  if (v.type() != GgufValueType::UInt32)
    fail("{}: general.alignment must be uint32, got {}", where, gguf_type_name(v.type()));
  const uint64_t a = v.as_uint();
  if (a == 0 || !std::has_single_bit(a))
    fail("{}: general.alignment {} is not a power of two", where, a);
}

// --- writing -----------------------------------------------------------------------------------

using Sink = std::function<void(const void*, size_t)>;

template <class T> void put(const Sink& sink, T v) { sink(&v, sizeof v); }
void put_string(const Sink& sink, const std::string& s) {
  put<uint64_t>(sink, s.size());
  sink(s.data(), s.size());
}

void put_scalar(const Sink& sink, const GgufValue& v) {
  switch (v.type()) {
    case GgufValueType::UInt8: return put<uint8_t>(sink, static_cast<uint8_t>(v.as_uint()));
    case GgufValueType::Int8: return put<int8_t>(sink, static_cast<int8_t>(v.as_int()));
    case GgufValueType::UInt16: return put<uint16_t>(sink, static_cast<uint16_t>(v.as_uint()));
    case GgufValueType::Int16: return put<int16_t>(sink, static_cast<int16_t>(v.as_int()));
    case GgufValueType::UInt32: return put<uint32_t>(sink, static_cast<uint32_t>(v.as_uint()));
    case GgufValueType::Int32: return put<int32_t>(sink, static_cast<int32_t>(v.as_int()));
    case GgufValueType::UInt64: return put<uint64_t>(sink, v.as_uint());
    case GgufValueType::Int64: return put<int64_t>(sink, v.as_int());
    case GgufValueType::Float32: return put<float>(sink, static_cast<float>(v.as_float()));
    case GgufValueType::Float64: return put<double>(sink, v.as_float());
    case GgufValueType::Bool: return put<uint8_t>(sink, v.as_bool() ? 1 : 0);
    case GgufValueType::String: return put_string(sink, v.as_string());
    case GgufValueType::Array: break;
  }
  fail("gguf: internal error: put_scalar on an array");
}

void put_value(const Sink& sink, const GgufValue& v) {
  put<uint32_t>(sink, static_cast<uint32_t>(v.type()));
  if (v.type() != GgufValueType::Array) return put_scalar(sink, v);
  put<uint32_t>(sink, static_cast<uint32_t>(v.element_type()));
  put<uint64_t>(sink, v.as_array().size());
  for (const GgufValue& e : v.as_array()) put_scalar(sink, e);
}

std::vector<uint64_t> ggml_dims(const Shape& shape) { return {shape.rbegin(), shape.rend()}; }

void check_for_writing(const GgufFile& file, const std::string& where) {
  std::set<std::string> keys, names;
  for (const auto& [key, value] : file.metadata) {
    if (key.empty()) fail("{}: empty metadata key", where);
    if (!keys.insert(key).second) fail("{}: duplicate metadata key '{}'", where, key);
    if (key == "general.alignment") check_alignment_value(value, where);
  }
  for (const GgufTensor& t : file.tensors) {
    if (t.name.empty()) fail("{}: empty tensor name", where);
    if (t.name.size() > kGgufMaxNameBytes)
      fail("{}: tensor name '{}' is {} bytes, GGUF allows {}", where, t.name, t.name.size(), kGgufMaxNameBytes);
    if (!names.insert(t.name).second) fail("{}: duplicate tensor '{}'", where, t.name);
    if (!t.values.defined()) fail("{}: tensor '{}' is undefined", where, t.name);
    if (!is_floating(t.values.dtype()))
      fail("{}: tensor '{}' is {}, GGUF export takes floating-point tensors", where, t.name,
                       dtype_name(t.values.dtype()));
    if (t.values.dim() < 1 || static_cast<size_t>(t.values.dim()) > kGgufMaxDims)
      fail("{}: tensor '{}' has {} dims, GGUF takes 1 to {}", where, t.name, t.values.dim(), kGgufMaxDims);
  }
}

// The tensor's values in the file's element type; F16 refuses what it cannot hold.
std::vector<unsigned char> encode_tensor(const GgufTensor& t, const std::string& where) {
  const std::vector<float> values = t.values.contiguous().to(kFloat32).to_vector<float>();
  std::vector<unsigned char> bytes(values.size() * ggml_type_size(t.type));
  for (size_t i = 0; i < values.size(); ++i) {
    switch (t.type) {
      case GgmlType::F32:
        std::memcpy(&bytes[4 * i], &values[i], 4);
        break;
      case GgmlType::BF16: {
        const uint16_t h = float_to_bfloat16_bits(values[i]);
        std::memcpy(&bytes[2 * i], &h, 2);
        break;
      }
      case GgmlType::F16: {
        const uint16_t h = float_to_half_bits(values[i]);
        if (std::isfinite(values[i]) && !std::isfinite(half_bits_to_float(h)))
          fail("{}: tensor '{}' element {} = {} is beyond float16's range (65504)", where, t.name, i, values[i]);
        std::memcpy(&bytes[2 * i], &h, 2);
        break;
      }
    }
  }
  return bytes;
}

void write_to(const Sink& sink, const GgufFile& file, const std::string& where) {
  check_for_writing(file, where);
  // Encode first: an F16 range error must come before any byte is produced.
  std::vector<std::vector<unsigned char>> data;
  data.reserve(file.tensors.size());
  for (const GgufTensor& t : file.tensors) data.push_back(encode_tensor(t, where));

  const uint64_t alignment = file.alignment();
  uint64_t position = 0;
  const Sink counted = [&](const void* p, size_t n) {
    sink(p, n);
    position += n;
  };
  put<uint32_t>(counted, kMagic);
  put<uint32_t>(counted, kGgufVersion);
  put<uint64_t>(counted, file.tensors.size());
  put<uint64_t>(counted, file.metadata.size());
  for (const auto& [key, value] : file.metadata) {
    put_string(counted, key);
    put_value(counted, value);
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    const GgufTensor& t = file.tensors[i];
    put_string(counted, t.name);
    const std::vector<uint64_t> dims = ggml_dims(t.values.shape());
    put<uint32_t>(counted, static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) put<uint64_t>(counted, d);
    put<uint32_t>(counted, static_cast<uint32_t>(t.type));
    put<uint64_t>(counted, offset);
    offset = align_up(offset + data[i].size(), alignment);
  }
  const std::vector<unsigned char> zeros(alignment, 0);
  counted(zeros.data(), align_up(position, alignment) - position);
  for (const std::vector<unsigned char>& bytes : data) {
    counted(bytes.data(), bytes.size());
    counted(zeros.data(), align_up(bytes.size(), alignment) - bytes.size());
  }
}

// --- reading -----------------------------------------------------------------------------------

class Reader {
 public:
  Reader(const unsigned char* data, size_t size, const std::string& source) : data_(data), size_(size), source_(source) {}

  [[noreturn]] void error(const std::string& what) const {
    fail("{}: malformed GGUF at byte {}: {}", source_, position_, what);
  }
  size_t position() const { return position_; }
  size_t remaining() const { return size_ - position_; }

  template <class T> T get(const char* what) {
    if (remaining() < sizeof(T)) error(fmt::format("file ends inside {}", what));
    T v;
    std::memcpy(&v, data_ + position_, sizeof v);
    position_ += sizeof v;
    return v;
  }
  std::string get_string(const char* what) {
    const uint64_t n = get<uint64_t>(what);
    if (n > remaining()) error(fmt::format("{} of {} bytes runs past the end of the file", what, n));
    std::string s(reinterpret_cast<const char*>(data_ + position_), n);
    position_ += n;
    return s;
  }

  GgufValue get_scalar(GgufValueType t, const std::string& key) {
    switch (t) {
      case GgufValueType::UInt8: return GgufValue::uint8(get<uint8_t>("a uint8"));
      case GgufValueType::Int8: return GgufValue::int8(get<int8_t>("an int8"));
      case GgufValueType::UInt16: return GgufValue::uint16(get<uint16_t>("a uint16"));
      case GgufValueType::Int16: return GgufValue::int16(get<int16_t>("an int16"));
      case GgufValueType::UInt32: return GgufValue::uint32(get<uint32_t>("a uint32"));
      case GgufValueType::Int32: return GgufValue::int32(get<int32_t>("an int32"));
      case GgufValueType::UInt64: return GgufValue::uint64(get<uint64_t>("a uint64"));
      case GgufValueType::Int64: return GgufValue::int64(get<int64_t>("an int64"));
      case GgufValueType::Float32: return GgufValue::float32(get<float>("a float32"));
      case GgufValueType::Float64: return GgufValue::float64(get<double>("a float64"));
      case GgufValueType::Bool: {
        const uint8_t b = get<uint8_t>("a bool");
        if (b > 1) error(fmt::format("key '{}': bool byte {} is neither 0 nor 1", key, b));
        return GgufValue::boolean(b == 1);
      }
      case GgufValueType::String: return GgufValue::string(get_string("a string"));
      case GgufValueType::Array: break;
    }
    error(fmt::format("key '{}': nested arrays are not supported", key));
  }

  GgufValue get_value(const std::string& key) {
    const uint32_t t = get<uint32_t>("a value type");
    if (!is_known_type(t)) error(fmt::format("key '{}': unknown value type {}", key, t));
    if (t != static_cast<uint32_t>(GgufValueType::Array)) return get_scalar(static_cast<GgufValueType>(t), key);
    const uint32_t element = get<uint32_t>("an array element type");
    if (!is_known_type(element)) error(fmt::format("key '{}': unknown array element type {}", key, element));
    const auto element_type = static_cast<GgufValueType>(element);
    if (element_type == GgufValueType::Array) error(fmt::format("key '{}': nested arrays are not supported", key));
    const uint64_t n = get<uint64_t>("an array length");
    // Every element takes at least one byte (a string at least eight): a count beyond that is a lie.
    const uint64_t min_size = element_type == GgufValueType::String ? 8 : scalar_size(element_type);
    if (n > remaining() / min_size) error(fmt::format("key '{}': array of {} elements runs past the end of the file", key, n));
    std::vector<GgufValue> elements;
    elements.reserve(n);
    for (uint64_t i = 0; i < n; ++i) elements.push_back(get_scalar(element_type, key));
    return GgufValue::array(element_type, std::move(elements));
  }

 private:
  const unsigned char* data_;
  size_t size_;
  const std::string& source_;
  size_t position_ = 0;
};

struct TensorInfo {
  std::string name;
  Shape shape;
  GgmlType type;
  uint64_t offset, nbytes;
};

Tensor decode_tensor(const TensorInfo& info, const unsigned char* src) {
  Tensor t = Tensor::empty(info.shape, kFloat32);
  float* dst = t.data<float>();
  const int64_t n = t.numel();
  if (info.type == GgmlType::F32) {
    if (n > 0) std::memcpy(dst, src, info.nbytes);
    return t;
  }
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    dst[i] = info.type == GgmlType::BF16 ? bfloat16_bits_to_float(h) : half_bits_to_float(h);
  }
  return t;
}

}  // namespace

// --- GgufValue ---------------------------------------------------------------------------------

const char* gguf_type_name(GgufValueType type) {
  switch (type) {
    case GgufValueType::UInt8: return "uint8";
    case GgufValueType::Int8: return "int8";
    case GgufValueType::UInt16: return "uint16";
    case GgufValueType::Int16: return "int16";
    case GgufValueType::UInt32: return "uint32";
    case GgufValueType::Int32: return "int32";
    case GgufValueType::Float32: return "float32";
    case GgufValueType::Bool: return "bool";
    case GgufValueType::String: return "string";
    case GgufValueType::Array: return "array";
    case GgufValueType::UInt64: return "uint64";
    case GgufValueType::Int64: return "int64";
    case GgufValueType::Float64: return "float64";
  }
  return "?";
}

const char* ggml_type_name(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return "F32";
    case GgmlType::F16: return "F16";
    case GgmlType::BF16: return "BF16";
  }
  return "?";
}

GgufValue GgufValue::uint8(uint8_t v) { return {GgufValueType::UInt8, uint64_t{v}}; }
GgufValue GgufValue::int8(int8_t v) { return {GgufValueType::Int8, int64_t{v}}; }
GgufValue GgufValue::uint16(uint16_t v) { return {GgufValueType::UInt16, uint64_t{v}}; }
GgufValue GgufValue::int16(int16_t v) { return {GgufValueType::Int16, int64_t{v}}; }
GgufValue GgufValue::uint32(uint32_t v) { return {GgufValueType::UInt32, uint64_t{v}}; }
GgufValue GgufValue::int32(int32_t v) { return {GgufValueType::Int32, int64_t{v}}; }
GgufValue GgufValue::uint64(uint64_t v) { return {GgufValueType::UInt64, v}; }
GgufValue GgufValue::int64(int64_t v) { return {GgufValueType::Int64, v}; }
GgufValue GgufValue::float32(float v) { return {GgufValueType::Float32, double{v}}; }
GgufValue GgufValue::float64(double v) { return {GgufValueType::Float64, v}; }
GgufValue GgufValue::boolean(bool v) { return {GgufValueType::Bool, v}; }
GgufValue GgufValue::string(std::string v) { return {GgufValueType::String, std::move(v)}; }

GgufValue GgufValue::array(GgufValueType element_type, std::vector<GgufValue> elements) {
  if (element_type == GgufValueType::Array) fail("gguf: arrays of arrays are not supported");
  for (size_t i = 0; i < elements.size(); ++i)
    if (elements[i].type() != element_type)
      fail("gguf: array of {} has a {} at index {}", gguf_type_name(element_type),
                       gguf_type_name(elements[i].type()), i);
  GgufValue v(GgufValueType::Array, std::move(elements));
  v.element_type_ = element_type;
  return v;
}

GgufValue GgufValue::strings(const std::vector<std::string>& values) {
  std::vector<GgufValue> elements;
  elements.reserve(values.size());
  for (const std::string& s : values) elements.push_back(string(s));
  return array(GgufValueType::String, std::move(elements));
}

GgufValue GgufValue::int32s(const std::vector<int32_t>& values) {
  std::vector<GgufValue> elements;
  elements.reserve(values.size());
  for (int32_t v : values) elements.push_back(int32(v));
  return array(GgufValueType::Int32, std::move(elements));
}

namespace {
[[noreturn]] void wrong_type(GgufValueType have, const char* want) {
  fail("gguf: value is {}, read as {}", gguf_type_name(have), want);
}
}  // namespace

uint64_t GgufValue::as_uint() const {
  if (!is_integer(type_) || is_signed(type_)) wrong_type(type_, "an unsigned integer");
  return std::get<uint64_t>(value_);
}
int64_t GgufValue::as_int() const {
  if (!is_signed(type_)) wrong_type(type_, "a signed integer");
  return std::get<int64_t>(value_);
}
double GgufValue::as_float() const {
  if (type_ != GgufValueType::Float32 && type_ != GgufValueType::Float64) wrong_type(type_, "a float");
  return std::get<double>(value_);
}
bool GgufValue::as_bool() const {
  if (type_ != GgufValueType::Bool) wrong_type(type_, "a bool");
  return std::get<bool>(value_);
}
const std::string& GgufValue::as_string() const {
  if (type_ != GgufValueType::String) wrong_type(type_, "a string");
  return std::get<std::string>(value_);
}
const std::vector<GgufValue>& GgufValue::as_array() const {
  if (type_ != GgufValueType::Array) wrong_type(type_, "an array");
  return std::get<std::vector<GgufValue>>(value_);
}

// --- GgufFile ----------------------------------------------------------------------------------

const GgufValue* GgufFile::find(const std::string& key) const {
  for (const auto& [k, v] : metadata)
    if (k == key) return &v;
  return nullptr;
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  for (const GgufTensor& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

uint64_t GgufFile::alignment() const {
  const GgufValue* v = find("general.alignment");
  if (v == nullptr) return kGgufDefaultAlignment;
  check_alignment_value(*v, "gguf");
  return v->as_uint();
}

// --- entry points ------------------------------------------------------------------------------

void write_gguf(const std::string& path, const GgufFile& file) {
  check_for_writing(file, path);  // refuse before the temporary exists
  write_file_atomic(path, [&](std::FILE* out) {
    write_to([&](const void* p, size_t n) { write_all(out, p, n, path); }, file, path);
  });
}

std::string serialize_gguf(const GgufFile& file) {
  std::string bytes;
  write_to([&](const void* p, size_t n) { bytes.append(static_cast<const char*>(p), n); }, file, "gguf");
  return bytes;
}

GgufFile parse_gguf(const void* data, size_t size, const std::string& source) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  Reader r(bytes, size, source);
  if (r.get<uint32_t>("the magic") != kMagic) r.error("not a GGUF file (magic is not \"GGUF\")");
  const uint32_t version = r.get<uint32_t>("the version");
  if (version != kGgufVersion) r.error(fmt::format("version {} is not supported (expected {})", version, kGgufVersion));
  const uint64_t n_tensors = r.get<uint64_t>("the tensor count");
  const uint64_t n_kv = r.get<uint64_t>("the metadata count");
  // A key-value pair takes at least 13 bytes, a tensor info at least 28: larger counts cannot fit.
  if (n_kv > r.remaining() / 13) r.error(fmt::format("metadata count {} exceeds what the file can hold", n_kv));
  if (n_tensors > r.remaining() / 28) r.error(fmt::format("tensor count {} exceeds what the file can hold", n_tensors));

  GgufFile file;
  std::set<std::string> keys;
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.get_string("a metadata key");
    if (!keys.insert(key).second) r.error(fmt::format("duplicate metadata key '{}'", key));
    GgufValue value = r.get_value(key);
    if (key == "general.alignment") check_alignment_value(value, source);
    file.metadata.emplace_back(std::move(key), std::move(value));
  }
  const uint64_t alignment = file.alignment();

  std::vector<TensorInfo> infos;
  std::set<std::string> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo info;
    info.name = r.get_string("a tensor name");
    if (info.name.size() > kGgufMaxNameBytes)
      r.error(fmt::format("tensor name '{}' is longer than {} bytes", info.name, kGgufMaxNameBytes));
    if (!names.insert(info.name).second) r.error(fmt::format("duplicate tensor '{}'", info.name));
    const uint32_t n_dims = r.get<uint32_t>("a tensor's dim count");
    if (n_dims < 1 || n_dims > kGgufMaxDims)
      r.error(fmt::format("tensor '{}' has {} dims (1 to {} allowed)", info.name, n_dims, kGgufMaxDims));
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t extent = r.get<uint64_t>("a tensor dim");
      if (extent > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (extent != 0 && numel > std::numeric_limits<int64_t>::max() / 8 / extent))
        r.error(fmt::format("tensor '{}' dim {} = {} overflows the element count", info.name, d, extent));
      numel *= extent;
      info.shape.insert(info.shape.begin(), static_cast<int64_t>(extent));
    }
    const uint32_t type = r.get<uint32_t>("a tensor type");
    if (!is_known_ggml_type(type))
      r.error(fmt::format("tensor '{}' has ggml type {}, this reader takes F32 (0), F16 (1) and BF16 (30)", info.name, type));
    info.type = static_cast<GgmlType>(type);
    info.offset = r.get<uint64_t>("a tensor offset");
    if (info.offset % alignment != 0)
      r.error(fmt::format("tensor '{}' offset {} is not a multiple of the alignment {}", info.name, info.offset, alignment));
    info.nbytes = numel * ggml_type_size(info.type);
    infos.push_back(std::move(info));
  }

  const uint64_t data_start = align_up(r.position(), alignment);
  if (data_start > size) r.error(fmt::format("data section starts at {}, past the end of the file ({} bytes)", data_start, size));
  const uint64_t data_size = size - data_start;
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& info : infos) {
    if (info.offset > data_size || info.nbytes > data_size - info.offset)
      fail("{}: malformed GGUF: tensor '{}' data [{}, {}) runs past the data section ({} bytes)", source,
                       info.name, info.offset, info.offset + info.nbytes, data_size);
    by_offset.push_back(&info);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i - 1]->offset + by_offset[i - 1]->nbytes > by_offset[i]->offset)
      fail("{}: malformed GGUF: tensors '{}' and '{}' overlap", source, by_offset[i - 1]->name,
                       by_offset[i]->name);

  for (const TensorInfo& info : infos)
    file.tensors.push_back({info.name, decode_tensor(info, bytes + data_start + info.offset), info.type});
  return file;
}

GgufFile read_gguf(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path, std::strerror(errno));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail("{}: read failed", path);
  return parse_gguf(bytes.data(), bytes.size(), path);
}

// --- 16-bit floats -----------------------------------------------------------------------------

uint16_t float_to_bfloat16_bits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x0040);  // keep it a (quiet) NaN
  const uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);  // ties go to the even upper half
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float bfloat16_bits_to_float(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

uint16_t float_to_half_bits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t magnitude = bits & 0x7FFFFFFF;
  if (magnitude > 0x7F800000) return sign | 0x7E00;  // NaN
  if (magnitude >= 0x477FF000) return sign | 0x7C00;  // rounds to or past 65520: infinity
  if (magnitude < 0x38800000) {
    // A float16 subnormal (or zero): the value in units of 2^-24, rounded to nearest even.
    const float scaled = std::fabs(value) * 16777216.0f;  // exact: a power-of-two scaling
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  // Normal: rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits.
  const uint32_t rebiased = magnitude - (112u << 23);
  const uint32_t rounding = 0x0FFF + ((rebiased >> 13) & 1);
  return sign | static_cast<uint16_t>((rebiased + rounding) >> 13);
}

float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float v = static_cast<float>(mantissa) / 16777216.0f;
    return sign ? -v : v;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7F800000 | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

}  // namespace latent::io
