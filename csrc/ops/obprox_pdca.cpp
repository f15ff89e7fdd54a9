// OBProx-SG and pDCA_e as dispatcher ops: obproxsg_step_, pdca_step_.
//
// Same shape as csrc/ops/l1.cpp: each op checks its scalars, maps its arguments onto a rule Op
// (csrc/rules/obproxsg.h, csrc/rules/pdca.h) and hands it to run_elementwise, which validates
// the tensor lists, handles GradScaler and the step counters, then runs the CPU loop or the CUDA
// multi-tensor kernel. The fake kernels and the pure-PyTorch fallback are registered from Python
// (sparseopt/ops/).
#include <torch/library.h>

#include <cmath>
#include <type_traits>

#include "../common/elementwise.h"
#include "../common/hyper.h"
#include "../common/registration.h"
#include "../rules/obproxsg.h"
#include "../rules/pdca.h"

namespace sparseopt {
namespace {



template <class LrT>  // double, or const at::Tensor& (the .tensor_lr overload)
void obproxsg_step_(at::TensorList params, at::TensorList grads, at::TensorList steps,
                    LrT lr_value, double l1, double eps, int64_t steps_per_epoch, int64_t n_p, int64_t n_o,
                    const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf) {
  const char* name = "sparseopt::obproxsg_step_";
  const Lr lr = lr_arg(name, lr_value);
  check_nonnegative(name, "l1", l1);
  check_nonnegative(name, "eps", eps);
  check_int(name, "steps_per_epoch", steps_per_epoch, steps_per_epoch >= 1, "an int >= 1");
  check_int(name, "n_p", n_p, n_p >= 1, "an int >= 1");
  check_int(name, "n_o", n_o, n_o >= -1,
            "an int >= 1, 0 (Prox-SG phase only) or -1 (infinity: OBProx-SG+)");
  using Op = rules::ObProxSgOp;
  const Op op{lr.value, l1, eps, static_cast<long long>(steps_per_epoch), static_cast<long long>(n_p),
              static_cast<long long>(n_o)};
  std::array<NamedList, Op::kDepth> lists;
  lists[Op::W] = {"params", params};
  lists[Op::G] = {"grads", grads};
  run_elementwise(name, lists, steps, grad_scale, found_inf, op, lr.device);
}

template <class LrT>
void pdca_step_(at::TensorList params, at::TensorList grads, at::TensorList iterates,
                at::TensorList steps, const at::Tensor& betas, LrT lr_value, double l1, double theta,
                double weight_decay, const std::optional<at::Tensor>& grad_scale,
                const std::optional<at::Tensor>& found_inf) {
  const char* name = "sparseopt::pdca_step_";
  const Lr lr = lr_arg(name, lr_value);
  check_nonnegative(name, "l1", l1);
  check_positive(name, "theta", theta);
  check_nonnegative(name, "weight_decay", weight_decay);
  TORCH_CHECK(betas.defined() && betas.layout() == at::kStrided && betas.dim() == 1 &&
                  betas.numel() >= 1 && betas.scalar_type() == at::kDouble &&
                  betas.is_contiguous(),
              name, ": betas must be a contiguous 1-D float64 tensor with one entry per step "
              "of the restart period (restart >= 1 entries), got ",
              betas.defined() ? betas.toString() : std::string("an undefined tensor"),
              betas.defined() ? " of shape " : "",
              betas.defined() ? c10::str(betas.sizes()) : std::string());
  if (!params.empty() && params[0].defined()) {
    TORCH_CHECK(betas.device() == params[0].device(), name, ": betas is on ", betas.device(),
                " but the parameters are on ", params[0].device(),
                "; it must be on the parameters' device");
  }
  auto run = [&](auto WD) {
    using Op = rules::PdcaOp<decltype(WD)::value>;
    const Op op{lr.value, l1, theta, weight_decay, betas.data_ptr<double>(),
                static_cast<long long>(betas.numel())};
    std::array<NamedList, Op::kDepth> lists;
    lists[Op::P] = {"params", params};
    lists[Op::G] = {"grads", grads};
    lists[Op::X] = {"iterates", iterates};
    run_elementwise(name, lists, steps, grad_scale, found_inf, op, lr.device);
  };
  if (weight_decay != 0) run(std::true_type{});
  else run(std::false_type{});
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparseopt, m) {
  def_op(m,
         "obproxsg_step_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] steps, float lr, "
         "float l1, float eps, int steps_per_epoch, int n_p, int n_o, Tensor? grad_scale=None, "
         "Tensor? found_inf=None) -> ()");
  def_op(m,
         "pdca_step_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] iterates, "
         "Tensor(d!)[] steps, Tensor betas, float lr, float l1, float theta, float weight_decay, "
         "Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");
}

static void register_kernels(torch::Library& m) {
  impl_op(m, "obproxsg_step_", &obproxsg_step_<double>, &obproxsg_step_<const at::Tensor&>);
  impl_op(m, "pdca_step_", &pdca_step_<double>, &pdca_step_<const at::Tensor&>);
}

SPARSEOPT_REGISTER_KERNELS(register_kernels)

}  // namespace sparseopt
