"""The episode interface shared by every few-shot dataset.

``ds[i]`` returns a dict with

* ``query_img`` float32 (3, S, S), ImageNet-normalised;
* ``query_mask`` int64 (S, S): 0 background, 1 foreground, 255 ignore (only if ``use_ignore``);
* ``support_imgs`` float32 (K, 3, S, S) and ``support_masks`` float32 (K, S, S) in {0, 1};
* ``class_id`` int64 scalar tensor (0-based index in the dataset's class list);
* ``query_name`` (str) and ``support_names`` (list of str).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .transforms import image_to_tensor, resize_mask

IGNORE_LABEL = 255
SPLITS = ("trn", "val", "test")


def binary_query_mask(label: np.ndarray, fg_value: int, use_ignore: bool) -> np.ndarray:
    """Map a label map to {0, 1, 255}: ``fg_value`` -> 1, 255 kept only when ``use_ignore``."""
    out = (label == fg_value).astype(np.uint8)
    if use_ignore:
        out[label == IGNORE_LABEL] = IGNORE_LABEL
    return out


def binary_support_mask(label: np.ndarray, fg_value: int) -> np.ndarray:
    """Map a label map to {0, 1}: ``fg_value`` -> 1, everything else (ignore included) -> 0."""
    return (label == fg_value).astype(np.uint8)


def make_episode(query_img, query_mask: np.ndarray, support_imgs: Sequence, support_masks: Sequence,
                 class_id: int, query_name: str, support_names: Sequence[str], size: int) -> dict:
    """Assemble an episode dict from uint8 images and already-binarised masks."""
    q_mask = resize_mask(query_mask, size)
    s_imgs = torch.stack([image_to_tensor(im, size) for im in support_imgs])
    s_masks = torch.stack([resize_mask(m, size) for m in support_masks])
    s_masks = (s_masks == 1).float()
    return {
        "query_img": image_to_tensor(query_img, size),
        "query_mask": q_mask,
        "support_imgs": s_imgs,
        "support_masks": s_masks,
        "class_id": torch.tensor(int(class_id), dtype=torch.int64),
        "query_name": str(query_name),
        "support_names": [str(n) for n in support_names],
    }


def check_split(split: str) -> str:
    """Validate a split name."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def episode_rng(seed: int | None, index: int, salt: int = 0) -> np.random.Generator:
    """A generator for one episode: deterministic from (seed, index, salt), or fresh if seed is None."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([int(seed) + int(index), int(salt)])


def sample_supports(rng: np.random.Generator, pool: Sequence[str], query: str, shot: int) -> list[str]:
    """Pick ``shot`` distinct names from ``pool``, none equal to ``query``."""
    candidates = [p for p in pool if p != query]
    if len(candidates) < shot:
        raise ValueError(f"need {shot} support images besides '{query}', only {len(candidates)} available")
    picks = rng.choice(len(candidates), size=shot, replace=False)
    return [candidates[i] for i in picks]


class FewShotDataset(Dataset):
    """Common attributes: ``fold, split, shot, img_size, use_ignore, class_ids, n_classes``."""

    n_classes: int = 0

    def __init__(self, fold: int, split: str, shot: int, img_size: int, use_ignore: bool):
        if shot < 1:
            raise ValueError(f"shot must be >= 1, got {shot}")
        self.fold = int(fold)
        self.split = check_split(split)
        self.shot = int(shot)
        self.img_size = int(img_size)
        self.use_ignore = bool(use_ignore)
        self.class_ids: list[int] = []
