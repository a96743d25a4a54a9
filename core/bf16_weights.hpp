// bfloat16 copies of float32 weights for GEMMs under MatmulPrecision::kBFloat16, made once per
// version of the weight (an optimizer step bumps it) instead of once per GEMM: a training step's
// forward, its backward products and a tied use (the MTP modules' shared head) all read one copy.
#pragma once
#include "tensor.hpp"

namespace latent {

// w (float32) rounded to bfloat16 (nearest even), with w's shape and strides. The copy covers w's
// whole storage, so views of one weight share it, and is kept while the storage lives: the next call
// with an unchanged version returns it, a changed version is rounded again (into the same memory when
// no one else holds the old copy). For tensors whose storage outlives many calls (parameters); a
// writer that bypasses the version counter (Tensor::bump_version) is not seen, as autograd's saved
// tensor check would not see it either.
Tensor bf16_weight(const Tensor& w);

// For a writer about to overwrite all of w in place after bumping its version (an optimizer step):
// where to write w's new values rounded, in the same pass, so that the next bf16_weight(w) returns them
// instead of reading w again. Null when there is nothing to keep current: w has no copy (it was never
// multiplied at bf16), does not span its storage, or its copy is still held elsewhere (a graph that
// saved it). Given a pointer, the caller must write every element: the copy counts as current already.
bfloat16* bf16_weight_to_update(const Tensor& w);

// The copies held in memory (a dead weight's until a call for a weight not seen before drops it),
// the elements they hold, and the roundings made since the start of the process (tests and memory
// reports).
struct Bf16WeightStats {
  int64_t copies = 0, elements = 0, roundings = 0;
};
Bf16WeightStats bf16_weight_stats();

}  // namespace latent
