"""Curves, per-episode scores and summaries for notebook 07 (training and evaluation on the CPU).

The trainer (:func:`hsnet_lite.trainer.train`) returns the per-epoch log (``history``) and the
per-iteration losses (``iter_losses``); :func:`training_curves_figure` plots both against the
number of Adam steps. For evaluation, :func:`collect_predictions` keeps every episode's
predicted mask (several predictors, several shot counts, one pass over the episodes), so the
paper's mIoU / FB-IoU (:func:`protocol_scores`) and the per-episode IoU used to find failure
cases (:func:`episode_ious`, :func:`worst_episodes`) come from the same predictions.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .engine import model_device, shot_predictions
from .episode_figure import episode_iou
from .metrics import IGNORE, FewShotMeter


# ---------------------------------------------------------------- training curves


def iteration_losses(iter_losses: dict[int, Sequence[float]]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Flatten ``{epoch: [loss of each step]}`` into (steps 1..N, losses, last step of each epoch)."""
    losses: list[float] = []
    epoch_ends: list[int] = []
    for epoch in sorted(iter_losses):
        losses.extend(float(x) for x in iter_losses[epoch])
        epoch_ends.append(len(losses))
    return np.arange(1, len(losses) + 1), np.asarray(losses, dtype=np.float64), epoch_ends


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start); same length as ``values``."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    x = np.asarray(values, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, len(x) + 1)
    start = np.maximum(idx - window, 0)
    return (csum[idx] - csum[start]) / (idx - start)


def training_curves_figure(iter_losses: dict[int, Sequence[float]], history: Sequence[dict], smooth: int = 10):
    """Left: the loss of every Adam step (and its moving average), validation loss after each
    epoch. Right: train / validation mIoU and validation FB-IoU after each epoch. Both panels
    share the x-axis (Adam steps), so the epochs line up."""
    steps, losses, ends = iteration_losses(iter_losses)
    if len(ends) != len(history):
        raise ValueError(f"iter_losses has {len(ends)} epochs but history has {len(history)}")
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(11, 3.6), sharex=True)
    ax_l.plot(steps, losses, color="C0", alpha=0.35, lw=0.8, label="loss of each step (batch)")
    ax_l.plot(steps, moving_average(losses, smooth), color="C0", lw=2, label=f"mean of the last {smooth} steps")
    ax_l.plot(ends, [r["val_loss"] for r in history], "o-", color="C3", label="validation loss (epoch end)")
    ax_l.axhline(np.log(2), color="gray", ls=":", lw=1)
    ax_l.text(steps[-1], np.log(2), "ln 2 ", ha="right", va="bottom", color="gray", fontsize=8)
    ax_l.set_xlabel("Adam steps")
    ax_l.set_ylabel("cross-entropy")
    ax_l.set_title("loss", fontsize=10)
    ax_l.legend(fontsize=8)
    ax_m.plot(ends, [r["train_miou"] for r in history], "s--", color="C0", label="train mIoU (training classes)")
    ax_m.plot(ends, [r["val_miou"] for r in history], "o-", color="C3", label="validation mIoU (held-out classes)")
    ax_m.plot(ends, [r["val_fb_iou"] for r in history], "^:", color="C2", label="validation FB-IoU")
    ax_m.set_ylim(0, 100)
    ax_m.set_xlabel("Adam steps")
    ax_m.set_ylabel("percent")
    ax_m.set_title("mIoU and FB-IoU after each epoch", fontsize=10)
    ax_m.legend(fontsize=8, loc="upper left")
    for ax in (ax_l, ax_m):
        for end in ends[:-1]:
            ax.axvline(end, color="gray", lw=0.5, alpha=0.5)
    fig.tight_layout()
    return fig


def format_epoch(row: dict) -> str:
    """One epoch of the trainer's log, rounded for a notebook (no timings)."""
    return (f"epoch {row['epoch']}: train loss {row['train_loss']:.2f}, mIoU {row['train_miou']:.1f} | "
            f"val loss {row['val_loss']:.2f}, mIoU {row['val_miou']:.1f}, FB-IoU {row['val_fb_iou']:.1f}")


# ---------------------------------------------------------------- evaluation


def masks_from_areas(gt_pixels: int, pred_pixels: int, overlap: int,
                     shape: tuple[int, int] = (10, 10)) -> tuple[torch.Tensor, torch.Tensor]:
    """A (prediction, ground truth) pair of ``shape`` with the given object sizes and overlap.

    Pixels are filled in raster order: the ground truth covers ``[0, gt_pixels)``, the
    prediction ``[gt_pixels - overlap, gt_pixels - overlap + pred_pixels)``, so the foreground
    intersection is ``overlap`` and the union ``gt_pixels + pred_pixels - overlap``.
    """
    n = shape[0] * shape[1]
    if min(gt_pixels, pred_pixels, overlap) < 0 or overlap > min(gt_pixels, pred_pixels):
        raise ValueError(f"need 0 <= overlap <= min(gt, pred); got gt {gt_pixels}, pred {pred_pixels}, "
                         f"overlap {overlap}")
    if gt_pixels + pred_pixels - overlap > n:
        raise ValueError(f"the union ({gt_pixels + pred_pixels - overlap} pixels) does not fit in {shape}")
    gt, pred = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    gt[:gt_pixels] = 1
    start = gt_pixels - overlap
    pred[start:start + pred_pixels] = 1
    return pred.view(shape), gt.view(shape)


def naive_episode_miou(preds: Iterable[torch.Tensor], gts: Iterable[torch.Tensor]) -> float:
    """The mean over episodes of each episode's foreground IoU (percent): NOT the paper's mIoU."""
    ious = [episode_iou(p, g) for p, g in zip(preds, gts)]
    if not ious:
        raise ValueError("no episodes")
    return float(np.mean(ious))


@torch.no_grad()
def collect_predictions(models: dict[str, nn.Module], dataset: Dataset, shots: Sequence[int],
                        batch_size: int = 10) -> dict:
    """Every episode's predicted mask for each predictor and shot count, in one pass.

    The first ``k`` supports of the dataset's K-shot episodes form its ``k``-shot episode
    (the embedded benchmark draws them that way), so one forward pass per batch gives all
    shot counts (see :func:`hsnet_lite.engine.shot_predictions`); each model runs on its own device,
    the masks come back to the CPU. Returns ``{"masks":
    {(name, k): (N, H, W) uint8}, "gts": (N, H, W) uint8, "class_ids": (N,) long}``.
    """
    shots = sorted(set(int(k) for k in shots))
    for m in models.values():
        m.eval()
    masks: dict[tuple[str, int], list[torch.Tensor]] = {(n, k): [] for n in models for k in shots}
    gts, cids = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        s_imgs, s_masks = batch["support_imgs"][:, :shots[-1]], batch["support_masks"][:, :shots[-1]]
        if s_imgs.shape[1] < shots[-1]:
            raise ValueError(f"episodes hold {s_imgs.shape[1]} supports, fewer than shot {shots[-1]}")
        for name, model in models.items():
            dev = model_device(model)
            preds = shot_predictions(model, batch["query_img"].to(dev), s_imgs.to(dev), s_masks.to(dev), shots)
            for k, pred in preds.items():
                masks[name, k].append(pred.to("cpu", torch.uint8))
        gts.append(batch["query_mask"].to(torch.uint8))
        cids.append(batch["class_id"].long())
    return {"masks": {key: torch.cat(v) for key, v in masks.items()}, "gts": torch.cat(gts),
            "class_ids": torch.cat(cids)}


def protocol_scores(pred: torch.Tensor, gts: torch.Tensor, class_ids: torch.Tensor, classes: Iterable[int],
                    ignore_index: int | None = IGNORE) -> dict:
    """The paper's protocol (:class:`FewShotMeter`) on stacked (N, H, W) predictions."""
    meter = FewShotMeter(classes, ignore_index=ignore_index)
    meter.update(pred.long(), gts.long(), class_ids)
    return {"miou": meter.miou(), "fb_iou": meter.fb_iou(), "class_iou": meter.class_iou(), "episodes": meter.episodes}


def episode_ious(pred: torch.Tensor, gts: torch.Tensor) -> list[float]:
    """Foreground IoU (percent) of each episode; ignore pixels excluded."""
    return [episode_iou(p, g) for p, g in zip(pred, gts)]


def worst_episodes(ious: Sequence[float], n: int) -> list[int]:
    """Indices of the ``n`` lowest IoUs, lowest first (ties: the lower index first)."""
    return sorted(range(len(ious)), key=lambda i: (ious[i], i))[:n]


def with_first_supports(episode: dict, k: int) -> dict:
    """A copy of ``episode`` that keeps only its first ``k`` supports (its ``k``-shot episode)."""
    return {**episode, "support_imgs": episode["support_imgs"][:k], "support_masks": episode["support_masks"][:k]}
