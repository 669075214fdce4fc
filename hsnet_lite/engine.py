"""The training and evaluation loops (main paper Sec. 5): one epoch of Adam steps on the
2-class cross-entropy, and the few-shot evaluation protocol with :class:`FewShotMeter`.

Both loops work for one process or many (``torchrun``): training batches come from a seeded
:class:`~torch.utils.data.DistributedSampler`, evaluation episodes from a
:class:`~hsnet_lite.distributed.ShardSampler`, and metrics are summed over ranks.
"""
from __future__ import annotations

from itertools import chain, islice
from typing import Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from .distributed import DistContext, ShardSampler, all_reduce_sum, reduce_meter
from .metrics import IGNORE, FewShotMeter
from .model import kshot_vote
from .validation import check_query_mask

TENSOR_KEYS = ("query_img", "query_mask", "support_imgs", "support_masks", "class_id")
SINGLE = DistContext()


def to_device(batch: dict, device: torch.device) -> dict:
    """The tensors of a collated episode batch, moved to ``device``."""
    return {k: batch[k].to(device, non_blocking=True) for k in TENSOR_KEYS}


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` runs: the device of its first parameter or buffer (the CPU if it has none)."""
    for t in chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


def train_loader(dataset: Dataset, batch_size: int, seed: int, ctx: DistContext = SINGLE,
                 workers: int = 0) -> DataLoader:
    """Shuffled batches, a fixed order per (seed, epoch) on every rank (``set_epoch`` before each epoch)."""
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=seed, drop_last=True)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True)


def eval_loader(dataset: Dataset, batch_size: int, ctx: DistContext = SINGLE, workers: int = 0) -> DataLoader:
    """Episodes in order, sharded over ranks without padding (each episode scored once)."""
    sampler = ShardSampler(len(dataset), ctx.rank, ctx.world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)


def set_data_epoch(loader: DataLoader, epoch: int, base_seed: int) -> None:
    """Select epoch ``epoch``'s order and episodes: the sampler's shuffle and the dataset's draws.

    The embedded benchmark has ``set_epoch``; file benchmarks draw supports from ``seed + index``,
    so their seed is shifted per epoch (deterministic, yet new supports every epoch).
    """
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    ds = loader.dataset
    if hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)
    elif hasattr(ds, "seed"):
        ds.seed = base_seed + epoch * 1_000_003


def episode_loss(logits: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
    """The paper's cross-entropy; for K-shot logits (B, K, 2, H, W) the mean over the K predictions.

    Ignore (255) pixels count as background, as in the authors' training code.
    """
    if logits.dim() == 4:
        check_query_mask(query_mask, logits)
        target = query_mask.long().masked_fill(query_mask == IGNORE, 0)
        return nn.functional.cross_entropy(logits, target)
    k = logits.shape[1]
    return sum(episode_loss(logits[:, i], query_mask) for i in range(k)) / k


def logits_to_mask(logits: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) -> argmax; (B, K, 2, H, W) -> the paper's K-shot vote."""
    return logits.argmax(dim=1) if logits.dim() == 4 else kshot_vote(logits.argmax(dim=2))


def _progress(iterable: Iterable, show: bool, desc: str, total: int) -> Iterable:
    return tqdm(iterable, desc=desc, total=total, disable=not show, leave=False, dynamic_ncols=True)


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    class_ids: list[int], ctx: DistContext = SINGLE, progress: bool = True,
                    desc: str = "train", max_iters: int | None = None) -> dict:
    """One pass of Adam steps (at most ``max_iters``); returns mean loss and mIoU / FB-IoU over
    all ranks, and this rank's per-iteration losses (``iter_losses``)."""
    model.train()
    meter, losses = FewShotMeter(class_ids), []
    total = len(loader) if max_iters is None else min(len(loader), max_iters)
    bar = _progress(islice(loader, total), progress and ctx.is_main, desc, total)
    for batch in bar:
        b = to_device(batch, ctx.device)
        logits = model(b["query_img"], b["support_imgs"], b["support_masks"])
        loss = episode_loss(logits, b["query_mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        meter.update(logits_to_mask(logits.detach()), b["query_mask"], b["class_id"])
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return _summarise(meter, sum(losses), len(losses), ctx) | {"iter_losses": losses}


@torch.no_grad()
def evaluate_loader(model: nn.Module, loader: DataLoader, class_ids: list[int], ctx: DistContext = SINGLE,
                    with_loss: bool = True, ignore_index: int | None = IGNORE, progress: bool = True,
                    desc: str = "eval") -> dict:
    """The paper's evaluation over ``loader``'s episodes: mIoU, FB-IoU (percent), mean loss.

    ``with_loss=False`` calls ``model.predict_mask`` (any predictor with HSNet's interface, e.g.
    :class:`hsnet_lite.baseline.PrototypeBaseline`); otherwise the logits give both the
    cross-entropy and the mask (argmax, or the K-shot vote).
    """
    model.eval()
    meter, loss_sum = FewShotMeter(class_ids, ignore_index=ignore_index), 0.0
    for batch in _progress(loader, progress and ctx.is_main, desc, len(loader)):
        b = to_device(batch, ctx.device)
        if with_loss:
            logits = model(b["query_img"], b["support_imgs"], b["support_masks"])
            loss_sum += float(episode_loss(logits, b["query_mask"])) * len(b["class_id"])
            pred = logits_to_mask(logits)
        else:
            pred = model.predict_mask(b["query_img"], b["support_imgs"], b["support_masks"])
        meter.update(pred, b["query_mask"], b["class_id"])
    return _summarise(meter, loss_sum, meter.episodes if with_loss else 0, ctx)


def _summarise(meter: FewShotMeter, loss_sum: float, loss_count: int, ctx: DistContext) -> dict:
    """Sum the meter's areas and the loss over ranks; mIoU / FB-IoU in percent."""
    reduce_meter(meter, ctx)
    totals = all_reduce_sum(torch.tensor([loss_sum, float(loss_count)], dtype=torch.float64), ctx)
    loss = float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")
    return {"loss": loss, "miou": meter.miou(), "fb_iou": meter.fb_iou(), "episodes": meter.episodes,
            "class_iou": meter.class_iou()}


@torch.no_grad()
def shot_predictions(model: nn.Module, query_img: torch.Tensor, support_imgs: torch.Tensor,
                     support_masks: torch.Tensor, shots: Iterable[int]) -> dict[int, torch.Tensor]:
    """``{k: mask}`` from the first ``k`` supports, for every ``k`` in ``shots``, in one forward pass.

    HSNet's K-shot logits hold one independent prediction per support (main paper Sec. 4), so
    the k-shot answer is the vote over the first k of them (k = 1: that support's argmax).
    Predictors with a ``predict_shots`` method (the baseline) are asked directly.
    """
    if hasattr(model, "predict_shots"):
        return model.predict_shots(query_img, support_imgs, support_masks, list(shots))
    logits = model(query_img, support_imgs, support_masks)
    votes = (logits.unsqueeze(1) if logits.dim() == 4 else logits).argmax(dim=2)
    return {k: votes[:, 0] if k == 1 else kshot_vote(votes[:, :k]) for k in shots}


@torch.no_grad()
def evaluate_many(models: dict[str, nn.Module], loader: DataLoader, class_ids: list[int], shots: Iterable[int],
                  ctx: DistContext = SINGLE, ignore_index: int | None = IGNORE, progress: bool = True,
                  desc: str = "eval") -> dict[str, dict[int, dict]]:
    """Score several predictors at several shot counts on ONE pass over K-shot episodes.

    Episode supports are nested (the first k supports of a K-shot episode are its k-shot
    episode, as the embedded benchmark draws them), so ``shots`` <= K reuse the same data.
    Returns ``{name: {shot: summary}}``.
    """
    shots = sorted(set(shots))
    meters = {(n, k): FewShotMeter(class_ids, ignore_index=ignore_index) for n in models for k in shots}
    for m in models.values():
        m.eval()
    for batch in _progress(loader, progress and ctx.is_main, desc, len(loader)):
        b = to_device(batch, ctx.device)
        if b["support_imgs"].shape[1] < shots[-1]:
            raise ValueError(f"episodes hold {b['support_imgs'].shape[1]} supports, fewer than shot {shots[-1]}")
        for name, model in models.items():
            preds = shot_predictions(model, b["query_img"], b["support_imgs"][:, :shots[-1]],
                                     b["support_masks"][:, :shots[-1]], shots)
            for k, pred in preds.items():
                meters[name, k].update(pred, b["query_mask"], b["class_id"])
    return {n: {k: _summarise(meters[n, k], 0.0, 0, ctx) for k in shots} for n in models}
