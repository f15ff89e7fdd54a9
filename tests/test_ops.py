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

NATIVE = ops.extension_loaded()


SPECS = list(ops.SPECS.values())
IDS = [spec.name for spec in SPECS]
WITH_LR = [spec for spec in SPECS if spec.lr_index is not None]


def _with_tensor_lr(spec: ops.OpSpec, args: tuple, device: str) -> tuple:
    i = spec.lr_index
    return (*args[:i], torch.tensor(args[i], dtype=torch.float64, device=device), *args[i + 1 :])


@pytest.mark.skipif(not NATIVE, reason="the native extension is not built")
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_python_schemas_match_the_cpp_definitions(spec: ops.OpSpec) -> None:
    packet = getattr(torch.ops.sparseopt, spec.name)
    assert str(packet.default._schema) == f"sparseopt::{spec.name}{spec.schema}"
    if spec.tensor_lr_schema is None:
        assert packet.overloads() == ["default"]
    else:
        cpp = str(packet.tensor_lr._schema)
        assert cpp == f"sparseopt::{spec.name}.tensor_lr{spec.tensor_lr_schema}"


def test_the_table_covers_every_registered_op_and_domain() -> None:
    registered = {n for n in dir(torch.ops.sparseopt) if not n.startswith("_")}
    assert registered >= set(ops.SPECS)
    for spec in SPECS:
        assert set(spec.hyper) <= set(spec.arg_names), spec.name
        floats = {a.split()[-1].split("=")[0] for a in spec.schema[1:].split(", ")
                  if a.startswith("float ")}  # fmt: skip
        assert floats == set(spec.hyper), f"{spec.name}: a float argument without a domain"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(spec: ops.OpSpec, device: str) -> None:
    packet = getattr(torch.ops.sparseopt, spec.name)
    torch.library.opcheck(packet.default, spec.sample(device))
    if spec.lr_index is not None:
        torch.library.opcheck(packet.tensor_lr, _with_tensor_lr(spec, spec.sample(device), device))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_meta_device_runs_the_fake_kernel(spec: ops.OpSpec) -> None:
    out = getattr(torch.ops.sparseopt, spec.name)(*spec.sample("meta"))  # no data, no error
    if spec.fake is not None:
        assert out.device.type == "meta"
        assert out.shape == spec.reference(*spec.sample("cpu")).shape


@pytest.mark.parametrize("backend", ["reference"] + (["native"] if NATIVE else []))
@pytest.mark.parametrize("spec", WITH_LR, ids=[s.name for s in WITH_LR])
@pytest.mark.parametrize("device", DEVICES)
def test_tensor_lr_overload_equals_the_float_one(spec: ops.OpSpec, device: str,
                                                  backend: str) -> None:
    """lr as a float64, float32 or CPU tensor: the same result, bit for bit, as the float the
    tensor holds."""
    fn = spec.reference if backend == "reference" else getattr(torch.ops.sparseopt, spec.name)
    for dtype, where in ((torch.float64, device), (torch.float32, device), (torch.float64, "cpu")):
        args = spec.sample(device)
        i = spec.lr_index
        lr = torch.tensor(args[i], dtype=dtype, device=where)
        expected = spec.sample(device)
        fn(*expected[:i], float(lr), *expected[i + 1 :])
        fn(*args[:i], lr, *args[i + 1 :])
        for a, b in zip(args, expected):
            for x, y in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
                if isinstance(x, torch.Tensor) and x is not lr:
                    assert torch.equal(x, y), (spec.name, dtype, where)


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
