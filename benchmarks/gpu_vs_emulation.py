"""On a GPU machine: the CUDA kernels (torch.ops.sparseopt on CUDA tensors) against the same
kernels under CPU emulation (torch.ops.sparseopt_emu on CPU tensors, tests/emulation/) on the
same inputs, for every element-wise op case and dtype of the emulation tests and both sparse
convolutions. Differences come from device math only (the rules' __CUDA_ARCH__ branches, the
device's sqrt/pow/division); the table says how many elements differ and by how many ulp.

    python benchmarks/gpu_vs_emulation.py --out gpu_out/gpu_vs_emulation.md

Part of benchmarks/gpu_session.sh.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "emulation"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import emulated  # noqa: E402
import test_emulated_kernels as cases  # noqa: E402

import sparseopt  # noqa: E402,F401  (registers torch.ops.sparseopt)
from sparseopt.nn.formats import dense_to_csr, dense_to_taps  # noqa: E402


def ulps(a: torch.Tensor, b: torch.Tensor) -> tuple[int, float]:
    """(elements that differ, max difference in ulps of a's dtype at the larger magnitude)."""
    spacing = torch.finfo(a.dtype).eps if a.is_floating_point() else 1.0
    a, b = a.double().cpu(), b.double().cpu()
    same = (a == b) | (a.isnan() & b.isnan())
    if bool(same.all()):
        return 0, 0.0
    return int((~same).sum()), float(((a - b).abs() / (a.abs().maximum(b.abs()) * spacing))
                                     [~same].nan_to_num(float("inf")).max())


def compare_case(name: str, dtype: torch.dtype, gen: torch.Generator) -> list[str]:
    case = cases.CASES[name]
    params = cases.edge_tensors(65536, dtype)
    for p in params:
        p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    state, steps = cases.make_state(case, params, gen)
    grads = [torch.empty_like(p).copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
             for p in params]
    cpu = [params, grads, *state] + ([steps] if case.steps else [])
    gpu = [[t.cuda() for t in lst] for lst in cpu]
    args = cases.scalars(case)
    gpu_args = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
    for _ in range(3):
        getattr(torch.ops.sparseopt_emu, case.op)(*cpu, *args, None, None)
        getattr(torch.ops.sparseopt, case.op)(*gpu, *gpu_args, None, None)
    torch.cuda.synchronize()
    differ, worst = 0, 0.0
    for lst_cpu, lst_gpu in zip(cpu, gpu):
        for a, b in zip(lst_cpu, lst_gpu):
            d, w = ulps(a, b)
            differ, worst = differ + d, max(worst, w)
    total = sum(p.numel() for p in params)
    return [f"| {name} | {str(dtype).replace('torch.', '')} | {total} | {differ} | {worst:.2f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_out/gpu_vs_emulation.md")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_vs_emulation: no GPU")
    emulated.load(sanitize=False)
    gen = torch.Generator().manual_seed(0)
    rows = ["| case | dtype | elements | elements that differ | max diff (ulp of the dtype) |",
            "|---|---|---:|---:|---:|"]
    for name in cases.CASES:
        for dtype in cases.DTYPES:
            rows += compare_case(name, dtype, gen)
    # the sparse convolutions, float32
    w = torch.randn(64, 96, 1, 1, generator=gen)
    w[torch.rand(w.shape, generator=gen) < 0.9] = 0
    x = torch.randn(2, 96, 28, 28, generator=gen)
    csr = dense_to_csr(w)
    a = torch.ops.sparseopt_emu.csr_pointwise_conv2d(x, *csr, None)
    b = torch.ops.sparseopt.csr_pointwise_conv2d(x.cuda(), *[t.cuda() for t in csr], None)
    d, m = ulps(a, b)
    rows.append(f"| csr_pointwise_conv2d | float32 | {a.numel()} | {d} | {m:.2f} |")
    wd = torch.randn(96, 1, 3, 3, generator=gen)
    wd[torch.rand(wd.shape, generator=gen) < 0.5] = 0
    taps = dense_to_taps(wd)
    a = torch.ops.sparseopt_emu.sparse_depthwise_conv2d(x, *taps, None, [3, 3], [2, 2], [1, 1])
    b = torch.ops.sparseopt.sparse_depthwise_conv2d(x.cuda(), *[t.cuda() for t in taps], None,
                                                    [3, 3], [2, 2], [1, 1])
    d, m = ulps(a, b)
    rows.append(f"| sparse_depthwise_conv2d | float32 | {a.numel()} | {d} | {m:.2f} |")
    text = "\n".join(rows) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
