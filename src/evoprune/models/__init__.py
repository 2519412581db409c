"""Model zoo: architectures registered by name and built for a dataset's input shape.

>>> model = build_model("vgg", in_channels=3, num_classes=10, image_size=(32, 32), depth=16)

Importing this package registers every model module below.
"""

from evoprune.models import lenet5, lenet5_d2l, mlp, mobilenetv2, resnet_cifar, vgg  # noqa: F401  (registration)
from evoprune.models.lenet5 import LeNet5
from evoprune.models.lenet5_d2l import LeNet5D2L
from evoprune.models.mlp import MLP
from evoprune.models.mobilenetv2 import InvertedResidual, MobileNetV2
from evoprune.models.registry import available_models, build_model, get_builder, register_model
from evoprune.models.resnet_cifar import BasicBlock, ResNetCifar
from evoprune.models.utils import prunable_weights
from evoprune.models.vgg import VGG

__all__ = [
    "MLP",
    "VGG",
    "BasicBlock",
    "InvertedResidual",
    "LeNet5",
    "LeNet5D2L",
    "MobileNetV2",
    "ResNetCifar",
    "available_models",
    "build_model",
    "get_builder",
    "prunable_weights",
    "register_model",
]
