"""``evaluate(config) -> dict``: the paper's few-shot protocol (main paper Sec. 5, Table S4).

The fold's test classes, a fixed list of episodes (1000 with seed 0 for PASCAL-5i and
COCO-20i, every query for FSS-1000, ``episodes`` to change), mIoU and FB-IoU from
:class:`~hsnet_lite.metrics.FewShotMeter`; K-shot predictions use ``predict_mask`` (HSNet: the
vote over K 1-shot predictions). ``use_ignore=False`` scores PASCAL boundary pixels as
background (Table S4). The predictor is one of: our checkpoint, the authors' ``best_model.pt``
(via :func:`~hsnet_lite.checkpoints.load_official_checkpoint`), the shipped embedded model, or
the training-free :class:`~hsnet_lite.baseline.PrototypeBaseline`.
"""
from __future__ import annotations

import time

from torch import nn

from .atomic_io import write_json_atomic
from .baseline import PrototypeBaseline
from .builders import build_split
from .checkpoints import load_official_checkpoint
from .config import EvalConfig
from .distributed import DistContext, init_distributed, shutdown
from .engine import SINGLE, eval_loader, evaluate_loader
from .metrics import IGNORE
from .model import HSNet
from .pretrained import load_embedded_model
from .run_checkpoint import load_checkpoint, model_from_checkpoint


def load_predictor(cfg: EvalConfig) -> nn.Module:
    """The model ``cfg`` names (see the module docstring), on CPU, in eval mode."""
    if cfg.method == "baseline":
        model = PrototypeBaseline(cfg.backbone, cfg.backbone_weights, cfg.weights_path, cfg.baseline_levels)
    elif cfg.official_checkpoint:
        model = HSNet(cfg.backbone, weights=None, levels=cfg.levels, layers=cfg.layers,
                      use_support_mask=cfg.use_support_mask)
        load_official_checkpoint(model, cfg.official_checkpoint)
    elif cfg.checkpoint:
        model = model_from_checkpoint(load_checkpoint(cfg.checkpoint), cfg.weights_path)
    else:
        model = load_embedded_model()
    return model.eval()


def evaluate_model(model: nn.Module, dataset, batch_size: int = 4, ctx: DistContext = SINGLE,
                   use_ignore: bool = True, workers: int = 0, progress: bool = True) -> dict:
    """Score any predictor with HSNet's ``predict_mask`` interface on ``dataset``'s episodes.

    Returns mIoU and FB-IoU (percent), per-class IoU and the episode count.
    """
    loader = eval_loader(dataset, batch_size, ctx, workers)
    ignore = IGNORE if use_ignore else None
    out = evaluate_loader(model.to(ctx.device), loader, list(dataset.class_ids), ctx, with_loss=False,
                          ignore_index=ignore, progress=progress, desc=f"{dataset.shot}-shot eval")
    return {k: out[k] for k in ("miou", "fb_iou", "episodes", "class_iou")}


def evaluate(config: EvalConfig) -> dict:
    """Build predictor and test split from ``config``, score them, optionally write a JSON."""
    config.check()
    ctx = init_distributed(config.device)
    try:
        t0 = time.time()
        dataset = build_split(config, config.split, n_episodes=config.episodes, seed=config.seed,
                              use_ignore=config.use_ignore, split_dir=config.split_dir)
        model = load_predictor(config)
        scores = evaluate_model(model, dataset, config.batch_size, ctx, config.use_ignore, config.workers,
                                config.progress)
        results = {"benchmark": config.benchmark, "fold": config.fold, "shot": config.shot,
                   "method": config.method, "split": config.split, "ignore_boundary": config.use_ignore,
                   "img_size": config.img_size, **scores, "seconds": round(time.time() - t0, 1)}
        if config.output and ctx.is_main:
            write_json_atomic(config.output, results | {"config": config.to_dict()})
        return results
    finally:
        shutdown(ctx)
