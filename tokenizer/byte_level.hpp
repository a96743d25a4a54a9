// GPT-2's byte-level alphabet: every byte shown as one printable character, so that byte-level BPE
// vocabularies and merges (tokenizer.json) are text. Byte 0x20 (space) is 'Ġ', 0x0A is 'Ċ'.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace latent::tokenizer::byte_level {

// The code point that stands for `byte` (GPT-2's bytes_to_unicode table).
char32_t char_of_byte(uint8_t byte);

// `bytes` written in the byte-level alphabet (UTF-8): what a vocabulary entry for them looks like.
std::string to_text(std::string_view bytes);

// The bytes a byte-level text stands for; nullopt when a character of `text` is outside the
// alphabet (tokens such as "<|endoftext|>" are plain text, not byte-level). `text` is valid UTF-8.
std::optional<std::string> to_bytes(std::string_view text);

// Appends code point `c` to `out` as UTF-8.
void append_utf8(char32_t c, std::string& out);

}  // namespace latent::tokenizer::byte_level
