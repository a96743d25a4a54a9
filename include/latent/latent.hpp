// latent: the one umbrella header. Everything public is reachable from here.
#pragma once
#include "core/allocator.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/factory.hpp"
#include "core/format.hpp"
#include "core/parallel.hpp"
#include "core/random.hpp"
#include "core/tensor.hpp"

#include "autograd/function.hpp"
#include "autograd/grad_mode.hpp"
#include "autograd/gradcheck.hpp"
#include "autograd/ops.hpp"

#include "nn/embedding.hpp"
#include "nn/init.hpp"
#include "nn/linear.hpp"
#include "nn/mlp.hpp"
#include "nn/module.hpp"
#include "nn/norm.hpp"
