// The dsv3-tiny style fixtures of tests/data (an independent PyTorch implementation's golden values):
// the model from its directory, its inputs and its expected tensors.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "../helpers.hpp"

namespace latent::testing {

struct DeepSeekFixture {
  std::shared_ptr<models::DeepSeekV3> model;
  std::map<std::string, Tensor> inputs, expected;
  double mtp_lambda = 0;
};

inline DeepSeekFixture load_deepseek_fixture(const std::string& name) {
  DeepSeekFixture f;
  f.model = models::DeepSeekV3::from_pretrained(test_data(name));
  f.inputs = io::load_safetensors(test_data(name + "/inputs.safetensors"));
  const io::SafetensorsFile expected = io::read_safetensors(test_data(name + "/expected.safetensors"));
  f.expected = expected.tensors;
  f.mtp_lambda = std::stod(expected.metadata.at("mtp_lambda"));
  return f;
}

}  // namespace latent::testing
