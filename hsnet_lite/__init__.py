"""hsnet-lite: a small, fast, faithful HSNet (Min, Kang, Cho, ICCV 2021) for learning and research."""
from .backbones import BACKBONES, BackboneWeightsUnavailable, build_backbone
from .blocks import Decoder, HSNetLearner, mix_block, squeeze_block
from .conv4d import CenterPivotConv4d, Conv4d, center_pivot_mask
from .correlation import hypercorrelation, mask_features
from .model import HSNet, kshot_vote, select_layers

__version__ = "0.1.0"
__all__ = [
    "BACKBONES", "BackboneWeightsUnavailable", "build_backbone", "Decoder", "HSNetLearner",
    "mix_block", "squeeze_block", "CenterPivotConv4d", "Conv4d", "center_pivot_mask",
    "hypercorrelation", "mask_features", "HSNet", "kshot_vote", "select_layers",
]
from .checkpoints import load_official_checkpoint, save_atomic, to_official_state_dict  # noqa: E402
from .metrics import FewShotMeter, area_stats  # noqa: E402

__all__ += ["load_official_checkpoint", "save_atomic", "to_official_state_dict", "FewShotMeter", "area_stats"]
