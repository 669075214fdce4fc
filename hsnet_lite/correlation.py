"""Support feature masking (main paper Eq. 1) and multi-layer 4D correlation (Eq. 2-3).

A hypercorrelation is a dict ``{p: C_p}`` from pyramid level p to the tensor
C_p of shape (B, |Q_p|, Ha, Wa, Hb, Wb): the cosine similarities of every query position
(Ha, Wa) with every support position (Hb, Wb), ReLU-clamped, for each layer of level p
stacked along the channel axis (Tables S5-S7, "Correlation layer").
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

EPS = 1e-5


def resize_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinearly resize a (B, H, W) mask to ``size`` (align_corners=True), as (B, 1, h, w)."""
    return F.interpolate(mask.unsqueeze(1).float(), size=tuple(size), mode="bilinear", align_corners=True)


def mask_features(feats: Sequence[torch.Tensor], mask: torch.Tensor) -> list[torch.Tensor]:
    """Eq. 1: Hadamard product of each support feature with the mask resized to its size."""
    return [f * resize_mask(mask, f.shape[-2:]).to(f.dtype) for f in feats]


def l2_normalize(feat: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Divide a (B, C, H, W) feature by its L2 norm over channels plus ``eps``."""
    return feat / (feat.norm(p=2, dim=1, keepdim=True) + eps)


def cosine_correlation(query_n: torch.Tensor, support_n: torch.Tensor) -> torch.Tensor:
    """ReLU(cosine) between L2-normalised features.

    ``query_n`` (B, C, Ha, Wa) and ``support_n`` (B*K, C, Hb, Wb) give (B*K, Ha, Wa, Hb, Wb):
    with K supports per query, each query feature is read once and broadcast, not copied.
    """
    b, c, ha, wa = query_n.shape
    bk, _, hb, wb = support_n.shape
    if bk % b:
        raise ValueError(f"support batch {bk} is not a multiple of the query batch {b}")
    q = query_n.flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, Ha*Wa, C)
    s = support_n.flatten(2).view(b, bk // b, c, hb * wb)  # (B, K, C, Hb*Wb)
    return torch.matmul(q, s).clamp(min=0).view(bk, ha, wa, hb, wb)


def hypercorrelation(
    query_feats: Sequence[torch.Tensor],
    support_feats: Sequence[torch.Tensor],
    feature_levels: Sequence[int],
    normalized: bool = False,
) -> dict[int, torch.Tensor]:
    """Stack the per-layer correlations of each pyramid level (Eq. 3).

    Args:
        query_feats, support_feats: the L features of query and (masked) support, same order.
        feature_levels: pyramid level p of each of the L features.
        normalized: set when the features were already passed through :func:`l2_normalize`
            (lets a K-shot episode normalise the query once).
    Returns:
        ``{p: C_p}`` with C_p of shape (B, n_p, Ha, Wa, Hb, Wb), layers shallow to deep.
    """
    if not (len(query_feats) == len(support_feats) == len(feature_levels)):
        raise ValueError(
            f"got {len(query_feats)} query features, {len(support_feats)} support features "
            f"and {len(feature_levels)} levels; they must match"
        )
    per_level: dict[int, list[torch.Tensor]] = {}
    for q, s, p in zip(query_feats, support_feats, feature_levels):
        if not normalized:
            q, s = l2_normalize(q), l2_normalize(s)
        per_level.setdefault(p, []).append(cosine_correlation(q, s))
    return {p: torch.stack(corrs, dim=1) for p, corrs in sorted(per_level.items())}
