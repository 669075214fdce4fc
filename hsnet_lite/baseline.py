"""A training-free few-shot segmentation baseline, scored with the same protocol as HSNet.

Masked average pooling (the prototype idea HSNet's introduction contrasts with, e.g. PANet /
SG-One): on the frozen ImageNet backbone, the support features under the mask give a
foreground prototype and those outside give a background prototype; every query position
takes the label of the prototype with the higher cosine similarity. Features are the deepest
layer of each chosen pyramid level, upsampled to the finest chosen level, L2-normalised per
layer and concatenated. K-shot averages the K supports' prototypes (no vote needed).

Nothing is learnt, so the gap to HSNet on held-out classes measures what the hypercorrelation
squeeze learner adds over a single-feature prototype match.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import FrozenBackbone, build_backbone
from .correlation import l2_normalize
from .validation import check_episode


def check_support_foreground(support_masks: torch.Tensor) -> None:
    """Every support mask (B, K, H, W) must hold a foreground pixel (a prototype needs one)."""
    empty = (support_masks.flatten(2).sum(-1) == 0).nonzero().tolist()
    if empty:
        b, k = empty[0]
        raise ValueError(
            f"support mask {k} of episode {b} is empty (no foreground pixel; {len(empty)} empty in all): "
            "masked average pooling cannot build a foreground prototype from it"
        )


def masked_average(feats: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean of (N, C, h, w) features under (N, h, w) weights -> (N, C), and the weight sums (N,)."""
    total = weights.flatten(1).sum(-1)
    proto = (feats * weights.unsqueeze(1)).flatten(2).sum(-1) / total.clamp(min=1e-6).unsqueeze(1)
    return proto, total


class PrototypeBaseline(nn.Module):
    """Masked-average-pooling prototypes + cosine similarity on a frozen backbone.

    Args:
        backbone: a name from :data:`hsnet_lite.backbones.BACKBONES` or a built backbone.
        weights, weights_path: as for :class:`hsnet_lite.HSNet`.
        levels: pyramid levels whose deepest feature is used (default 1 and 2: stride 8 and 16).
    """

    def __init__(self, backbone: str | FrozenBackbone = "efficientnet-lite0", weights: str | None = "imagenet",
                 weights_path: str | None = None, levels: Sequence[int] = (1, 2)) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, weights, weights_path) if isinstance(backbone, str) else backbone
        fl = self.backbone.feature_levels
        if not levels or set(levels) - set(fl):
            raise ValueError(f"levels must be a non-empty subset of {sorted(set(fl))}, got {list(levels)}")
        self.layer_ids = [max(i for i, p in enumerate(fl) if p == lvl) for lvl in sorted(set(levels))]

    @torch.no_grad()
    def features(self, img: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w): the chosen layers at the finest chosen size, each L2-normalised, then
        concatenated and normalised again (unit vectors: dot products are cosines)."""
        feats = self.backbone(img)
        chosen = [feats[i] for i in self.layer_ids]
        size = chosen[0].shape[-2:]
        chosen = [f if f.shape[-2:] == size else F.interpolate(f, size, mode="bilinear", align_corners=True)
                  for f in chosen]
        return l2_normalize(torch.cat([l2_normalize(f) for f in chosen], dim=1))

    def prototypes(self, support_feats: torch.Tensor, support_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Foreground and background prototypes (B, C), averaged over the K supports.

        ``support_feats`` (B*K, C, h, w) from :meth:`features`, ``support_masks`` (B, K, H, W).
        Masks are area-downsampled to the feature size, so a small object keeps its weight. A
        support without background pixels adds nothing to the background prototype (zero if no
        support has any: every query position then scores cosine 0 against it).
        """
        b, k = support_masks.shape[:2]
        masks = F.adaptive_avg_pool2d(support_masks.flatten(0, 1).unsqueeze(1), support_feats.shape[-2:]).squeeze(1)
        fg, _ = masked_average(support_feats, masks)
        bg, bg_area = masked_average(support_feats, 1 - masks)
        has_bg = (bg_area > 0).float().view(b, k, 1)
        fg = fg.view(b, k, -1).mean(1)
        bg = (bg.view(b, k, -1) * has_bg).sum(1) / has_bg.sum(1).clamp(min=1)
        return fg, bg

    @staticmethod
    def similarity(query_feats: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor, size) -> torch.Tensor:
        """(B, 2, H, W) cosine similarity of each query position to the bg (0) and fg (1) prototypes."""
        protos = F.normalize(torch.stack([bg, fg], 1), dim=-1, eps=1e-5)
        sim = torch.einsum("bchw,bnc->bnhw", query_feats, protos)
        return F.interpolate(sim, size=size, mode="bilinear", align_corners=True)

    def _features(self, query_img, support_imgs, support_masks):
        support_imgs, support_masks = check_episode(query_img, support_imgs, support_masks)
        check_support_foreground(support_masks)
        return self.features(query_img), self.features(support_imgs.flatten(0, 1)), support_masks

    @torch.no_grad()
    def forward(self, query_img: torch.Tensor, support_imgs: torch.Tensor, support_masks: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) cosine similarity to the background (channel 0) and foreground (1) prototypes."""
        q, s, masks = self._features(query_img, support_imgs, support_masks)
        return self.similarity(q, *self.prototypes(s, masks), query_img.shape[-2:])

    @torch.no_grad()
    def predict_mask(self, query_img: torch.Tensor, support_imgs: torch.Tensor,
                     support_masks: torch.Tensor) -> torch.Tensor:
        """(B, H, W) 0/1 mask: the more similar prototype at each pixel."""
        return self(query_img, support_imgs, support_masks).argmax(dim=1)

    @torch.no_grad()
    def predict_shots(self, query_img: torch.Tensor, support_imgs: torch.Tensor, support_masks: torch.Tensor,
                      shots: Sequence[int]) -> dict[int, torch.Tensor]:
        """``{k: (B, H, W) mask}`` using the first ``k`` supports, features computed once."""
        q, s, masks = self._features(query_img, support_imgs, support_masks)
        b, n = masks.shape[:2]
        s = s.view(b, n, *s.shape[1:])
        out = {}
        for k in shots:
            fg, bg = self.prototypes(s[:, :k].flatten(0, 1), masks[:, :k])
            out[k] = self.similarity(q, fg, bg, query_img.shape[-2:]).argmax(dim=1)
        return out
