// Compressed sparse convolutions as dispatcher ops (inference path of sparseopt.nn's layers):
//
//   csr_pointwise_conv2d(x, row_ptr, col_idx, values, bias)        1x1, stride 1, NCHW
//   sparse_depthwise_conv2d(x, tap_ptr, tap_idx, values, bias, kernel_size, stride, padding)
//
// and their fused inference forms (CPU kernels; the reference runs them elsewhere), which add an
// activation clamp to [act_min, act_max] in the kernel's epilogue and choose the output layout:
// NCHW, or channel-major (`channel_major`: memory [C, N, H, W], returned as the [N, C, H, W]
// view, so its values and shape are those of the NCHW result). They take any input whose H x W
// planes are contiguous (NCHW or channel-major) without a copy:
//
//   csr_pointwise_conv2d_fused(x, row_ptr, col_idx, values, bias, act_min, act_max, channel_major)
//   sparse_depthwise_conv2d_fused(x, tap_ptr, tap_idx, values, bias, kernel_size, stride, padding,
//                                 act_min, act_max, channel_major)
//
// This file validates the arguments (rank, channel counts, dtypes, devices, index ranges) with
// messages naming what was expected and what was given, makes the input's planes contiguous
// (the plain ops: NCHW-contiguous; channels_last and strided inputs are converted) and calls the
// CPU kernels (csrc/cpu/sparse_conv_cpu.*) or the CUDA launchers (csrc/cuda/sparse_conv_launch.h).
// The fake kernels, the pure-PyTorch fallback and the autograd formulas are registered from
// Python.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>

#include "../common/cuda_device.h"
#include "../common/hyper.h"
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

// True when each H x W plane of the 4-D tensor t is contiguous (its start: n * stride(0) +
// c * stride(1)), as in NCHW and channel-major tensors.
bool planes_contiguous(const at::Tensor& t) {
  return (t.size(3) <= 1 || t.stride(3) == 1) && (t.size(2) <= 1 || t.stride(2) == t.size(3));
}

cpu::Planes planes_of(const at::Tensor& t) { return {t.stride(0), t.stride(1)}; }

// The output [N, C, H, W]: NCHW, or channel-major memory [C, N, H, W] seen as [N, C, H, W].
at::Tensor empty_output(int64_t N, int64_t C, int64_t H, int64_t W, bool channel_major,
                        const at::TensorOptions& options) {
  if (!channel_major) return at::empty({N, C, H, W}, options);
  return at::empty({C, N, H, W}, options).permute({1, 0, 2, 3});
}

cpu::Activation activation(const char* op, double act_min, double act_max) {
  check_not_nan(op, "act_min", act_min);
  check_not_nan(op, "act_max", act_max);
  TORCH_CHECK(act_min <= act_max, op, ": need act_min <= act_max, got act_min=", act_min,
              ", act_max=", act_max);
  cpu::Activation act;
  act.on = !(std::isinf(act_min) && act_min < 0 && std::isinf(act_max) && act_max > 0);
  act.lo = act_min;
  act.hi = act_max;
  return act;
}

// The arguments of one call as the kernels take them.
struct Call {
  at::Tensor x, out;
  std::optional<at::Tensor> bias;
  cpu::Activation act;
};

template <typename T>
void run_pointwise_cpu(const Call& c, const at::Tensor& rp, const at::Tensor& ci,
                       const at::Tensor& v) {
  const at::Tensor& x = c.x;
  cpu::csr_pointwise_conv2d<T>(x.data_ptr<T>(), planes_of(x), rp.data_ptr<int32_t>(),
                               ci.data_ptr<int32_t>(), v.data_ptr<T>(),
                               static_cast<const T*>(bias_ptr(c.bias)), c.out.data_ptr<T>(),
                               planes_of(c.out), x.size(0), x.size(1), c.out.size(1),
                               x.size(2) * x.size(3), c.act);
}

template <typename T>
void run_depthwise_cpu(const Call& c, const at::Tensor& tp, const at::Tensor& ti,
                       const at::Tensor& v, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                       int64_t ph, int64_t pw) {
  const at::Tensor& x = c.x;
  cpu::sparse_depthwise_conv2d<T>(x.data_ptr<T>(), planes_of(x), tp.data_ptr<int32_t>(),
                                  ti.data_ptr<int32_t>(), v.data_ptr<T>(),
                                  static_cast<const T*>(bias_ptr(c.bias)), c.out.data_ptr<T>(),
                                  planes_of(c.out), x.size(0), x.size(1), x.size(2), x.size(3),
                                  c.out.size(2), c.out.size(3), kh, kw, sh, sw, ph, pw, c.act);
}

// Checks, then the input with contiguous planes (the plain op: NCHW-contiguous) and the output.
Call pointwise_call(const char* op, const at::Tensor& x_in, const at::Tensor& row_ptr,
                    const at::Tensor& col_idx, const at::Tensor& values,
                    const std::optional<at::Tensor>& bias_in, bool fused, bool channel_major) {
  TORCH_CHECK(row_ptr.dim() == 1 && row_ptr.numel() >= 1, op,
              ": row_ptr must be 1-D with O + 1 >= 1 entries, got shape ", shape_str(row_ptr));
  const int64_t O = row_ptr.numel() - 1;
  check_common(op, x_in, values, bias_in, O);
  check_index(op, "row_ptr", row_ptr, x_in);
  check_index(op, "col_idx", col_idx, x_in);
  TORCH_CHECK(col_idx.numel() == values.numel(), op, ": col_idx has ", col_idx.numel(),
              " entries but values has ", values.numel());
  Call c;
  c.x = fused && planes_contiguous(x_in) ? x_in : x_in.contiguous();
  const int64_t N = c.x.size(0), H = c.x.size(2), W = c.x.size(3);
  if (bias_in.has_value()) c.bias = bias_in->contiguous();
  c.out = empty_output(N, O, H, W, channel_major, c.x.options());
  return c;
}

at::Tensor csr_pointwise_conv2d_cpu(const char* op, Call c, const at::Tensor& row_ptr,
                                    const at::Tensor& col_idx, const at::Tensor& values) {
  const at::Tensor rp = row_ptr.contiguous(), ci = col_idx.contiguous(), v = values.contiguous();
  check_ptr_idx(op, "row_ptr", rp, "col_idx", ci, c.x.size(1));
  if (c.x.scalar_type() == at::kFloat) {
    run_pointwise_cpu<float>(c, rp, ci, v);
  } else {
    run_pointwise_cpu<double>(c, rp, ci, v);
  }
  return c.out;
}

at::Tensor csr_pointwise_conv2d(const at::Tensor& x_in, const at::Tensor& row_ptr,
                                const at::Tensor& col_idx, const at::Tensor& values,
                                const std::optional<at::Tensor>& bias_in) {
  const char* op = "sparseopt::csr_pointwise_conv2d";
  Call c = pointwise_call(op, x_in, row_ptr, col_idx, values, bias_in, false, false);
  const c10::DeviceGuard guard(c.x.device());
  if (runs_cuda_kernels(c.x.device())) {
#ifdef SPARSEOPT_WITH_CUDA
    const at::Tensor& x = c.x;
    const int64_t N = x.size(0), C = x.size(1), O = c.out.size(1), HW = x.size(2) * x.size(3);
    const at::Tensor rp = row_ptr.contiguous(), ci = col_idx.contiguous(), v = values.contiguous();
    if (check_device_indices()) check_ptr_idx(op, "row_ptr", rp.cpu(), "col_idx", ci.cpu(), C);
    void* stream = cuda_stream_of(x.device());
    if (x.scalar_type() == at::kFloat) {
      cuda::launch_csr_pointwise_conv2d<float>(
          x.data_ptr<float>(), rp.data_ptr<int32_t>(), ci.data_ptr<int32_t>(),
          v.data_ptr<float>(), static_cast<const float*>(bias_ptr(c.bias)),
          c.out.data_ptr<float>(), N, C, O, HW, stream);
    } else {
      cuda::launch_csr_pointwise_conv2d<double>(
          x.data_ptr<double>(), rp.data_ptr<int32_t>(), ci.data_ptr<int32_t>(),
          v.data_ptr<double>(), static_cast<const double*>(bias_ptr(c.bias)),
          c.out.data_ptr<double>(), N, C, O, HW, stream);
    }
    return c.out;
#endif
  }
  TORCH_CHECK(c.x.is_cpu(), op, ": this build of sparseopt has no kernel for device ", c.x.device());
  return csr_pointwise_conv2d_cpu(op, std::move(c), row_ptr, col_idx, values);
}

at::Tensor csr_pointwise_conv2d_fused(const at::Tensor& x_in, const at::Tensor& row_ptr,
                                      const at::Tensor& col_idx, const at::Tensor& values,
                                      const std::optional<at::Tensor>& bias_in, double act_min,
                                      double act_max, bool channel_major) {
  const char* op = "sparseopt::csr_pointwise_conv2d_fused";
  Call c = pointwise_call(op, x_in, row_ptr, col_idx, values, bias_in, true, channel_major);
  c.act = activation(op, act_min, act_max);
  TORCH_CHECK(c.x.is_cpu(), op, ": the native kernel is CPU-only, got ", c.x.device());
  return csr_pointwise_conv2d_cpu(op, std::move(c), row_ptr, col_idx, values);
}

struct DepthwiseGeometry {
  int64_t kh, kw, sh, sw, ph, pw;
};

Call depthwise_call(const char* op, const at::Tensor& x_in, const at::Tensor& tap_ptr,
                    const at::Tensor& tap_idx, const at::Tensor& values,
                    const std::optional<at::Tensor>& bias_in, at::IntArrayRef kernel_size,
                    at::IntArrayRef stride, at::IntArrayRef padding, bool fused,
                    bool channel_major, DepthwiseGeometry& g) {
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
  g = {kernel_size[0], kernel_size[1], stride[0], stride[1], padding[0], padding[1]};
  const int64_t N = x_in.size(0), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK(H + 2 * g.ph >= g.kh && W + 2 * g.pw >= g.kw, op, ": the padded input (",
              H + 2 * g.ph, " x ", W + 2 * g.pw, ") is smaller than the kernel (", g.kh, " x ",
              g.kw, ")");
  const int64_t OH = (H + 2 * g.ph - g.kh) / g.sh + 1, OW = (W + 2 * g.pw - g.kw) / g.sw + 1;
  Call c;
  c.x = fused && planes_contiguous(x_in) ? x_in : x_in.contiguous();
  if (bias_in.has_value()) c.bias = bias_in->contiguous();
  c.out = empty_output(N, C, OH, OW, channel_major, c.x.options());
  return c;
}

at::Tensor sparse_depthwise_conv2d_cpu(const char* op, Call c, const at::Tensor& tap_ptr,
                                       const at::Tensor& tap_idx, const at::Tensor& values,
                                       const DepthwiseGeometry& g) {
  const at::Tensor tp = tap_ptr.contiguous(), ti = tap_idx.contiguous(), v = values.contiguous();
  check_ptr_idx(op, "tap_ptr", tp, "tap_idx", ti, g.kh * g.kw);
  if (c.x.scalar_type() == at::kFloat) {
    run_depthwise_cpu<float>(c, tp, ti, v, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw);
  } else {
    run_depthwise_cpu<double>(c, tp, ti, v, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw);
  }
  return c.out;
}

at::Tensor sparse_depthwise_conv2d(const at::Tensor& x_in, const at::Tensor& tap_ptr,
                                   const at::Tensor& tap_idx, const at::Tensor& values,
                                   const std::optional<at::Tensor>& bias_in,
                                   at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding) {
  const char* op = "sparseopt::sparse_depthwise_conv2d";
  DepthwiseGeometry g{};
  Call c = depthwise_call(op, x_in, tap_ptr, tap_idx, values, bias_in, kernel_size, stride,
                          padding, false, false, g);
  const c10::DeviceGuard guard(c.x.device());
  if (runs_cuda_kernels(c.x.device())) {
#ifdef SPARSEOPT_WITH_CUDA
    const at::Tensor& x = c.x;
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    const int64_t OH = c.out.size(2), OW = c.out.size(3);
    const at::Tensor tp = tap_ptr.contiguous(), ti = tap_idx.contiguous(), v = values.contiguous();
    if (check_device_indices()) {
      check_ptr_idx(op, "tap_ptr", tp.cpu(), "tap_idx", ti.cpu(), g.kh * g.kw);
    }
    void* stream = cuda_stream_of(x.device());
    if (x.scalar_type() == at::kFloat) {
      cuda::launch_sparse_depthwise_conv2d<float>(
          x.data_ptr<float>(), tp.data_ptr<int32_t>(), ti.data_ptr<int32_t>(),
          v.data_ptr<float>(), static_cast<const float*>(bias_ptr(c.bias)),
          c.out.data_ptr<float>(), N, C, H, W, OH, OW, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, stream);
    } else {
      cuda::launch_sparse_depthwise_conv2d<double>(
          x.data_ptr<double>(), tp.data_ptr<int32_t>(), ti.data_ptr<int32_t>(),
          v.data_ptr<double>(), static_cast<const double*>(bias_ptr(c.bias)),
          c.out.data_ptr<double>(), N, C, H, W, OH, OW, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw,
          stream);
    }
    return c.out;
#endif
  }
  TORCH_CHECK(c.x.is_cpu(), op, ": this build of sparseopt has no kernel for device ", c.x.device());
  return sparse_depthwise_conv2d_cpu(op, std::move(c), tap_ptr, tap_idx, values, g);
}

at::Tensor sparse_depthwise_conv2d_fused(const at::Tensor& x_in, const at::Tensor& tap_ptr,
                                         const at::Tensor& tap_idx, const at::Tensor& values,
                                         const std::optional<at::Tensor>& bias_in,
                                         at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                         at::IntArrayRef padding, double act_min, double act_max,
                                         bool channel_major) {
  const char* op = "sparseopt::sparse_depthwise_conv2d_fused";
  DepthwiseGeometry g{};
  Call c = depthwise_call(op, x_in, tap_ptr, tap_idx, values, bias_in, kernel_size, stride,
                          padding, true, channel_major, g);
  c.act = activation(op, act_min, act_max);
  TORCH_CHECK(c.x.is_cpu(), op, ": the native kernel is CPU-only, got ", c.x.device());
  return sparse_depthwise_conv2d_cpu(op, std::move(c), tap_ptr, tap_idx, values, g);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparseopt, m) {
  m.def(
      "csr_pointwise_conv2d(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor values, "
      "Tensor? bias=None) -> Tensor");
  m.def(
      "sparse_depthwise_conv2d(Tensor x, Tensor tap_ptr, Tensor tap_idx, Tensor values, "
      "Tensor? bias, int[2] kernel_size, int[2] stride=1, int[2] padding=0) -> Tensor");
  m.def(
      "csr_pointwise_conv2d_fused(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor values, "
      "Tensor? bias, float act_min, float act_max, bool channel_major) -> Tensor");
  m.def(
      "sparse_depthwise_conv2d_fused(Tensor x, Tensor tap_ptr, Tensor tap_idx, Tensor values, "
      "Tensor? bias, int[2] kernel_size, int[2] stride, int[2] padding, float act_min, "
      "float act_max, bool channel_major) -> Tensor");
}

TORCH_LIBRARY_IMPL(sparseopt, CPU, m) {
  m.impl("csr_pointwise_conv2d", &csr_pointwise_conv2d);
  m.impl("sparse_depthwise_conv2d", &sparse_depthwise_conv2d);
  m.impl("csr_pointwise_conv2d_fused", &csr_pointwise_conv2d_fused);
  m.impl("sparse_depthwise_conv2d_fused", &sparse_depthwise_conv2d_fused);
}

#ifdef SPARSEOPT_WITH_CUDA
TORCH_LIBRARY_IMPL(sparseopt, CUDA, m) {
  m.impl("csr_pointwise_conv2d", &csr_pointwise_conv2d);
  m.impl("sparse_depthwise_conv2d", &sparse_depthwise_conv2d);
}
#endif

}  // namespace sparseopt
