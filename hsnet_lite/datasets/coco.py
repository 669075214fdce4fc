"""COCO-20i: 80 classes in 4 folds; fold i tests 1-based classes {i+1, i+5, i+9, ...}.

Layout: ``<root>/COCO2014/{train2014,val2014}/*.jpg`` and
``<root>/COCO2014/annotations/{train2014,val2014}/*.png`` (label = 1-based class 1..80, 0
background). ``trn`` uses train2014, ``val``/``test`` use val2014.

Episode lists. With ``split_dir`` the authors' ``coco/{trn,val}/fold{i}.pkl`` is used: a dict
mapping the 0-based class index to a list of image names (``test`` reads the ``val`` file);
names may be given as ``train2014/<file>.jpg`` or as a bare file name. (If the keys run 1..80
they are shifted to 0-based.) Without it the lists are derived from the masks: every mask of
the split's folder, in sorted file-name order, is listed under each class label it contains.

Protocol (as the authors'): episode ``i`` draws a class uniformly from the fold's classes (among
those with at least ``shot + 1`` images), a query image of that class and ``shot`` distinct
supports, from a generator seeded with ``(seed + i, salt)``. ``val``/``test`` default to 1000
episodes with seed 0; ``trn`` to one episode per (image, class) pair with fresh randomness.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .base import (FewShotDataset, binary_query_mask, binary_support_mask, episode_rng, make_episode,
                   sample_supports)
from .errors import DatasetNotFoundError, require_dir, require_file
from .readers import read_label, read_rgb
from .splits import list_split_name, resolve_split_file

HOW_TO_GET = ("download COCO 2014 images (http://images.cocodataset.org/zips/train2014.zip and "
              "val2014.zip) and the per-image class-label PNG masks linked from "
              "https://github.com/juhongm999/hsnet, arranged as <root>/COCO2014/{train2014,val2014,"
              "annotations/{train2014,val2014}}; see `python -m hsnet_lite.datasets.download "
              "--dataset coco --root <root>`.")


def coco_fold_classes(fold: int, split: str) -> list[int]:
    """0-based class indices: val/test -> {fold, fold+4, ..., fold+76}; trn -> the other 60."""
    if not 0 <= fold < 4:
        raise ValueError(f"COCO-20i fold must be in 0..3, got {fold}")
    test = [fold + 4 * v for v in range(20)]
    return test if split in ("val", "test") else [c for c in range(80) if c not in test]


def read_coco_pickle(path: Path, image_dir: str) -> dict[int, list[str]]:
    """Load an authors' pickle into {0-based class: ['<image_dir>/<file>.jpg', ...]}."""
    with open(path, "rb") as fh:
        raw = pickle.load(fh)
    shift = 1 if (80 in raw and 0 not in raw) else 0
    return {int(c) - shift: [n if "/" in n else f"{image_dir}/{n}" for n in names]
            for c, names in raw.items()}


class CocoDataset(FewShotDataset):
    """COCO-20i few-shot episodes (see the module docstring for lists and protocol)."""

    n_classes = 80

    def __init__(self, root, fold: int = 0, split: str = "trn", shot: int = 1, img_size: int = 400,
                 use_ignore: bool = True, split_dir=None, n_episodes: int | None = None,
                 seed: int | None = None):
        super().__init__(fold, split, shot, img_size, use_ignore)
        self.base = Path(root) / "COCO2014"
        self.image_dir = "train2014" if split == "trn" else "val2014"
        require_dir("COCO-20i", self.base / self.image_dir, HOW_TO_GET, "*.jpg")
        self.ann_dir = require_dir("COCO-20i", self.base / "annotations" / self.image_dir, HOW_TO_GET, "*.png")
        self.class_ids = coco_fold_classes(self.fold, split)
        by_class = self._class_lists(split_dir)
        self.by_class = {c: sorted(set(by_class.get(c, []))) for c in self.class_ids}
        self.sampled_classes = [c for c in self.class_ids if len(self.by_class[c]) > self.shot]
        if not self.sampled_classes:
            raise DatasetNotFoundError("COCO-20i", self.ann_dir, HOW_TO_GET,
                                       f"No class of fold {fold} ({split}) has {self.shot + 1} images.")
        fixed = split != "trn"
        n_pairs = sum(len(v) for v in self.by_class.values())
        self.n_episodes = int(n_episodes) if n_episodes else (1000 if fixed else n_pairs)
        self.seed = seed if seed is not None else (0 if fixed else None)

    def _class_lists(self, split_dir) -> dict[int, list[str]]:
        if split_dir is not None:
            rel = f"{list_split_name(self.split)}/fold{self.fold}.pkl"
            return read_coco_pickle(resolve_split_file(split_dir, "coco", rel), self.image_dir)
        lists: dict[int, list[str]] = {}
        for path in sorted(self.ann_dir.glob("*.png")):
            for v in np.unique(read_label(path)):
                if 1 <= v <= 80:
                    lists.setdefault(int(v) - 1, []).append(f"{self.image_dir}/{path.stem}.jpg")
        return lists

    def __len__(self) -> int:
        return self.n_episodes

    def _load(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        img = require_file("COCO-20i", self.base / name, HOW_TO_GET)
        ann = require_file("COCO-20i", (self.base / "annotations" / name).with_suffix(".png"), HOW_TO_GET)
        return read_rgb(img), read_label(ann)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = episode_rng(self.seed, index, salt=200 + self.fold)
        cls = self.sampled_classes[int(rng.integers(len(self.sampled_classes)))]
        pool = self.by_class[cls]
        query = pool[int(rng.integers(len(pool)))]
        support_names = sample_supports(rng, pool, query, self.shot)
        q_img, q_lab = self._load(query)
        supports = [self._load(n) for n in support_names]
        return make_episode(q_img, binary_query_mask(q_lab, cls + 1, self.use_ignore),
                            [s[0] for s in supports], [binary_support_mask(s[1], cls + 1) for s in supports],
                            cls, query, support_names, self.img_size)
