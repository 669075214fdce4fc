"""FSS-1000: 1000 classes, 520 train / 240 val / 240 test, 10 images per class.

Layout: ``<root>/FSS-1000/<class>/{1..10}.jpg`` with masks ``{1..10}.png`` (binarised at 128).

Class split. With ``split_dir`` the authors' ``fss/{trn,val,test}.txt`` (one class name per
line) are used. Without it the split is derived deterministically: the class folder names are
sorted, permuted by ``numpy.random.default_rng(0).permutation``, and the first 52% (rounded)
form ``trn``, the next 24% ``val``, the rest ``test`` (520/240/240 for 1000 classes). This is
NOT the authors' split; pass their lists to reproduce the paper's numbers.

Class indices are positions in the sorted list of all class folders (``n_classes`` = their
count). Protocol: every image of the split's classes is a query once (2,400 test episodes for
the full data); episode ``i``'s ``shot`` distinct supports come from the same class, drawn with a
generator seeded by ``(seed + i, salt)`` (seed 0 for val/test, fresh randomness for trn).
The ``fold`` argument is accepted for interface compatibility and ignored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import FewShotDataset, episode_rng, make_episode, sample_supports
from .errors import DatasetNotFoundError, require_dir, require_file
from .readers import read_gray, read_rgb
from .splits import resolve_split_file

HOW_TO_GET = ("download FSS-1000 (project page https://github.com/HKUSTCV/FSS-1000; the prepared "
              "copy is linked from https://github.com/juhongm999/hsnet) and unpack it as "
              "<root>/FSS-1000/<class>/{1..10}.{jpg,png}.")
SPLIT_FRACTIONS = (0.52, 0.24)


def split_fss_classes(names, seed: int = 0) -> dict[str, list[str]]:
    """Deterministic 52/24/24 split of class names (sorted, then a seeded permutation)."""
    names = sorted(names)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n_trn = int(round(len(names) * SPLIT_FRACTIONS[0]))
    n_val = int(round(len(names) * SPLIT_FRACTIONS[1]))
    return {"trn": sorted(order[:n_trn]), "val": sorted(order[n_trn:n_trn + n_val]),
            "test": sorted(order[n_trn + n_val:])}


def _image_key(path: Path):
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


class FssDataset(FewShotDataset):
    """FSS-1000 few-shot episodes (see the module docstring for the split and protocol)."""

    def __init__(self, root, fold: int = 0, split: str = "trn", shot: int = 1, img_size: int = 400,
                 use_ignore: bool = True, split_dir=None, n_episodes: int | None = None,
                 seed: int | None = None):
        super().__init__(fold, split, shot, img_size, use_ignore)
        self.base = require_dir("FSS-1000", Path(root) / "FSS-1000", HOW_TO_GET, "*/*.png")
        self.all_classes = sorted(p.name for p in self.base.iterdir() if p.is_dir())
        self.n_classes = len(self.all_classes)
        names = self._split_names(split_dir)
        index = {n: i for i, n in enumerate(self.all_classes)}
        missing = [n for n in names if n not in index]
        if missing:
            raise DatasetNotFoundError("FSS-1000", self.base / missing[0], HOW_TO_GET,
                                       f"{len(missing)} class folders of the '{split}' list are missing.")
        self.class_ids = sorted(index[n] for n in names)
        self.class_names = [self.all_classes[c] for c in self.class_ids]
        self.by_class = {c: [p.stem for p in sorted(self.base.glob(f"{self.all_classes[c]}/*.jpg"), key=_image_key)]
                         for c in self.class_ids}
        self.queries = [(c, n) for c in self.class_ids for n in self.by_class[c]]
        self.n_episodes = int(n_episodes) if n_episodes else len(self.queries)
        self.seed = seed if seed is not None else (None if split == "trn" else 0)

    def _split_names(self, split_dir) -> list[str]:
        if split_dir is not None:
            return resolve_split_file(split_dir, "fss", f"{self.split}.txt").read_text().split()
        return split_fss_classes(self.all_classes)[self.split]

    def __len__(self) -> int:
        return self.n_episodes

    def _load(self, cls: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        folder = self.base / self.all_classes[cls]
        img = read_rgb(require_file("FSS-1000", folder / f"{name}.jpg", HOW_TO_GET))
        mask = read_gray(require_file("FSS-1000", folder / f"{name}.png", HOW_TO_GET))
        return img, (mask >= 128).astype(np.uint8)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        cls, name = self.queries[index % len(self.queries)]
        rng = episode_rng(self.seed, index, salt=300)
        support_names = sample_supports(rng, self.by_class[cls], name, self.shot)
        q_img, q_mask = self._load(cls, name)
        supports = [self._load(cls, n) for n in support_names]
        prefix = self.all_classes[cls]
        return make_episode(q_img, q_mask, [s[0] for s in supports], [s[1] for s in supports], cls,
                            f"{prefix}/{name}", [f"{prefix}/{n}" for n in support_names], self.img_size)
