"""Fused sparse inference: the *_fused ops against their pure-PyTorch reference (clamp epilogue,
NCHW / channel-major layouts, any input whose planes are contiguous), and the model that
``sparseopt.nn.compress`` returns (BatchNorm folded, ReLU fused) against the eval model."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseopt
from sparseopt.models import mobilenet_v1
from sparseopt.nn.inference import ChunkedSequential, FusedDenseConv2d, FusedDepthwiseConv2d, FusedPointwiseConv2d
from sparseopt.nn import formats
from sparseopt.reference import sparse_conv as ref

from test_sparse_conv import prune_, randn

INF = math.inf
FLOATS = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}
ACTS = {"none": (-INF, INF), "relu": (0.0, INF), "relu6": (0.0, 6.0), "band": (-0.5, 0.25)}


def channel_major(x: torch.Tensor) -> torch.Tensor:
    """x's values in memory [C, N, H, W], seen as [N, C, H, W]."""
    return x.permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)


def is_channel_major(t: torch.Tensor) -> bool:
    return t.permute(1, 0, 2, 3).is_contiguous()


LAYOUTS = {"nchw": lambda x: x.contiguous(), "channel_major": channel_major,
           "channels_last": lambda x: x.contiguous(memory_format=torch.channels_last),
           "strided": lambda x: torch.cat([x, x], 3)[..., ::2]}


PW_SHAPES = [  # (N, C, O, H, W): odd sizes, one pixel, tiles with tails, a batch merged
    (1, 5, 3, 1, 1),
    (7, 16, 12, 5, 7),
    (1, 33, 17, 13, 11),
    (3, 8, 9, 9, 70),
    (4, 64, 130, 7, 7),
    (0, 4, 6, 3, 3),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("sparsity", [0.0, 0.9, 1.0])
@pytest.mark.parametrize("shape", PW_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout, out_cm, act", [
    ("nchw", True, "relu"), ("nchw", False, "none"), ("channel_major", True, "relu6"),
    ("channel_major", False, "band"), ("channels_last", True, "none"), ("strided", True, "relu"),
])
def test_pointwise_fused_matches_reference(dtype, sparsity, shape, layout, out_cm, act, isa, gen):
    n, c, o, h, w = shape
    x = LAYOUTS[layout](randn(n, c, h, w, gen=gen, dtype=dtype))
    weight = prune_(randn(o, c, 1, 1, gen=gen, dtype=dtype), sparsity, gen)
    weight[o // 2] = 0  # an all-zero row
    b = randn(o, gen=gen, dtype=dtype) if act != "band" else None
    csr = formats.dense_to_csr(weight)
    lo, hi = ACTS[act]
    out = torch.ops.sparseopt.csr_pointwise_conv2d_fused(x, *csr, b, lo, hi, out_cm)
    expected = ref.csr_pointwise_conv2d_fused(x, *csr, b, lo, hi, out_cm)
    assert out.shape == expected.shape == (n, o, h, w) and out.dtype == dtype
    assert is_channel_major(out) if out_cm else out.is_contiguous()
    torch.testing.assert_close(out, expected, **TOL[dtype])
    torch.testing.assert_close(out, F.conv2d(x, weight, b).clamp(lo, hi), **TOL[dtype])


DW_CASES = [  # (N, C, H, W, kernel, stride, padding)
    (1, 3, 7, 9, (3, 3), (1, 1), (1, 1)),
    (7, 5, 11, 13, (3, 3), (2, 2), (1, 1)),
    (2, 4, 9, 8, (5, 5), (1, 1), (2, 2)),
    (1, 6, 10, 11, (3, 3), (2, 2), (0, 0)),
    (3, 2, 6, 17, (1, 3), (2, 1), (1, 0)),
    (2, 3, 9, 9, (3, 3), (3, 3), (1, 1)),  # stride 3: the row loop
    (2, 4, 1, 1, (3, 3), (1, 1), (1, 1)),
    (2, 3, 6, 60, (3, 3), (1, 1), (1, 1)),
    (1, 3, 5, 70, (5, 5), (1, 1), (2, 2)),   # two 64-column segments
    (2, 3, 9, 150, (3, 3), (2, 2), (1, 1)),  # stride 2 over two segments
    (0, 3, 5, 5, (3, 3), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("sparsity", [0.0, 0.7, 1.0])
@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: "-".join(map(str, c)).replace(" ", ""))
@pytest.mark.parametrize("layout, out_cm, act", [
    ("nchw", True, "relu6"), ("channel_major", True, "relu"), ("channel_major", False, "none"),
    ("strided", False, "band"),
])
def test_depthwise_fused_matches_reference(dtype, sparsity, case, layout, out_cm, act, isa, gen):
    n, c, h, w, k, s, p = case
    x = LAYOUTS[layout](randn(n, c, h, w, gen=gen, dtype=dtype))
    weight = prune_(randn(c, 1, *k, gen=gen, dtype=dtype), sparsity, gen)
    weight[0] = 0  # a channel with no tap: its output is the clamped bias
    b = randn(c, gen=gen, dtype=dtype)
    taps = formats.dense_to_taps(weight)
    lo, hi = ACTS[act]
    args = (list(k), list(s), list(p), lo, hi, out_cm)
    out = torch.ops.sparseopt.sparse_depthwise_conv2d_fused(x, *taps, b, *args)
    expected = ref.sparse_depthwise_conv2d_fused(x, *taps, b, *args)
    assert out.shape == expected.shape
    assert is_channel_major(out) if out_cm else out.is_contiguous()
    torch.testing.assert_close(out, expected, **TOL[dtype])
    torch.testing.assert_close(out, F.conv2d(x, weight, b, stride=s, padding=p, groups=c).clamp(lo, hi),
                               **TOL[dtype])


def test_fused_clamp_keeps_nan(gen):
    x = randn(1, 4, 3, 3, gen=gen)
    x[0, 1, 1, 1] = math.nan
    w = torch.ones(2, 4, 1, 1)
    out = torch.ops.sparseopt.csr_pointwise_conv2d_fused(x, *formats.dense_to_csr(w), None, 0.0, 6.0, True)
    assert out[0, :, 1, 1].isnan().all() and not out.isnan().sum() > 2
    wd = torch.ones(4, 1, 3, 3)
    outd = torch.ops.sparseopt.sparse_depthwise_conv2d_fused(x, *formats.dense_to_taps(wd), None, [3, 3], [1, 1],
                                                             [1, 1], 0.0, INF, False)
    assert outd[0, 1].isnan().all() and not outd[0, 0].isnan().any()


@pytest.mark.parametrize("op", ["pointwise", "depthwise"])
def test_fused_ops_reject_bad_clamp_before_running(op, gen):
    x = randn(1, 4, 3, 3, gen=gen)
    for lo, hi, error in [(1.0, 0.0, "need act_min <= act_max"),
                          (math.nan, 1.0, "act_min = nan is invalid"),
                          (0.0, math.nan, "act_max = nan is invalid")]:
        with pytest.raises(RuntimeError, match=error):
            if op == "pointwise":
                torch.ops.sparseopt.csr_pointwise_conv2d_fused(x, *formats.dense_to_csr(torch.ones(2, 4, 1, 1)),
                                                               None, lo, hi, True)
            else:
                torch.ops.sparseopt.sparse_depthwise_conv2d_fused(
                    x, *formats.dense_to_taps(torch.ones(4, 1, 3, 3)), None, [3, 3], [1, 1], [1, 1], lo, hi, True)


def test_fused_ops_opcheck(gen):
    x = channel_major(randn(2, 6, 5, 5, gen=gen))
    csr = formats.dense_to_csr(prune_(randn(4, 6, 1, 1, gen=gen), 0.5, gen))
    torch.library.opcheck(torch.ops.sparseopt.csr_pointwise_conv2d_fused,
                          (x, *csr, randn(4, gen=gen), 0.0, 6.0, True),
                          test_utils=("test_schema", "test_faketensor"))
    taps = formats.dense_to_taps(prune_(randn(6, 1, 3, 3, gen=gen), 0.5, gen))
    torch.library.opcheck(torch.ops.sparseopt.sparse_depthwise_conv2d_fused,
                          (x, *taps, None, [3, 3], [2, 2], [1, 1], 0.0, INF, True),
                          test_utils=("test_schema", "test_faketensor"))


# ---- the model compress() returns ------------------------------------------------------------
def sparse_eval_model(gen: torch.Generator, width: float = 0.25, act: type = nn.ReLU) -> nn.Module:
    """A small MobileNetV1 (32x32), 90% zeros, non-trivial BatchNorm statistics, eval mode."""
    model = mobilenet_v1(num_classes=10, width_mult=width, input_size=32)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and (m.kernel_size == (1, 1) or m.groups > 1):
                prune_(m.weight, 0.9, gen)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.1, generator=gen)
    if act is not nn.ReLU:
        for seq in model.modules():
            if isinstance(seq, nn.Sequential):
                for name, m in seq.named_children():
                    if isinstance(m, nn.ReLU):
                        setattr(seq, name, act())
    return sparseopt.nn.sparsify(model).eval()


@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6])
@pytest.mark.parametrize("batch", [1, 5])  # 5: chunks of 2, 2 and 1 images
def test_compress_returns_a_fused_model_equal_to_the_eval_model(act, batch, isa, gen):
    model = sparse_eval_model(gen, act=act)
    x = randn(batch, 3, 32, 32, gen=gen)
    with torch.no_grad():
        expected = model(x)
        fast = sparseopt.nn.compress(model)
        got = fast(x)
    assert fast is not model
    assert isinstance(fast.features, ChunkedSequential) and fast.features.batch_chunk == 2
    kinds = [type(m) for m in fast.modules()]
    assert kinds.count(FusedPointwiseConv2d) == 13 and kinds.count(FusedDepthwiseConv2d) == 13
    assert kinds.count(FusedDenseConv2d) == 1  # the stem
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU, nn.ReLU6)) for m in fast.modules())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    with torch.no_grad():  # the model compress() was given still runs (compressed in place)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_fused_model_keeps_one_layout_between_the_sparse_layers(gen):
    model = sparse_eval_model(gen)
    fast = sparseopt.nn.compress(model)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((type(m), i[0], o)))
             for m in fast.modules() if isinstance(m, (FusedPointwiseConv2d, FusedDepthwiseConv2d))]
    with torch.no_grad():
        fast(randn(2, 3, 32, 32, gen=gen))  # one chunk of ChunkedSequential.batch_chunk = 2
    for h in hooks:
        h.remove()
    assert len(seen) == 26
    assert all(is_channel_major(o) for _, _, o in seen)
    # The first depthwise layer reads the dense stem's NCHW output; every later one reads
    # channel-major: no layout copy anywhere.
    assert seen[0][1].is_contiguous() and all(is_channel_major(i) for _, i, _ in seen[1:])


def test_compress_fuse_false_and_training_mode_return_the_model(gen):
    model = sparse_eval_model(gen)
    assert sparseopt.nn.compress(model, fuse=False) is model
    model.train()
    assert sparseopt.nn.compress(model) is model
    with pytest.raises(RuntimeError, match="training mode"):
        sparseopt.nn.compress(model, fuse=True)


def test_fused_model_compiles_and_exports(gen):
    model = sparse_eval_model(gen)
    x = randn(3, 3, 32, 32, gen=gen)  # more than one chunk
    fast = sparseopt.nn.compress(model)
    with torch.no_grad():
        expected = fast(x)
        compiled = torch.compile(fast, fullgraph=True)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-5)
    exported = torch.export.export(fast, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), expected, rtol=1e-5, atol=1e-5)


def test_fused_model_state_dict_round_trip(gen):
    model = sparse_eval_model(gen)
    fast = sparseopt.nn.compress(copy.deepcopy(model))
    # Other values on the same zeros (the fused buffers' shapes follow the zeros: nnz, and the
    # channels the dead-channel pass drops).
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    other = sparseopt.nn.compress(model)
    x0 = randn(1, 3, 32, 32, gen=gen)
    with torch.no_grad():
        assert not torch.equal(other(x0), fast(x0))
    other.load_state_dict(fast.state_dict())
    x = randn(1, 3, 32, 32, gen=gen)
    with torch.no_grad():
        torch.testing.assert_close(other(x), fast(x), rtol=0, atol=0)


def test_dense_fallback_layer_becomes_a_dense_stage(gen):
    conv = nn.Conv2d(8, 6, 1)
    seq = nn.Sequential(sparseopt.nn.SparsePointwiseConv2d.from_dense(conv), nn.BatchNorm2d(6), nn.ReLU()).eval()
    x = randn(2, 8, 5, 5, gen=gen)
    with torch.no_grad():
        expected = seq(x)
        fast = sparseopt.nn.compress(copy.deepcopy(seq))  # a dense weight: above the threshold
    assert isinstance(fast[0], FusedDenseConv2d) and len(fast) == 1
    with torch.no_grad():
        torch.testing.assert_close(fast(x), expected, **TOL[torch.float32])
