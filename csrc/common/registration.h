// The registration every op file does: the schema of each op (with the `.tensor_lr` overload
// derived from it, see hyper.h), and one function registering the file's kernels for the CPU
// key and, in CUDA builds, the CUDA key.
#pragma once

#include <torch/library.h>

#include <string>

#include "hyper.h"

namespace sparseopt {

// Defines the op `schema` and, if it takes `float lr`, its overload `<op>.tensor_lr`.
inline void def_op(torch::Library& m, const std::string& schema) {
  m.def(schema.c_str());
  if (schema.find("float lr,") != std::string::npos) m.def(tensor_lr_schema(schema).c_str());
}

// Registers an op with an lr: `by_float` for `name`, `by_tensor` for `name.tensor_lr`.
template <class F, class G>
void impl_op(torch::Library& m, const char* name, F* by_float, G* by_tensor) {
  m.impl(name, by_float);
  m.impl((std::string(name) + ".tensor_lr").c_str(), by_tensor);
}

}  // namespace sparseopt

#ifdef SPARSEOPT_WITH_CUDA
#define SPARSEOPT_REGISTER_KERNELS(fn)              \
  TORCH_LIBRARY_IMPL(sparseopt, CPU, m) { fn(m); } \
  TORCH_LIBRARY_IMPL(sparseopt, CUDA, m) { fn(m); }
#else
#define SPARSEOPT_REGISTER_KERNELS(fn) TORCH_LIBRARY_IMPL(sparseopt, CPU, m) { fn(m); }
#endif
