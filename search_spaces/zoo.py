"""Models by name. (Helper A: implement the builders and ``build_model``.)"""

from __future__ import annotations

from search_spaces.registry import Registry

ZOO = Registry(
    "zoo model",
    {
        "resnet20": "search_spaces.models.resnet_cifar:resnet20",
        "resnet56": "search_spaces.models.resnet_cifar:resnet56",
        "mobilenetv2": "search_spaces.models.mobilenetv2_cifar:mobilenetv2",
        "vgg16_bn": "search_spaces.models.vgg_cifar:vgg16_bn",
        "resnet1d20": "search_spaces.models.resnet1d:resnet1d20",
    },
)
