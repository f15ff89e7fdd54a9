// Compressed sparse convolutions as dispatcher ops (inference path of sparseopt.nn's layers):
//
//   csr_pointwise_conv2d(x, row_ptr, col_idx, values, bias)        1x1, stride 1, NCHW
//   sparse_depthwise_conv2d(x, tap_ptr, tap_idx, values, bias, kernel_size, stride, padding)
//
// This file validates the arguments (rank, channel counts, dtypes, devices, index ranges) with
// messages naming what was expected and what was given, makes the input NCHW-contiguous
// (channels_last and strided inputs are converted) and calls the CPU kernels
// (csrc/cpu/sparse_conv_cpu.*) or the CUDA launchers (csrc/cuda/sparse_conv_launch.h). The fake
// kernels, the pure-PyTorch fallback and the autograd formulas are registered from Python.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>

#include "../common/cuda_device.h"
#include "../cpu/sparse_conv_cpu.h"

#ifdef SPARSEOPT_WITH_CUDA
#include "../cuda/sparse_conv_launch.h"
#endif

namespace sparseopt {
namespace {

std::string shape_str(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

void check_index(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.dim() == 1, op, ": ", name, " must be 1-D, got a ", t.dim(), "-D tensor of shape ",
              shape_str(t));
  TORCH_CHECK(t.scalar_type() == at::kInt, op, ": ", name, " must be int32, got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " must be on the input's device ",
              x.device(), ", got ", t.device());
}

void check_common(const char* op, const at::Tensor& x, const at::Tensor& values,
                  const std::optional<at::Tensor>& bias, int64_t out_channels) {
  TORCH_CHECK(x.dim() == 4, op, ": expected a 4-D input [N, C, H, W], got a ", x.dim(),
              "-D tensor of shape ", shape_str(x));
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": expected a float32 or float64 input, got ", x.scalar_type());
  TORCH_CHECK(values.dim() == 1, op, ": values must be 1-D, got shape ", shape_str(values));
  TORCH_CHECK(values.scalar_type() == x.scalar_type(), op, ": values dtype ",
              values.scalar_type(), " differs from the input dtype ", x.scalar_type());
  TORCH_CHECK(values.device() == x.device(), op, ": values must be on the input's device ",
              x.device(), ", got ", values.device());
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    TORCH_CHECK(b.dim() == 1 && b.size(0) == out_channels, op, ": expected a bias of shape [",
                out_channels, "], got ", shape_str(b));
    TORCH_CHECK(b.scalar_type() == x.scalar_type(), op, ": bias dtype ", b.scalar_type(),
                " differs from the input dtype ", x.scalar_type());
    TORCH_CHECK(b.device() == x.device(), op, ": bias must be on the input's device ", x.device(),
                ", got ", b.device());
  }
}

// Check of a compressed index structure on the host. Always for CPU tensors; for the CUDA
// kernels only when SPARSEOPT_CHECK_INDICES=1 (it copies the indices to the host: a
// synchronisation per call), so that a bad index gives this error instead of an illegal-address
// fault that leaves the CUDA context unusable. The layers build these structures themselves.
bool check_device_indices() {
  const char* flag = std::getenv("SPARSEOPT_CHECK_INDICES");
  return flag != nullptr && std::strcmp(flag, "") != 0 && std::strcmp(flag, "0") != 0;
}

void check_ptr_idx(const char* op, const char* ptr_name, const at::Tensor& ptr,
                   const char* idx_name, const at::Tensor& idx, int64_t idx_limit) {
  const int32_t* p = ptr.data_ptr<int32_t>();
  const int64_t rows = ptr.numel() - 1;
  TORCH_CHECK(p[0] == 0, op, ": ", ptr_name, "[0] must be 0, got ", p[0]);
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(p[r] <= p[r + 1], op, ": ", ptr_name, " must be non-decreasing, got ", ptr_name,
                "[", r, "] = ", p[r], " > ", ptr_name, "[", r + 1, "] = ", p[r + 1]);
  }
  TORCH_CHECK(p[rows] == idx.numel(), op, ": ", ptr_name, "[-1] = ", p[rows], " must equal the ",
              "number of nonzeros ", idx.numel(), " (the length of ", idx_name, ")");
  // One vectorised counting pass (this runs on every call, so it must stay cheap next to the
  // convolution); the first offender is looked up only to word the error.
  const int32_t* q = idx.data_ptr<int32_t>();
  const int64_t nnz = idx.numel();
  const uint32_t limit = static_cast<uint32_t>(idx_limit);
  int64_t bad = 0;
#pragma omp simd reduction(+ : bad)
  for (int64_t k = 0; k < nnz; ++k) bad += static_cast<uint32_t>(q[k]) >= limit ? 1 : 0;
  if (bad != 0) {
    for (int64_t k = 0; k < nnz; ++k) {
      TORCH_CHECK(q[k] >= 0 && q[k] < idx_limit, op, ": ", idx_name, "[", k, "] = ", q[k],
                  " is out of range [0, ", idx_limit, ")");
    }
  }
}

const void* bias_ptr(const std::optional<at::Tensor>& b) {
  return b.has_value() ? b->data_ptr() : nullptr;
}

at::Tensor csr_pointwise_conv2d(const at::Tensor& x_in, const at::Tensor& row_ptr,
                                const at::Tensor& col_idx, const at::Tensor& values,
                                const std::optional<at::Tensor>& bias_in) {
  const char* op = "sparseopt::csr_pointwise_conv2d";
  TORCH_CHECK(row_ptr.dim() == 1 && row_ptr.numel() >= 1, op,
              ": row_ptr must be 1-D with O + 1 >= 1 entries, got shape ", shape_str(row_ptr));
  const int64_t O = row_ptr.numel() - 1;
  check_common(op, x_in, values, bias_in, O);
  check_index(op, "row_ptr", row_ptr, x_in);
  check_index(op, "col_idx", col_idx, x_in);
  TORCH_CHECK(col_idx.numel() == values.numel(), op, ": col_idx has ", col_idx.numel(),
              " entries but values has ", values.numel());
  const at::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const at::Tensor rp = row_ptr.contiguous(), ci = col_idx.contiguous(), v = values.contiguous();
  std::optional<at::Tensor> bias;
  if (bias_in.has_value()) bias = bias_in->contiguous();
  at::Tensor out = at::empty({N, O, H, W}, x.options());
  const c10::DeviceGuard guard(x.device());
  if (runs_cuda_kernels(x.device())) {
#ifdef SPARSEOPT_WITH_CUDA
    if (check_device_indices()) check_ptr_idx(op, "row_ptr", rp.cpu(), "col_idx", ci.cpu(), C);
    void* stream = cuda_stream_of(x.device());
    if (x.scalar_type() == at::kFloat) {
      cuda::launch_csr_pointwise_conv2d<float>(
          x.data_ptr<float>(), rp.data_ptr<int32_t>(), ci.data_ptr<int32_t>(),
          v.data_ptr<float>(), static_cast<const float*>(bias_ptr(bias)), out.data_ptr<float>(),
          N, C, O, H * W, stream);
    } else {
      cuda::launch_csr_pointwise_conv2d<double>(
          x.data_ptr<double>(), rp.data_ptr<int32_t>(), ci.data_ptr<int32_t>(),
          v.data_ptr<double>(), static_cast<const double*>(bias_ptr(bias)),
          out.data_ptr<double>(), N, C, O, H * W, stream);
    }
    return out;
#endif
  }
  TORCH_CHECK(x.is_cpu(), op, ": this build of sparseopt has no kernel for device ", x.device());
  check_ptr_idx(op, "row_ptr", rp, "col_idx", ci, C);
  if (x.scalar_type() == at::kFloat) {
    cpu::csr_pointwise_conv2d<float>(x.data_ptr<float>(), rp.data_ptr<int32_t>(),
                                     ci.data_ptr<int32_t>(), v.data_ptr<float>(),
                                     static_cast<const float*>(bias_ptr(bias)),
                                     out.data_ptr<float>(), N, C, O, H * W);
  } else {
    cpu::csr_pointwise_conv2d<double>(x.data_ptr<double>(), rp.data_ptr<int32_t>(),
                                      ci.data_ptr<int32_t>(), v.data_ptr<double>(),
                                      static_cast<const double*>(bias_ptr(bias)),
                                      out.data_ptr<double>(), N, C, O, H * W);
  }
  return out;
}

at::Tensor sparse_depthwise_conv2d(const at::Tensor& x_in, const at::Tensor& tap_ptr,
                                   const at::Tensor& tap_idx, const at::Tensor& values,
                                   const std::optional<at::Tensor>& bias_in,
                                   at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding) {
  const char* op = "sparseopt::sparse_depthwise_conv2d";
  TORCH_CHECK(kernel_size.size() == 2 && kernel_size[0] >= 1 && kernel_size[1] >= 1, op,
              ": kernel_size must be two integers >= 1, got ", kernel_size);
  TORCH_CHECK(stride.size() == 2 && stride[0] >= 1 && stride[1] >= 1, op,
              ": stride must be two integers >= 1, got ", stride);
  TORCH_CHECK(padding.size() == 2 && padding[0] >= 0 && padding[1] >= 0, op,
              ": padding must be two integers >= 0, got ", padding);
  TORCH_CHECK(x_in.dim() == 4, op, ": expected a 4-D input [N, C, H, W], got a ", x_in.dim(),
              "-D tensor of shape ", shape_str(x_in));
  const int64_t C = x_in.size(1);
  TORCH_CHECK(tap_ptr.dim() == 1 && tap_ptr.numel() == C + 1, op, ": expected tap_ptr of shape [",
              C + 1, "] (input channels + 1), got ", shape_str(tap_ptr));
  check_common(op, x_in, values, bias_in, C);
  check_index(op, "tap_ptr", tap_ptr, x_in);
  check_index(op, "tap_idx", tap_idx, x_in);
  TORCH_CHECK(tap_idx.numel() == values.numel(), op, ": tap_idx has ", tap_idx.numel(),
              " entries but values has ", values.numel());
  const int64_t kh = kernel_size[0], kw = kernel_size[1];
  const int64_t sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1];
  const int64_t N = x_in.size(0), H = x_in.size(2), W = x_in.size(3);
  const int64_t OH = (H + 2 * ph - kh) / sh + 1, OW = (W + 2 * pw - kw) / sw + 1;
  TORCH_CHECK(H + 2 * ph >= kh && W + 2 * pw >= kw, op, ": the padded input (",
              H + 2 * ph, " x ", W + 2 * pw, ") is smaller than the kernel (", kh, " x ", kw,
              ")");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor tp = tap_ptr.contiguous(), ti = tap_idx.contiguous(), v = values.contiguous();
  std::optional<at::Tensor> bias;
  if (bias_in.has_value()) bias = bias_in->contiguous();
  at::Tensor out = at::empty({N, C, OH, OW}, x.options());
  const c10::DeviceGuard guard(x.device());
  if (runs_cuda_kernels(x.device())) {
#ifdef SPARSEOPT_WITH_CUDA
    if (check_device_indices()) check_ptr_idx(op, "tap_ptr", tp.cpu(), "tap_idx", ti.cpu(), kh * kw);
    void* stream = cuda_stream_of(x.device());
    if (x.scalar_type() == at::kFloat) {
      cuda::launch_sparse_depthwise_conv2d<float>(
          x.data_ptr<float>(), tp.data_ptr<int32_t>(), ti.data_ptr<int32_t>(),
          v.data_ptr<float>(), static_cast<const float*>(bias_ptr(bias)), out.data_ptr<float>(),
          N, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, stream);
    } else {
      cuda::launch_sparse_depthwise_conv2d<double>(
          x.data_ptr<double>(), tp.data_ptr<int32_t>(), ti.data_ptr<int32_t>(),
          v.data_ptr<double>(), static_cast<const double*>(bias_ptr(bias)),
          out.data_ptr<double>(), N, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, stream);
    }
    return out;
#endif
  }
  TORCH_CHECK(x.is_cpu(), op, ": this build of sparseopt has no kernel for device ", x.device());
  check_ptr_idx(op, "tap_ptr", tp, "tap_idx", ti, kh * kw);
  if (x.scalar_type() == at::kFloat) {
    cpu::sparse_depthwise_conv2d<float>(x.data_ptr<float>(), tp.data_ptr<int32_t>(),
                                        ti.data_ptr<int32_t>(), v.data_ptr<float>(),
                                        static_cast<const float*>(bias_ptr(bias)),
                                        out.data_ptr<float>(), N, C, H, W, OH, OW, kh, kw, sh,
                                        sw, ph, pw);
  } else {
    cpu::sparse_depthwise_conv2d<double>(x.data_ptr<double>(), tp.data_ptr<int32_t>(),
                                         ti.data_ptr<int32_t>(), v.data_ptr<double>(),
                                         static_cast<const double*>(bias_ptr(bias)),
                                         out.data_ptr<double>(), N, C, H, W, OH, OW, kh, kw, sh,
                                         sw, ph, pw);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparseopt, m) {
  m.def(
      "csr_pointwise_conv2d(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor values, "
      "Tensor? bias=None) -> Tensor");
  m.def(
      "sparse_depthwise_conv2d(Tensor x, Tensor tap_ptr, Tensor tap_idx, Tensor values, "
      "Tensor? bias, int[2] kernel_size, int[2] stride=1, int[2] padding=0) -> Tensor");
}

TORCH_LIBRARY_IMPL(sparseopt, CPU, m) {
  m.impl("csr_pointwise_conv2d", &csr_pointwise_conv2d);
  m.impl("sparse_depthwise_conv2d", &sparse_depthwise_conv2d);
}

#ifdef SPARSEOPT_WITH_CUDA
TORCH_LIBRARY_IMPL(sparseopt, CUDA, m) {
  m.impl("csr_pointwise_conv2d", &csr_pointwise_conv2d);
  m.impl("sparse_depthwise_conv2d", &sparse_depthwise_conv2d);
}
#endif

}  // namespace sparseopt
