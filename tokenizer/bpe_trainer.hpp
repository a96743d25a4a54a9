// Training a byte-level BPE on text: the merges that most often join adjacent tokens inside
// pre-tokenized pieces, learned greedily, written out as a Hugging Face tokenizer.json.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pre_tokenizer.hpp"
#include "tokenizer.hpp"

namespace latent::tokenizer {

struct BpeTrainerOptions {
  // Every id of the result: 256 bytes, the learned tokens, then the special tokens.
  int64_t vocab_size = 4096;
  // Added tokens, kept whole in encoding and never part of a merge; ids at the end of the vocabulary.
  std::vector<std::string> special_tokens = {"<|endoftext|>"};
  // tokenizer.json's "pre_tokenizer"; the default is GPT-2's byte-level regex without prefix space.
  nlohmann::json pre_tokenizer = PreTokenizer::gpt2_json();
};

// Learns vocab_size - 256 - special_tokens.size() new tokens from `texts`: repeatedly the most
// frequent adjacent pair (ties: the smallest pair of ids) is merged everywhere. Pair counts and the
// pieces holding each pair are kept up to date per merge, so a merge costs the pieces it touches,
// not a recount. Deterministic: the same texts and options give the same tokenizer.json, whatever
// the thread count. Stops early (a smaller vocabulary) when no pair occurs any more.
// A vocab_size below 256 + special tokens, or an empty or duplicated special token, throws latent::Error.
Tokenizer train_bpe(const std::vector<std::string>& texts, const BpeTrainerOptions& options);

}  // namespace latent::tokenizer
