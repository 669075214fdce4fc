"""Build the model and the datasets a configuration describes."""
from __future__ import annotations

from .config import ModelConfig
from .datasets import build_dataset
from .datasets.base import FewShotDataset
from .model import HSNet


def build_model(cfg: ModelConfig) -> HSNet:
    """HSNet with the configured backbone, weights and ablation variant (Tables S2, S3, Fig. S14)."""
    return HSNet(cfg.backbone, weights=cfg.backbone_weights, weights_path=cfg.weights_path,
                 levels=cfg.levels, layers=cfg.layers, use_support_mask=cfg.use_support_mask)


def build_split(cfg: ModelConfig, split: str, n_episodes: int | None = None, seed: int | None = None,
                use_ignore: bool = True, shot: int | None = None, split_dir: str | None = None) -> FewShotDataset:
    """The ``split`` ('trn', 'val' or 'test') of the configured benchmark and fold.

    A missing dataset folder raises the loaders' ``DatasetNotFoundError`` (its message says
    which path was expected and how to get the data).
    """
    kw: dict = {"use_ignore": use_ignore}
    if n_episodes is not None:
        kw["n_episodes"] = int(n_episodes)
    if seed is not None:
        kw["seed"] = int(seed)
    if split_dir is not None and cfg.benchmark != "embedded":
        kw["split_dir"] = split_dir
    return build_dataset(cfg.benchmark, root=cfg.datapath, fold=cfg.fold, split=split,
                         shot=cfg.shot if shot is None else shot, img_size=cfg.img_size, **kw)
