// The fuzz targets: each hands untrusted bytes to one of latent's file readers and checks what an
// accepted input must satisfy.
#include "targets.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <latent/latent.hpp>

#include "train/checkpoint.hpp"
#include "models/deepseek_v3.hpp"
#include "models/llama_config.hpp"
#include "models/model_files.hpp"
#include "io/fp8_blocks.hpp"
#include "io/safetensors.hpp"
#include "io/sharded_safetensors.hpp"
#include "optim/adam.hpp"

namespace latent::fuzz {
namespace {

namespace fs = std::filesystem;

void require(bool ok, const std::string& what) {
  if (!ok) throw InvariantBroken(what);
}

std::string as_text(const uint8_t* data, size_t size) { return std::string(reinterpret_cast<const char*>(data), size); }

// One private directory per process, removed at exit; targets that read directories write the
// input into it (the readers take paths, and that is the code under test).
const fs::path& scratch_dir() {
  struct Scratch {
    fs::path path;
    Scratch() {
      std::string pattern = (fs::temp_directory_path() / "latent-fuzz-XXXXXX").string();
      if (!::mkdtemp(pattern.data())) throw std::runtime_error("fuzz: cannot create a scratch directory");
      path = pattern;
    }
    ~Scratch() {
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  };
  static const Scratch scratch;
  return scratch.path;
}

fs::path fresh_subdir(const char* name) {
  const fs::path dir = scratch_dir() / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_file(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.flush()) throw std::runtime_error("fuzz: cannot write " + path.string());
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  const size_t nbytes = static_cast<size_t>(ca.numel()) * dtype_size(ca.dtype());
  return nbytes == 0 || std::memcmp(ca.raw_data(), cb.raw_data(), nbytes) == 0;
}

bool same_tensors(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](const auto& x, const auto& y) {
           return x.first == y.first && same_bytes(x.second, y.second);
         });
}

void run_safetensors(const uint8_t* data, size_t size) {
  const io::SafetensorsFile file = io::parse_safetensors(data, size, "fuzz input");
  // Writing what was read and reading it back must give the same tensors, bit for bit (NaN
  // payloads included), and the same metadata.
  const std::string bytes = io::serialize_safetensors(file.tensors, file.metadata);
  const io::SafetensorsFile again = io::parse_safetensors(bytes.data(), bytes.size(), "re-serialised fuzz input");
  require(same_tensors(file.tensors, again.tensors), "safetensors: tensors changed in a write/read round trip");
  require(file.metadata == again.metadata, "safetensors: metadata changed in a write/read round trip");
}

template <class Config> void check_config_round_trip(const Config& config, const char* what) {
  const std::string text = config.to_json_string();
  const Config again = Config::from_json_string(text, "re-serialised config");
  require(again.to_json_string() == text, std::string(what) + ": config changed in a write/read round trip");
  require(config.num_parameters() > 0, std::string(what) + ": a valid config counts no parameters");
}

void run_deepseek_v3_config(const uint8_t* data, size_t size) {
  const auto config = models::DeepSeekV3Config::from_json_string(as_text(data, size), "fuzz config.json");
  check_config_round_trip(config, "DeepSeekV3Config");
  require(config.num_activated_parameters() > 0, "DeepSeekV3Config: no activated parameters");
}

void run_llama_config(const uint8_t* data, size_t size) {
  check_config_round_trip(models::LlamaConfig::from_json_string(as_text(data, size), "fuzz config.json"),
                          "LlamaConfig");
}

void run_trainer_state(const uint8_t* data, size_t size) {
  // load_trainer_state insists on a complete checkpoint; the other files only need to exist.
  const fs::path dir = fresh_subdir("checkpoint");
  for (const char* name : {"config.json", "model.safetensors", "optimizer.safetensors"}) write_file(dir / name, "");
  write_file(dir / "trainer_state.json", std::string_view(reinterpret_cast<const char*>(data), size));
  const train::TrainerState state = train::load_trainer_state(dir.string());
  require(state.step >= 0, "trainer_state: negative step accepted");
}

void run_optimizer_state(const uint8_t* data, size_t size) {
  const io::SafetensorsFile file = io::parse_safetensors(data, size, "fuzz optimizer.safetensors");
  // Two parameters, as a checkpoint of a tiny model would hold them: the seeds are this
  // optimizer's own state_dict() files.
  Tensor weight = full({2, 3}, 0.5).requires_grad_(), bias = full({3}, -0.25).requires_grad_();
  optim::AdamW optimizer({weight, bias});
  optimizer.load_state_dict(file.tensors);
  const std::map<std::string, Tensor> loaded = optimizer.state_dict();
  optimizer.load_state_dict(loaded);
  require(same_tensors(loaded, optimizer.state_dict()), "optimizer_state: state changed in a load/save round trip");
  // A loaded state must be usable: one step with gradients.
  (sum(weight * weight) + sum(bias)).backward();
  optimizer.step();
}

void run_model_dir(const uint8_t* data, size_t size) {
  const std::string bytes = as_text(data, size);
  const size_t nul = bytes.find('\0');
  const std::string config_text = bytes.substr(0, nul);
  const std::string weights = nul == std::string::npos ? std::string() : bytes.substr(nul + 1);
  // Parsed here first only to skip models too big to build thousands of times a minute; an
  // invalid config is refused by from_pretrained below with the same error.
  try {
    const auto config = models::DeepSeekV3Config::from_json_string(config_text);
    if (config.num_parameters() > 200'000 || config.max_position_embeddings > 4096 || config.vocab_size > 4096 ||
        config.num_hidden_layers + config.num_nextn_predict_layers > 6)
      return;
  } catch (const Error&) {
  }
  const fs::path dir = fresh_subdir("model");
  write_file(dir / "config.json", config_text);
  if (nul != std::string::npos) write_file(dir / "model.safetensors", weights);
  const auto model = models::DeepSeekV3::from_pretrained(dir.string());
  const int64_t vocab = model->config().vocab_size;
  NoGradGuard no_grad;
  const Tensor logits = model->forward(from_vector<int64_t>({0, vocab - 1}, {1, 2}));
  require(logits.shape() == Shape({1, 2, vocab}), "model_dir: a loaded model's logits have the wrong shape");
}

void run_sharded_dir(const uint8_t* data, size_t size) {
  const std::string bytes = as_text(data, size);
  const size_t nul = bytes.find('\0');
  const fs::path dir = fresh_subdir("sharded");
  write_file(dir / "model.safetensors.index.json", bytes.substr(0, nul));
  if (nul != std::string::npos) write_file(dir / "model-00001-of-00001.safetensors", bytes.substr(nul + 1));
  io::ModelWeights weights = io::read_model_weights(dir.string(), "fuzz");
  const io::ShardIndex index = io::parse_shard_index(bytes.substr(0, nul), "fuzz index");
  require(weights.tensors.size() == index.weight_map.size(), "sharded_dir: an accepted directory lost or gained tensors");
  const io::Fp8BlockSize block{2, 2};
  io::dequantize_fp8_weights(weights.tensors, weights.file_dtypes, &block, "fuzz");
  for (const auto& [name, t] : weights.tensors) {
    require(!name.ends_with("_scale_inv"), "sharded_dir: a block scale survived dequantisation");
    require(index.weight_map.count(name) == 1, "sharded_dir: a tensor the index does not list was loaded");
  }
  // The streaming reader (what from_pretrained uses, straight into each destination) must give
  // what reading everything and then dequantising gives, bit for bit.
  const std::map<std::string, Tensor> streamed = models::load_model_tensors(dir.string(), "fuzz", &block);
  require(streamed.size() == weights.tensors.size(), "sharded_dir: streaming read other tensors than reading all");
  for (const auto& [name, t] : weights.tensors) {
    const auto it = streamed.find(name);
    require(it != streamed.end() && it->second.dtype() == t.dtype() && it->second.shape() == t.shape(),
            "sharded_dir: streaming read tensor '" + name + "' differently");
    const size_t nbytes = static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
    require(nbytes == 0 || std::memcmp(it->second.raw_data(), t.raw_data(), nbytes) == 0,
            "sharded_dir: streaming read other values of tensor '" + name + "'");
  }
}

void run_tokenizer_json(const uint8_t* data, size_t size) {
  const auto tok = tokenizer::Tokenizer::from_json_string(as_text(data, size), "fuzz tokenizer.json");
  // An accepted tokenizer encodes any bytes (its own file among them) into ids it can decode, and
  // reloading what it would save encodes the same way.
  const std::string text = as_text(data, std::min<size_t>(size, 4096)) + "Hello, world! 123 \xff\xfe";
  const std::vector<int64_t> ids = tok.encode(text);
  for (int64_t id : ids) require(id >= 0 && id < tok.vocab_size(), "tokenizer_json: encode produced an id out of range");
  (void)tok.decode(ids);
  const auto again = tokenizer::Tokenizer::from_json(tok.to_json(), "re-loaded tokenizer.json");
  require(again.encode(text) == ids, "tokenizer_json: re-loading changed the encoding");
}

constexpr Target kTargets[] = {
    {"safetensors", run_safetensors},     {"deepseek_v3_config", run_deepseek_v3_config},
    {"llama_config", run_llama_config},   {"trainer_state", run_trainer_state},
    {"optimizer_state", run_optimizer_state}, {"model_dir", run_model_dir},
    {"tokenizer_json", run_tokenizer_json},   {"sharded_dir", run_sharded_dir},
};

}  // namespace

const Target* targets_begin() { return std::begin(kTargets); }
const Target* targets_end() { return std::end(kTargets); }

const Target* find_target(std::string_view name) {
  for (const Target& target : kTargets)
    if (target.name == name) return &target;
  return nullptr;
}

}  // namespace latent::fuzz
