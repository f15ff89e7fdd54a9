// Calls sparseopt's ops from C++ through the dispatcher, as a libtorch program would, and checks
// the results against the formulas (run by ctest).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::cout << (ok ? "ok   " : "FAIL ") << what << "\n";
  if (!ok) ++failures;
}

}  // namespace

int main() {
  auto prox = c10::Dispatcher::singleton()
                  .findSchemaOrThrow("sparseopt::prox_sgd_step_", "")
                  .typed<void(at::TensorList, at::TensorList, at::TensorList, double, double,
                              double, double, const std::optional<at::Tensor>&,
                              const std::optional<at::Tensor>&)>();
  auto rda = c10::Dispatcher::singleton()
                 .findSchemaOrThrow("sparseopt::rda_step_", "")
                 .typed<void(at::TensorList, at::TensorList, at::TensorList, at::TensorList,
                             at::TensorList, double, double, double, bool, int64_t,
                             const std::optional<at::Tensor>&,
                             const std::optional<at::Tensor>&)>();

  // Prox-SGD: w <- soft(w - lr*g, lr*l1).
  at::Tensor w = torch::tensor({1.0f, -0.02f, 0.5f, 0.0f});
  at::Tensor g = torch::tensor({0.5f, 0.0f, -1.0f, 3.0f});
  prox.call({w}, {g}, {}, 0.1, 0.5, 0.0, 0.0, std::nullopt, std::nullopt);
  at::Tensor expected = torch::tensor({0.9f, 0.0f, 0.55f, -0.25f});
  expect(torch::allclose(w, expected), "prox_sgd_step_ matches soft(w - lr*g, lr*l1)");
  expect(w[1].item<float>() == 0.0f, "prox_sgd_step_ gives an exact zero");

  // iRDA step 1 from t = 0: gbar = g, w = -(sqrt(1)/gamma) * soft(gbar, l1).
  at::Tensor p = torch::randn({1000, 7});
  at::Tensor grad = torch::randn({1000, 7});
  at::Tensor gbar = torch::zeros_like(p);
  at::Tensor step = torch::zeros({}, torch::kFloat);
  rda.call({p}, {grad}, {gbar}, {}, {step}, 1.0, 0.5, 2.0, false, -1, std::nullopt, std::nullopt);
  at::Tensor want = -0.5 * torch::sign(grad) * torch::clamp_min(grad.abs() - 0.5, 0);
  expect(torch::allclose(p, want), "rda_step_ matches the RDA formula");
  expect(step.item<float>() == 1.0f, "rda_step_ counts the step");
  expect(torch::equal(p == 0, grad.abs() <= 0.5), "rda_step_ zeros exactly where |gbar| <= l1");

  // Bad input is rejected before anything is written.
  at::Tensor before = w.clone();
  bool threw = false;
  try {
    prox.call({w}, {g}, {}, -1.0, 0.5, 0.0, 0.0, std::nullopt, std::nullopt);
  } catch (const c10::Error& e) {
    threw = std::string(e.what()).find("lr = -1 is invalid") != std::string::npos;
  }
  expect(threw && torch::equal(w, before), "negative lr is rejected, nothing written");

  std::cout << (failures ? "FAILED" : "all passed") << "\n";
  return failures ? 1 : 0;
}
