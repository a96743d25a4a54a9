// safetensors, Hugging Face's weight format (8-byte little-endian header length, JSON header, raw
// little-endian data): read with the reference loader's validation rules, written atomically.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "../core/tensor.hpp"

namespace latent::io {

// The reference loader refuses longer headers; so do we, before allocating anything for one.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// One header entry, as the file states it.
struct SafetensorsTensorInfo {
  std::string dtype;  // the file's spelling: "F32", "BF16", "I32", ...
  Shape shape;
  uint64_t data_begin = 0, data_end = 0;  // byte range [begin, end) within the data section
  bool operator==(const SafetensorsTensorInfo&) const = default;
};

struct SafetensorsHeader {
  std::map<std::string, SafetensorsTensorInfo> tensors;
  std::map<std::string, std::string> metadata;  // the "__metadata__" entry
  uint64_t data_offset = 0;                     // file position of the data section: 8 + header length
};

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;  // the "__metadata__" entry
  // Each tensor's dtype as the file spells it ("F8_E4M3" for a tensor that loaded as float32): what
  // a model loader needs to find FP8 weights and their block scales (io/fp8_blocks.hpp).
  std::map<std::string, std::string> file_dtypes;
};

// A file opened for reading tensor by tensor (what loading a model directory streams from). The
// header is read and validated as read_safetensors validates it; dtypes latent cannot load are
// listed, and refused only when such a tensor is read. The file is memory-mapped read-only; a read
// converts the tensor out of the mapping a few MiB at a time and drops each chunk's pages once
// converted (MADV_DONTNEED: the file is not modified, so they are only forgotten and a later
// access reads them again), so the mapping keeps at most one chunk resident (docs/checkpoints.md,
// "Memory while loading"). The mapping is released with the object.
class MappedSafetensors {
 public:
  explicit MappedSafetensors(const std::string& path);
  MappedSafetensors(MappedSafetensors&& other) noexcept;
  MappedSafetensors& operator=(MappedSafetensors&&) = delete;
  MappedSafetensors(const MappedSafetensors&) = delete;
  ~MappedSafetensors();

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  // The dtype tensor `name` loads as (F16 and F8_E4M3: float32); throws for one latent cannot load.
  DType loaded_dtype(const std::string& name) const;
  // Tensor `name` in memory of its own, as read_safetensors loads it.
  Tensor read(const std::string& name) const;
  // Tensor `name` converted straight into `destination` (its shape; any dtype, any strides), with
  // no copy in between when destination is contiguous and of loaded_dtype(name), or the file's
  // values can be read in place (F32, F64, I64, BF16 at an aligned offset) and converted from
  // there; otherwise through a temporary of one chunk.
  void read_into(const std::string& name, const Tensor& destination) const;

 private:
  const SafetensorsTensorInfo& info(const std::string& name) const;
  void drop_pages(uint64_t begin, uint64_t end) const;  // file positions

  std::string path_;
  void* mapping_ = nullptr;
  uint64_t size_ = 0;
  SafetensorsHeader header_;
};

// Throws, naming the file and tensor, for the first tensor of `header` whose dtype latent cannot load.
void check_loadable_dtypes(const SafetensorsHeader& header, const std::string& source);

// Reads every tensor of a file. F32, F64, I64 and BF16 load as float32, float64, int64 and bfloat16
// (bits as stored); F16 and F8_E4M3 are converted to float32 exactly (io/narrow_floats.hpp). An
// F8_E4M3 tensor loads as its codes' values, without the block scales a model directory keeps in
// separate "<name>_scale_inv" tensors (applied by io/fp8_blocks.hpp). Any other dtype is refused. The
// whole file is validated before any tensor is created; every problem throws
// latent::Error naming the file, the tensor and what is wrong.
//
// The file is read through MappedSafetensors, one copy per tensor; loaded tensors own ordinary,
// aligned, writable memory (optimizers update them in place), and nothing keeps the file mapped,
// so replacing it later (checkpoints) is safe.
SafetensorsFile read_safetensors(const std::string& path);

// read_safetensors(path).tensors.
std::map<std::string, Tensor> load_safetensors(const std::string& path);

// The same parser over a complete file image in memory; `source` names it in error messages.
SafetensorsFile parse_safetensors(const void* data, size_t size, const std::string& source = "<memory>");

// Names, dtypes, shapes and offsets without reading tensor data (only the header is read; its
// layout is still checked against the file size). Lists dtypes latent cannot load, too.
SafetensorsHeader read_safetensors_header(const std::string& path);

// Writes `tensors` (F32, F64 or I64 each; views are written as their contiguous values) and
// `metadata`: a compact JSON header with sorted keys, padded with spaces to a multiple of 8 bytes
// as the reference writer pads it, then the tensor data in name order. The file is replaced
// atomically (write_file_atomic): on any error the previous file is untouched and no temporary is
// left behind. Undefined tensors, the reserved name "__metadata__" and text that is not UTF-8 are
// refused before the file is touched.
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// The bytes save_safetensors would write.
std::string serialize_safetensors(const std::map<std::string, Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

}  // namespace latent::io
