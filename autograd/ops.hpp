// Every differentiable op of latent, in one include.
#pragma once
#include "elementwise.hpp"
#include "index_ops.hpp"
#include "linalg.hpp"
#include "nn_ops.hpp"
#include "reduce.hpp"
#include "shape_ops.hpp"
#include "sort_ops.hpp"
#include "attention.hpp"
#include "mla_absorbed.hpp"
#include "mla_heads.hpp"
#include "moe_experts.hpp"
#include "rotary.hpp"
