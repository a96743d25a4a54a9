// The custom-op API: derive from Function<YourOp>, write static forward and backward, call
// YourOp::apply(args...). This is how users add differentiable ops without touching the library.
//
//   struct ScaledTanh : latent::autograd::Function<ScaledTanh> {
//     static Tensor forward(AutogradContext* ctx, const Tensor& x, double scale) {
//       Tensor y = latent::tanh(x * scale);
//       ctx->save_for_backward({y});
//       ctx->saved_data["scale"] = scale;
//       return y * 1.0;
//     }
//     static std::vector<Tensor> backward(AutogradContext* ctx, std::vector<Tensor> grad_outputs) {
//       Tensor y = ctx->get_saved_variables()[0];
//       double scale = std::any_cast<double>(ctx->saved_data["scale"]);
//       return {grad_outputs[0] * (1.0 - y * y) * scale, Tensor()};   // one per forward argument
//     }
//   };
//
// forward runs with grad mode off; it may return a Tensor or a std::vector<Tensor>. backward gets one
// gradient per output (zeros where an output received none) and returns one gradient per forward
// argument (undefined for non-tensor arguments or inputs that need none) — or one per tensor argument.
// Writing in place to a saved tensor before the backward makes the backward throw (SavedVersions in
// node.hpp), and an exception from backward is re-thrown as "YourOp backward: <its message>".
#pragma once
#include <any>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "../core/factory.hpp"
#include "anomaly.hpp"
#include "grad_mode.hpp"
#include "node.hpp"

namespace latent::autograd {

class AutogradContext {
 public:
  // Their versions are remembered: writing to one in place before the backward makes it throw.
  void save_for_backward(std::vector<Tensor> tensors) {
    versions_.clear();
    versions_.save(tensors);
    saved_ = std::move(tensors);
  }
  const std::vector<Tensor>& get_saved_variables() const {
    if (released_) fail("AutogradContext: saved tensors were freed by a previous backward; use retain_graph");
    return saved_;
  }
  bool needs_input_grad(size_t tensor_input) const {
    return tensor_input < needs_input_grad_.size() && needs_input_grad_[tensor_input];
  }
  std::map<std::string, std::any> saved_data;

  // Engine side.
  void release() {
    release_iteratively(std::move(saved_));  // saved inputs may head long chains of nodes
    saved_.clear();
    versions_.clear();
    saved_data.clear();
    released_ = true;
  }
  std::vector<bool> needs_input_grad_;
  SavedVersions versions_;

 private:
  std::vector<Tensor> saved_;
  bool released_ = false;
};

template <class Op> class FunctionNode final : public Node {
 public:
  ~FunctionNode() override { ctx.release(); }
  std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) override {
    for (size_t i = 0; i < grad_outputs.size(); ++i)
      if (!grad_outputs[i].defined()) grad_outputs[i] = zeros(output_shapes[i], output_dtypes[i]);
    ctx.versions_.check(name());
    std::vector<Tensor> grads;
    try {
      grads = Op::backward(&ctx, std::move(grad_outputs));
    } catch (const std::exception& e) {  // the engine's caller sees which of many ops failed
      fail("{} backward: {}", name(), e.what());
    }
    if (grads.size() == tensor_arg_positions.size() + non_tensor_args) {
      std::vector<Tensor> picked;  // one per forward argument: keep the tensor positions
      for (size_t pos : tensor_arg_positions) picked.push_back(grads[pos]);
      grads = std::move(picked);
    }
    if (grads.size() != next_edges.size())
      fail("{}: backward returned {} gradients for {} tensor inputs", name(), grads.size(), next_edges.size());
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!grads[i].defined() || !next_edges[i].node) continue;
      if (grads[i].shape() != input_shapes[i])
        fail("{}: backward returned a gradient of shape {} for input {} of shape {}", name(),
            shape_str(grads[i].shape()), i, shape_str(input_shapes[i]));
      if (grads[i].dtype() != input_dtypes[i])
        fail("{}: backward returned a {} gradient for input {} of dtype {}", name(), dtype_name(grads[i].dtype()), i,
            dtype_name(input_dtypes[i]));
    }
    return grads;
  }
  void release_saved() override { ctx.release(); }
  std::string name() const override { return type_name(typeid(Op)); }

  AutogradContext ctx;
  std::vector<Shape> output_shapes, input_shapes;
  std::vector<DType> output_dtypes, input_dtypes;
  std::vector<size_t> tensor_arg_positions;
  size_t non_tensor_args = 0;
};

template <class Op> struct Function {
  template <class... Args> static auto apply(Args&&... args) {
    std::vector<Tensor> inputs;
    std::vector<size_t> tensor_positions;
    size_t position = 0, non_tensor = 0;
    auto collect = [&](const auto& arg) {
      if constexpr (std::is_same_v<std::decay_t<decltype(arg)>, Tensor>) {
        inputs.push_back(arg);
        tensor_positions.push_back(position);
      } else {
        ++non_tensor;
      }
      ++position;
    };
    (collect(args), ...);

    auto node = std::make_shared<FunctionNode<Op>>();
    for (const Tensor& t : inputs) node->ctx.needs_input_grad_.push_back(any_requires_grad({t}));
    using Result = decltype(Op::forward(&node->ctx, std::forward<Args>(args)...));
    std::vector<Tensor> outputs;
    {
      NoGradGuard no_grad;
      if constexpr (std::is_same_v<Result, Tensor>) outputs = {Op::forward(&node->ctx, std::forward<Args>(args)...)};
      else outputs = Op::forward(&node->ctx, std::forward<Args>(args)...);
    }
    // Checked whether or not a node is recorded, like the library's own ops (anomaly.hpp).
    if (is_anomaly_enabled()) [[unlikely]]
      check_forward(node->name(), outputs, inputs);
    if (any_requires_grad(inputs)) {
      // Results handed out are fresh handles: the context may have saved the originals, and a saved
      // output that pointed back at this node would keep the graph alive forever.
      for (Tensor& out : outputs) {
        node->output_shapes.push_back(out.shape());
        node->output_dtypes.push_back(out.dtype());
        out = out.detach();
      }
      for (const Tensor& t : inputs) {
        node->next_edges.push_back(gradient_edge(t));
        node->input_shapes.push_back(t.defined() ? t.shape() : Shape{});
        node->input_dtypes.push_back(t.defined() ? t.dtype() : kFloat32);
      }
      node->ctx.versions_.name_roles(inputs, outputs);
      node->num_outputs = static_cast<int>(outputs.size());
      node->tensor_arg_positions = tensor_positions;
      node->non_tensor_args = non_tensor;
      set_history(outputs, node);
    }
    if constexpr (std::is_same_v<Result, Tensor>) return outputs[0];
    else return outputs;
  }
};

}  // namespace latent::autograd
