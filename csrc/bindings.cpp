// The Python module sparseopt._C. Importing it loads this library, whose static initialisers
// register every op with the dispatcher (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL in
// csrc/ops/); the module itself reports how it was built and holds one helper of the optimizers'
// Python step (the only file here that needs torch's Python bindings).
#include <torch/extension.h>

#include <string>
#include <vector>

namespace py = pybind11;

namespace {

std::vector<std::string> compiled_backends() {
  std::vector<std::string> backends{"cpu"};
#ifdef SPARSEOPT_WITH_CUDA
  backends.push_back("cuda");
#endif
  return backends;
}

py::dict build_info() {
  py::dict info;
  info["backends"] = compiled_backends();
#ifdef _OPENMP
  info["openmp"] = _OPENMP;
#else
  info["openmp"] = py::none();
#endif
#ifdef SPARSEOPT_CUDA_ARCH_LIST
  info["cuda_arch_list"] = std::string(SPARSEOPT_CUDA_ARCH_LIST);
#else
  info["cuda_arch_list"] = py::none();
#endif
  info["compiler"] = std::string(__VERSION__);
  return info;
}

// The optimizers' pre-flight check of a whole step (sparseopt/optim/_base.py): the index of the
// first tensor of `likes` whose dtype, shape, device or layout differs from the same index of
// `params`, or -1. A plain function, not a dispatcher op: it reads metadata only (of DTensors
// too, whose global shape is what must match) and runs on every eager step, where a Python loop
// over the same attributes cost half the step's overhead for many small tensors.
int64_t first_mismatch(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& likes) {
  TORCH_CHECK(params.size() == likes.size(), "first_mismatch: the lists differ in length (",
              params.size(), " and ", likes.size(), ")");
  for (size_t k = 0; k < params.size(); ++k) {
    const at::Tensor& p = params[k];
    const at::Tensor& t = likes[k];
    if (t.layout() != at::kStrided || t.scalar_type() != p.scalar_type() ||
        t.device() != p.device() || t.sizes() != p.sizes()) {
      return static_cast<int64_t>(k);
    }
  }
  return -1;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "sparseopt native kernels (ops are registered under torch.ops.sparseopt)";
  m.def("compiled_backends", &compiled_backends, "Device types with native kernels in this build");
  m.def("build_info", &build_info, "How this extension was compiled");
  m.def("first_mismatch", &first_mismatch,
        "Index of the first likes[k] whose dtype/shape/device/layout differs from params[k], "
        "or -1");
}
