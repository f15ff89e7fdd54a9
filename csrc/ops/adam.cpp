// Adam / AdamW as a dispatcher op: adam_step_ (csrc/rules/adam.h), registered for CPU and CUDA.
#include <torch/library.h>

#include <cmath>

#include "../common/elementwise.h"
#include "../common/hyper.h"
#include "../common/registration.h"
#include "../rules/adam.h"

namespace sparseopt {
namespace {

template <class Op>
void run_adam(const char* name, at::TensorList params, at::TensorList grads,
              at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
              at::TensorList max_exp_avg_sqs, at::TensorList steps, const Op& op,
              const at::Tensor& device_lr, const std::optional<at::Tensor>& grad_scale,
              const std::optional<at::Tensor>& found_inf) {
  constexpr bool kAmsgrad = Op::kDepth == 5;
  std::array<NamedList, Op::kDepth> lists;
  lists[Op::W] = {"params", params};
  lists[Op::G] = {"grads", grads};
  lists[Op::M] = {"exp_avgs", exp_avgs};
  lists[Op::V] = {"exp_avg_sqs", exp_avg_sqs};
  if constexpr (kAmsgrad) lists[Op::kDepth - 1] = {"max_exp_avg_sqs", max_exp_avg_sqs};
  run_elementwise(name, lists, steps, grad_scale, found_inf, op, device_lr);
}

template <class LrT>  // double, or const at::Tensor& (the .tensor_lr overload)
void adam_step_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                at::TensorList steps, LrT lr_value, double beta1, double beta2, double eps,
                double weight_decay, bool amsgrad, bool maximize, bool decoupled_weight_decay,
                double l1, const std::optional<at::Tensor>& grad_scale,
                const std::optional<at::Tensor>& found_inf) {
  const char* name = "sparseopt::adam_step_";
  const Lr lr = lr_arg(name, lr_value);
  check_hyper(name, "beta1", beta1, beta1 >= 0 && beta1 < 1, "0 <= beta1 < 1");
  check_hyper(name, "beta2", beta2, beta2 >= 0 && beta2 < 1, "0 <= beta2 < 1");
  check_positive(name, "eps", eps);
  check_nonnegative(name, "weight_decay", weight_decay);
  check_nonnegative(name, "l1", l1);
  TORCH_CHECK(amsgrad || max_exp_avg_sqs.empty() || params.empty(), name,
              ": max_exp_avg_sqs must be empty when amsgrad is False (got ",
              max_exp_avg_sqs.size(), ")");
  using WD = rules::WeightDecay;
  const WD wd = weight_decay == 0 ? WD::kNone : decoupled_weight_decay ? WD::kDecoupled : WD::kL2;
  // torch's lerp(m, g, 1 - beta1) takes the form "from m" when |1 - beta1| < 0.5, decided in
  // the tensors' math type (float for fp32/fp16/bf16, double for fp64); the two only disagree
  // for beta1 within 2^-25 of 0.5, where a mixed-dtype list follows its first tensor.
  const bool fp64 = !params.empty() && params[0].scalar_type() == at::kDouble;
  const bool from_self = fp64 ? std::abs(1 - beta1) < 0.5
                              : std::abs(static_cast<float>(1 - beta1)) < 0.5f;
  auto go = [&](auto ams, auto wdc) {
    constexpr bool A = decltype(ams)::value;
    constexpr WD W = decltype(wdc)::value;
    auto run = [&](auto lerp) {
      const rules::AdamOp<A, W, decltype(lerp)::value> op{lr.value, beta1, beta2, eps,
                                                          weight_decay, l1, maximize};
      run_adam(name, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, op, lr.device,
               grad_scale, found_inf);
    };
    if (from_self) run(std::true_type{});
    else run(std::false_type{});
  };
  auto with_wd = [&](auto ams) {
    switch (wd) {
      case WD::kNone: go(ams, std::integral_constant<WD, WD::kNone>{}); break;
      case WD::kL2: go(ams, std::integral_constant<WD, WD::kL2>{}); break;
      case WD::kDecoupled: go(ams, std::integral_constant<WD, WD::kDecoupled>{}); break;
    }
  };
  if (amsgrad) with_wd(std::true_type{});
  else with_wd(std::false_type{});
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparseopt, m) {
  def_op(m,
         "adam_step_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] exp_avgs, "
         "Tensor(d!)[] exp_avg_sqs, Tensor(e!)[] max_exp_avg_sqs, Tensor(f!)[] steps, float lr, "
         "float beta1, float beta2, float eps, float weight_decay, bool amsgrad, bool maximize, "
         "bool decoupled_weight_decay, float l1, Tensor? grad_scale=None, "
         "Tensor? found_inf=None) -> ()");
}

static void register_kernels(torch::Library& m) {
  impl_op(m, "adam_step_", &adam_step_<double>, &adam_step_<const at::Tensor&>);
}

SPARSEOPT_REGISTER_KERNELS(register_kernels)

}  // namespace sparseopt
