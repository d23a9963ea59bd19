"""Architecture names and sizes, torch-free, so that config validation and `--help` never import torch."""

from __future__ import annotations

# (channels per stage, blocks per stage); tiny..large follow torchvision, atto..nano follow the ConvNeXt-V2 sizes.
CONVNEXT_SIZES: dict[str, tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] = {
    "convnext_atto": ((40, 80, 160, 320), (2, 2, 6, 2)),
    "convnext_femto": ((48, 96, 192, 384), (2, 2, 6, 2)),
    "convnext_pico": ((64, 128, 256, 512), (2, 2, 6, 2)),
    "convnext_nano": ((80, 160, 320, 640), (2, 2, 8, 2)),
    "convnext_tiny": ((96, 192, 384, 768), (3, 3, 9, 3)),
    "convnext_small": ((96, 192, 384, 768), (3, 3, 27, 3)),
    "convnext_base": ((128, 256, 512, 1024), (3, 3, 27, 3)),
    "convnext_large": ((192, 384, 768, 1536), (3, 3, 27, 3)),
}
ARCHITECTURES = (*CONVNEXT_SIZES, "resnet50")
