"""Op registration: schemas, opcheck, backend selection and the pure-PyTorch fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import DEVICES

import sparseopt
from sparseopt import ops

NATIVE = ops.native_available()


def _args(name: str, device: str, dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device)

    params = [t(5, 3), t(7), t(2, 3, 3, 3)]
    grads = [t(*p.shape) for p in params]
    steps = [torch.zeros((), device=device) for _ in params]
    scale = torch.full((), 4.0, device=device)
    inf = torch.zeros((), device=device)
    if name == "prox_sgd_step_":
        return (params, grads, [torch.zeros_like(p) for p in params], 0.1, 0.01, 0.9, 1e-4,
                scale, inf)
    if name == "sqrt_t_prox_sgd_step_":
        return (params, grads, [], steps, 0.1, 0.01, 2.0, 0.0, 0.0, scale, inf)
    if name == "rda_step_":
        return (params, grads, [torch.zeros_like(p) for p in params],
                [t(*p.shape) for p in params], steps, 1.0, 0.1, 3.0, False, 2, scale, inf)
    if name == "adam_step_":
        zeros = lambda: [torch.zeros_like(p) for p in params]  # noqa: E731
        return (params, grads, zeros(), zeros(), zeros(), steps, 1e-3, 0.9, 0.999, 1e-8, 1e-2,
                True, False, True, 1e-3, scale, inf)
    if name == "adahessian_step_":
        zeros = lambda: [torch.zeros_like(p) for p in params]  # noqa: E731
        diags = [t(*p.shape).abs() for p in params]
        return (params, grads, zeros(), zeros(), diags, steps, 0.15, 0.9, 0.999, 1e-4, 0.0, 1.0,
                scale, inf)
    if name == "hutchinson_diag_":
        return ([torch.zeros_like(p) for p in params], [t(*p.shape).sign() for p in params],
                grads, 0.5, False)
    raise KeyError(name)


OPS_UNDER_TEST = ["prox_sgd_step_", "sqrt_t_prox_sgd_step_", "rda_step_", "adam_step_",
          "adahessian_step_", "hutchinson_diag_"]


@pytest.mark.skipif(not NATIVE, reason="the native extension is not built")
def test_python_schemas_match_the_cpp_definitions() -> None:
    for name, schema in ops.SCHEMAS.items():
        cpp = str(getattr(torch.ops.sparseopt, name).default._schema)
        assert cpp == f"sparseopt::{name}{schema}", name


def test_every_op_has_a_reference() -> None:
    assert set(ops.SCHEMAS) == set(ops.REFERENCES)


@pytest.mark.parametrize("name", OPS_UNDER_TEST)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(name: str, device: str) -> None:
    op = getattr(torch.ops.sparseopt, name)
    torch.library.opcheck(op, _args(name, device))


@pytest.mark.parametrize("name", OPS_UNDER_TEST)
def test_meta_device_runs_the_fake_kernel(name: str) -> None:
    args = _args(name, "meta")
    getattr(torch.ops.sparseopt, name)(*args)  # no data, no error: the fake kernel ran


def test_backend_info_reports_the_build() -> None:
    info = sparseopt.backend_info()
    assert info["reference"] is True
    assert info["native"] == NATIVE
    assert info["torch"] == torch.__version__
    if NATIVE:
        assert "cpu" in info["backends"]
        assert info["load_error"] is None
        assert ops.has_native("cpu")
    assert ops.has_native("cuda") == ("cuda" in info["backends"])


def test_resolve() -> None:
    cpu = torch.device("cpu")
    assert ops.resolve("rda_step_", cpu, "reference") is sparseopt.reference.rda_step_
    if NATIVE:
        assert ops.resolve("rda_step_", cpu, "native") is torch.ops.sparseopt.rda_step_
    if not ops.has_native("cuda"):
        with pytest.raises(RuntimeError, match="no native kernel for device type 'cuda'"):
            ops.resolve("rda_step_", torch.device("cuda"), "native")


def test_import_without_the_extension_falls_back_with_one_warning() -> None:
    """A broken or missing build must not break `import sparseopt`: one clear warning, and the
    optimizers run the reference kernels."""
    code = textwrap.dedent(
        """
        import sys, warnings
        sys.modules["sparseopt._C"] = None  # as if the extension were missing
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import sparseopt, torch
        msgs = [str(w.message) for w in caught if "sparseopt" in str(w.message)]
        assert len(msgs) == 1, msgs
        assert "falls back to the pure-PyTorch reference" in msgs[0]
        assert sparseopt.backend_info()["native"] is False
        p = torch.nn.Parameter(torch.tensor([[1.0, -0.01], [0.5, 2.0]]))
        opt = sparseopt.ProxSGD([p], lr=0.1, l1=0.5)
        p.grad = torch.zeros_like(p)
        opt.step()
        expected = torch.tensor([[0.95, 0.0], [0.45, 1.95]])
        torch.testing.assert_close(p.detach(), expected)
        assert p[0, 1].item() == 0.0  # |-0.01| <= lr * l1: an exact zero
        try:
            sparseopt.ProxSGD([p], lr=0.1, backend="native").step()
        except RuntimeError as e:
            assert "did not load" in str(e)
        else:
            raise AssertionError("backend='native' must fail without the extension")
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONWARNINGS="default")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
