// The shared-memory kernel (csrc/cuda/sparse_conv.cu's pointwise kernel stages each row's
// nonzeros in __shared__ memory between two __syncthreads()) under ThreadSanitizer, in the host
// emulation: one host thread per CUDA thread, so a missing barrier is a data race TSan reports
// (and usually a wrong result, which this program checks too). The depthwise kernel runs as
// well (no shared memory: it must be race-free as it is). Built and run by `make test-emu`.
//
// No torch: the kernels take raw pointers, so this is a plain C++ program. Exit status 0 when
// every result equals a sequential loop in the kernel's own order.
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda/sparse_conv_launch.h"

namespace {

int failures = 0;

void pointwise_case(int64_t N, int64_t C, int64_t O, int64_t HW, double density, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.f, 1.f);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  std::vector<int32_t> row_ptr{0}, col_idx;
  std::vector<float> values;
  for (int64_t o = 0; o < O; ++o) {
    for (int64_t c = 0; c < C; ++c) {
      if (coin(rng) < density) {
        col_idx.push_back(static_cast<int32_t>(c));
        values.push_back(value(rng));
      }
    }
    row_ptr.push_back(static_cast<int32_t>(col_idx.size()));
  }
  std::vector<float> x(N * C * HW), bias(O), out(N * O * HW, -7.f);
  for (auto& v : x) v = value(rng);
  for (auto& v : bias) v = value(rng);
  sparseopt::cuda::launch_csr_pointwise_conv2d<float>(x.data(), row_ptr.data(), col_idx.data(),
                                                      values.data(), bias.data(), out.data(), N,
                                                      C, O, HW, nullptr);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t s = 0; s < HW; ++s) {
        float acc = bias[o];
        for (int32_t k = row_ptr[o]; k < row_ptr[o + 1]; ++k)
          acc += values[k] * x[(n * C + col_idx[k]) * HW + s];
        if (out[(n * O + o) * HW + s] != acc) {
          std::printf("pointwise N=%lld C=%lld O=%lld HW=%lld: out[%lld,%lld,%lld] = %g, want %g\n",
                      (long long)N, (long long)C, (long long)O, (long long)HW, (long long)n,
                      (long long)o, (long long)s, out[(n * O + o) * HW + s], acc);
          ++failures;
          return;
        }
      }
}

void depthwise_case(int64_t N, int64_t C, int64_t H, int64_t W, int64_t k, int64_t stride,
                    int64_t pad, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.f, 1.f);
  std::vector<int32_t> tap_ptr{0}, tap_idx;
  std::vector<float> values;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t t = 0; t < k * k; ++t) {
      if ((t + c) % 3 != 0) {
        tap_idx.push_back(static_cast<int32_t>(t));
        values.push_back(value(rng));
      }
    }
    tap_ptr.push_back(static_cast<int32_t>(tap_idx.size()));
  }
  const int64_t OH = (H + 2 * pad - k) / stride + 1, OW = (W + 2 * pad - k) / stride + 1;
  std::vector<float> x(N * C * H * W), out(N * C * OH * OW);
  for (auto& v : x) v = value(rng);
  sparseopt::cuda::launch_sparse_depthwise_conv2d<float>(
      x.data(), tap_ptr.data(), tap_idx.data(), values.data(), nullptr, out.data(), N, C, H, W,
      OH, OW, k, k, stride, stride, pad, pad, nullptr);
  for (int64_t p = 0; p < N * C; ++p)
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox) {
        const int64_t c = p % C;
        float acc = 0.f;
        for (int32_t t = tap_ptr[c]; t < tap_ptr[c + 1]; ++t) {
          const int64_t iy = oy * stride - pad + tap_idx[t] / k, ix = ox * stride - pad + tap_idx[t] % k;
          if (iy >= 0 && iy < H && ix >= 0 && ix < W) acc += values[t] * x[(p * H + iy) * W + ix];
        }
        if (out[(p * OH + oy) * OW + ox] != acc) {
          std::printf("depthwise: mismatch at plane %lld (%lld, %lld)\n", (long long)p,
                      (long long)oy, (long long)ox);
          ++failures;
          return;
        }
      }
}

}  // namespace

int main() {
  pointwise_case(1, 600, 3, 37, 0.9, 1);   // > 2 staging rounds per row, threads past HW idle
  pointwise_case(2, 40, 2, 300, 0.5, 2);   // two spatial tiles of the block
  pointwise_case(1, 8, 2, 5, 0.0, 3);      // no nonzeros
  depthwise_case(1, 3, 9, 7, 3, 2, 1, 4);
  std::printf("race_check: %s\n", failures == 0 ? "ok" : "FAILED");
  return failures == 0 ? 0 : 1;
}
