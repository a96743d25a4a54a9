// Safetensors images built byte by byte (any dtype string, any bytes), for tests that need files
// latent's writer would not produce: FP8 weights, foreign dtypes, hostile layouts.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <latent/latent.hpp>

namespace latent::testing {

struct RawTensor {
  std::string name, dtype;
  Shape shape;
  std::string bytes;  // the data as stored
};

// 8-byte little-endian header length, the JSON header, the tensors' bytes in the order given.
inline std::string raw_safetensors(const std::vector<RawTensor>& tensors, const nlohmann::json& metadata = nullptr) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const RawTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  if (!metadata.is_null()) header["__metadata__"] = metadata;
  const std::string text = header.dump();
  std::string image;
  for (int i = 0; i < 8; ++i) image.push_back(static_cast<char>(static_cast<uint64_t>(text.size()) >> (8 * i)));
  image.append(text);
  image.append(data);
  return image;
}

inline std::string f32_bytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

}  // namespace latent::testing
