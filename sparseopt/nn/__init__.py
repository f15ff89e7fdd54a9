"""Sparse layers: masked training, compressed inference (:mod:`sparseopt.nn.sparse_conv`).

Typical use::

    model = sparseopt.models.mobilenet_v1()
    sparseopt.nn.sparsify(model)          # 1x1 and depthwise nn.Conv2d -> sparse layers
    ... train with a sparsity optimizer, calling sparseopt.nn.update_masks(model) ...
    model.eval()
    fast = sparseopt.nn.compress(model)   # CSR / tap lists, BN folded, ReLU fused (CPU)
"""

from . import dead_channels, inference

from .sparse_conv import (
    DENSE_FALLBACK_DENSITY,
    SparseDepthwiseConv2d,
    SparsePointwiseConv2d,
    compress,
    decompress,
    fold_batchnorm,
    is_depthwise_eligible,
    is_pointwise_eligible,
    sparsify,
    update_masks,
)

__all__ = [
    "inference",
    "dead_channels",
    "SparsePointwiseConv2d",
    "SparseDepthwiseConv2d",
    "DENSE_FALLBACK_DENSITY",
    "sparsify",
    "compress",
    "decompress",
    "update_masks",
    "fold_batchnorm",
    "is_pointwise_eligible",
    "is_depthwise_eligible",
]
