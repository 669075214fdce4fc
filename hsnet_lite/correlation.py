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


def _cosine(query_n: torch.Tensor, support_n: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (before the ReLU) as a (B*K, Ha, Wa, Hb, Wb) tensor."""
    b, c, ha, wa = query_n.shape
    bk, _, hb, wb = support_n.shape
    if bk % b:
        raise ValueError(f"support batch {bk} is not a multiple of the query batch {b}")
    q = query_n.flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, Ha*Wa, C): a view when channels-last
    s = support_n.flatten(2).view(b, bk // b, c, hb * wb)  # (B, K, C, Hb*Wb)
    return torch.matmul(q, s).view(bk, ha, wa, hb, wb)


def cosine_correlation(query_n: torch.Tensor, support_n: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """ReLU(cosine) between L2-normalised features.

    ``query_n`` (B, C, Ha, Wa) and ``support_n`` (B*K, C, Hb, Wb) give (B*K, Ha, Wa, Hb, Wb):
    with K supports per query, each query feature is read once and broadcast, not copied.
    ``out``: an optional (B*K, Ha, Wa, Hb, Wb) tensor, possibly strided, that receives the result.
    """
    corr = _cosine(query_n, support_n)
    return corr.clamp(min=0) if out is None else torch.clamp(corr, min=0, out=out)


def hypercorrelation(
    query_feats: Sequence[torch.Tensor],
    support_feats: Sequence[torch.Tensor],
    feature_levels: Sequence[int],
    normalized: bool = False,
    support_masks: torch.Tensor | None = None,
) -> dict[int, torch.Tensor]:
    """Stack the per-layer correlations of each pyramid level (Eq. 3).

    Args:
        query_feats, support_feats: the L features of query and (masked) support, same order.
        feature_levels: pyramid level p of each of the L features.
        normalized: set when the features were already passed through :func:`l2_normalize`
            (lets a K-shot episode normalise the query once).
        support_masks: the (B*K, H, W) masks the support features were multiplied with
            (:func:`mask_features`), if they were. A support position where the resized mask is
            0 has an all-zero feature, so its correlations are exactly 0: they are written as
            zeros without being computed (the background of the support costs nothing). CPU only:
            on a GPU, one full matmul per layer beats gathering the kept columns.
    Returns:
        ``{p: C_p}`` with C_p of shape (B, n_p, Ha, Wa, Hb, Wb), layers shallow to deep, stored
        channels-last (memory order B, Ha, Wa, Hb, Wb, n_p), the layout the learner works in:
        each layer's ReLU(cosine) is written straight into its slot, one pass, no stacking copy.
    """
    if not (len(query_feats) == len(support_feats) == len(feature_levels)):
        raise ValueError(
            f"got {len(query_feats)} query features, {len(support_feats)} support features "
            f"and {len(feature_levels)} levels; they must match"
        )
    per_level: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for q, s, p in zip(query_feats, support_feats, feature_levels):
        if not normalized:
            q, s = l2_normalize(q), l2_normalize(s)
        per_level.setdefault(p, []).append((q, s))
    out = {}
    for p, pairs in sorted(per_level.items()):
        if torch.is_grad_enabled() and any(t.requires_grad for pair in pairs for t in pair):
            # autograd cannot differentiate through out=; stack (a copy) and keep the layout
            stacked = torch.stack([cosine_correlation(q, s) for q, s in pairs], dim=-1)
            out[p] = stacked.permute(0, 5, 1, 2, 3, 4)
            continue
        keep = None
        if support_masks is not None and support_masks.device.type == "cpu":  # on a GPU one matmul is faster
            keep = resize_mask(support_masks, pairs[0][1].shape[-2:]).flatten(1) != 0  # (B*K, Hb*Wb)
        out[p] = _stacked_correlation(pairs, keep).permute(0, 5, 1, 2, 3, 4)
    return out


# Support positions are skipped only when at most this fraction of them is kept: past it, one
# full matmul per layer beats gathering the kept columns and scattering the result.
SPARSE_MAX_FRACTION = 0.8


def _stacked_correlation(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], keep: torch.Tensor | None) -> torch.Tensor:
    """The correlations of one level stacked as a (B*K, Ha, Wa, Hb, Wb, n) tensor, computed in place.

    ``keep``: (B*K, Hb*Wb) bool, False where the support feature is known to be zero in every
    layer; those columns are exact zeros and are not computed.
    """
    b, _, ha, wa = pairs[0][0].shape
    bk, _, hb, wb = pairs[0][1].shape
    n = len(pairs)
    counts = keep.sum(dim=1).tolist() if keep is not None else [hb * wb] * bk
    sparse = [c <= SPARSE_MAX_FRACTION * hb * wb for c in counts]
    if not any(sparse):  # one batched matmul per layer, clamped straight into its slot
        corr = None
        for i, (q, s) in enumerate(pairs):
            cos = _cosine(q, s)
            if corr is None:
                corr = cos.new_empty(bk, ha, wa, hb, wb, n)
            torch.clamp(cos, min=0, out=corr[..., i])
        return corr
    corr = None
    for j in range(bk):  # support j, of query j // K
        idx = keep[j].nonzero().squeeze(1) if sparse[j] else None
        if idx is not None and not idx.numel():
            continue  # an empty mask: all zeros
        buf = None
        for i, (q, s) in enumerate(pairs):
            query = q[j * b // bk].flatten(1).t()  # (Ha*Wa, C): a view when channels-last
            support = s[j].flatten(1) if idx is None else s[j].flatten(1).index_select(1, idx)
            cos = query @ support
            if corr is None:
                corr = cos.new_zeros(bk, ha * wa, hb * wb, n)
            if idx is None:
                torch.clamp(cos, min=0, out=corr[j, :, :, i])
                continue
            if buf is None:
                buf = cos.new_empty(n, ha * wa, idx.numel())
            torch.clamp(cos, min=0, out=buf[i])
        if buf is not None:
            corr[j].index_copy_(1, idx, buf.permute(1, 2, 0))
    if corr is None:  # every support mask empty
        q0, s0 = pairs[0]
        corr = q0.new_zeros(bk, ha * wa, hb * wb, n, dtype=torch.result_type(q0, s0))
    return corr.view(bk, ha, wa, hb, wb, n)
