// safetensors reading (mmap, strict header validation, tensor by tensor, BF16 as stored, F16 and F8_E4M3
// widening) and atomic writing.
#include "safetensors.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/factory.hpp"
#include "../core/strided.hpp"
#include "atomic_file.hpp"
#include "json.hpp"
#include "narrow_floats.hpp"

namespace latent::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; loading copies bytes as they are");

namespace {

// Every dtype the format defines with a whole number of bytes per element, so a header naming any
// of them can be validated (and inspected); `loads_as` is set for the ones latent can load.
struct FileDType {
  std::string_view name;
  uint64_t size;
  std::optional<DType> loads_as;
};

constexpr FileDType kFileDTypes[] = {
    {"F64", 8, DType::Float64},   {"F32", 4, DType::Float32},   {"I64", 8, DType::Int64},
    {"BF16", 2, DType::BFloat16},  {"F16", 2, DType::Float32},   {"U64", 8, std::nullopt},
    {"I32", 4, std::nullopt},     {"U32", 4, std::nullopt},     {"I16", 2, std::nullopt},
    {"U16", 2, std::nullopt},     {"I8", 1, std::nullopt},      {"U8", 1, std::nullopt},
    {"BOOL", 1, std::nullopt},    {"F8_E5M2", 1, std::nullopt}, {"F8_E4M3", 1, DType::Float32},
    {"F8_E8M0", 1, std::nullopt},
};

const FileDType* find_file_dtype(std::string_view name) {
  for (const FileDType& d : kFileDTypes)
    if (d.name == name) return &d;
  return nullptr;
}

const char* file_dtype_name(DType d) {
  switch (d) {
    case DType::Float32:
      return "F32";
    case DType::Float64:
      return "F64";
    case DType::Int64:
      return "I64";
    case DType::BFloat16:
      return "BF16";
  }
  return "?";
}

// Throws "safetensors: <source>: <problem>", the problem formatted as by fail().
template <class... Args>
[[noreturn]] void fail_file(const std::string& source, fmt::format_string<Args...> problem, Args&&... args) {
  fail("safetensors: {}: {}", source, fmt::format(problem, std::forward<Args>(args)...));
}

template <class... Args>
[[noreturn]] void fail_tensor(const std::string& source, const std::string& name, fmt::format_string<Args...> problem,
                              Args&&... args) {
  fail("safetensors: {}: tensor '{}': {}", source, name, fmt::format(problem, std::forward<Args>(args)...));
}

std::string offsets_str(uint64_t begin, uint64_t end) { return fmt::format("[{}, {}]", begin, end); }

std::string u64_shape_str(const std::vector<uint64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

std::optional<uint64_t> as_non_negative_integer(const nlohmann::json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() >= 0) return static_cast<uint64_t>(value.get<int64_t>());
  return std::nullopt;
}

// --- header ----------------------------------------------------------------------------------

uint64_t read_u64_le(const unsigned char* bytes) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  return value;
}

// The header length N from the first 8 bytes, checked against the limit and the file size.
uint64_t checked_header_length(const unsigned char* first_8_bytes, uint64_t file_size, const std::string& source) {
  const uint64_t length = read_u64_le(first_8_bytes);
  if (length > kSafetensorsMaxHeaderBytes)
    fail_file(source, "header length {} exceeds the limit of {} bytes", length, kSafetensorsMaxHeaderBytes);
  if (length > file_size - 8)
    fail_file(source, "header length {} runs past the end of the file ({} bytes)", length, file_size);
  return length;
}

void require_minimum_size(uint64_t file_size, const std::string& source) {
  if (file_size < 8)
    fail_file(source, "file is {} bytes, too short for the 8-byte header length", file_size);
}

std::map<std::string, std::string> parse_metadata(const nlohmann::json& value, const std::string& source) {
  std::map<std::string, std::string> metadata;
  if (value.is_null()) return metadata;  // the reference writer's "no metadata"
  if (!value.is_object())
    fail_file(source, "'__metadata__' must be an object of strings, got {}", describe_json_value(value));
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string())
      fail_file(source, "'__metadata__' must map strings to strings; '{}' is {}", key, describe_json_value(item));
    metadata.emplace(key, item.get<std::string>());
  }
  return metadata;
}

// One tensor entry: exactly dtype, shape and data_offsets, consistent with each other and with the
// size of the data section. Overflow is checked before any product is trusted.
SafetensorsTensorInfo parse_entry(const std::string& name, const nlohmann::json& entry, uint64_t data_size,
                                  const std::string& source) {
  if (!entry.is_object())
    fail_tensor(source, name, "entry must be an object with dtype, shape and data_offsets, got {}",
                describe_json_value(entry));
  for (const auto& [key, item] : entry.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail_tensor(source, name, "unexpected key '{}' (an entry holds exactly dtype, shape and data_offsets)", key);
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!entry.contains(key)) fail_tensor(source, name, "missing '{}'", key);

  const nlohmann::json& dtype_json = entry["dtype"];
  if (!dtype_json.is_string())
    fail_tensor(source, name, "'dtype' must be a string, got {}", describe_json_value(dtype_json));
  const std::string dtype = dtype_json.get<std::string>();
  const FileDType* file_dtype = find_file_dtype(dtype);
  if (!file_dtype) fail_tensor(source, name, "unknown dtype '{}'", dtype);

  const nlohmann::json& shape_json = entry["shape"];
  if (!shape_json.is_array())
    fail_tensor(source, name, "'shape' must be an array of non-negative integers, got {}",
                describe_json_value(shape_json));
  std::vector<uint64_t> dims;
  for (size_t i = 0; i < shape_json.size(); ++i) {
    const std::optional<uint64_t> dim = as_non_negative_integer(shape_json[i]);
    if (!dim)
      fail_tensor(source, name, "'shape' element {} must be a non-negative integer, got {}", i,
                  describe_json_value(shape_json[i]));
    // latent's sizes are int64.
    if (*dim > static_cast<uint64_t>(INT64_MAX))
      fail_tensor(source, name, "'shape' element {} = {} is too large", i, *dim);
    dims.push_back(*dim);
  }

  const nlohmann::json& offsets_json = entry["data_offsets"];
  std::optional<uint64_t> begin, end;
  if (offsets_json.is_array() && offsets_json.size() == 2) {
    begin = as_non_negative_integer(offsets_json[0]);
    end = as_non_negative_integer(offsets_json[1]);
  }
  if (!begin || !end)
    fail_tensor(source, name, "'data_offsets' must be [begin, end] with non-negative integers, got {}",
                describe_json_value(offsets_json));
  const std::string offsets = "data_offsets " + offsets_str(*begin, *end);
  if (*begin > *end) fail_tensor(source, name, "{}: begin is after end", offsets);
  if (*end > data_size)
    fail_tensor(source, name, "{} run past the end of the data section ({} bytes)", offsets, data_size);

  // latent computes element counts and strides as int64 products of dimensions, zeros aside: the
  // strides of an empty [0, 2^62, 4] overflow although it has no elements. So the product of the
  // non-zero dimensions must fit in int64. This is stricter than the reference, which refuses only
  // a left-to-right product past 64 unsigned bits: what it accepts beyond that is empty tensors
  // with dimensions no int64 size could hold.
  uint64_t extent = 1, nbytes = 0;
  bool empty = false;
  for (uint64_t dim : dims) {
    if (dim == 0) empty = true;
    else if (__builtin_mul_overflow(extent, dim, &extent) || extent > static_cast<uint64_t>(INT64_MAX))
      fail_tensor(source, name, "shape {} has more elements than fit in 64 bits", u64_shape_str(dims));
  }
  const uint64_t numel = empty ? 0 : extent;
  if (__builtin_mul_overflow(numel, file_dtype->size, &nbytes))
    fail_tensor(source, name, "shape {} of {} is more bytes than fit in 64 bits", u64_shape_str(dims), dtype);
  if (nbytes != *end - *begin)
    fail_tensor(source, name, "shape {} of {} needs {} bytes but {} span {}", u64_shape_str(dims), dtype, nbytes,
                offsets, *end - *begin);

  SafetensorsTensorInfo info{dtype, {}, *begin, *end};
  for (uint64_t dim : dims) info.shape.push_back(static_cast<int64_t>(dim));
  return info;
}

// Tensors must tile the data section: in offset order each starts where the previous one ended,
// and the last ends at the end of the file. This refuses overlaps (two tensors aliasing bytes),
// gaps and trailing bytes (data no tensor accounts for).
void check_layout(const std::map<std::string, SafetensorsTensorInfo>& tensors, uint64_t data_size,
                  const std::string& source) {
  std::vector<std::pair<const std::string*, const SafetensorsTensorInfo*>> order;
  for (const auto& [name, info] : tensors) order.emplace_back(&name, &info);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return std::pair(a.second->data_begin, a.second->data_end) < std::pair(b.second->data_begin, b.second->data_end);
  });
  uint64_t covered = 0;
  const std::string* previous = nullptr;
  for (const auto& [name, info] : order) {
    if (info->data_begin > covered)
      fail_tensor(source, *name, "gap: bytes [{}, {}) of the data section before it belong to no tensor", covered,
                  info->data_begin);
    if (info->data_begin < covered)
      fail_tensor(source, *name, "data_offsets {} overlap tensor '{}' (data_offsets {})",
                  offsets_str(info->data_begin, info->data_end), *previous,
                  offsets_str(tensors.at(*previous).data_begin, tensors.at(*previous).data_end));
    covered = info->data_end;
    previous = name;
  }
  if (covered != data_size)
    fail_file(source, "data section is {} bytes but the tensors cover only {} (trailing bytes)", data_size, covered);
}

SafetensorsHeader parse_header(std::string_view text, uint64_t data_size, const std::string& source) {
  nlohmann::json root;
  try {
    root = parse_json(text, "");
  } catch (const Error& e) {
    fail_file(source, "header: {}", e.what());
  }
  if (!root.is_object()) fail_file(source, "header must be a JSON object, got {}", describe_json_value(root));

  SafetensorsHeader header;
  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__")
      header.metadata = parse_metadata(entry, source);
    else
      header.tensors.emplace(name, parse_entry(name, entry, data_size, source));
  }
  check_layout(header.tensors, data_size, source);
  header.data_offset = 8 + text.size();
  return header;
}

// --- tensor data -----------------------------------------------------------------------------

const FileDType& loadable_file_dtype(const SafetensorsTensorInfo& info, const std::string& name,
                                     const std::string& source) {
  const FileDType& file_dtype = *find_file_dtype(info.dtype);  // parse_entry accepted only known ones
  if (!file_dtype.loads_as)
    fail_tensor(source, name,
                "dtype {} is not supported (latent reads F32, F64, I64, BF16, and F16 and F8_E4M3 as float32)",
                info.dtype);
  return file_dtype;
}

// Writes the values at `src` into `dst`, contiguous memory of the dtype the file dtype loads as.
void decode_values(const FileDType& file_dtype, const SafetensorsTensorInfo& info, const unsigned char* src,
                   void* dst) {
  const int64_t count = shape_numel(info.shape);
  if (file_dtype.name == "F16")
    decode_half(src, static_cast<float*>(dst), count);
  else if (file_dtype.name == "F8_E4M3")
    decode_float8_e4m3(src, static_cast<float*>(dst), count);
  else if (info.data_end > info.data_begin)
    std::memcpy(dst, src, info.data_end - info.data_begin);
}

SafetensorsFile parse_bytes(const unsigned char* bytes, uint64_t size, const std::string& source) {
  require_minimum_size(size, source);
  const uint64_t header_length = checked_header_length(bytes, size, source);
  const std::string_view text(reinterpret_cast<const char*>(bytes + 8), header_length);
  SafetensorsHeader header = parse_header(text, size - 8 - header_length, source);
  check_loadable_dtypes(header, source);  // before allocating anything
  SafetensorsFile file;
  file.metadata = std::move(header.metadata);
  for (const auto& [name, info] : header.tensors) {
    const FileDType& file_dtype = *find_file_dtype(info.dtype);
    Tensor t = Tensor::empty(info.shape, *file_dtype.loads_as);
    decode_values(file_dtype, info, bytes + header.data_offset + info.data_begin, t.raw_data());
    file.tensors.emplace(name, std::move(t));
    file.file_dtypes.emplace(name, info.dtype);
  }
  return file;
}

// --- files -----------------------------------------------------------------------------------

struct FileDescriptor {
  int fd = -1;
  ~FileDescriptor() {
    if (fd >= 0) ::close(fd);
  }
};

// Opens a regular file for reading; returns its size.
uint64_t open_regular_file(const std::string& path, FileDescriptor& file) {
  file.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (file.fd < 0) fail_file(path, "cannot open: {}", std::strerror(errno));
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) fail_file(path, "cannot stat: {}", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail_file(path, "not a regular file");
  return static_cast<uint64_t>(st.st_size);
}

void read_exactly(int fd, void* out, size_t nbytes, uint64_t offset, const std::string& path) {
  auto* dst = static_cast<char*>(out);
  while (nbytes > 0) {
    const ssize_t got = ::pread(fd, dst, nbytes, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got == 0) fail_file(path, "file ended early");
    if (got < 0) fail_file(path, "read failed: {}", std::strerror(errno));
    dst += got;
    nbytes -= static_cast<size_t>(got);
    offset += static_cast<uint64_t>(got);
  }
}

// --- writing ---------------------------------------------------------------------------------

using ByteSink = std::function<void(const void* data, size_t nbytes)>;

// Checks everything that could make the write fail halfway (so it fails before a file is touched)
// and builds the padded header.
std::string build_header(const std::map<std::string, Tensor>& tensors,
                         const std::map<std::string, std::string>& metadata, const std::string& context) {
  const auto check_utf8 = [&](const std::string& text, const std::string& what) {
    if (find_invalid_utf8(text)) fail("{}: {} is not valid UTF-8", context, what);
  };
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {  // std::map: name order, which is also the data order
    check_utf8(name, "tensor name '" + name + "'");
    if (name == "__metadata__") fail("{}: '__metadata__' is reserved and cannot name a tensor", context);
    if (!t.defined()) fail("{}: tensor '{}' is undefined", context, name);
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype());
    header[name] = {
        {"dtype", file_dtype_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  if (!metadata.empty()) {
    for (const auto& [key, value] : metadata) {
      check_utf8(key, "metadata key '" + key + "'");
      check_utf8(value, "metadata value of '" + key + "'");
    }
    header["__metadata__"] = metadata;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the reference writer aligns the data section to 8 bytes
  if (text.size() > kSafetensorsMaxHeaderBytes)
    fail("{}: header would be {} bytes, over the limit of {}", context, text.size(), kSafetensorsMaxHeaderBytes);
  return text;
}

void write_safetensors(const std::string& header, const std::map<std::string, Tensor>& tensors, const ByteSink& sink) {
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(static_cast<uint64_t>(header.size()) >> (8 * i));
  sink(length, 8);
  sink(header.data(), header.size());
  for (const auto& [name, t] : tensors) {
    const Tensor dense = contiguous_copy(t);  // one tensor at a time: a view costs one temporary copy of itself
    sink(dense.raw_data(), static_cast<size_t>(dense.numel()) * dtype_size(dense.dtype()));
  }
}

}  // namespace

SafetensorsFile parse_safetensors(const void* data, size_t size, const std::string& source) {
  return parse_bytes(static_cast<const unsigned char*>(data), size, source);
}

void check_loadable_dtypes(const SafetensorsHeader& header, const std::string& source) {
  for (const auto& [name, info] : header.tensors) loadable_file_dtype(info, name, source);
}

MappedSafetensors::MappedSafetensors(const std::string& path) : path_(path) {
  FileDescriptor file;
  size_ = open_regular_file(path, file);
  require_minimum_size(size_, path);
  mapping_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, file.fd, 0);
  if (mapping_ == MAP_FAILED) {
    mapping_ = nullptr;
    fail_file(path, "cannot map: {}", std::strerror(errno));
  }
  try {
    ::madvise(mapping_, size_, MADV_SEQUENTIAL);  // tensors are read front to back
    const auto* bytes = static_cast<const unsigned char*>(mapping_);
    const uint64_t header_length = checked_header_length(bytes, size_, path);
    header_ = parse_header(std::string_view(reinterpret_cast<const char*>(bytes + 8), header_length),
                           size_ - 8 - header_length, path);
    drop_pages(0, header_.data_offset);  // parsed: the text is not needed again
  } catch (...) {
    ::munmap(mapping_, size_);
    throw;
  }
}

MappedSafetensors::MappedSafetensors(MappedSafetensors&& other) noexcept
    : path_(std::move(other.path_)),
      mapping_(std::exchange(other.mapping_, nullptr)),
      size_(other.size_),
      header_(std::move(other.header_)) {}

MappedSafetensors::~MappedSafetensors() {
  if (mapping_) ::munmap(mapping_, size_);
}

const SafetensorsTensorInfo& MappedSafetensors::info(const std::string& name) const {
  const auto it = header_.tensors.find(name);
  if (it == header_.tensors.end()) fail_file(path_, "no tensor '{}'", name);
  return it->second;
}

DType MappedSafetensors::loaded_dtype(const std::string& name) const {
  return *loadable_file_dtype(info(name), name, path_).loads_as;
}

// Every page holding a byte of [begin, end) goes, the ones a neighbour shares included: a
// neighbour read later faults its page back in from the page cache, which is cheaper than keeping
// two pages per tensor of a file with a hundred thousand tensors resident until the end.
void MappedSafetensors::drop_pages(uint64_t begin, uint64_t end) const {
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t first = begin / page * page, last = std::min(size_, (end + page - 1) / page * page);
  if (last > first) ::madvise(static_cast<char*>(mapping_) + first, last - first, MADV_DONTNEED);
}

Tensor MappedSafetensors::read(const std::string& name) const {
  Tensor t = Tensor::empty(info(name).shape, loaded_dtype(name));
  read_into(name, t);
  return t;
}

void MappedSafetensors::read_into(const std::string& name, const Tensor& destination) const {
  const SafetensorsTensorInfo& tensor = info(name);
  const FileDType& file_dtype = loadable_file_dtype(tensor, name, path_);
  const DType loads_as = *file_dtype.loads_as;
  if (!destination.defined() || destination.shape() != tensor.shape)
    fail_tensor(path_, name, "has shape {}, the tensor to read it into {}", shape_str(tensor.shape),
                destination.defined() ? shape_str(destination.shape()) : std::string("is undefined"));
  const bool stored_as_loaded = file_dtype.name != "F16" && file_dtype.name != "F8_E4M3";
  // Rows of dim 0 a chunk of about kChunkBytes at a time, each chunk's pages dropped once
  // converted: the mapping holds at most one chunk, not the whole tensor, on top of destination.
  constexpr uint64_t kChunkBytes = uint64_t{1} << 20;
  const int64_t rows = tensor.shape.empty() ? 1 : tensor.shape[0];
  const uint64_t row_bytes = rows == 0 ? 0 : (tensor.data_end - tensor.data_begin) / static_cast<uint64_t>(rows);
  const int64_t rows_per_chunk =
      static_cast<int64_t>(std::max<uint64_t>(1, kChunkBytes / std::max<uint64_t>(row_bytes, 1)));
  for (int64_t first = 0; first < rows; first += rows_per_chunk) {
    const int64_t count = std::min(rows_per_chunk, rows - first);
    SafetensorsTensorInfo chunk = tensor;
    if (!chunk.shape.empty()) chunk.shape[0] = count;
    chunk.data_begin = tensor.data_begin + static_cast<uint64_t>(first) * row_bytes;
    chunk.data_end = chunk.data_begin + static_cast<uint64_t>(count) * row_bytes;
    Tensor into = destination;  // this chunk's rows of it (all of a 0-dim tensor)
    if (!chunk.shape.empty())
      into = destination.as_strided(chunk.shape, destination.strides(), destination.offset() + first * destination.stride(0));
    const uint64_t begin = header_.data_offset + chunk.data_begin;
    unsigned char* src = static_cast<unsigned char*>(mapping_) + begin;
    if (into.is_contiguous() && into.dtype() == loads_as) {
      decode_values(file_dtype, chunk, src, into.raw_data());
    } else if (stored_as_loaded && reinterpret_cast<uintptr_t>(src) % dtype_size(loads_as) == 0) {
      // Converted as it is read from the mapping; the view never outlives this call.
      copy_into(into, borrowed_tensor(src, chunk.shape, loads_as, std::shared_ptr<void>(mapping_, [](void*) {})));
    } else {
      const Tensor decoded = empty_uncached(chunk.shape, loads_as);
      decode_values(file_dtype, chunk, src, decoded.raw_data());
      copy_into(into, decoded);
    }
    drop_pages(begin, header_.data_offset + chunk.data_end);
  }
}

SafetensorsFile read_safetensors(const std::string& path) {
  const MappedSafetensors mapped(path);
  check_loadable_dtypes(mapped.header(), path);  // before allocating anything
  SafetensorsFile file;
  file.metadata = mapped.header().metadata;
  for (const auto& [name, info] : mapped.header().tensors) {
    file.tensors.emplace(name, mapped.read(name));
    file.file_dtypes.emplace(name, info.dtype);
  }
  return file;
}

std::map<std::string, Tensor> load_safetensors(const std::string& path) { return read_safetensors(path).tensors; }

SafetensorsHeader read_safetensors_header(const std::string& path) {
  FileDescriptor file;
  const uint64_t size = open_regular_file(path, file);
  require_minimum_size(size, path);
  unsigned char first_8_bytes[8];
  read_exactly(file.fd, first_8_bytes, 8, 0, path);
  const uint64_t header_length = checked_header_length(first_8_bytes, size, path);
  std::string text(header_length, '\0');
  read_exactly(file.fd, text.data(), text.size(), 8, path);
  return parse_header(text, size - 8 - header_length, path);
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string header = build_header(tensors, metadata, "save_safetensors: " + path);
  write_file_atomic(path, [&](std::FILE* out) {
    write_safetensors(header, tensors, [&](const void* data, size_t nbytes) { write_all(out, data, nbytes, path); });
  });
}

std::string serialize_safetensors(const std::map<std::string, Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  const std::string header = build_header(tensors, metadata, "serialize_safetensors");
  std::string bytes;
  write_safetensors(header, tensors,
                    [&](const void* data, size_t nbytes) { bytes.append(static_cast<const char*>(data), nbytes); });
  return bytes;
}

}  // namespace latent::io
