// Host emulation of the CUDA execution model, so that csrc/cuda/*.cu compile unchanged as C++
// and their kernels run on the CPU (the test build `make test-emu`; never part of the package).
//
// What is emulated, and how:
//   * the qualifiers (__global__, __device__, __host__, __forceinline__, __launch_bounds__)
//     expand to nothing, `__shared__` to `static`: blocks run one after another, so a
//     function-local static is exactly one block's shared memory;
//   * threadIdx/blockIdx/blockDim/gridDim are thread-locals, set for each host thread;
//   * a launch, SPARSEOPT_LAUNCH(grid, block, smem, stream, kernel)(args...) (csrc/cuda/
//     kernel_launch.cuh), starts one host thread per CUDA thread of a block and runs the blocks
//     of the grid in order on those threads; __syncthreads() is a barrier over them, so a
//     missing barrier is a real data race (ThreadSanitizer sees it) and a barrier that only some
//     threads of a block reach is reported as a launch error instead of hanging;
//   * a launch configuration CUDA would refuse (a block of more than 1024 threads, an empty or
//     too large grid) is not run and sets the error cudaGetLastError() returns, as in CUDA;
//   * streams are ignored: a launch returns when the kernel has finished.
// What is not: device math (the rules' __CUDA_ARCH__ branches are not compiled, the host
// branches run instead), warps and the memory model beyond "a barrier orders everything".
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define SPARSEOPT_CUDA_EMULATION_RUNTIME 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
  unsigned int x = 0, y = 0, z = 0;
};

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

// CUDA's integer/floating min for mixed operands: the usual arithmetic conversions.
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(b) < C(a) ? C(b) : C(a);
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(a) < C(b) ? C(b) : C(a);
}

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorLaunchFailure = 719,
  cudaErrorInvalidConfiguration = 9,
};
using cudaStream_t = void*;

namespace sparseopt {
namespace emu {

inline cudaError_t& last_error() {
  static thread_local cudaError_t error = cudaSuccess;
  return error;
}

// A block's barrier. `expected` counts the threads of the block still running the kernel: a
// thread that returns while others wait at __syncthreads() (a barrier inside divergent code,
// undefined behaviour in CUDA) marks the launch failed and releases them, so the emulation
// reports the bug instead of deadlocking.
class BlockBarrier {
 public:
  void start_block(int threads) {
    std::lock_guard<std::mutex> lock(mu_);
    expected_ = threads;
    arrived_ = 0;
  }
  void sync() {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t gen = generation_;
    if (++arrived_ == expected_) {
      release();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
  }
  // The calling thread has returned from the kernel for this block.
  void leave() {
    std::lock_guard<std::mutex> lock(mu_);
    --expected_;
    if (arrived_ > 0) {
      diverged_ = true;
      if (arrived_ >= expected_) release();
    }
  }
  bool diverged() const { return diverged_; }

 private:
  void release() {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  int expected_ = 0;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool diverged_ = false;
};

// The barrier of the block the calling host thread is running (null outside a kernel).
inline BlockBarrier*& current_barrier() {
  static thread_local BlockBarrier* barrier = nullptr;
  return barrier;
}

// A plain reusable barrier over all host threads of a launch: between two blocks (the next
// block may not start while a thread of the previous one still uses its shared memory).
class GridStep {
 public:
  explicit GridStep(int threads) : threads_(threads) {}
  template <class F>
  void arrive_and_wait(F&& last_one) {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t gen = generation_;
    if (++arrived_ == threads_) {
      last_one();
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int threads_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

inline bool valid_configuration(const dim3& grid, const dim3& block) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  return threads >= 1 && threads <= 1024 && block.z <= 64 && grid.x >= 1 && grid.y >= 1 &&
         grid.z >= 1 && grid.x <= 2147483647u && grid.y <= 65535u && grid.z <= 65535u;
}

// SPARSEOPT_LAUNCH(grid, block, smem, stream, kernel)(args...): runs the whole grid, then
// returns. Arguments are copied once per launch and passed by value to every thread, as CUDA
// passes kernel parameters.
template <class Kernel>
class Launch {
 public:
  Launch(dim3 grid, dim3 block, Kernel* kernel) : grid_(grid), block_(block), kernel_(kernel) {}

  template <class... Args>
  void operator()(Args&&... args) const {
    if (!valid_configuration(grid_, block_)) {
      last_error() = cudaErrorInvalidConfiguration;
      return;
    }
    auto params = std::make_tuple(std::forward<Args>(args)...);
    const int threads = static_cast<int>(block_.x * block_.y * block_.z);
    const uint64_t blocks = uint64_t(grid_.x) * grid_.y * grid_.z;
    BlockBarrier barrier;
    GridStep step(threads);
    barrier.start_block(threads);
    auto body = [&](int t) {
      threadIdx = {t % block_.x, (t / block_.x) % block_.y, t / (block_.x * block_.y)};
      blockDim = block_;
      gridDim = grid_;
      current_barrier() = &barrier;
      for (uint64_t b = 0; b < blocks; ++b) {
        blockIdx = {static_cast<unsigned>(b % grid_.x),
                    static_cast<unsigned>((b / grid_.x) % grid_.y),
                    static_cast<unsigned>(b / (uint64_t(grid_.x) * grid_.y))};
        std::apply([&](const auto&... a) { kernel_(a...); }, params);
        barrier.leave();
        step.arrive_and_wait([&] { barrier.start_block(threads); });
      }
      current_barrier() = nullptr;
    };
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; ++t) pool.emplace_back(body, t);
    for (auto& th : pool) th.join();
    if (barrier.diverged()) last_error() = cudaErrorLaunchFailure;
  }

 private:
  dim3 grid_, block_;
  Kernel* kernel_;
};

template <class Kernel>
Launch<Kernel> launch(dim3 grid, dim3 block, Kernel* kernel) {
  return Launch<Kernel>(grid, block, kernel);
}

}  // namespace emu
}  // namespace sparseopt

inline void __syncthreads() {
  sparseopt::emu::BlockBarrier* barrier = sparseopt::emu::current_barrier();
  if (barrier != nullptr) barrier->sync();
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t error = sparseopt::emu::last_error();
  sparseopt::emu::last_error() = cudaSuccess;
  return error;
}

inline const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure (emulation: __syncthreads() not reached by every "
             "thread of a block)";
  }
  return "unknown error";
}
