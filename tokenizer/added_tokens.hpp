// Added tokens (special tokens such as "<｜begin▁of▁sentence｜>" among them): found in the text
// before pre-tokenization and encoded whole, as Hugging Face does.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace latent::tokenizer {

class AddedTokens {
 public:
  // `content` must be non-empty and not added before (the caller checks and reports).
  void add(std::string_view content, int32_t id);
  int32_t id_of(std::string_view content) const;  // -1 when `content` is not an added token

  struct Match {
    size_t begin = std::string_view::npos;  // npos: no added token in the rest of the text
    size_t length = 0;
    int32_t id = -1;
  };
  // The leftmost occurrence of an added token at or after `from`, the longest one at that position.
  Match find(std::string_view text, size_t from) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // byte -> node index
    int32_t id = -1;                                          // an added token ends here
  };
  int32_t child(int32_t node, unsigned char byte) const;
  std::vector<Node> nodes_{1};         // a byte trie; node 0 is the root
  std::array<bool, 256> first_byte_{};  // quick rejection of positions no token starts at
};

}  // namespace latent::tokenizer
