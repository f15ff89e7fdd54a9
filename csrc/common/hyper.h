// The checks of an op's scalar arguments (hyperparameters), shared by every op; like the tensor
// checks (tensor_lists.h) they run before anything is written.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "cuda_device.h"

namespace sparseopt {

// A float argument: finite and `ok` (the domain test the caller evaluated).
inline void check_hyper(const char* op, const char* name, double value, bool ok,
                        const char* accepted) {
  TORCH_CHECK(std::isfinite(value) && ok, op, ": ", name, " = ", value, " is invalid; accepted: ",
              accepted);
}

// A bound that may be infinite (an activation clamp's): anything but NaN.
inline void check_not_nan(const char* op, const char* name, double value) {
  TORCH_CHECK(!std::isnan(value), op, ": ", name, " = ", value, " is invalid; accepted: ",
              "a float that is not NaN (-inf and inf included)");
}

// The two domains most hyperparameters have.
inline void check_nonnegative(const char* op, const char* name, double value) {
  check_hyper(op, name, value, value >= 0, "a finite float >= 0");
}
inline void check_positive(const char* op, const char* name, double value) {
  check_hyper(op, name, value, value > 0, "a finite float > 0");
}

inline void check_int(const char* op, const char* name, int64_t value, bool ok,
                      const char* accepted) {
  TORCH_CHECK(ok, op, ": ", name, " = ", value, " is invalid; accepted: ", accepted);
}

// The learning rate as an op takes it. torch.optim accepts lr as a Tensor, so that a scheduler
// changes it without a new trace under torch.compile or a re-capture of a CUDA graph; every op
// with an lr follows with an overload `<op>.tensor_lr` whose lr is a one-element float tensor.
// A CPU tensor is read on the host (no synchronisation); one on the parameters' CUDA device is
// read by the kernel, so its value is not checked (as in torch.optim).
struct Lr {
  double value = 0;   // the value, where the host can read it
  at::Tensor device;  // else: the lr as float64 on the parameters' device (defined iff used)
};

inline Lr lr_arg(const char* op, double lr) {
  check_nonnegative(op, "lr", lr);
  return {lr, at::Tensor()};
}

inline Lr lr_arg(const char* op, const at::Tensor& lr) {
  TORCH_CHECK(lr.defined() && lr.layout() == at::kStrided && lr.numel() == 1 &&
                  at::isFloatingType(lr.scalar_type()),
              op, ": lr must be a float or a real floating-point tensor with one element, got ",
              lr.defined() ? lr.toString() : std::string("an undefined tensor"),
              lr.defined() ? " of shape " : "", lr.defined() ? c10::str(lr.sizes()) : "");
  // A CPU lr is read here (checked like a float); one on the kernels' device is read by the
  // kernel at launch (no host sync; what CUDA graphs replay). The emulation build treats CPU
  // tensors as that device, so its tests run the kernel's read.
  if (lr.is_cpu() && !runs_cuda_kernels(lr.device())) return lr_arg(op, lr.item<double>());
  return {0.0, lr.scalar_type() == at::kDouble ? lr : lr.to(at::kDouble)};
}

// The schema of the overload `<op>.tensor_lr`: `schema` with `float lr` made `Tensor lr`.
inline std::string tensor_lr_schema(const std::string& schema) {
  const size_t paren = schema.find('(');
  const size_t lr = schema.find("float lr,");
  TORCH_CHECK(paren != std::string::npos && lr != std::string::npos,
              "sparseopt: no `float lr` in the schema ", schema);
  return schema.substr(0, paren) + ".tensor_lr" + schema.substr(paren, lr - paren) + "Tensor" +
         schema.substr(lr + 5);
}

}  // namespace sparseopt
