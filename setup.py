"""Build script for sparseopt: the Python package plus the native extension ``sparseopt._C``.

The C++ CPU kernels always build. The CUDA kernels build when ``SPARSEOPT_USE_CUDA`` is

* ``1``    -- required (the build fails with a clear message if it cannot),
* ``0``    -- never,
* ``auto`` -- (default) when nvcc is found and the installed torch is a CUDA build.

Build against the installed torch with ``pip install --no-build-isolation -e .`` (with build
isolation pip would fetch a fresh torch, a multi-GB CUDA wheel, to build against).
"""

from __future__ import annotations

import glob
import os
import re
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def read_version() -> str:
    with open(os.path.join(ROOT, "sparseopt", "_version.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def cuda_wanted(torch, cuda_home) -> bool:
    mode = os.environ.get("SPARSEOPT_USE_CUDA", "auto").strip().lower()
    if mode not in {"auto", "0", "1"}:
        raise SystemExit(f"SPARSEOPT_USE_CUDA must be auto, 0 or 1, got {mode!r}")
    nvcc = cuda_home is not None and os.path.exists(os.path.join(cuda_home, "bin", "nvcc"))
    nvcc = nvcc or shutil.which("nvcc") is not None
    available = nvcc and torch.version.cuda is not None
    if mode == "1" and not available:
        raise SystemExit(
            "SPARSEOPT_USE_CUDA=1 but CUDA cannot be built: "
            f"nvcc found: {nvcc} (CUDA_HOME={cuda_home}), torch.version.cuda={torch.version.cuda}. "
            "Install a CUDA build of torch and the CUDA toolkit, or use SPARSEOPT_USE_CUDA=auto/0."
        )
    return mode == "1" or (mode == "auto" and available)


def extensions():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    with_cuda = cuda_wanted(torch, CUDA_HOME)
    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    # -ffp-contract=off: no fused multiply-add contraction, so each operation rounds exactly as
    # the pure-PyTorch reference's does (the tests compare bit for bit).
    # -fno-math-errno: sqrt and friends without errno, so the loops vectorise.
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fvisibility=hidden"]
    macros = []
    if with_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
        arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
        macros += [("SPARSEOPT_WITH_CUDA", None), ("SPARSEOPT_CUDA_ARCH_LIST", f'"{arch}"')]
        nvcc = ["-O3", "--fmad=false", "-std=c++17", "--expt-relaxed-constexpr"]
        return [
            CUDAExtension(
                "sparseopt._C",
                sources,
                define_macros=macros,
                extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                extra_link_args=["-fopenmp"],
            )
        ]
    return [
        CppExtension(
            "sparseopt._C",
            sources,
            define_macros=macros,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    ]


def cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}


setup(
    name="sparseopt",
    version=read_version(),
    description="Fused l1/sparsity optimizers and sparse convolutions for PyTorch",
    long_description=open(os.path.join(ROOT, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["sparseopt", "sparseopt.*"]),
    package_data={"sparseopt": ["py.typed"]},
    ext_modules=extensions(),
    cmdclass=cmdclass(),
    # What CI exercises: the tests on torch 2.13.0 (CPU), the build against 2.14.1 (CUDA).
    install_requires=["torch>=2.13", "numpy"],
    extras_require={
        "test": ["pytest", "hypothesis", "pytest-benchmark", "scikit-learn", "tqdm", "matplotlib"],
        "demo": ["scikit-learn", "tqdm", "matplotlib"],
        # benchmarks/bench_inference.py: the engines sparse inference is compared with.
        # (DeepSparse needs numpy < 2: it gets its own virtualenv, see that script.)
        "bench": ["onnxruntime", "onnx"],
    },
    zip_safe=False,
)
