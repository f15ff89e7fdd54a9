// The l1 family as dispatcher ops: prox_sgd_step_, sqrt_t_prox_sgd_step_, rda_step_.
//
// Each op maps its arguments onto a rule Op (csrc/rules/) and hands it to run_elementwise,
// which validates, then runs the CPU loop or the CUDA multi-tensor kernel. The same function is
// registered for the CPU and the CUDA dispatch keys; the fake (meta) kernels and the pure-PyTorch
// fallback for other devices are registered from Python (sparseopt/ops/).
#include <torch/library.h>

#include <cmath>
#include <type_traits>

#include "../common/elementwise.h"
#include "../common/hyper.h"
#include "../common/registration.h"
#include "../rules/prox_sgd.h"
#include "../rules/rda.h"

namespace sparseopt {
namespace {


// Calls f(std::integral_constant<bool, a>, std::integral_constant<bool, b>).
template <class F>
void with_bools(bool a, bool b, F&& f) {
  using T = std::true_type;
  using N = std::false_type;
  if (a && b) f(T{}, T{});
  else if (a) f(T{}, N{});
  else if (b) f(N{}, T{});
  else f(N{}, N{});
}

template <bool kSqrtT>
void prox_sgd_family(const char* name, at::TensorList params, at::TensorList grads,
                     at::TensorList momentum_buffers, at::TensorList steps, const Lr& lr,
                     double l1, double gamma, double momentum, double weight_decay,
                     const std::optional<at::Tensor>& grad_scale,
                     const std::optional<at::Tensor>& found_inf) {
  check_nonnegative(name, "l1", l1);
  check_positive(name, "gamma", gamma);
  check_hyper(name, "momentum", momentum, momentum >= 0 && momentum < 1, "0 <= momentum < 1");
  check_nonnegative(name, "weight_decay", weight_decay);
  const bool has_momentum = momentum != 0;
  TORCH_CHECK(has_momentum == !momentum_buffers.empty() || params.empty(), name,
              ": momentum_buffers must hold one buffer per parameter when momentum != 0 and be "
              "empty when momentum == 0 (got ", momentum_buffers.size(), " buffers, momentum = ",
              momentum, ")");
  with_bools(has_momentum, weight_decay != 0, [&](auto M, auto WD) {
    using Op = rules::ProxSgdOp<decltype(M)::value, decltype(WD)::value, kSqrtT>;
    const Op op{lr.value, l1, momentum, weight_decay, gamma};
    std::array<NamedList, Op::kDepth> lists;
    lists[Op::W] = {"params", params};
    lists[Op::G] = {"grads", grads};
    if constexpr (Op::kDepth == 3) lists[2] = {"momentum_buffers", momentum_buffers};
    run_elementwise(name, lists, steps, grad_scale, found_inf, op, lr.device);
  });
}

template <class LrT>  // double, or const at::Tensor& (the .tensor_lr overload)
void prox_sgd_step_(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                    LrT lr, double l1, double momentum, double weight_decay,
                    const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf) {
  const char* name = "sparseopt::prox_sgd_step_";
  prox_sgd_family<false>(name, params, grads, momentum_buffers, {}, lr_arg(name, lr), l1, 1.0,
                         momentum, weight_decay, grad_scale, found_inf);
}

template <class LrT>
void sqrt_t_prox_sgd_step_(at::TensorList params, at::TensorList grads,
                           at::TensorList momentum_buffers, at::TensorList steps, LrT lr,
                           double l1, double gamma, double momentum, double weight_decay,
                           const std::optional<at::Tensor>& grad_scale,
                           const std::optional<at::Tensor>& found_inf) {
  const char* name = "sparseopt::sqrt_t_prox_sgd_step_";
  prox_sgd_family<true>(name, params, grads, momentum_buffers, steps, lr_arg(name, lr), l1, gamma,
                        momentum, weight_decay, grad_scale, found_inf);
}

template <class LrT>
void rda_step_(at::TensorList params, at::TensorList grads, at::TensorList grad_avgs,
               at::TensorList centers, at::TensorList steps, LrT lr_value, double l1, double gamma,
               bool retrain, int64_t retrain_after, const std::optional<at::Tensor>& grad_scale,
               const std::optional<at::Tensor>& found_inf) {
  const char* name = "sparseopt::rda_step_";
  const Lr lr = lr_arg(name, lr_value);
  check_nonnegative(name, "l1", l1);
  check_positive(name, "gamma", gamma);
  TORCH_CHECK(centers.empty() || centers.size() == params.size(), name,
              ": centers must be empty (w0 = 0) or hold one tensor per parameter, got ",
              centers.size(), " for ", params.size(), " parameters");
  const bool has_center = !centers.empty();
  auto run = [&](auto C) {
    using Op = rules::RdaOp<decltype(C)::value>;
    const Op op{lr.value, l1, gamma, retrain, static_cast<long long>(retrain_after)};
    std::array<NamedList, Op::kDepth> lists;
    lists[Op::W] = {"params", params};
    lists[Op::G] = {"grads", grads};
    lists[Op::GBAR] = {"grad_avgs", grad_avgs};
    if constexpr (Op::kDepth == 4) lists[3] = {"centers", centers};
    run_elementwise(name, lists, steps, grad_scale, found_inf, op, lr.device);
  };
  if (has_center) run(std::true_type{});
  else run(std::false_type{});
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparseopt, m) {
  def_op(m,
         "prox_sgd_step_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] momentum_buffers, "
         "float lr, float l1, float momentum, float weight_decay, Tensor? grad_scale=None, "
         "Tensor? found_inf=None) -> ()");
  def_op(m,
         "sqrt_t_prox_sgd_step_(Tensor(a!)[] params, Tensor(b!)[] grads, "
         "Tensor(c!)[] momentum_buffers, Tensor(d!)[] steps, float lr, float l1, float gamma, "
         "float momentum, float weight_decay, Tensor? grad_scale=None, "
         "Tensor? found_inf=None) -> ()");
  def_op(m,
         "rda_step_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] grad_avgs, "
         "Tensor[] centers, Tensor(d!)[] steps, float lr, float l1, float gamma, bool retrain, "
         "int retrain_after, Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");
}

static void register_kernels(torch::Library& m) {
  impl_op(m, "prox_sgd_step_", &prox_sgd_step_<double>, &prox_sgd_step_<const at::Tensor&>);
  impl_op(m, "sqrt_t_prox_sgd_step_", &sqrt_t_prox_sgd_step_<double>,
          &sqrt_t_prox_sgd_step_<const at::Tensor&>);
  impl_op(m, "rda_step_", &rda_step_<double>, &rda_step_<const at::Tensor&>);
}

SPARSEOPT_REGISTER_KERNELS(register_kernels)

}  // namespace sparseopt
