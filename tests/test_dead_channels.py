"""Dead-channel elimination (sparseopt.nn.dead_channels): depthwise channels without a nonzero
tap folded into the next 1x1 layer's bias and dropped, with the producer's matching output
channel. Each case builds an eval-mode chain, compresses it with and without the pass, and
checks the outputs agree and the right channels went."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import sparseopt
from sparseopt.nn.dead_channels import drop_dead_channels
from sparseopt.nn.inference import FusedDenseConv2d, FusedDepthwiseConv2d, FusedPointwiseConv2d

from test_sparse_conv import prune_, randn

C = 12  # the depthwise layer's channels
DEAD = [0, 3, 4, 10]  # its channels without a nonzero tap
LIVE = [c for c in range(C) if c not in DEAD]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


@dataclass(frozen=True)
class Case:
    """producer: what feeds the depthwise layer ("pointwise", "dense": the stem-like 3x3,
    "pool": a module the pass cannot shrink, "none": the depthwise layer comes first).
    act: the depthwise layer's activation; bn: BatchNorm after the depthwise layer (its bias);
    pw_bias: the 1x1 layer after it has a bias; nested: MobileNet-style nested Sequentials."""

    name: str
    producer: str
    act: type | None = nn.ReLU
    bn: bool = True
    pw_bias: bool = False
    nested: bool = False


CASES = [
    Case("pointwise", "pointwise"),
    Case("pointwise-nested", "pointwise", nested=True),
    Case("dense-stem", "dense", act=nn.ReLU6),
    Case("no-act", "pointwise", act=None),
    Case("no-bn-no-bias", "pointwise", bn=False),
    Case("pw-bias", "pointwise", act=None, pw_bias=True),
    Case("unshrinkable-producer", "pool"),
    Case("depthwise-first", "none", act=nn.ReLU6, pw_bias=True),
]


def _bn(channels: int, gen: torch.Generator) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5, generator=gen)
        bn.running_var.uniform_(0.5, 1.5, generator=gen)
        bn.weight.uniform_(0.5, 1.5, generator=gen)
        bn.bias.normal_(0, 1.0, generator=gen)  # negative and positive: ReLU clamps some
    return bn


def build(case: Case, gen: torch.Generator, dtype: torch.dtype) -> nn.Sequential:
    cin = 5
    head: list[nn.Module] = []
    if case.producer == "pointwise":
        head = [nn.Conv2d(cin, C, 1, bias=False), _bn(C, gen), nn.ReLU()]
    elif case.producer == "dense":
        head = [nn.Conv2d(cin, C, 3, stride=2, padding=1, bias=False), _bn(C, gen), nn.ReLU()]
    elif case.producer == "pool":
        head = [nn.Conv2d(cin, C, 1, bias=False), _bn(C, gen), nn.ReLU(), nn.MaxPool2d(1)]
    dw = nn.Conv2d(C, C, 3, padding=1, groups=C, bias=not case.bn)
    mid: list[nn.Module] = [dw] + ([_bn(C, gen)] if case.bn else []) + ([case.act()] if case.act else [])
    pw = nn.Conv2d(C, 7, 1, bias=case.pw_bias)
    tail: list[nn.Module] = [pw, _bn(7, gen), nn.ReLU()]
    if case.nested:
        model = nn.Sequential(nn.Sequential(*head), nn.Sequential(nn.Sequential(*mid), nn.Sequential(*tail)))
    else:
        model = nn.Sequential(*head, *mid, *tail)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.groups == 1 and m.kernel_size == (1, 1):
                prune_(m.weight, 0.75, gen)
        prune_(dw.weight, 0.8, gen)
        dw.weight[DEAD] = 0
        dw.weight[LIVE, 0, 1, 1] = 1.0  # every other channel keeps a tap
        if dw.bias is not None:
            dw.bias.normal_(0, 1.0, generator=gen)
    return sparseopt.nn.sparsify(model).to(dtype).eval()


def input_channels(case: Case) -> int:
    return C if case.producer == "none" else 5


def fused(model: nn.Module, drop: bool) -> nn.Module:
    return sparseopt.nn.compress(copy.deepcopy(model), drop_dead_channels=drop)


def layers(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_dropping_dead_channels_keeps_the_outputs(case, dtype, gen):
    model = build(case, gen, dtype)
    kept, dropped = fused(model, False), fused(model, True)
    x = randn(3, input_channels(case), 9, 9, gen=gen).to(dtype)
    with torch.no_grad():
        expected, got = model(x), kept(x)
        torch.testing.assert_close(got, expected, **TOL[dtype])
        torch.testing.assert_close(dropped(x), got, **TOL[dtype])

    dw, = layers(dropped, FusedDepthwiseConv2d)
    pws = layers(dropped, FusedPointwiseConv2d)
    after = pws[-1]
    live = len(LIVE)
    shrinks = case.producer in ("pointwise", "dense")
    assert dw.out_channels == (live if shrinks else C)
    assert after.in_channels == dw.out_channels
    kept_after = layers(kept, FusedPointwiseConv2d)[-1]
    if shrinks:
        producer = pws[0] if case.producer == "pointwise" else layers(dropped, FusedDenseConv2d)[0]
        assert (producer.out_channels if case.producer == "pointwise" else producer.weight.shape[0]) == live
    else:  # the columns of the dead channels are gone, the channel numbers unchanged
        assert not set(after.col_idx.tolist()) & set(DEAD)
    # the 1x1 layer after keeps exactly the nonzeros of the live columns
    dense = sparseopt.nn.formats.csr_to_dense(kept_after.row_ptr, kept_after.col_idx, kept_after.values, C)
    assert after.values.numel() == int((dense[:, LIVE] != 0).sum())


def test_dead_constant_is_the_clamped_bias(gen):
    """A dead channel with a negative bias under ReLU outputs 0, not the bias."""
    model = build(Case("neg", "pointwise", act=nn.ReLU, bn=False), gen, torch.float64)
    dw = [m for m in model.modules() if isinstance(m, sparseopt.nn.SparseDepthwiseConv2d)][0]
    with torch.no_grad():
        dw.bias[DEAD] = torch.tensor([-2.0, 3.0, -0.5, 1.5], dtype=torch.float64)
    x = randn(2, 5, 6, 6, gen=gen).double()
    with torch.no_grad():
        torch.testing.assert_close(fused(model, True)(x), model(x), **TOL[torch.float64])


@pytest.mark.parametrize("dead", [[], list(range(C))], ids=["none-dead", "all-dead"])
def test_chains_without_a_channel_to_drop_are_left_alone(dead, gen):
    model = build(Case("pointwise", "pointwise"), gen, torch.float32)
    dw = [m for m in model.modules() if isinstance(m, sparseopt.nn.SparseDepthwiseConv2d)][0]
    with torch.no_grad():
        dw.mask.fill_(1)
        dw.weight.zero_()
        dw.weight[:, 0, 1, 1] = 0.5  # one tap per channel
        dw.weight[dead] = 0
    fast = fused(model, False)
    before = {k: v.clone() for k, v in fast.state_dict().items()}
    assert drop_dead_channels(fast) == 0
    after = fast.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_depthwise_layer_not_followed_by_a_1x1_layer_keeps_its_channels(gen):
    model = build(Case("pointwise", "pointwise"), gen, torch.float32)
    model = nn.Sequential(*list(model)[:-3], nn.AdaptiveAvgPool2d(1)).eval()  # dw -> pool
    fast = fused(model, True)
    dw, = layers(fast, FusedDepthwiseConv2d)
    assert dw.out_channels == C
    x = randn(2, 5, 6, 6, gen=gen)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), **TOL[torch.float32])


def test_compress_on_mobilenet_drops_channels_and_keeps_outputs(gen):
    from test_sparse_inference import sparse_eval_model

    model = sparse_eval_model(gen)
    kept, dropped = fused(model, False), fused(model, True)
    nnz = [sum(m.values.numel() for m in layers(f, FusedPointwiseConv2d)) for f in (kept, dropped)]
    assert nnz[1] < nnz[0]
    x = randn(3, 3, 32, 32, gen=gen)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(dropped(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
