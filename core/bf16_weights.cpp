// The process-wide cache of bfloat16 weight copies (see bf16_weights.hpp).
#include "bf16_weights.hpp"

#include <memory>
#include <mutex>
#include <unordered_map>

#include "bfloat16.hpp"
#include "error.hpp"
#include "storage.hpp"

namespace latent {
namespace {

struct Copy {
  std::weak_ptr<Storage> owner;  // the float32 storage; expired: the entry is stale
  uint64_t version = 0;
  Tensor bf16;  // [elements of the storage], bfloat16
};

struct Cache {
  std::mutex mutex;
  std::unordered_map<const Storage*, Copy> copies;
  int64_t roundings = 0;
};

Cache& cache() {
  static Cache* instance = new Cache;  // never destroyed: tensors may be released during static destruction
  return *instance;
}

}  // namespace

Tensor bf16_weight(const Tensor& w) {
  if (w.dtype() != kFloat32) fail("bf16_weight: expected a float32 tensor, got {}", dtype_name(w.dtype()));
  const std::shared_ptr<Storage>& storage = w.storage();
  const int64_t elements = static_cast<int64_t>(storage->nbytes() / sizeof(float));
  Cache& c = cache();
  std::lock_guard lock(c.mutex);
  auto found = c.copies.find(storage.get());
  if (found == c.copies.end()) {
    // Copies of storages that died go when a new one comes, so the cache holds at most one per live
    // weight plus those dead since the last new one. Sweeping on every call instead walked every
    // entry's control block each time: 0.7 % of a bf16 training step (BENCHMARKS.md's profile).
    for (auto it = c.copies.begin(); it != c.copies.end();)
      it = it->second.owner.expired() ? c.copies.erase(it) : std::next(it);
    found = c.copies.emplace(storage.get(), Copy{}).first;
  }
  Copy& copy = found->second;
  const uint64_t version = storage->version();
  if (copy.owner.lock() != storage || copy.version != version || copy.bf16.numel() != elements) {
    // A copy still referenced elsewhere (a graph that saved it) is left to its holders.
    if (!copy.bf16.defined() || copy.bf16.numel() != elements || copy.bf16.storage().use_count() > 1)
      copy.bf16 = Tensor::empty({elements}, kBFloat16);
    float_to_bfloat16(static_cast<const float*>(storage->data()), copy.bf16.data<bfloat16>(), elements);
    copy.owner = storage, copy.version = version;
    ++c.roundings;
  }
  return copy.bf16.as_strided(w.shape(), w.strides(), w.offset());
}

bfloat16* bf16_weight_to_update(const Tensor& w) {
  if (w.dtype() != kFloat32) return nullptr;
  const std::shared_ptr<Storage>& storage = w.storage();
  const int64_t elements = static_cast<int64_t>(storage->nbytes() / sizeof(float));
  if (w.offset() != 0 || w.numel() != elements || !w.is_contiguous()) return nullptr;
  Cache& c = cache();
  std::lock_guard lock(c.mutex);
  const auto found = c.copies.find(storage.get());
  if (found == c.copies.end()) return nullptr;
  Copy& copy = found->second;
  if (copy.owner.lock() != storage || copy.bf16.numel() != elements || copy.bf16.storage().use_count() > 1)
    return nullptr;
  copy.version = storage->version();
  ++c.roundings;
  return copy.bf16.data<bfloat16>();
}

Bf16WeightStats bf16_weight_stats() {
  Cache& c = cache();
  std::lock_guard lock(c.mutex);
  Bf16WeightStats s;
  for (const auto& [storage, copy] : c.copies) ++s.copies, s.elements += copy.bf16.numel();
  s.roundings = c.roundings;
  return s;
}

}  // namespace latent
