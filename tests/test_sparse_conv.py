"""Sparse pointwise / depthwise convolutions: the native ops against F.conv2d, the layers in
training (masked) and compressed (inference) mode, state_dict, sparsify, bad input, opcheck."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseopt
from sparseopt.nn import (
    SparseDepthwiseConv2d,
    SparsePointwiseConv2d,
    compress,
    decompress,
    sparsify,
)
from sparseopt.nn import formats
from sparseopt.reference import sparse_conv as ref

from conftest import DEVICES

SPARSITIES = [0.0, 0.5, 0.99, 1.0]
FLOATS = [torch.float32, torch.float64]
# 1e-5 (the bar) relative to the output's scale: the sums here have up to ~100 terms.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def prune_(w: torch.Tensor, sparsity: float, gen: torch.Generator) -> torch.Tensor:
    """Zero a random `sparsity` fraction of w (exactly, rounding the count), in place."""
    n = w.numel()
    k = int(round(sparsity * n))
    idx = torch.randperm(n, generator=gen)[:k]
    w.view(-1)[idx.to(w.device)] = 0
    return w


def randn(*shape: int, gen: torch.Generator, dtype=torch.float32, device="cpu") -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)


# ---- the ops against F.conv2d ----------------------------------------------------------------
PW_SHAPES = [  # (N, C, O, H, W): odd sizes, one pixel, several 64-wide tiles with a tail
    (1, 5, 3, 1, 1),
    (7, 16, 12, 5, 7),
    (1, 33, 17, 13, 11),
    (2, 8, 9, 9, 70),
    (1, 64, 130, 7, 7),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("shape", PW_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_op_matches_conv2d(device, dtype, sparsity, shape, bias, isa, gen):
    n, c, o, h, w = shape
    x = randn(n, c, h, w, gen=gen, dtype=dtype, device=device)
    weight = prune_(randn(o, c, 1, 1, gen=gen, dtype=dtype, device=device), sparsity, gen)
    b = randn(o, gen=gen, dtype=dtype, device=device) if bias else None
    row_ptr, col_idx, values = formats.dense_to_csr(weight)
    assert values.numel() == int((weight != 0).sum())
    out = torch.ops.sparseopt.csr_pointwise_conv2d(x, row_ptr, col_idx, values, b)
    expected = F.conv2d(x, weight, b)
    assert out.shape == expected.shape and out.dtype == dtype and out.is_contiguous()
    torch.testing.assert_close(out, expected, **TOL[dtype])
    torch.testing.assert_close(ref.csr_pointwise_conv2d(x, row_ptr, col_idx, values, b), expected, **TOL[dtype])


DW_CASES = [  # (N, C, H, W, kernel, stride, padding)
    (1, 3, 7, 9, (3, 3), (1, 1), (1, 1)),
    (7, 5, 11, 13, (3, 3), (2, 2), (1, 1)),
    (2, 4, 9, 8, (5, 5), (1, 1), (2, 2)),
    (1, 6, 10, 11, (3, 3), (2, 2), (0, 0)),
    (3, 2, 6, 17, (1, 3), (2, 1), (1, 0)),
    (1, 8, 3, 3, (3, 3), (1, 1), (2, 2)),  # padding larger than needed: border taps fall out
    (2, 4, 1, 1, (3, 3), (1, 1), (1, 1)),
    (1, 3, 40, 37, (3, 3), (1, 1), (1, 1)),
    (2, 3, 6, 60, (3, 3), (1, 1), (1, 1)),  # 4 AVX-512 vectors per output row
    (1, 3, 5, 70, (5, 5), (1, 1), (2, 2)),  # wider than the vector-row kernel: the row loop
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: "-".join(map(str, c)).replace(" ", ""))
def test_depthwise_op_matches_conv2d(device, dtype, sparsity, case, isa, gen):
    n, c, h, w, k, s, p = case
    x = randn(n, c, h, w, gen=gen, dtype=dtype, device=device)
    weight = prune_(randn(c, 1, *k, gen=gen, dtype=dtype, device=device), sparsity, gen)
    b = randn(c, gen=gen, dtype=dtype, device=device)
    tap_ptr, tap_idx, values = formats.dense_to_taps(weight)
    out = torch.ops.sparseopt.sparse_depthwise_conv2d(x, tap_ptr, tap_idx, values, b, list(k), list(s), list(p))
    expected = F.conv2d(x, weight, b, stride=s, padding=p, groups=c)
    assert out.shape == expected.shape and out.is_contiguous()
    torch.testing.assert_close(out, expected, **TOL[dtype])
    out_nobias = torch.ops.sparseopt.sparse_depthwise_conv2d(x, tap_ptr, tap_idx, values, None, list(k), list(s), list(p))
    torch.testing.assert_close(out_nobias, F.conv2d(x, weight, None, stride=s, padding=p, groups=c), **TOL[dtype])


def test_all_zero_channels_give_the_bias(gen):
    x = randn(2, 8, 5, 5, gen=gen)
    w = randn(6, 8, 1, 1, gen=gen)
    w[[1, 4]] = 0  # two output channels with no nonzero
    b = randn(6, gen=gen)
    out = torch.ops.sparseopt.csr_pointwise_conv2d(x, *formats.dense_to_csr(w), b)
    torch.testing.assert_close(out[:, 1], b[1].expand(2, 5, 5), rtol=0, atol=0)
    torch.testing.assert_close(out, F.conv2d(x, w, b), **TOL[torch.float32])
    wd = randn(8, 1, 3, 3, gen=gen)
    wd[[0, 7]] = 0
    bd = randn(8, gen=gen)
    outd = torch.ops.sparseopt.sparse_depthwise_conv2d(x, *formats.dense_to_taps(wd), bd, [3, 3], [1, 1], [1, 1])
    torch.testing.assert_close(outd[:, 7], bd[7].expand(2, 5, 5), rtol=0, atol=0)
    torch.testing.assert_close(outd, F.conv2d(x, wd, bd, padding=1, groups=8), **TOL[torch.float32])


def test_ops_convert_noncontiguous_and_channels_last(gen):
    x = randn(3, 16, 9, 7, gen=gen).to(memory_format=torch.channels_last)
    w = prune_(randn(10, 16, 1, 1, gen=gen), 0.7, gen)
    out = torch.ops.sparseopt.csr_pointwise_conv2d(x, *formats.dense_to_csr(w))
    torch.testing.assert_close(out, F.conv2d(x, w), **TOL[torch.float32])
    xs = randn(3, 32, 9, 14, gen=gen)[:, ::2, :, ::2]  # strided view with gaps
    out = torch.ops.sparseopt.csr_pointwise_conv2d(xs, *formats.dense_to_csr(w))
    torch.testing.assert_close(out, F.conv2d(xs, w), **TOL[torch.float32])
    wd = prune_(randn(16, 1, 3, 3, gen=gen), 0.5, gen)
    out = torch.ops.sparseopt.sparse_depthwise_conv2d(xs, *formats.dense_to_taps(wd), None, [3, 3], [2, 2], [1, 1])
    torch.testing.assert_close(out, F.conv2d(xs, wd, stride=2, padding=1, groups=16), **TOL[torch.float32])


def test_op_gradcheck_fp64(gen):
    x = randn(2, 6, 5, 7, gen=gen, dtype=torch.float64).requires_grad_()
    w = prune_(randn(4, 6, 1, 1, gen=gen, dtype=torch.float64), 0.5, gen)
    rp, ci, v = formats.dense_to_csr(w)
    v = v.clone().requires_grad_()
    b = randn(4, gen=gen, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, v, b: torch.ops.sparseopt.csr_pointwise_conv2d(x, rp, ci, v, b), (x, v, b))
    wd = prune_(randn(6, 1, 3, 3, gen=gen, dtype=torch.float64), 0.5, gen)
    tp, ti, tv = formats.dense_to_taps(wd)
    tv = tv.clone().requires_grad_()
    bd = randn(6, gen=gen, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, v, b: torch.ops.sparseopt.sparse_depthwise_conv2d(x, tp, ti, v, b, [3, 3], [2, 2], [1, 1]),
        (x, tv, bd),
    )


def _opcheck_samples(gen):
    dt = torch.float64
    x = randn(2, 6, 5, 7, gen=gen, dtype=dt)
    w = prune_(randn(4, 6, 1, 1, gen=gen, dtype=dt), 0.5, gen)
    rp, ci, v = formats.dense_to_csr(w)
    b = randn(4, gen=gen, dtype=dt)
    wd = prune_(randn(6, 1, 3, 3, gen=gen, dtype=dt), 0.5, gen)
    tp, ti, tv = formats.dense_to_taps(wd)
    bd = randn(6, gen=gen, dtype=dt)
    rg = lambda t: t.clone().requires_grad_()  # noqa: E731
    return [
        ("csr_pointwise_conv2d", (x, rp, ci, v, b)),
        ("csr_pointwise_conv2d", (x, rp, ci, v, None)),
        ("csr_pointwise_conv2d", (rg(x), rp, ci, rg(v), rg(b))),
        ("csr_pointwise_conv2d", (x.float(), rp, ci, v.float(), None)),
        ("sparse_depthwise_conv2d", (x, tp, ti, tv, bd, [3, 3], [1, 1], [1, 1])),
        ("sparse_depthwise_conv2d", (x, tp, ti, tv, None, [3, 3], [2, 2], [0, 0])),
        ("sparse_depthwise_conv2d", (rg(x), tp, ti, rg(tv), rg(bd), [3, 3], [2, 1], [1, 1])),
    ]


def test_opcheck(gen):
    for name, args in _opcheck_samples(gen):
        result = torch.library.opcheck(getattr(torch.ops.sparseopt, name), args)
        assert all(v == "SUCCESS" for v in result.values()), (name, result)


def test_schemas_match_the_cpp_definitions():
    for name in ("csr_pointwise_conv2d", "sparse_depthwise_conv2d"):
        schema = str(getattr(torch.ops.sparseopt, name).default._schema)
        assert schema == f"sparseopt::{name}{sparseopt.ops.SCHEMAS[name]}"


def test_reference_is_the_fallback_for_other_devices(gen):
    # The CompositeExplicitAutograd kernel is the reference: run it on the meta device too.
    x = randn(2, 4, 5, 5, gen=gen).to("meta")
    w = randn(3, 4, 1, 1, gen=gen)
    rp, ci, v = (t.to("meta") for t in formats.dense_to_csr(w))
    out = torch.ops.sparseopt.csr_pointwise_conv2d(x, rp, ci, v)
    assert out.shape == (2, 3, 5, 5) and out.device.type == "meta"


# ---- op errors ---------------------------------------------------------------------------------
def test_op_errors_name_expected_and_given(gen):
    x = randn(2, 4, 5, 5, gen=gen)
    w = randn(3, 4, 1, 1, gen=gen)
    rp, ci, v = formats.dense_to_csr(w)
    op = torch.ops.sparseopt.csr_pointwise_conv2d
    with pytest.raises(RuntimeError, match=r"expected a 4-D input \[N, C, H, W\], got a 3-D tensor"):
        op(x[0], rp, ci, v)
    with pytest.raises(RuntimeError, match="float32 or float64 input, got Half"):
        op(x.half(), rp, ci, v.half())
    with pytest.raises(RuntimeError, match="values dtype Double differs from the input dtype Float"):
        op(x, rp, ci, v.double())
    with pytest.raises(RuntimeError, match="row_ptr must be int32, got Long"):
        op(x, rp.long(), ci, v)
    with pytest.raises(RuntimeError, match=r"expected a bias of shape \[3\], got \[4\]"):
        op(x, rp, ci, v, torch.zeros(4))
    bad = ci.clone()
    bad[0] = 4
    with pytest.raises(RuntimeError, match=r"col_idx\[0\] = 4 is out of range \[0, 4\)"):
        op(x, rp, bad, v)
    with pytest.raises(RuntimeError, match="number of nonzeros"):
        op(x, rp, ci[:-1], v[:-1])
    wd = randn(4, 1, 3, 3, gen=gen)
    tp, ti, tv = formats.dense_to_taps(wd)
    dw = torch.ops.sparseopt.sparse_depthwise_conv2d
    with pytest.raises(RuntimeError, match=r"expected tap_ptr of shape \[6\] \(input channels \+ 1\), got \[5\]"):
        dw(randn(2, 5, 5, 5, gen=gen), tp, ti, tv, None, [3, 3], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match=r"tap_idx\[\d+\] = 9 is out of range \[0, 9\)"):
        bad = ti.clone()
        bad[3] = 9
        dw(x, tp, bad, tv, None, [3, 3], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="smaller than the kernel"):
        dw(x[:, :, :1, :1], tp, ti, tv, None, [3, 3], [1, 1], [0, 0])
    with pytest.raises(RuntimeError, match="stride must be two integers >= 1"):
        dw(x, tp, ti, tv, None, [3, 3], [0, 1], [1, 1])


# ---- layers: training mode ---------------------------------------------------------------------
def make_pointwise(c, o, sparsity, gen, dtype=torch.float32, bias=True, stride=1):
    layer = SparsePointwiseConv2d(c, o, bias=bias, stride=stride, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(prune_(randn(o, c, 1, 1, gen=gen, dtype=dtype), sparsity, gen))
        if bias:
            layer.bias.copy_(randn(o, gen=gen, dtype=dtype))
    layer.update_mask()
    return layer


def make_depthwise(c, k, s, p, sparsity, gen, dtype=torch.float32, bias=True):
    layer = SparseDepthwiseConv2d(c, k, stride=s, padding=p, bias=bias, dtype=dtype)
    kk = (k, k) if isinstance(k, int) else k
    with torch.no_grad():
        layer.weight.copy_(prune_(randn(c, 1, *kk, gen=gen, dtype=dtype), sparsity, gen))
        if bias:
            layer.bias.copy_(randn(c, gen=gen, dtype=dtype))
    layer.update_mask()
    return layer


LAYER_CASES = [
    ("pw", dict(c=12, o=9), (1, 7, 9)),
    ("pw", dict(c=12, o=9, stride=2), (7, 11, 9)),
    ("dw", dict(c=6, k=3, s=1, p=1), (7, 9, 7)),
    ("dw", dict(c=6, k=3, s=2, p=1), (1, 11, 13)),
    ("dw", dict(c=4, k=(3, 5), s=(2, 1), p=(0, 2)), (7, 9, 11)),
]


def build(kind, kw, sparsity, gen, dtype=torch.float32, bias=True):
    if kind == "pw":
        return make_pointwise(kw["c"], kw["o"], sparsity, gen, dtype, bias, kw.get("stride", 1))
    return make_depthwise(kw["c"], kw["k"], kw["s"], kw["p"], sparsity, gen, dtype, bias)


def dense_conv(layer, x, weight):
    if isinstance(layer, SparsePointwiseConv2d):
        return F.conv2d(x, weight, layer.bias, stride=layer.stride)
    return F.conv2d(x, weight, layer.bias, stride=layer.stride, padding=layer.padding, groups=layer.in_channels)


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c[0] + str(c[1]).replace(" ", ""))
def test_layer_training_forward_and_grads(case, sparsity, gen):
    kind, kw, (n, h, w) = case
    layer = build(kind, kw, sparsity, gen)
    x = randn(n, layer.in_channels, h, w, gen=gen).requires_grad_()
    out = layer(x)
    wm = (layer.weight * layer.mask).detach().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    expected = dense_conv(layer, x2, wm)
    torch.testing.assert_close(out, expected, **TOL[torch.float32])
    g = randn(*out.shape, gen=gen)
    out.backward(g)
    expected.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, **TOL[torch.float32])
    torch.testing.assert_close(layer.weight.grad, wm.grad * layer.mask, **TOL[torch.float32])
    assert torch.all(layer.weight.grad[~layer.mask] == 0)


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c[0] + str(c[1]).replace(" ", ""))
def test_layer_gradcheck_fp64(case, gen):
    kind, kw, _ = case
    layer = build(kind, kw, 0.5, gen, dtype=torch.float64)
    # small odd maps keep the numerical Jacobian cheap (batch 1 and 7 are covered above)
    x = randn(2, layer.in_channels, 5, 7, gen=gen, dtype=torch.float64).requires_grad_()
    params = (layer.weight, layer.bias)

    def f(x, weight, bias):
        return torch.func.functional_call(layer, {"weight": weight, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)
    # and the compressed path differentiates with respect to the input
    layer.compress(dense_threshold=1.0)
    assert layer.kernel == "sparse"
    assert torch.autograd.gradcheck(layer, (x,), fast_mode=True)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_pruned_weights_stay_zero_with_any_optimizer(opt_name, gen):
    layer = make_pointwise(16, 8, 0.7, gen)
    dw = make_depthwise(16, 3, 1, 1, 0.7, gen)
    model = nn.Sequential(dw, nn.ReLU(), layer)
    zeros = [(m.weight == 0).clone() for m in (dw, layer)]
    params = list(model.parameters())
    opt = (torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-2) if opt_name == "sgd"
           else torch.optim.Adam(params, lr=0.1, weight_decay=1e-2))
    for _ in range(3):
        opt.zero_grad()
        model(randn(4, 16, 6, 6, gen=gen)).square().mean().backward()
        opt.step()
    for m, z in zip((dw, layer), zeros):
        assert torch.all(m.weight[z] == 0)
        assert torch.any(m.weight[~z] != 0)


def test_update_mask_freezes_new_zeros(gen):
    layer = make_pointwise(8, 4, 0.0, gen)
    assert bool(layer.mask.all())
    with torch.no_grad():
        layer.weight[0, :3] = 0
    assert layer.update_mask().sum() == 32 - 3
    assert layer.sparsity() == pytest.approx(3 / 32)
    layer(randn(1, 8, 3, 3, gen=gen)).sum().backward()
    assert torch.all(layer.weight.grad[0, :3] == 0)


@pytest.mark.parametrize("opt_name", ["sgd_momentum", "adam"])
def test_update_mask_never_revives_a_pruned_weight(opt_name, gen):
    """Optimizer state from before the pruning (momentum, Adam's moments) moves the raw weight
    under a False mask; a later update_mask() keeps it pruned (mask = old mask & weight != 0),
    zeroes the raw weight there, and the two sparsity measures agree again."""
    layer = make_pointwise(6, 4, 0.0, gen)
    x = randn(8, 6, 3, 3, gen=gen)
    opt = (torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9) if opt_name == "sgd_momentum"
           else torch.optim.Adam(layer.parameters(), lr=1e-2))
    for _ in range(3):  # dense training builds state for every weight
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
    with torch.no_grad():
        layer.weight[0] = 0  # an optimizer zeroed this row
    layer.update_mask()
    pruned = ~layer.mask.clone()
    assert int(pruned.sum()) == 6
    for _ in range(3):
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
    assert torch.all(layer.weight.grad[pruned] == 0)
    assert torch.all(layer.weight[pruned] != 0)  # the raw weight drifted (the forward ignores it)
    with torch.no_grad():
        before = layer(x)
    layer.update_mask()
    assert torch.equal(layer.mask, ~pruned)  # not revived
    assert torch.all(layer.weight[pruned] == 0)
    assert layer.sparsity() == pytest.approx(6 / 24)
    assert sparseopt.sparsity(layer) == pytest.approx(layer.sparsity())
    with torch.no_grad():
        torch.testing.assert_close(layer(x), before)
    # a weight unmasked again by hand but still zero is pruned again at the next update
    layer.mask.fill_(True)
    with torch.no_grad():
        layer.weight[0, :2] = 1.0
    layer.update_mask()
    assert int((~layer.mask).sum()) == 4 and torch.all(layer.mask[0, :2])


# ---- layers: compressed inference -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c[0] + str(c[1]).replace(" ", ""))
def test_compressed_equals_dense(case, sparsity, dtype, gen):
    kind, kw, (n, h, w) = case
    layer = build(kind, kw, sparsity, gen, dtype)
    x = randn(n, layer.in_channels, h, w, gen=gen, dtype=dtype)
    with torch.no_grad():
        expected = layer(x)
        layer.eval().compress(dense_threshold=1.0)  # the sparse kernel at every density
        assert layer.compressed and layer.kernel == "sparse"
        assert layer._values.numel() == int((layer.weight != 0).sum())
        out = layer(x)
    torch.testing.assert_close(out, expected, **TOL[dtype])


def test_dense_fallback_and_half(gen):
    layer = make_pointwise(12, 9, 0.5, gen)
    x = randn(2, 12, 5, 5, gen=gen)
    expected = layer(x).detach()
    layer.compress(dense_threshold=0.3)  # density 0.5 > 0.3: dense kernel
    assert layer.kernel == "dense"
    torch.testing.assert_close(layer(x), expected)
    layer.compress(dense_threshold=0.6)
    assert layer.kernel == "sparse"
    with pytest.raises(ValueError, match=r"dense_threshold must be in \[0, 1\], got 1.5"):
        layer.compress(1.5)
    half = copy.deepcopy(layer).to(torch.bfloat16).compress()
    assert half.kernel == "dense"  # no native bf16 kernel: the dense path
    torch.testing.assert_close(half(x.bfloat16()).float(), expected, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("sparsity,kernel", [(0.0, "dense"), (0.5, "dense"), (0.9, "sparse"), (1.0, "sparse")])
def test_default_dense_fallback_threshold(sparsity, kernel, gen):
    for layer in (make_pointwise(16, 16, sparsity, gen), make_depthwise(16, 3, 1, 1, sparsity, gen)):
        x = randn(2, 16, 6, 6, gen=gen)
        expected = layer(x).detach()
        layer.compress()
        assert layer.kernel == kernel
        assert (layer.density() > sparseopt.nn.DENSE_FALLBACK_DENSITY[layer._kind]) == (kernel == "dense")
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_compressed_layer_follows_weight_changes(gen):
    layer = make_depthwise(4, 3, 1, 1, 0.5, gen).compress(dense_threshold=1.0)
    x = randn(2, 4, 6, 6, gen=gen)
    with torch.no_grad():
        layer.weight.mul_(2)
        layer.weight[0] = 0
        out = layer(x)
        expected = F.conv2d(x, layer.weight * layer.mask, layer.bias, padding=1, groups=4)
    torch.testing.assert_close(out, expected)
    layer.update_mask()
    assert layer._values.numel() == int(layer.mask.sum())
    layer.double()  # dtype change: the compressed buffers follow
    torch.testing.assert_close(layer(x.double()), expected.double(), rtol=1e-5, atol=1e-5)
    layer.decompress()
    assert not layer.compressed and layer._values is None


def test_layer_inputs_channels_last_and_noncontiguous(gen):
    pw = make_pointwise(8, 6, 0.5, gen)
    dw = make_depthwise(8, 3, 2, 1, 0.5, gen)
    x = randn(3, 8, 9, 7, gen=gen).to(memory_format=torch.channels_last)
    xs = randn(3, 16, 9, 14, gen=gen)[:, ::2, :, ::2]
    for layer in (pw, dw):
        for inp in (x, xs):
            expected = dense_conv(layer, inp, layer.weight * layer.mask).detach()
            torch.testing.assert_close(layer(inp).detach(), expected)
            layer.compress(dense_threshold=1.0)
            out = layer(inp).detach()
            torch.testing.assert_close(out, expected)
            if inp is x:  # the compressed path returns channels_last too, as nn.Conv2d does
                assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
            else:
                assert out.is_contiguous()
            layer.decompress()


# ---- from_dense / to_dense / state_dict / sparsify ------------------------------------------------------
def test_from_dense_to_dense_roundtrip(gen):
    conv = nn.Conv2d(8, 6, 1, bias=True)
    with torch.no_grad():
        conv.weight[conv.weight.abs() < 0.2] = 0
    layer = SparsePointwiseConv2d.from_dense(conv)
    assert torch.equal(layer.mask, conv.weight != 0)
    x = randn(2, 8, 5, 5, gen=gen)
    torch.testing.assert_close(layer(x), conv(x))
    back = layer.to_dense()
    assert isinstance(back, nn.Conv2d) and torch.equal(back.weight, conv.weight)
    dconv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
    dl = SparseDepthwiseConv2d.from_dense(dconv)
    assert dl.bias is None and dl.stride == (2, 2) and dl.padding == (1, 1)
    torch.testing.assert_close(dl(x), dconv(x))
    torch.testing.assert_close(dl.to_dense()(x), dconv(x))
    with pytest.raises(ValueError, match=r"expected a 1x1 kernel, got \(3, 3\)"):
        SparsePointwiseConv2d.from_dense(dconv)
    with pytest.raises(ValueError, match="expected groups == in_channels == out_channels"):
        SparseDepthwiseConv2d.from_dense(nn.Conv2d(8, 8, 3))
    with pytest.raises(ValueError, match="dilation must be 1"):
        SparseDepthwiseConv2d.from_dense(nn.Conv2d(8, 8, 3, groups=8, dilation=2))


def test_state_dict_holds_dense_weight_and_mask(gen):
    layer = make_pointwise(8, 6, 0.5, gen).compress()
    sd = layer.state_dict()
    assert set(sd) == {"weight", "bias", "mask"}
    assert sd["mask"].dtype == torch.bool and torch.equal(sd["mask"], layer.weight != 0)
    other = SparsePointwiseConv2d(8, 6).compress()
    other.load_state_dict(sd)
    x = randn(2, 8, 4, 4, gen=gen)
    torch.testing.assert_close(other(x), layer(x))  # recompressed from the loaded weight
    bad = dict(sd, mask=torch.ones(6, 8, dtype=torch.bool))
    with pytest.raises(RuntimeError, match=r"mask in the state_dict \(mask\) has shape \[6, 8\], expected \[6, 8, 1, 1\]"):
        other.load_state_dict(bad)
    # a float mask is accepted and stored as bool
    other.load_state_dict(dict(sd, mask=sd["mask"].float()))
    assert other.mask.dtype == torch.bool and torch.equal(other.mask, sd["mask"])


def test_torch_save_roundtrip(tmp_path, gen):
    model = nn.Sequential(make_depthwise(4, 3, 1, 1, 0.5, gen), make_pointwise(4, 5, 0.5, gen))
    compress(model.eval())
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    model2 = nn.Sequential(SparseDepthwiseConv2d(4, 3, padding=1), SparsePointwiseConv2d(4, 5))
    model2.load_state_dict(torch.load(path))
    compress(model2.eval())
    x = randn(2, 4, 7, 7, gen=gen)
    torch.testing.assert_close(model2(x), model(x))


def test_layer_bad_input_errors(gen):
    pw = SparsePointwiseConv2d(8, 4)
    dw = SparseDepthwiseConv2d(8, 3, padding=1)
    for layer in (pw, dw):
        name = type(layer).__name__
        with pytest.raises(ValueError, match=rf"{name}: expected a 4-D input \[N, C, H, W\], got a 5-D tensor of shape \[1, 8, 5, 5, 1\] \(an unbatched 3-D input \[C, H, W\] is accepted too"):
            layer(torch.zeros(1, 8, 5, 5, 1))
        with pytest.raises(ValueError, match=rf"{name}: expected a 4-D input .* got a 2-D tensor"):
            layer(torch.zeros(8, 5))
        with pytest.raises(ValueError, match=rf"{name}: expected 8 input channels, got 7 \(input shape \[7, 5, 5\]\)"):
            layer(torch.zeros(7, 5, 5))  # unbatched, wrong channel count
        with pytest.raises(ValueError, match=rf"{name}: expected a non-empty H x W map, got an input of shape \[8, 0, 5\]"):
            layer(torch.zeros(8, 0, 5))
        with pytest.raises(ValueError, match=rf"{name}: expected 8 input channels, got 7"):
            layer(torch.zeros(1, 7, 5, 5))
        with pytest.raises(TypeError, match=rf"{name}: expected a torch.float32 input \(the weight's dtype\), got torch.float64"):
            layer(torch.zeros(1, 8, 5, 5, dtype=torch.float64))
        with pytest.raises(RuntimeError, match=rf"{name}: expected an input on cpu \(the weight's device\), got meta"):
            layer(torch.zeros(1, 8, 5, 5, device="meta"))
        layer.compress()
        with pytest.raises(ValueError, match="expected 8 input channels, got 7"):
            layer(torch.zeros(1, 7, 5, 5))
    with pytest.raises(ValueError, match="in_ch and out_ch must be >= 1"):
        SparsePointwiseConv2d(0, 3)
    with pytest.raises(ValueError, match="kernel_size >= 1, stride >= 1, padding >= 0"):
        SparseDepthwiseConv2d(4, 3, stride=0)


def test_sparsify_replaces_eligible_convs_in_place(gen):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),             # full conv: kept
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU()),  # depthwise
        nn.Conv2d(8, 16, 1),                       # pointwise
        nn.Conv2d(16, 16, 1, stride=2, bias=False),  # strided pointwise (projection shortcut)
        nn.Conv2d(16, 16, 3, groups=4),            # grouped: kept
        nn.Conv2d(16, 16, 1, padding=1),           # padded 1x1: kept
    ).eval()
    x = randn(2, 3, 9, 9, gen=gen)
    with torch.no_grad():
        expected = model(x)
    same = sparsify(model)
    assert same is model
    kinds = [type(m).__name__ for m in (model[0], model[1][0], model[2], model[3], model[4], model[5])]
    assert kinds == ["Conv2d", "SparseDepthwiseConv2d", "SparsePointwiseConv2d", "SparsePointwiseConv2d", "Conv2d", "Conv2d"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
        compress(model)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        decompress(model)
        torch.testing.assert_close(model(x), expected)
    with pytest.raises(TypeError, match="pass the parent module"):
        sparsify(nn.Conv2d(4, 4, 1))


def test_sparsify_and_from_dense_keep_requires_grad():
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 6, 1))
    model[0].requires_grad_(False)  # a frozen backbone layer
    model[1].bias.requires_grad_(False)  # a frozen bias only
    sparsify(model)
    assert isinstance(model[0], SparsePointwiseConv2d) and isinstance(model[1], SparseDepthwiseConv2d)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert flags == {"0.weight": False, "0.bias": False, "1.weight": True, "1.bias": False,
                     "2.weight": True, "2.bias": True}
    assert not model[0].to_dense().weight.requires_grad
    assert model[1].to_dense().weight.requires_grad and not model[1].to_dense().bias.requires_grad


AUTOCAST_LAYERS = [
    ("pw", lambda: SparsePointwiseConv2d(12, 9, stride=2)),
    ("dw", lambda: SparseDepthwiseConv2d(12, 3, stride=2, padding=1)),
]


@pytest.mark.parametrize("mode", ["masked", "sparse", "dense_fallback"])
@pytest.mark.parametrize("make", [m for _, m in AUTOCAST_LAYERS], ids=[k for k, _ in AUTOCAST_LAYERS])
def test_layers_under_autocast_cast_like_conv2d(make, mode, gen):
    """Under torch.autocast the layers cast input, weight and bias to the autocast dtype as
    nn.Conv2d does (training mode: differentiable, fp32 weight gradients with the mask's zeros);
    the compressed layer too (no bf16 sparse kernel: the dense conv on the cast weight)."""
    torch.manual_seed(0)
    layer = make()
    with torch.no_grad():
        prune_(layer.weight, 0.7, gen)
    layer.update_mask()
    if mode != "masked":
        layer.eval().compress(dense_threshold=1.0 if mode == "sparse" else 0.0)
    conv = layer.to_dense()
    x = randn(2, 12, 7, 9, gen=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        expected = conv(x)
        out_bf16_input = layer(x.bfloat16())  # the output of a previous autocast layer
    assert out.dtype == expected.dtype == out_bf16_input.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(out_bf16_input, expected, rtol=1e-2, atol=1e-2)
    if mode == "masked":
        out.float().square().sum().backward()
        assert layer.weight.grad.dtype == torch.float32
        assert torch.all(layer.weight.grad[~layer.mask] == 0)
        assert torch.any(layer.weight.grad != 0)
    # outside autocast the dtype check stands
    with pytest.raises(TypeError, match=r"expected a torch.float32 input \(the weight's dtype\), "
                                        r"got torch.bfloat16"):
        layer(x.bfloat16())
    # an fp64 layer is left in fp64 by autocast (as nn.Conv2d is)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer.double()(x.double()).dtype == torch.float64


def test_compressed_layers_export(gen):
    """torch.export of compressed layers (the sparse ops appear in the graph; the staleness
    check is skipped while tracing) gives the eager outputs."""
    model = nn.Sequential(make_pointwise(8, 8, 0.8, gen), nn.ReLU(),
                          make_depthwise(8, 3, 1, 1, 0.8, gen)).eval()
    compress(model, dense_threshold=1.0)
    assert all(m.kernel == "sparse" for m in (model[0], model[2]))
    x = randn(2, 8, 6, 6, gen=gen)
    with torch.no_grad():
        expected = model(x)
    ep = torch.export.export(model, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert {"sparseopt.csr_pointwise_conv2d.default",
            "sparseopt.sparse_depthwise_conv2d.default"} <= targets, targets
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), expected)


@pytest.mark.parametrize("make_opt", [
    lambda p: sparseopt.ProxSGD(p, lr=0.1, l1=1e-3, momentum=0.9, backend="native"),
    lambda p: sparseopt.IRDA(p, l1=1e-3, gamma=5.0, backend="native"),
    lambda p: sparseopt.Adam(p, lr=1e-2, backend="native"),
], ids=["ProxSGD", "IRDA", "Adam"])
def test_compressed_layer_sees_a_native_optimizer_step(gen, make_opt):
    """The native kernels write through raw pointers and bump the parameters' versions, which
    is how a compressed layer knows to recompress."""
    if not sparseopt.ops.has_native("cpu"):
        pytest.skip("needs the native extension")
    layer = make_pointwise(8, 6, 0.5, gen)
    opt = make_opt(layer.parameters())
    x = randn(2, 8, 4, 4, gen=gen)
    layer(x).square().sum().backward()  # gradients in training mode, then compress
    layer.eval().compress(dense_threshold=1.0)
    before = layer(x)
    for _ in range(3):
        opt.step()
        torch.testing.assert_close(layer(x), layer.to_dense()(x))
    assert not torch.allclose(layer(x), before)


# ---- unbatched input, training a compressed layer, inference mode -------------------------------------
UNBATCHED_LAYERS = [
    ("pw", lambda gen: make_pointwise(8, 6, 0.7, gen)),
    ("pw_stride2", lambda gen: make_pointwise(8, 6, 0.7, gen, stride=2)),
    ("dw", lambda gen: make_depthwise(8, 3, 2, 1, 0.7, gen)),
]


@pytest.mark.parametrize("mode", ["masked", "sparse", "dense_fallback"])
@pytest.mark.parametrize("make", [m for _, m in UNBATCHED_LAYERS], ids=[k for k, _ in UNBATCHED_LAYERS])
def test_layers_accept_unbatched_3d_input_like_conv2d(make, mode, gen):
    """A [C, H, W] input runs as nn.Conv2d runs it (unsqueeze(0), conv, squeeze(0)), in training
    and compressed mode; the input gradient matches nn.Conv2d's."""
    layer = make(gen)
    if mode != "masked":
        layer.eval().compress(dense_threshold=1.0 if mode == "sparse" else 0.0)
        assert layer.kernel == ("sparse" if mode == "sparse" else "dense")
    conv = layer.to_dense()
    x = randn(8, 9, 7, gen=gen).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    out = layer(x)
    expected = conv(x_ref)
    assert out.shape == expected.shape and out.dim() == 3
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(layer(x.unsqueeze(0)).squeeze(0), out)
    g = randn(*out.shape, gen=gen)
    out.backward(g)
    expected.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    if mode == "masked":
        torch.testing.assert_close(layer.weight.grad, conv.weight.grad * layer.mask,
                                   rtol=1e-5, atol=1e-5)


def _record_warnings(fn):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fn()
    return [w for w in rec if "no weight gradients" in str(w.message)]


@pytest.mark.parametrize("threshold", [1.0, 0.0], ids=["sparse", "dense_fallback"])
@pytest.mark.parametrize("kind", ["pw", "dw"])
def test_compressed_layer_in_training_mode_warns_once(kind, threshold, gen, monkeypatch):
    """model.train() after compress() trains nothing in the compressed layers (no weight
    gradients): the first such forward warns, once per layer; eval mode, no_grad,
    inference_mode, a frozen weight and torch.compile do not warn."""
    def make():
        layer = make_pointwise(8, 6, 0.7, gen) if kind == "pw" else make_depthwise(8, 3, 1, 1, 0.7, gen)
        return layer.eval().compress(dense_threshold=threshold)

    x = randn(2, 8, 5, 5, gen=gen)
    layer = make().train()
    with pytest.warns(UserWarning, match=r"compressed forward gives no weight gradients .*"
                                         r"call decompress\(\) to train"):
        layer(x)
    assert layer.weight.grad is None
    assert _record_warnings(lambda: layer(x)) == []  # once per layer
    other = make().train()  # another layer warns for itself
    assert len(_record_warnings(lambda: other(x))) == 1

    def no_grad_forward(layer):
        with torch.no_grad():
            layer(x)

    def inference_forward(layer):
        with torch.inference_mode():
            layer(x)

    quiet = [
        lambda: make()(x),  # eval mode
        lambda: no_grad_forward(make().train()),
        lambda: inference_forward(make().train()),
        lambda: make().train().requires_grad_(False)(x),  # frozen weight
        lambda: make().train().decompress()(x).sum().backward(),  # training again: no warning
    ]
    for fn in quiet:
        assert _record_warnings(fn) == []
    fresh = make().train()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert _record_warnings(lambda: fresh(x)) == []
    monkeypatch.undo()
    assert len(_record_warnings(lambda: fresh(x))) == 1  # not consumed while compiling


@pytest.mark.parametrize("when", ["compress", "recompress_in_forward"])
@pytest.mark.parametrize("threshold", [1.0, 0.0], ids=["sparse", "dense_fallback"])
@pytest.mark.parametrize("kind", ["pw", "dw"])
def test_compressed_buffers_built_under_inference_mode_allow_input_grads(kind, threshold, when, gen):
    """Compressed buffers built under torch.inference_mode() (by compress() or by the first
    forward's recompress) are normal tensors: a later forward that needs input gradients
    runs, and its input gradient equals nn.Conv2d's (to_dense())."""
    layer = make_pointwise(8, 6, 0.7, gen) if kind == "pw" else make_depthwise(8, 3, 1, 1, 0.7, gen)
    layer.eval()
    x0 = randn(1, 8, 5, 5, gen=gen)
    if when == "recompress_in_forward":
        layer.compress(dense_threshold=threshold)
        with torch.no_grad():
            layer.weight.mul_(2)  # stale: the next forward rebuilds
    with torch.inference_mode():
        if when == "compress":
            layer.compress(dense_threshold=threshold)
        layer(x0)
    assert layer.kernel == ("sparse" if threshold == 1.0 else "dense")
    for name in ("_ptr", "_idx", "_values", "_dense"):
        buf = getattr(layer, name)
        assert buf is None or not buf.is_inference(), name
    x = randn(2, 8, 5, 5, gen=gen).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    out = layer(x)
    expected = layer.to_dense()(x_ref)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    g = randn(*out.shape, gen=gen)
    out.backward(g)
    expected.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
