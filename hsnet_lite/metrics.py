"""Few-shot segmentation metrics with the paper's protocol (main paper Sec. 5, Table S4).

For each class, intersection and union AREAS (pixel counts) are summed over all its
episodes; mIoU averages the foreground IoU of the fold's classes; FB-IoU takes the same
sums over all classes for foreground and background and averages the two IoUs. Pixels
labelled 255 (PASCAL boundaries) are removed from prediction and ground truth.
"""
from __future__ import annotations

from typing import Iterable

import torch

IGNORE = 255


def area_stats(pred: torch.Tensor, gt: torch.Tensor, ignore_index: int | None = IGNORE) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-episode (B, 2) intersection and union areas for background (0) and foreground (1).

    Args:
        pred: (B, H, W) 0/1 prediction. gt: (B, H, W) of 0, 1 and ``ignore_index``.
        ignore_index: label excluded from both maps; ``None`` scores every pixel (then a
            255 pixel counts as background, as in the paper's Table S4 "without ignore").
    """
    if pred.shape != gt.shape or pred.dim() != 3:
        raise ValueError(f"pred and gt must both be (B, H, W); got {tuple(pred.shape)} and {tuple(gt.shape)}")
    pred, gt = pred.long(), gt.long()
    valid = gt != ignore_index if ignore_index is not None else torch.ones_like(gt, dtype=torch.bool)
    gt = gt.masked_fill(gt == IGNORE, 0) if ignore_index is None else gt
    if ((pred != 0) & (pred != 1)).any():
        raise ValueError("pred must hold only 0 and 1")
    inter, union = [], []
    for cls in (0, 1):
        p, g = (pred == cls) & valid, (gt == cls) & valid
        inter.append((p & g).flatten(1).sum(1))
        union.append((p | g).flatten(1).sum(1))
    return torch.stack(inter, 1), torch.stack(union, 1)


class FewShotMeter:
    """Accumulates areas per class over episodes; reports mIoU and FB-IoU in percent."""

    def __init__(self, class_ids: Iterable[int], ignore_index: int | None = IGNORE) -> None:
        self.class_ids = sorted(set(int(c) for c in class_ids))
        if not self.class_ids:
            raise ValueError("FewShotMeter needs at least one class id")
        self.ignore_index = ignore_index
        self.inter = {c: torch.zeros(2, dtype=torch.float64) for c in self.class_ids}
        self.union = {c: torch.zeros(2, dtype=torch.float64) for c in self.class_ids}
        self.episodes = 0

    def update(self, pred: torch.Tensor, gt: torch.Tensor, class_ids: torch.Tensor | Iterable[int]) -> None:
        """Add a batch of episodes: pred/gt (B, H, W) on any device, class_ids (B,).

        The areas are counted where ``pred`` lives and summed on the CPU (the meter's sums
        are small float64 CPU tensors, whatever device the model runs on)."""
        inter, union = (t.cpu() for t in area_stats(pred, gt, self.ignore_index))
        ids = [int(c) for c in (class_ids.tolist() if torch.is_tensor(class_ids) else class_ids)]
        if len(ids) != inter.shape[0]:
            raise ValueError(f"got {len(ids)} class ids for a batch of {inter.shape[0]} episodes")
        for c, i, u in zip(ids, inter.double(), union.double()):
            if c not in self.inter:
                raise ValueError(f"class id {c} is not among this meter's classes {self.class_ids}")
            self.inter[c] += i
            self.union[c] += u
        self.episodes += len(ids)

    def class_iou(self) -> dict[int, float]:
        """Foreground IoU per class in percent (union 0 counts as 0, as in the authors' code)."""
        return {c: 100.0 * float(self.inter[c][1] / max(float(self.union[c][1]), 1.0)) for c in self.class_ids}

    def miou(self) -> float:
        return sum(self.class_iou().values()) / len(self.class_ids)

    def fb_iou(self) -> float:
        inter = sum(self.inter.values())
        union = sum(self.union.values())
        return 100.0 * float((inter / union.clamp(min=1)).mean())

    def summary(self) -> dict[str, float]:
        return {"miou": round(self.miou(), 2), "fb_iou": round(self.fb_iou(), 2), "episodes": self.episodes}
