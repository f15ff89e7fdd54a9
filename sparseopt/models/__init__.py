"""The seed models: MobileNetV1 (width multiplier, CIFAR or ImageNet input) and ResNet18 (CIFAR
variant, projection shortcuts). Make them sparse with :func:`sparseopt.nn.sparsify`."""

from .mobilenet import MOBILENET_V1_BODY, MobileNetV1, mobilenet_v1
from .resnet import BasicBlock, ResNetCifar, resnet18_cifar

__all__ = ["MobileNetV1", "mobilenet_v1", "MOBILENET_V1_BODY", "ResNetCifar", "BasicBlock", "resnet18_cifar"]
