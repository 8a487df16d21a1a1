"""A torchvision ResNet-50 as a stage-1 backbone (the encoder SAM-IQA's Table 3 compares).

The network is torchvision's own ``ResNet(Bottleneck, [3, 4, 6, 3])`` (what
``torchvision.models.resnet50`` builds), filled from a local torchvision checkpoint such as
``resnet50-0676ba61.pth`` (IMAGENET1K_V1) or ``resnet50-11ad3fa6.pth`` (IMAGENET1K_V2),
strictly and with ``weights_only``; nothing is downloaded.

Output: ``layer3`` by default, (1024, 64, 64) at 1024 px. Layer 3 has stride 16, SAM's
patch size, so with SAM's preprocessing (longest side to 1024 px with PIL bilinear, zero
padding bottom-right after normalisation) an image gives the same 64x64 grid and the same
valid cells as with ``sam_vit_h``: SFEM runs with the same scales, pool size and masks,
and a comparison of the two stores isolates the encoder, which is what Table 3 measures.
Layer 4 (2048 channels, stride 32) would halve the grid; it can be added with
``layers=["layer3", "layer4"]`` (``valid_hw`` is then in cells of the largest map, the
contract's rule, so a head reading ``layer4`` sees a mask that is too generous).

Deviations from torchvision's ImageNet recipe (resize 256 / 232, centre crop 224): the
whole image is encoded at 1024 px on its longest side, as for SAM, because cropping or
shrinking an IQA image removes the distortions being scored. The paper does not say which
layer or input size its ResNet50 baseline used. The classifier (``fc``) and every layer
after the deepest requested one are removed; their checkpoint keys are dropped on load,
and loading is strict on the rest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision.models.resnet import Bottleneck, ResNet

from extract.base import (
    RANDOM_INIT,
    Backbone,
    BackboneError,
    check_rgb,
    longest_side_preprocessing,
    longest_side_shape,
    normalize,
    pad_bottom_right,
    pil_resize,
    require_checkpoint,
    split_overrides,
    to_chw_float,
    valid_cells,
)
from extract.weights import KeyMap, load_weights, weights_sha256

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
LAYERS = {"layer1": (256, 4), "layer2": (512, 8), "layer3": (1024, 16), "layer4": (2048, 32)}
_DEFAULTS: dict[str, Any] = {
    "img_size": 1024,
    "layers": ("layer3",),
    "blocks": (3, 4, 6, 3),
    "width_per_group": 64,
}


class ResNetBackbone(Backbone):
    """torchvision's ResNet-50 trunk, giving the feature maps of the requested layers.

    Args:
        arch: ``img_size`` (a multiple of 32), ``layers`` (names from ``LAYERS``),
            ``blocks`` (per layer; ResNet-50's by default), ``width_per_group``.
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        layers = tuple(arch["layers"])
        if not layers or any(name not in LAYERS for name in layers):
            raise BackboneError(
                f"resnet50: layers must be a subset of {list(LAYERS)}, got {layers}"
            )
        if arch["img_size"] % 32:
            raise BackboneError(
                f"resnet50: img_size must be a multiple of 32, got {arch['img_size']}"
            )
        self.name = "resnet50"
        self.arch = {**arch, "layers": sorted(layers), "blocks": list(arch["blocks"])}
        self.depth = max(int(name[-1]) for name in layers)
        net = ResNet(Bottleneck, self.arch["blocks"], width_per_group=arch["width_per_group"])
        del net.fc, net.avgpool
        for k in range(self.depth + 1, 5):
            delattr(net, f"layer{k}")
        self.resnet = net
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(3, 1, 1), False)
        size = arch["img_size"]
        self.outputs = {
            n: (LAYERS[n][0], size // LAYERS[n][1], size // LAYERS[n][1]) for n in layers
        }
        self.cell = min(LAYERS[n][1] for n in layers)

    def arch_config(self) -> dict[str, Any]:
        return {"family": "torchvision.models.resnet.ResNet", "block": "Bottleneck", **self.arch}

    def preprocessing(self) -> dict[str, Any]:
        return longest_side_preprocessing(self.arch["img_size"], IMAGENET_MEAN, IMAGENET_STD)

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Resize (longest side), normalise, pad: returns ``(3, S, S)`` and valid cells."""
        image = check_rgb(image)
        size = self.arch["img_size"]
        resized = pil_resize(
            image, longest_side_shape(image.shape[0], image.shape[1], size), "bilinear"
        )
        x = normalize(to_chw_float(resized), self.pixel_mean.cpu(), self.pixel_std.cpu())
        return pad_bottom_right(x, size), valid_cells(resized.shape[:2], self.cell)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        net = self.resnet
        y = net.maxpool(net.relu(net.bn1(net.conv1(x))))  # (B, 64, S/4, S/4)
        out = {}
        for k in range(1, self.depth + 1):
            y = getattr(net, f"layer{k}")(y)  # (B, C_k, S/2^(k+1), S/2^(k+1))
            if f"layer{k}" in self.outputs:
                out[f"layer{k}"] = y
        return out


def _kept_keys(depth: int) -> KeyMap:
    """Key map for a torchvision state dict: drop ``fc.*`` and layers deeper than ``depth``."""
    dropped = ("fc.", *(f"layer{k}." for k in range(depth + 1, 5)))

    def key_map(key: str) -> str | None:
        return None if key.startswith(dropped) else key

    return key_map


def build_resnet50(
    checkpoint: str | None = None, *, random_init: bool = False, **arch_overrides: Any
) -> ResNetBackbone:
    """ResNet-50 from a local torchvision checkpoint (``resnet50-0676ba61.pth`` etc.)."""
    require_checkpoint(checkpoint, random_init, "resnet50")
    model = ResNetBackbone(split_overrides(arch_overrides, _DEFAULTS, "resnet50"))
    if checkpoint is not None:
        load_weights(model.resnet, checkpoint, strict=True, key_map=_kept_keys(model.depth))
        model.weights_sha256 = weights_sha256(checkpoint)
    else:
        model.weights_sha256 = RANDOM_INIT
    return model.freeze()
