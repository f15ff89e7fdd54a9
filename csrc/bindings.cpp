// The Python module sparseopt._C. Importing it loads this library, whose static initialisers
// register every op with the dispatcher (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL in
// csrc/ops/); the module itself only reports how it was built.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

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

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "sparseopt native kernels (ops are registered under torch.ops.sparseopt)";
  m.def("compiled_backends", &compiled_backends, "Device types with native kernels in this build");
  m.def("build_info", &build_info, "How this extension was compiled");
}
