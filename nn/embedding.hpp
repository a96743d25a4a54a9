// nn::Embedding: a lookup table of num_embeddings rows of embedding_dim, initialised N(0, 1).
#pragma once
#include "module.hpp"

namespace latent::nn {

class Embedding : public Callable<Embedding> {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim);
  Tensor forward(const Tensor& ids) const;  // Int64 [...] -> [..., embedding_dim]

  int64_t num_embeddings, embedding_dim;
  Tensor weight;
};

}  // namespace latent::nn
