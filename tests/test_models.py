"""The seed models (MobileNetV1, ResNet18-CIFAR): architecture, sparsify, compressed inference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparseopt
from sparseopt.models import MOBILENET_V1_BODY, mobilenet_v1, resnet18_cifar
from sparseopt.nn import SparseDepthwiseConv2d, SparsePointwiseConv2d, compress, sparsify, update_masks


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_mobilenet_v1_table1_architecture():
    model = mobilenet_v1(num_classes=1000, width_mult=1.0, input_size=224)
    # Howard et al., Table 1/Table 4: 4.2 million parameters at width 1.0, 1000 classes.
    assert 4.2e6 <= n_params(model) < 4.25e6
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 * len(MOBILENET_V1_BODY) == 27
    dw = [m for m in convs if m.groups > 1]
    pw = [m for m in convs if m.kernel_size == (1, 1)]
    assert len(dw) == len(pw) == 13
    assert [m.out_channels for m in pw] == [c for c, _ in MOBILENET_V1_BODY]
    assert [m.stride[0] for m in dw] == [s for _, s in MOBILENET_V1_BODY]
    assert convs[0].stride == (2, 2) and convs[0].out_channels == 32
    # feature map sizes: 224 -> 7
    with torch.no_grad():
        feats = model.eval().features(torch.zeros(1, 3, 224, 224))
    assert feats.shape == (1, 1024, 7, 7)


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_mobilenet_v1_width_multiplier_cifar(width):
    model = mobilenet_v1(num_classes=10, width_mult=width, input_size=32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].stride == (1, 1) and convs[0].out_channels == round(32 * width)
    assert model.classifier.in_features == round(1024 * width)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_mobilenet_v1_bad_arguments():
    with pytest.raises(ValueError, match="input_size must be 32 .* or 224 .*, got 64"):
        mobilenet_v1(input_size=64)
    with pytest.raises(ValueError, match="width_mult must be > 0"):
        mobilenet_v1(width_mult=0)


def test_resnet18_cifar_architecture():
    model = resnet18_cifar(num_classes=10)
    assert n_params(model) == 11_173_962  # the standard CIFAR ResNet18 count
    projections = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(projections) == 3 and all(m.stride == (2, 2) for m in projections)
    assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def _random_prune_(model: nn.Module, sparsity: float, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (SparsePointwiseConv2d, SparseDepthwiseConv2d)):
                keep = torch.rand(m.weight.shape, generator=gen) >= sparsity
                m.weight.mul_(keep)
    update_masks(model)


def _randomize_bn_(model: nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


@pytest.mark.parametrize("factory,counts", [
    (lambda: mobilenet_v1(width_mult=0.5, input_size=32), (13, 13)),
    (lambda: resnet18_cifar(), (3, 0)),
], ids=["mobilenet_v1", "resnet18_cifar"])
@pytest.mark.parametrize("sparsity", [0.0, 0.9])
def test_sparsify_compress_matches_dense_model(factory, counts, sparsity):
    torch.manual_seed(0)
    model = factory()
    _randomize_bn_(model)
    sparsify(model)
    assert sum(isinstance(m, SparsePointwiseConv2d) for m in model.modules()) == counts[0]
    assert sum(isinstance(m, SparseDepthwiseConv2d) for m in model.modules()) == counts[1]
    _random_prune_(model, sparsity)
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        compress(model)
        out = model(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_sparse_mobilenet_trains_and_keeps_its_zeros():
    torch.manual_seed(0)
    model = sparsify(mobilenet_v1(num_classes=4, width_mult=0.25, input_size=32))
    _random_prune_(model, 0.8)
    layers = [m for m in model.modules() if isinstance(m, (SparsePointwiseConv2d, SparseDepthwiseConv2d))]
    zeros = [(m.weight == 0).clone() for m in layers]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 4, (16,))
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for m, z in zip(layers, zeros):
        assert torch.all(m.weight[z] == 0)
    model.eval()
    with torch.no_grad():
        dense_out = model(x)
        sparseopt.nn.compress(model)
        torch.testing.assert_close(model(x), dense_out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sparse", [False, True])
def test_fold_batchnorm_preserves_output_and_zeros(sparse):
    torch.manual_seed(0)
    model = mobilenet_v1(width_mult=0.25, input_size=32)
    _randomize_bn_(model)
    if sparse:
        sparsify(model)
        _random_prune_(model, 0.7)
    model.eval()
    zeros = {n: (p == 0).clone() for n, p in model.named_parameters() if p.dim() == 4}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        sparseopt.nn.fold_batchnorm(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
        for n, p in model.named_parameters():
            if n in zeros:
                assert torch.all(p[zeros[n]] == 0)
        if sparse:
            compress(model)
            torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="call model.eval"):
        sparseopt.nn.fold_batchnorm(mobilenet_v1(width_mult=0.25).train())


def test_fold_batchnorm_leaves_what_it_cannot_fold():
    """A BatchNorm without running statistics normalises with the batch statistics even in eval
    mode: not folded. Nor is one whose channel count differs from the convolution's (sparse or
    dense): skipped, not a size error."""
    torch.manual_seed(0)
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    for conv in (SparsePointwiseConv2d(4, 6), nn.Conv2d(4, 6, 1)):
        model = nn.Sequential(conv, nn.BatchNorm2d(6, track_running_stats=False)).eval()
        with torch.no_grad():
            expected = model(x)
            sparseopt.nn.fold_batchnorm(model)
            assert isinstance(model[1], nn.BatchNorm2d)
            torch.testing.assert_close(model(x), expected)
        model = nn.Sequential(type(conv)(4, 6) if isinstance(conv, SparsePointwiseConv2d)
                              else nn.Conv2d(4, 6, 1), nn.BatchNorm2d(5)).eval()
        weight = model[0].weight.detach().clone()
        sparseopt.nn.fold_batchnorm(model)
        assert isinstance(model[1], nn.BatchNorm2d) and torch.equal(model[0].weight, weight)
    # the foldable neighbour is still folded
    model = nn.Sequential(SparsePointwiseConv2d(4, 6), nn.BatchNorm2d(6, track_running_stats=False),
                          SparsePointwiseConv2d(6, 6), nn.BatchNorm2d(6)).eval()
    _randomize_bn_(model[3])
    with torch.no_grad():
        expected = model(x)
        sparseopt.nn.fold_batchnorm(model)
        assert [type(m).__name__ for m in model][1:] == ["BatchNorm2d", "SparsePointwiseConv2d", "Identity"]
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("compressed", [False, True])
def test_sparsified_model_under_autocast_matches_dense(compressed):
    """A sparsified MobileNet under torch.autocast("cpu", bfloat16) runs (bf16 activations, as
    nn.Conv2d gives) and is close to the dense model under the same autocast."""
    torch.manual_seed(0)
    dense = mobilenet_v1(width_mult=0.25, input_size=32)
    _randomize_bn_(dense)
    dense.eval()
    model = sparsify(mobilenet_v1(width_mult=0.25, input_size=32))
    model.load_state_dict(dense.state_dict(), strict=False)  # same weights; masks all True
    model.eval()
    if compressed:
        compress(model, dense_threshold=1.0)  # the sparse kernels outside autocast
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = dense(x)
        out = model(x)
        feats = model.features(x)
    assert out.dtype == expected.dtype and feats.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected.float(), rtol=2e-2, atol=2e-2)
    with torch.no_grad():  # and without autocast, fp32 as before
        torch.testing.assert_close(model(x), dense(x), rtol=1e-4, atol=1e-5)


def test_compressed_mobilenet_compiles_fullgraph():
    """torch.compile(fullgraph=True) of a compressed MobileNet: no graph break (the staleness
    check is skipped while compiling) and the eager outputs; after a weight change, compress()
    again brings the compiled model up to date."""
    torch.manual_seed(0)
    model = sparsify(mobilenet_v1(width_mult=0.25, input_size=32))
    _randomize_bn_(model)
    _random_prune_(model, 0.8)
    model.eval()
    compress(model, dense_threshold=1.0)
    x = torch.randn(2, 3, 32, 32)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)
        layer = model.features[1][1][0]
        layer.weight.mul_(2.0)
        compress(model, dense_threshold=1.0)
        expected = model(x)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()
