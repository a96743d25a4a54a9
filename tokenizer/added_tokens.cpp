// The byte trie behind AddedTokens and its leftmost-longest search.
#include "added_tokens.hpp"

namespace latent::tokenizer {

int32_t AddedTokens::child(int32_t node, unsigned char byte) const {
  for (const auto& [b, next] : nodes_[size_t(node)].children)
    if (b == byte) return next;
  return -1;
}

void AddedTokens::add(std::string_view content, int32_t id) {
  int32_t node = 0;
  for (unsigned char byte : content) {
    int32_t next = child(node, byte);
    if (next < 0) {
      next = int32_t(nodes_.size());
      nodes_[size_t(node)].children.emplace_back(byte, next);
      nodes_.emplace_back();
    }
    node = next;
  }
  nodes_[size_t(node)].id = id;
  first_byte_[static_cast<unsigned char>(content.front())] = true;
}

int32_t AddedTokens::id_of(std::string_view content) const {
  int32_t node = 0;
  for (unsigned char byte : content)
    if ((node = child(node, byte)) < 0) return -1;
  return nodes_[size_t(node)].id;
}

AddedTokens::Match AddedTokens::find(std::string_view text, size_t from) const {
  for (size_t i = from; i < text.size(); ++i) {
    if (!first_byte_[static_cast<unsigned char>(text[i])]) continue;
    Match best;
    int32_t node = 0;
    for (size_t j = i; j < text.size() && (node = child(node, static_cast<unsigned char>(text[j]))) >= 0; ++j)
      if (nodes_[size_t(node)].id >= 0) best = {i, j + 1 - i, nodes_[size_t(node)].id};
    if (best.id >= 0) return best;
  }
  return {};
}

}  // namespace latent::tokenizer
