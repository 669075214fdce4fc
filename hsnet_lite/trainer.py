"""``train(config) -> results``: HSNet training with the paper's recipe (main paper Sec. 5).

Adam (lr 1e-3) on the learner only, the ImageNet backbone frozen; after every epoch the
validation split (the fold's test classes) is scored with the paper's mIoU / FB-IoU, the
log CSV is rewritten, ``last.pt`` is saved and ``best.pt`` when validation mIoU improved
(the paper keeps the best-by-validation model). ``resume`` continues a run exactly: the
learner, Adam state, RNG states and epoch come from ``last.pt``, and the data order of each
epoch is a pure function of (seed, epoch). Runs under ``torchrun`` with DDP; only rank 0
writes files.
"""
from __future__ import annotations

import os
import time

import torch

from .atomic_io import write_json_atomic, write_text_atomic
from .builders import build_model, build_split
from .config import TrainConfig
from .distributed import DistContext, barrier, init_distributed, shutdown, wrap_ddp
from .engine import eval_loader, evaluate_loader, set_data_epoch, train_loader, train_one_epoch
from .rng import restore_rng_state, seed_everything
from .run_checkpoint import (check_resume_compatible, learner_digest, load_checkpoint, make_checkpoint,
                             save_checkpoint)
from .run_log import RunLog, format_row

EMBEDDED_VAL_EPISODES = 100


def train(config: TrainConfig) -> dict:
    """Train HSNet as ``config`` says; returns the epoch log, best validation mIoU, file paths,
    the learner digest and per-iteration losses of the epochs run by this call."""
    config.check()
    ctx = init_distributed(config.device)
    try:
        return _train(config, ctx)
    finally:
        shutdown(ctx)


def _datasets(cfg: TrainConfig, ctx: DistContext):
    """Training split (sized to the iterations for the embedded benchmark) and validation split."""
    n_trn = None
    if cfg.benchmark == "embedded" and cfg.iters_per_epoch:
        n_trn = cfg.iters_per_epoch * cfg.batch_size * ctx.world_size
    n_val = cfg.val_episodes or (EMBEDDED_VAL_EPISODES if cfg.benchmark == "embedded" else None)
    trn = build_split(cfg, "trn", n_episodes=n_trn, seed=cfg.seed, split_dir=cfg.split_dir)
    val = build_split(cfg, "val", n_episodes=n_val, split_dir=cfg.split_dir)
    return trn, val


def _resume_path(cfg: TrainConfig) -> str | None:
    if cfg.resume in (None, ""):
        return None
    return os.path.join(cfg.output, "last.pt") if cfg.resume == "auto" else cfg.resume


def _restore(cfg: TrainConfig, model, optimizer) -> tuple[int, float, int, list[dict]]:
    """Load ``last.pt`` (or the given file) into model and optimizer; returns the run's progress."""
    ckpt = load_checkpoint(_resume_path(cfg))
    check_resume_compatible(ckpt["config"], cfg.to_dict())
    model.learner.load_state_dict(ckpt["learner"])
    optimizer.load_state_dict(ckpt["optimizer"])
    restore_rng_state(ckpt["rng"])
    return ckpt["epoch"], ckpt["best_miou"], ckpt["best_epoch"], list(ckpt["history"])


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """Adam on the parameters that train (the learner; main paper Sec. 5, lr 1e-3).

    On a GPU it is PyTorch's fused Adam, one fused operation per step: the default multi-tensor
    Adam issues many more, and a GPU training step of HSNet is bound by the host launching
    kernels (about 11% of a ResNet101 step on an H100, docs/performance.md). Elsewhere
    PyTorch's default.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=lr, fused=True if params and all(p.is_cuda for p in params) else None)


def _train(cfg: TrainConfig, ctx: DistContext) -> dict:
    seed_everything(cfg.seed)
    trn, val = _datasets(cfg, ctx)
    model = build_model(cfg).to(ctx.device)
    optimizer = make_optimizer(model, cfg.lr)
    start, best, best_epoch, history = 0, -1.0, 0, []
    if _resume_path(cfg):
        start, best, best_epoch, history = _restore(cfg, model, optimizer)
    elif ctx.is_main:
        write_json_atomic(os.path.join(cfg.output, "config.json"), cfg.to_dict())
    net = wrap_ddp(model, ctx)
    loaders = (train_loader(trn, cfg.batch_size, cfg.seed, ctx, cfg.workers),
               eval_loader(val, cfg.val_batch_size, ctx, cfg.workers))
    log = RunLog(cfg.output, history, enabled=ctx.is_main)
    iter_losses, t_start = {}, time.time()
    for epoch in range(start, cfg.epochs):
        row, iter_losses[epoch + 1] = _run_epoch(cfg, ctx, net, optimizer, loaders, epoch)
        log.add(row)
        improved = row["val_miou"] > best
        if improved:
            best, best_epoch = row["val_miou"], epoch + 1
        if ctx.is_main:
            print(format_row(row) + (" (best)" if improved else ""), flush=True)
            _save(cfg, model, optimizer, epoch + 1, best, best_epoch, log.rows, improved)
        barrier(ctx)
    log.close()
    return _finish(cfg, ctx, model, log.rows, best, best_epoch, iter_losses, time.time() - t_start)


def _run_epoch(cfg: TrainConfig, ctx: DistContext, net, optimizer, loaders, epoch: int) -> tuple[dict, list[float]]:
    """Train one epoch, then validate (the unwrapped model: no gradient sync needed)."""
    t0 = time.time()
    trn_loader, val_loader = loaders
    set_data_epoch(trn_loader, epoch, cfg.seed)
    tag = f"epoch {epoch + 1}/{cfg.epochs}"
    tr = train_one_epoch(net, trn_loader, optimizer, trn_loader.dataset.class_ids, ctx, cfg.progress,
                         f"{tag} train", cfg.iters_per_epoch)
    model = getattr(net, "module", net)
    va = evaluate_loader(model, val_loader, val_loader.dataset.class_ids, ctx, progress=cfg.progress,
                         desc=f"{tag} val")
    row = {"epoch": epoch + 1, "train_loss": tr["loss"], "train_miou": tr["miou"], "val_loss": va["loss"],
           "val_miou": va["miou"], "val_fb_iou": va["fb_iou"], "lr": optimizer.param_groups[0]["lr"],
           "seconds": time.time() - t0}
    return row, tr["iter_losses"]


def _save(cfg, model, optimizer, epochs_done, best, best_epoch, rows, improved) -> None:
    ckpt = make_checkpoint(model, optimizer, epochs_done, cfg.to_dict(), best, best_epoch, rows)
    save_checkpoint(ckpt, os.path.join(cfg.output, "last.pt"))
    if improved:
        save_checkpoint(ckpt, os.path.join(cfg.output, "best.pt"))


def _finish(cfg, ctx, model, rows, best, best_epoch, iter_losses, seconds) -> dict:
    """Write results.json (rank 0) and, if asked, every rank's learner digest."""
    digest = learner_digest(model)
    results = {"config": cfg.to_dict(), "history": rows, "best_val_miou": best, "best_epoch": best_epoch,
               "learner_digest": digest, "seconds": round(seconds, 1), "world_size": ctx.world_size, "rank": ctx.rank,
               "best_checkpoint": os.path.join(cfg.output, "best.pt"),
               "last_checkpoint": os.path.join(cfg.output, "last.pt")}
    if cfg.write_digests:
        write_text_atomic(os.path.join(cfg.output, f"digest_rank{ctx.rank}.txt"), digest + "\n")
    if ctx.is_main:
        write_json_atomic(os.path.join(cfg.output, "results.json"), results)
    return results | {"iter_losses": iter_losses}
