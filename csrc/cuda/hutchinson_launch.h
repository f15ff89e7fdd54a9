// Host-side declaration of the Hutchinson-diagonal CUDA launcher (no torch, no CUDA headers).
#pragma once

#include <cstdint>

#include "launch.h"

namespace sparseopt {
namespace cuda {

// diag[r*row_len + k] = (accumulate ? diag : 0) + weight * mean_k |z*hz| over row r, for one
// contiguous tensor of rows*row_len elements.
void launch_hutchinson_rows(ScalarType dtype, const void* z, const void* hz, void* diag,
                            int64_t rows, int64_t row_len, double weight, bool accumulate,
                            void* stream);

}  // namespace cuda
}  // namespace sparseopt
