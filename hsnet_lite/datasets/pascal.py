"""PASCAL-5i: 20 VOC classes in 4 folds; fold i tests VOC ids 5i+1..5i+5 and trains on the rest.

Layout: ``<root>/VOC2012/JPEGImages/*.jpg`` and ``<root>/VOC2012/SegmentationClassAug/*.png``
(label = VOC id 1..20, 0 background, 255 boundary/ignore).

Episode lists. With ``split_dir`` the authors' ``pascal/{trn,val}/fold{i}.txt`` lists are used
(lines ``<image>__<1-based class id>``; ``test`` reads the ``val`` list). Without it the lists are
derived deterministically from the masks: validation images are those named in
``VOC2012/ImageSets/Segmentation/val.txt`` (the official VOC 2012 val set), training images are
all other masks in ``SegmentationClassAug``. An image belongs to class ``c`` when its mask
contains label ``c``; for a split, the (image, class) pairs of the fold's classes are listed in
sorted image-name order, then class order (objects of other classes stay background).

Protocol. Episode ``i`` uses ``metadata[i % len(metadata)]`` as query and draws ``shot`` distinct
supports of the same class (never the query) from a generator seeded with ``(seed + i, salt)``.
``val``/``test`` default to 1000 episodes with seed 0 (fixed); ``trn`` defaults to one episode
per (image, class) pair with fresh randomness.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import (FewShotDataset, binary_query_mask, binary_support_mask, episode_rng, make_episode,
                   sample_supports)
from .errors import DatasetNotFoundError, require_dir, require_file
from .readers import read_label, read_rgb
from .splits import list_split_name, resolve_split_file

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
HOW_TO_GET = ("download PASCAL VOC 2012 (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"
              "VOCtrainval_11-May-2012.tar) and the SBD-augmented masks 'SegmentationClassAug' "
              "(linked from https://github.com/juhongm999/hsnet), and arrange them as "
              "<root>/VOC2012/{JPEGImages,SegmentationClassAug}; "
              "`python -m hsnet_lite.datasets.download --dataset pascal --root <root>` helps.")


def pascal_fold_classes(fold: int, split: str) -> list[int]:
    """0-based class indices: val/test -> 5*fold..5*fold+4; trn -> the other 15."""
    if not 0 <= fold < 4:
        raise ValueError(f"PASCAL-5i fold must be in 0..3, got {fold}")
    test = list(range(5 * fold, 5 * fold + 5))
    return test if split in ("val", "test") else [c for c in range(20) if c not in test]


def read_pascal_list(path: Path) -> list[tuple[str, int]]:
    """Parse an authors' list file into (image name, 0-based class) pairs."""
    pairs = []
    for line in Path(path).read_text().split():
        name, cls = line.rsplit("__", 1)
        pairs.append((name, int(cls) - 1))
    return pairs


class PascalDataset(FewShotDataset):
    """PASCAL-5i few-shot episodes (see the module docstring for lists and protocol)."""

    n_classes = 20

    def __init__(self, root, fold: int = 0, split: str = "trn", shot: int = 1, img_size: int = 400,
                 use_ignore: bool = True, split_dir=None, n_episodes: int | None = None,
                 seed: int | None = None):
        super().__init__(fold, split, shot, img_size, use_ignore)
        self.base = Path(root) / "VOC2012"
        self.img_dir = require_dir("PASCAL-5i", self.base / "JPEGImages", HOW_TO_GET, "*.jpg")
        self.ann_dir = require_dir("PASCAL-5i", self.base / "SegmentationClassAug", HOW_TO_GET, "*.png")
        self.class_ids = pascal_fold_classes(self.fold, split)
        self.class_names = [VOC_CLASSES[c] for c in self.class_ids]
        pairs = self._list_pairs(split_dir)
        self.metadata = [(n, c) for n, c in pairs if c in self.class_ids]
        self.by_class = {c: sorted({n for n, k in self.metadata if k == c}) for c in self.class_ids}
        if not self.metadata:
            raise DatasetNotFoundError("PASCAL-5i", self.ann_dir, HOW_TO_GET,
                                       f"No image holds a class of fold {fold} ({split}).")
        fixed = split != "trn"
        self.n_episodes = int(n_episodes) if n_episodes else (1000 if fixed else len(self.metadata))
        self.seed = seed if seed is not None else (0 if fixed else None)

    def _list_pairs(self, split_dir) -> list[tuple[str, int]]:
        if split_dir is not None:
            rel = f"{list_split_name(self.split)}/fold{self.fold}.txt"
            return read_pascal_list(resolve_split_file(split_dir, "pascal", rel))
        val_file = require_file("PASCAL-5i", self.base / "ImageSets" / "Segmentation" / "val.txt",
                                HOW_TO_GET + " (ImageSets/Segmentation/val.txt ships with VOC 2012; "
                                "or pass split_dir= with the authors' split lists)")
        val_names = set(val_file.read_text().split())
        names = sorted(p.stem for p in self.ann_dir.glob("*.png"))
        names = [n for n in names if (n in val_names) == (self.split != "trn")]
        pairs = []
        for name in names:
            labels = np.unique(read_label(self.ann_dir / f"{name}.png"))
            pairs += [(name, int(v) - 1) for v in labels if 1 <= v <= 20]
        return pairs

    def __len__(self) -> int:
        return self.n_episodes

    def _load(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        img = require_file("PASCAL-5i", self.img_dir / f"{name}.jpg", HOW_TO_GET)
        ann = require_file("PASCAL-5i", self.ann_dir / f"{name}.png", HOW_TO_GET)
        return read_rgb(img), read_label(ann)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        name, cls = self.metadata[index % len(self.metadata)]
        rng = episode_rng(self.seed, index, salt=100 + self.fold)
        support_names = sample_supports(rng, self.by_class[cls], name, self.shot)
        q_img, q_lab = self._load(name)
        supports = [self._load(n) for n in support_names]
        return make_episode(q_img, binary_query_mask(q_lab, cls + 1, self.use_ignore),
                            [s[0] for s in supports], [binary_support_mask(s[1], cls + 1) for s in supports],
                            cls, name, support_names, self.img_size)
