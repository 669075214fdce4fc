"""HSNet's architecture as printed in supplementary Tables S5-S7, for side-by-side checks.

Shapes are (channels, spatial...) without the batch dim, for a 400x400 input. Parameter
counts are the tables' rounded ones (``"168K"``) and the exact ones of the authors'
implementation (FACTS.md); the notebooks compare both with what the package builds.
"""
from __future__ import annotations

PAPER_BACKBONES = ("vgg16", "resnet50", "resnet101")
TABLE_OF = {"vgg16": "Table S5", "resnet50": "Table S6", "resnet101": "Table S7"}
IMG_SIZE = 400

# Backbone features per pyramid level p: (shape of one feature, number of features |L_p|).
FEATURES = {
    "vgg16": {3: ((512, 12, 12), 1), 2: ((512, 25, 25), 3), 1: ((512, 50, 50), 3)},
    "resnet50": {3: ((2048, 13, 13), 3), 2: ((1024, 25, 25), 6), 1: ((512, 50, 50), 4)},
    "resnet101": {3: ((2048, 13, 13), 3), 2: ((1024, 25, 25), 23), 1: ((512, 50, 50), 4)},
}

# Frozen backbone size as the tables print it (fully connected layers excluded).
BACKBONE_PARAMS = {"vgg16": "14.7M", "resnet50": "23.6M", "resnet101": "42.6M"}


def correlation_shapes(backbone: str) -> dict[int, tuple[int, ...]]:
    """C_p of the "Correlation Layer" row: (|L_p|, H_p, W_p, H_p, W_p) per level p."""
    return {p: (n, s[1], s[2], s[1], s[2]) for p, (s, n) in FEATURES[backbone].items()}


def squeeze_shapes(backbone: str) -> dict[int, tuple[int, ...]]:
    """C_p^sqz: 128 channels, query dims kept, support dims squeezed to 2x2."""
    return {p: (128, s[1], s[2], 2, 2) for p, (s, _) in FEATURES[backbone].items()}


# Mixing blocks, pooling and decoder outputs are the same for the three backbones.
MIX_SHAPES = {"mix 3->2": (128, 25, 25, 2, 2), "mix 2->1": (128, 50, 50, 2, 2)}
POOL_SHAPE = (128, 50, 50)
DECODER_SHAPE = (2, 400, 400)

# Learnable parameters: the tables' rounded numbers and the authors' exact counts (FACTS.md).
ROUNDED_PARAMS = {
    "vgg16": {"f3": "167K", "f2": "169K", "f1": "202K", "mix": "886K", "decoder": "259K", "all": "2.6M"},
    "resnet50": {"f3": "168K", "f2": "172K", "f1": "203K", "mix": "886K", "decoder": "259K", "all": "2.6M"},
    "resnet101": {"f3": "168K", "f2": "185K", "f1": "203K", "mix": "886K", "decoder": "259K", "all": "2.6M"},
}
EXACT_PARAMS = {
    "vgg16": {"f3": 167_008, "f2": 169_120, "f1": 201_888, "mix": 886_272, "decoder": 259_458, "all": 2_570_018},
    "resnet50": {"f3": 167_584, "f2": 171_520, "f1": 202_688, "mix": 886_272, "decoder": 259_458, "all": 2_573_794},
    "resnet101": {"f3": 167_584, "f2": 185_120, "f1": 202_688, "mix": 886_272, "decoder": 259_458, "all": 2_587_394},
}


def round_count(n: int) -> str:
    """Round a parameter count the way Tables S5-S7 print it: 171,520 -> '172K', 2,573,794 -> '2.6M'."""
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{round(n / 1e3)}K"
    return str(n)
