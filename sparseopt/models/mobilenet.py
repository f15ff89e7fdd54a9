"""MobileNetV1 (Howard et al. 2017), Table 1 body, with the width multiplier alpha.

Body: a full 3x3 convolution (32 channels, stride 2), then 13 depthwise separable blocks
(3x3 depthwise + BN + ReLU, 1x1 pointwise + BN + ReLU), global average pooling and a fully
connected classifier. ``input_size=224`` is the ImageNet network (7x7 final map);
``input_size=32`` is the usual CIFAR adaptation: the first convolution has stride 1, so the
final map is 2x2. The last depthwise block has stride 1: Table 1 prints "Conv dw / s2" there,
a known typo (its input and output are both 7x7 in the same table).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MobileNetV1", "mobilenet_v1", "MOBILENET_V1_BODY"]

# (output channels of the pointwise conv, stride of the depthwise conv), Table 1, alpha = 1.
MOBILENET_V1_BODY: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def _scaled(channels: int, width_mult: float) -> int:
    return max(1, int(round(channels * width_mult)))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1: ``features`` (conv + 13 depthwise separable blocks), pooling, ``classifier``."""

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0, input_size: int = 32) -> None:
        super().__init__()
        if input_size not in (32, 224):
            raise ValueError(f"mobilenet_v1: input_size must be 32 (CIFAR) or 224 (ImageNet), got {input_size}")
        if not width_mult > 0:
            raise ValueError(f"mobilenet_v1: width_mult must be > 0, got {width_mult}")
        if num_classes < 1:
            raise ValueError(f"mobilenet_v1: num_classes must be >= 1, got {num_classes}")
        self.input_size = input_size
        cin = _scaled(32, width_mult)
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, 2 if input_size == 224 else 1)]
        for cout, stride in MOBILENET_V1_BODY:
            cout = _scaled(cout, width_mult)
            layers.append(nn.Sequential(
                _conv_bn(cin, cin, 3, stride, groups=cin),  # depthwise
                _conv_bn(cin, cout, 1, 1),                  # pointwise
            ))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def mobilenet_v1(num_classes: int = 10, width_mult: float = 1.0, input_size: int = 32) -> MobileNetV1:
    """MobileNetV1 with width multiplier ``width_mult`` for ``input_size`` 32 (CIFAR) or 224."""
    return MobileNetV1(num_classes=num_classes, width_mult=width_mult, input_size=input_size)
