"""DDP and FSDP2 (gloo, 2 CPU processes via torchrun) give the parameters of a single process
that trains on the global batch; AdaHessian under DDP (it averages gradients and Hessian-vector
products itself) and its clear error under FSDP2; torch.distributed.checkpoint save/load
resumes bit for bit."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import sparseopt
from sparseopt.optim import _distributed

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ddp_train.py"
DCP_SCRIPT = ROOT / "tests" / "dcp_resume.py"

FIRST_ORDER = {"proxsgd", "sqrt_t_proxsgd", "rda", "irda", "adamw_l1", "obproxsg",
               "obproxsg_plus", "pdca"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="torch.distributed with gloo is not available"),
]


def _launch(script: Path, args: list[str], world: int) -> subprocess.CompletedProcess:
    # --standalone: a local rendezvous on a free port (no clash with other runs).
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node", str(world)] if world > 1 else [sys.executable])
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore")
    return subprocess.run(launcher + [str(script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _run(args: list[str], out: Path, world: int) -> dict[str, list[torch.Tensor]]:
    proc = _launch(EXAMPLE, [*args, "--save", str(out)], world)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return torch.load(out)


ARGS = ["--optimizer", "all", "--steps", "20", "--dtype", "float64"]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict[str, list[torch.Tensor]]:
    """One process on the global batch, every optimizer (shared by the DDP and FSDP2 runs)."""
    return _run(ARGS, tmp_path_factory.mktemp("single") / "single.pt", world=1)


@pytest.mark.parametrize("wrap", ["ddp", "fsdp2"])
def test_two_processes_equal_one_process_on_the_global_batch(wrap: str, single, tmp_path) -> None:
    ddp = _run(ARGS + ["--wrap", wrap], tmp_path / "ddp.pt", world=2)
    assert set(single) == FIRST_ORDER | {"adahessian"}
    # AdaHessian cannot run under FSDP2 ("all" leaves it out there; see the error test below).
    assert set(ddp) == (FIRST_ORDER | {"adahessian"} if wrap == "ddp" else FIRST_ORDER)
    for name in ddp:
        # Not bit for bit: two processes average two half-batch means (gradients and, for
        # AdaHessian, Hessian-vector products) where one process takes one global mean, a
        # different summation order. In fp64 the parameters agree to ~1e-14 after 20 steps
        # (AdaHessian ~5e-14 relative); the tolerance leaves room for that rounding and is
        # far below what a missing reduction does (AdaHessian with each rank's own Hz
        # differs by 0.07 to 7).
        for a, b in zip(single[name], ddp[name]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
        if name != "adahessian":  # (no l1 term)
            assert any((p == 0).any() for p in ddp[name]), name  # the l1 term made zeros


@pytest.fixture(scope="module")
def dcp_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """tests/dcp_resume.py under FSDP2 (every first-order optimizer, and AdaHessian's error)
    and under DDP (AdaHessian, iRDA): one torchrun launch each."""
    folder = tmp_path_factory.mktemp("dcp")
    return {
        "fsdp2": _launch(DCP_SCRIPT, ["--dir", str(folder / "fsdp2"), "--wrap", "fsdp2",
                                      "--optimizer", ",".join(sorted(FIRST_ORDER)),
                                      "--check-adahessian-error"], world=2),
        "ddp": _launch(DCP_SCRIPT, ["--dir", str(folder / "ddp"), "--wrap", "ddp",
                                    "--optimizer", "adahessian,irda"], world=2),
    }


@pytest.mark.parametrize("wrap", ["fsdp2", "ddp"])
def test_distributed_checkpoint_resume_is_bit_exact(wrap, dcp_runs) -> None:
    """Train 7 steps, get_state_dict + dcp.save, dcp.load + set_state_dict into a fresh model
    (other weights) and optimizer, train 7 more: every rank's parameter and state shards (and
    AdaHessian's seed, probe generator and Hessian-step count) equal the unbroken 14-step run's
    exactly; the script checks and exits non-zero otherwise. The OBProx-SG phase switches
    (steps 5, 10), iRDA's retraining (step 10) and pDCA_e's restart (step 7) fall on both sides
    of the split."""
    proc = dcp_runs[wrap]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = sorted(FIRST_ORDER) if wrap == "fsdp2" else ["adahessian", "irda"]
    lines = proc.stdout.splitlines()  # (each line is written whole)
    for name in names:
        for rank in range(2):
            assert f"rank {rank}: {name}: bit-exact" in lines, proc.stdout


def test_adahessian_under_fsdp2_raises_a_clear_error_and_changes_nothing(dcp_runs) -> None:
    proc = dcp_runs["fsdp2"]
    assert proc.returncode == 0, proc.stdout + proc.stderr  # (the script checks "nothing")
    for rank in range(2):
        line = next(x for x in proc.stdout.splitlines()
                    if x.startswith(f"rank {rank}: adahessian under fsdp2: "))
        assert "AdaHessian does not support FSDP2 (fully_shard)" in line
        assert "ddp.no_sync()" in line and "process_group=" in line


FINITE_SCRIPT = ROOT / "tests" / "finite_check_dist.py"


def test_check_finite_makes_every_rank_raise_when_one_shard_is_bad() -> None:
    """check_finite=True under FSDP2 and under AdaHessian(process_group=): a NaN in one rank's
    gradient makes every rank raise (the ranks agree with one all-reduce of a flag), changes
    nothing anywhere, and the next finite step goes through on both ranks."""
    proc = _launch(FINITE_SCRIPT, [], world=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for case in ("fsdp2+ProxSGD", "AdaHessian(process_group)"):
        for rank in (0, 1):
            assert f"ok {case} rank {rank}" in proc.stdout, proc.stdout + proc.stderr


# -- AdaHessian's process_group= and checkpoint entries, in one process ------------------------
def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()


def _hessian_step(model: nn.Module, opt: sparseopt.AdaHessian, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(6, 4, generator=gen).double(), torch.randn(6, 2, generator=gen).double()
    opt.zero_grad()
    ((model(x) - y) ** 2).mean().backward(create_graph=True)
    opt.step()


@pytest.fixture
def one_rank_group():
    if dist.is_initialized():
        pytest.skip("a process group is already initialized")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def test_adahessian_rejects_a_process_group_that_is_not_one() -> None:
    with pytest.raises(ValueError, match="process_group = 'world' is not a torch.distributed"):
        sparseopt.AdaHessian(_model().parameters(), process_group="world")


def test_adahessian_process_group_of_one_rank_equals_no_group(one_rank_group) -> None:
    model, twin = _model(), _model()
    opt = sparseopt.AdaHessian(model.parameters(), lr=0.05, seed=3, process_group=one_rank_group)
    ref = sparseopt.AdaHessian(twin.parameters(), lr=0.05, seed=3)
    for t in range(3):
        _hessian_step(model, opt, t)
        _hessian_step(twin, ref, t)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_adahessian_process_group_refuses_grad_scaler(one_rank_group) -> None:
    model = _model()
    opt = sparseopt.AdaHessian(model.parameters(), seed=0, process_group=one_rank_group)
    before = [p.detach().clone() for p in model.parameters()]
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 4, generator=gen).double(), torch.randn(6, 2, generator=gen).double()
    ((model(x) - y) ** 2).mean().backward(create_graph=True)
    # What GradScaler.step hands to an optimizer with _step_supports_amp_scaling.
    opt.grad_scale = torch.tensor(1.0)
    opt.found_inf = torch.tensor(0.0)
    with pytest.raises(RuntimeError, match="not supported with torch.amp.GradScaler"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not opt.state


def test_adahessian_warns_when_processes_would_step_on_their_own(monkeypatch) -> None:
    monkeypatch.setattr(_distributed, "world_size", lambda: 2)
    model = _model()
    opt = sparseopt.AdaHessian(model.parameters(), seed=0)
    with pytest.warns(UserWarning, match="torch.distributed runs 2 processes but process_group"):
        _hessian_step(model, opt, 0)


def test_adahessian_state_survives_get_and_set_state_dict() -> None:
    """torch.distributed.checkpoint's get_state_dict initialises a fresh optimizer with one
    lr=0 step on zero gradients (no graph), and keeps only "state" and "param_groups": both must
    work for AdaHessian, including its seed, probe generator and Hessian-step count."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model, twin = _model(), _model()
    opt = sparseopt.AdaHessian(model.parameters(), lr=0.05, seed=1, update_each=2)
    for t in range(4):
        _hessian_step(model, opt, t)
    # Copies, as if read from disk: the state dicts hold the live tensors, and a load into
    # another optimizer in this process would share them (as with torch's optimizers).
    model_sd, optim_sd = copy.deepcopy(get_state_dict(model, opt))
    fresh = sparseopt.AdaHessian(twin.parameters(), lr=0.05, seed=99, update_each=2)
    _, template = get_state_dict(twin, fresh)  # takes the lr=0 initialisation step
    assert set(template["param_groups"][0]["adahessian"]["generator_states"]) == {"cpu"}
    set_state_dict(twin, fresh, model_state_dict=model_sd, optim_state_dict=optim_sd)
    assert fresh.seed == 1 and fresh._hessian_steps == 4
    assert fresh.param_groups[0]["lr"] == 0.05 and "adahessian" not in fresh.param_groups[0]
    for t in range(4, 8):
        _hessian_step(model, opt, t)
        _hessian_step(twin, fresh, t)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_adahessian_without_graph_still_raises_outside_the_initialisation_step() -> None:
    model = _model()
    opt = sparseopt.AdaHessian(model.parameters(), lr=0.0, seed=0)
    ((model(torch.ones(2, 4).double())) ** 2).sum().backward()  # no create_graph, grads != 0
    with pytest.raises(RuntimeError, match="needs the graph of the gradients"):
        opt.step()


def test_adahessian_loads_state_dicts_with_the_earlier_top_level_entry() -> None:
    """State dicts written before the entry moved into param_groups[0] kept it at the top."""
    model, twin = _model(), _model()
    opt = sparseopt.AdaHessian(model.parameters(), lr=0.05, seed=1)
    for t in range(2):
        _hessian_step(model, opt, t)
    sd = copy.deepcopy(opt.state_dict())
    sd["adahessian"] = sd["param_groups"][0].pop("adahessian")
    twin.load_state_dict(model.state_dict())
    other = sparseopt.AdaHessian(twin.parameters(), lr=0.05, seed=7)
    other.load_state_dict(sd)
    assert other.seed == 1
    _hessian_step(model, opt, 2)
    _hessian_step(twin, other, 2)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
