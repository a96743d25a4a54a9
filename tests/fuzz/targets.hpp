// The fuzz targets' entry points, shared by the libFuzzer executables and the Catch2 replay test.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>

namespace latent::fuzz {

// Thrown when an input is accepted but breaks a property every accepted input must have (a loaded
// file does not round-trip, a loaded model cannot run). latent::Error means "refused", which is
// fine; this means a bug, and the fuzzer turns it into a crash.
struct InvariantBroken : std::logic_error {
  using std::logic_error::logic_error;
};

// Each target feeds `data` to one reader of untrusted files. It returns when the input is accepted
// (and the accepted result behaves), throws latent::Error when the input is refused, and throws
// anything else (InvariantBroken included) or crashes only on a bug.
using TargetFunction = void (*)(const uint8_t* data, size_t size);

struct Target {
  std::string_view name;  // also the folder of its corpus and regressions: tests/fuzz/corpus/<name>/
  TargetFunction run;
};

// safetensors:        io::parse_safetensors of the bytes; accepted files must re-serialise to
//                     files that parse to the same tensors and metadata.
// deepseek_v3_config: DeepSeekV3Config::from_json_string; accepted configs must round-trip
//                     through to_json_string and count their parameters without overflow.
// llama_config:       the same for LlamaConfig.
// trainer_state:      train::load_trainer_state of a checkpoint directory whose
//                     trainer_state.json holds the bytes.
// optimizer_state:    AdamW::load_state_dict of the safetensors in the bytes, then a step; the
//                     loaded state must round-trip through state_dict().
// model_dir:          DeepSeekV3::from_pretrained of a directory holding config.json (the bytes
//                     before the first NUL) and model.safetensors (the bytes after it); an
//                     accepted model must run a forward pass. Configs too big to build quickly
//                     are skipped, not loaded.
// sharded_dir:        io::read_model_weights of a directory holding model.safetensors.index.json
//                     (the bytes before the first NUL) and model-00001-of-00001.safetensors (the
//                     bytes after it), then FP8 dequantisation in [2, 2] blocks; an accepted
//                     directory yields exactly the listed tensors, with no block scale left, and
//                     models::load_model_tensors (the streaming reader) yields the same bits.
// tokenizer_json:     tokenizer::Tokenizer::from_json_string; an accepted tokenizer must encode
//                     text into ids it decodes, and re-load from to_json() to the same encoding.
const Target* find_target(std::string_view name);
const Target* targets_begin();
const Target* targets_end();

}  // namespace latent::fuzz
