// AdaHessian as two dispatcher ops (csrc/rules/adahessian.h):
//   hutchinson_diag_  -- D from z and Hz: |z*Hz|, averaged over a conv weight's spatial taps
//   adahessian_step_  -- the fused moment update and step (multi-tensor element-wise kernel)
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>

#include "../common/cuda_device.h"
#include "../common/elementwise.h"
#include "../cpu/hutchinson_cpu.h"
#include "../common/hyper.h"
#include "../common/registration.h"
#include "../rules/adahessian.h"

#ifdef SPARSEOPT_WITH_CUDA
#include "../cuda/hutchinson_launch.h"
#endif

namespace sparseopt {
namespace {


// Taps per row: a 4-D conv weight (out, in, kh, kw) averages over kh*kw; others are element-wise.
int64_t row_length(const at::Tensor& t) { return t.dim() == 4 ? t.size(2) * t.size(3) : 1; }

void hutchinson_diag_(at::TensorList diags, at::TensorList zs, at::TensorList hzs, double weight,
                      bool accumulate) {
  const char* name = "sparseopt::hutchinson_diag_";
  check_positive(name, "weight", weight);
  check_tensor_lists(name, {{"diags", diags}, {"zs", zs}, {"hzs", hzs}}, std::nullopt,
                     std::nullopt, std::nullopt);
  for (size_t i = 0; i < diags.size(); ++i) {
    const at::Tensor& diag = diags[i];
    if (diag.numel() == 0) continue;
    // Rows are runs of row_len consecutive elements of the logical (contiguous) layout.
    const at::Tensor z = zs[i].contiguous();
    const at::Tensor hz = hzs[i].contiguous();
    at::Tensor out = diag.is_contiguous() ? diag : diag.contiguous();
    const int64_t row_len = row_length(diag);
    const int64_t rows = diag.numel() / row_len;
    if (runs_cuda_kernels(diag.device())) {
#ifdef SPARSEOPT_WITH_CUDA
      const c10::DeviceGuard guard(diag.device());
      cuda::launch_hutchinson_rows(to_cuda_dtype(diag.scalar_type()), z.data_ptr(), hz.data_ptr(),
                                   out.data_ptr(), rows, row_len, weight, accumulate,
                                   cuda_stream_of(diag.device()));
#endif
    } else if (diag.is_cuda()) {
      TORCH_CHECK(false, name, ": this build of sparseopt has no CUDA kernels");
    } else {
      TORCH_CHECK(diag.is_cpu(), name, ": no native kernel for device ", diag.device());
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, diag.scalar_type(),
                                      "hutchinson_diag_", [&] {
        cpu::hutchinson_rows(z.data_ptr<scalar_t>(), hz.data_ptr<scalar_t>(),
                             out.data_ptr<scalar_t>(), rows, row_len, weight, accumulate);
      });
    }
    if (!out.is_same(diag)) diag.copy_(out);
  }
  bump_versions(diags);
}

template <class LrT>  // double, or const at::Tensor& (the .tensor_lr overload)
void adahessian_step_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                      at::TensorList exp_hessian_diag_sqs, at::TensorList hessian_diags,
                      at::TensorList steps, LrT lr_value, double beta1, double beta2, double eps,
                      double weight_decay, double hessian_power,
                      const std::optional<at::Tensor>& grad_scale,
                      const std::optional<at::Tensor>& found_inf) {
  const char* name = "sparseopt::adahessian_step_";
  const Lr lr = lr_arg(name, lr_value);
  check_hyper(name, "beta1", beta1, beta1 >= 0 && beta1 < 1, "0 <= beta1 < 1");
  check_hyper(name, "beta2", beta2, beta2 >= 0 && beta2 < 1, "0 <= beta2 < 1");
  check_positive(name, "eps", eps);
  check_nonnegative(name, "weight_decay", weight_decay);
  check_hyper(name, "hessian_power", hessian_power, hessian_power > 0 && hessian_power <= 1,
           "0 < hessian_power <= 1");
  using rules::HessianPower;
  auto run = [&](auto power) {
    using Op = rules::AdaHessianOp<decltype(power)::value>;
    const Op op{lr.value, beta1, beta2, eps, weight_decay, hessian_power};
    std::array<NamedList, Op::kDepth> lists;
    lists[Op::W] = {"params", params};
    lists[Op::G] = {"grads", grads};
    lists[Op::M] = {"exp_avgs", exp_avgs};
    lists[Op::V] = {"exp_hessian_diag_sqs", exp_hessian_diag_sqs};
    lists[Op::D] = {"hessian_diags", hessian_diags};
    run_elementwise(name, lists, steps, grad_scale, found_inf, op, lr.device);
  };
  if (hessian_power == 1.0) {
    run(std::integral_constant<HessianPower, HessianPower::kOne>{});
  } else if (hessian_power == 0.5) {
    run(std::integral_constant<HessianPower, HessianPower::kHalf>{});
  } else {
    run(std::integral_constant<HessianPower, HessianPower::kOther>{});
  }
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparseopt, m) {
  def_op(m,
         "hutchinson_diag_(Tensor(a!)[] diags, Tensor[] zs, Tensor[] hzs, float weight, "
         "bool accumulate) -> ()");
  def_op(m,
         "adahessian_step_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] exp_avgs, "
         "Tensor(d!)[] exp_hessian_diag_sqs, Tensor[] hessian_diags, Tensor(e!)[] steps, "
         "float lr, float beta1, float beta2, float eps, float weight_decay, "
         "float hessian_power, Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");
}

static void register_kernels(torch::Library& m) {
  m.impl("hutchinson_diag_", &hutchinson_diag_);
  impl_op(m, "adahessian_step_", &adahessian_step_<double>,
          &adahessian_step_<const at::Tensor&>);
}

SPARSEOPT_REGISTER_KERNELS(register_kernels)

}  // namespace sparseopt
