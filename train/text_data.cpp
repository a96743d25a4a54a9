// Text corpus and batch sampler.
#include "text_data.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string_view>

#include "../core/factory.hpp"

namespace latent::train {

namespace {

namespace fs = std::filesystem;

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("data: cannot open '{}'", path.string());
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail("data: error reading '{}'", path.string());
  return text;
}

// The files a directory contributes, by name; canonical paths already taken are skipped.
std::vector<fs::path> directory_files(const fs::path& dir, std::set<fs::path>& seen) {
  std::vector<fs::path> files;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.' || !entry.is_regular_file()) continue;  // follows symlinks
    files.push_back(entry.path());
  }
  if (error) fail("data: cannot list directory '{}': {}", dir.string(), error.message());
  std::sort(files.begin(), files.end());
  std::vector<fs::path> unique;
  for (const fs::path& file : files)
    if (seen.insert(fs::canonical(file)).second) unique.push_back(file);
  return unique;
}

std::vector<int64_t> byte_ids(std::string_view text) {
  std::vector<int64_t> ids(text.size());
  std::transform(text.begin(), text.end(), ids.begin(), [](char ch) { return int64_t(static_cast<unsigned char>(ch)); });
  return ids;
}

}  // namespace

TextCorpus::TextCorpus(const std::vector<std::string>& paths, double val_fraction) {
  if (paths.empty()) fail("TextCorpus: no data files given");
  std::string all;
  auto append = [&](const fs::path& file, const std::string& text) {
    if (!all.empty()) all += '\n';
    all += text;
    files_.push_back(file.string());
  };
  for (const std::string& path : paths) {
    const fs::path p(path);
    std::error_code error;  // a path the system cannot look up (too long, no permission) is reported below
    if (fs::is_directory(p, error)) {
      std::set<fs::path> seen;
      size_t read = 0;
      for (const fs::path& file : directory_files(p, seen)) {
        const std::string text = read_bytes(file);
        if (!text.empty()) append(file, text), ++read;
      }
      if (read == 0) fail("data: directory '{}' holds no non-empty files", path);
    } else if (!fs::exists(p, error)) {
      fail("data: '{}' {}", path, error ? "cannot be looked up: " + error.message() : "does not exist");
    } else {
      const std::string text = read_bytes(p);
      if (text.empty()) fail("data: '{}' is empty", path);
      append(p, text);
    }
  }
  split(std::move(all), val_fraction,
        files_.size() == 1 ? "'" + files_[0] + "'" : std::to_string(files_.size()) + " files");
}

TextCorpus TextCorpus::from_text(const std::string& text, double val_fraction) {
  TextCorpus corpus;
  corpus.split(text, val_fraction, "text");
  return corpus;
}

void TextCorpus::split(std::string text, double val_fraction, const std::string& origin) {
  if (val_fraction <= 0 || val_fraction >= 1) fail("TextCorpus: val_fraction must be in (0, 1)");
  const auto held_out = static_cast<size_t>(static_cast<double>(text.size()) * val_fraction);
  if (held_out < 2 || text.size() - held_out < 2)
    fail("data: {} holds {} bytes, too few to split off validation", origin, text.size());
  validation_text_ = text.substr(text.size() - held_out);
  text.resize(text.size() - held_out);
  train_text_ = std::move(text);
  train_ = std::make_shared<const std::vector<int64_t>>(byte_ids(train_text_));
  validation_ = std::make_shared<const std::vector<int64_t>>(byte_ids(validation_text_));
}

void TextCorpus::tokenize(const tokenizer::Tokenizer& tokenizer) {
  std::vector<std::vector<int64_t>> ids = tokenizer.encode_batch({train_text_, validation_text_});
  if (ids[0].size() < 2 || ids[1].size() < 2)
    fail("data: the {} text encodes to fewer than 2 tokens", ids[0].size() < 2 ? "training" : "validation");
  train_ = std::make_shared<const std::vector<int64_t>>(std::move(ids[0]));
  validation_ = std::make_shared<const std::vector<int64_t>>(std::move(ids[1]));
}

BatchSampler::BatchSampler(std::vector<int64_t> tokens, int64_t batch, int64_t seq_len, uint64_t seed, BatchShard shard)
    : BatchSampler(std::make_shared<const std::vector<int64_t>>(std::move(tokens)), batch, seq_len, seed, shard) {}

BatchSampler::BatchSampler(std::shared_ptr<const std::vector<int64_t>> shared_tokens, int64_t batch, int64_t seq_len,
                           uint64_t seed, BatchShard shard)
    : tokens_(std::move(shared_tokens)), batch_(batch), seq_len_(seq_len), shard_(shard), generator_(seed) {
  if (!tokens_) fail("BatchSampler: no tokens (null pointer)");
  const std::vector<int64_t>& tokens = *tokens_;
  if (batch <= 0 || seq_len <= 0)
    fail("BatchSampler: batch and seq_len must be positive, got {}, {}", batch, seq_len);
  if (shard.count <= 0 || shard.index < 0 || shard.index >= shard.count)
    fail("BatchSampler: shard {} of {} is out of range", shard.index, shard.count);
  if (batch % shard.count != 0)
    fail("BatchSampler: batch {} does not split into {} equal shards", batch, shard.count);
  if (static_cast<int64_t>(tokens.size()) < seq_len + 1)
    fail("BatchSampler: {} tokens cannot fill a window of {}; use a shorter --seq or more data", tokens.size(),
         seq_len + 1);
}

Tensor BatchSampler::next() {
  const int64_t windows = static_cast<int64_t>(tokens_->size()) - seq_len_;
  const int64_t rows = batch_ / shard_.count, first_row = shard_.index * rows;
  Tensor out = Tensor::empty({rows, seq_len_ + 1}, kInt64);
  int64_t* p = out.data<int64_t>();
  const uint64_t first = generator_.advance(static_cast<uint64_t>(batch_));  // the whole global batch
  for (int64_t b = 0; b < rows; ++b) {
    const uint64_t draw = first + uint64_t(first_row + b);
    const auto start = std::min<int64_t>(windows - 1, static_cast<int64_t>(generator_.uniform(draw) * double(windows)));
    std::copy_n(tokens_->begin() + start, seq_len_ + 1, p + b * (seq_len_ + 1));
  }
  return out;
}

std::vector<Tensor> BatchSampler::sequential(int64_t max_batches) const {
  std::vector<Tensor> batches;
  const int64_t windows = (static_cast<int64_t>(tokens_->size()) - 1) / seq_len_;
  for (int64_t w = 0; w + batch_ <= windows && static_cast<int64_t>(batches.size()) < max_batches; w += batch_) {
    Tensor out = Tensor::empty({batch_, seq_len_ + 1}, kInt64);
    for (int64_t b = 0; b < batch_; ++b)
      std::copy_n(tokens_->begin() + (w + b) * seq_len_, seq_len_ + 1, out.data<int64_t>() + b * (seq_len_ + 1));
    batches.push_back(out);
  }
  if (batches.empty()) {  // a short validation text still gives one (smaller) batch
    const int64_t n = std::max<int64_t>(1, windows);
    Tensor out = Tensor::empty({std::min(n, batch_), seq_len_ + 1}, kInt64);
    for (int64_t b = 0; b < out.size(0); ++b)
      std::copy_n(tokens_->begin() + b * seq_len_, seq_len_ + 1, out.data<int64_t>() + b * (seq_len_ + 1));
    batches.push_back(out);
  }
  return batches;
}

}  // namespace latent::train
