// Text data for language-model training: files read as text, a held-out validation tail, token ids
// (the bytes themselves, vocab 256, or a tokenizer's), and a seeded batch sampler whose whole state
// is two integers (checkpointable).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../core/random.hpp"
#include "../core/tensor.hpp"
#include "../tokenizer/tokenizer.hpp"

namespace latent::train {

class TextCorpus {
 public:
  // Concatenates the files (separated by a newline); the last val_fraction of the bytes is held out.
  // The tokens are the bytes until tokenize().
  // A path may name a directory: its files are read in name order (not recursively; hidden and
  // empty files skipped; a file reached again through a symlink, like GPL -> GPL-3, read once).
  // A missing path, an unreadable or empty file, a directory without text, or a corpus too short
  // to split throws latent::Error naming the path.
  explicit TextCorpus(const std::vector<std::string>& paths, double val_fraction = 0.1);
  static TextCorpus from_text(const std::string& text, double val_fraction = 0.1);

  // Re-encodes the training and the validation text, each as a whole, with `tokenizer`: the split is
  // by bytes, so the held-out text is the same whatever the tokenizer. Throws when either part
  // encodes to fewer than 2 tokens.
  void tokenize(const tokenizer::Tokenizer& tokenizer);

  const std::vector<std::string>& files() const { return files_; }  // what was read, in order
  const std::string& train_text() const { return train_text_; }
  const std::string& validation_text() const { return validation_text_; }

  const std::vector<int64_t>& train() const { return *train_; }
  const std::vector<int64_t>& validation() const { return *validation_; }
  // The same tokens, shared: a BatchSampler given these keeps them alive without a copy.
  std::shared_ptr<const std::vector<int64_t>> shared_train() const { return train_; }
  std::shared_ptr<const std::vector<int64_t>> shared_validation() const { return validation_; }
  int64_t size() const { return static_cast<int64_t>(train_->size() + validation_->size()); }  // tokens
  int64_t bytes() const { return static_cast<int64_t>(train_text_.size() + validation_text_.size()); }

 private:
  TextCorpus() = default;
  void split(std::string text, double val_fraction, const std::string& origin);
  std::string train_text_, validation_text_;
  std::shared_ptr<const std::vector<int64_t>> train_, validation_;
  std::vector<std::string> files_;
};

// Which rows of each global batch a data-parallel rank trains on: shard `index` of `count` equal shards.
struct BatchShard {
  int64_t index = 0, count = 1;
};

// Draws [batch, seq_len + 1] windows at uniformly random offsets from a token stream.
//
// With a shard, `batch` is still the global batch: every rank's generator advances by all of its rows,
// and rank r draws only rows [r*batch/count, (r+1)*batch/count), exactly the rows one process with the
// whole batch would have there. So the ranks together see the single-process batch, and the sampler
// state (seed, offset) is the same on every rank and for every world size.
//
// The sampler shares ownership of its tokens, so it never outlives them: given a vector it keeps a
// copy (`BatchSampler(TextCorpus(paths).train(), ...)` is safe), given a shared vector it keeps that.
class BatchSampler {
 public:
  BatchSampler(std::shared_ptr<const std::vector<int64_t>> tokens, int64_t batch, int64_t seq_len, uint64_t seed,
               BatchShard shard = {});
  BatchSampler(std::vector<int64_t> tokens, int64_t batch, int64_t seq_len, uint64_t seed, BatchShard shard = {});
  Tensor next();  // Int64 [batch / shard.count, seq_len + 1]
  // Every window in order (for evaluation; whole batches, the shard does not apply): at most
  // max_batches batches of consecutive windows.
  std::vector<Tensor> sequential(int64_t max_batches) const;

  uint64_t seed() const { return generator_.seed(); }
  uint64_t offset() const { return generator_.offset(); }
  void set_state(uint64_t seed, uint64_t offset) { generator_.set_state(seed, offset); }

 private:
  std::shared_ptr<const std::vector<int64_t>> tokens_;
  int64_t batch_, seq_len_;
  BatchShard shard_;
  Generator generator_;
};

}  // namespace latent::train
