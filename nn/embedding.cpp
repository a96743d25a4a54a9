// nn::Embedding.
#include "embedding.hpp"

#include "../autograd/index_ops.hpp"
#include "init.hpp"

namespace latent::nn {

Embedding::Embedding(int64_t n, int64_t dim) : num_embeddings(n), embedding_dim(dim) {
  if (n <= 0 || dim <= 0) fail("Embedding: sizes must be positive, got {} x {}", n, dim);
  weight = register_parameter("weight", Tensor::empty({n, dim}));
  init::normal_(weight);
}

Tensor Embedding::forward(const Tensor& ids) const {
  return embedding(weight, ids);
}

}  // namespace latent::nn
