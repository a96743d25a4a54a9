// The byte-level alphabet's two tables, built once.
#include "byte_level.hpp"

#include <array>

namespace latent::tokenizer::byte_level {

namespace {

// Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 bytes,
// in increasing order, take the code points 256, 257, ... so that none is whitespace or a control.
struct Tables {
  std::array<char32_t, 256> char_of_byte{};
  std::array<int16_t, 256 + 68> byte_of_char{};  // -1: not in the alphabet
  Tables() {
    byte_of_char.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char_of_byte[b] = printable ? char32_t(b) : next++;
      byte_of_char[char_of_byte[b]] = int16_t(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

char32_t char_of_byte(uint8_t byte) { return tables().char_of_byte[byte]; }

void append_utf8(char32_t c, std::string& out) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xC0 | (c >> 6));
    out += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  } else {
    out += char(0xF0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  }
}

std::string to_text(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) append_utf8(tables().char_of_byte[b], out);
  return out;
}

std::optional<std::string> to_bytes(std::string_view text) {
  // The alphabet's code points are all below 0x800: one or two UTF-8 bytes each.
  std::string out;
  out.reserve(text.size());
  const auto& byte_of_char = tables().byte_of_char;
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    char32_t c;
    if (lead < 0x80) {
      c = lead;
      i += 1;
    } else if ((lead & 0xE0) == 0xC0 && i + 1 < text.size()) {
      c = (char32_t(lead & 0x1F) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3F);
      i += 2;
    } else {
      return std::nullopt;
    }
    if (c >= byte_of_char.size() || byte_of_char[c] < 0) return std::nullopt;
    out += char(byte_of_char[c]);
  }
  return out;
}

}  // namespace latent::tokenizer::byte_level
