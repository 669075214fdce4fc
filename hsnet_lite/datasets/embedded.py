"""The embedded procedural benchmark: 20 classes, 4 folds of 5, generated offline with numpy.

Folds follow PASCAL-5i: fold ``i`` tests classes ``5i..5i+4`` (0-based) and trains on the
other 15. ``trn`` episodes come from the per-index seed ``seed + index`` (plus an epoch offset
set by :meth:`EmbeddedDataset.set_epoch`); ``val`` and ``test`` episodes use fixed, distinct
seeds so episode ``i`` is always identical. Query scenes hold 1-3 target instances and 1-3
objects of other classes (for ``trn``, distractors are drawn from the training classes only,
so test classes never appear while training); support scenes hold 1-2 target instances.

Run ``python -m hsnet_lite.datasets.embedded --write-fixed`` to (re)write the small fixed
episode files in ``data/embedded/``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .base import FewShotDataset, make_episode
from .synth.scene import CLASS_SPECS, N_CLASSES, render_scene, sample_instance, paint_instance
from .synth.background import smooth_noise

N_FOLDS = 4
CLASSES_PER_FOLD = N_CLASSES // N_FOLDS
CLASS_NAMES = tuple(spec.name for spec in CLASS_SPECS)
SPLIT_SALT = {"trn": 11, "val": 23, "test": 37}
FIXED_DIR = Path(__file__).resolve().parents[2] / "data" / "embedded"
FIXED_EPISODES, FIXED_MAX_SHOT, FIXED_SIZE = 8, 5, 128
IMAGE_KEYS = ("query", "support")


def fold_classes(fold: int, split: str) -> list[int]:
    """0-based class ids of ``split`` in ``fold``: val/test get 5i..5i+4, trn the other 15."""
    if not 0 <= fold < N_FOLDS:
        raise ValueError(f"fold must be in 0..{N_FOLDS - 1}, got {fold}")
    test = list(range(fold * CLASSES_PER_FOLD, (fold + 1) * CLASSES_PER_FOLD))
    return test if split in ("val", "test") else [c for c in range(N_CLASSES) if c not in test]


def _image_seeds(rng: np.random.Generator, count: int) -> list[int]:
    return [int(rng.integers(0, 2 ** 62)) for _ in range(count)]


def render_episode_arrays(rng: np.random.Generator, cls: int, shot: int, size: int,
                          distractor_pool: list[int]) -> dict:
    """Render one episode as uint8 arrays.

    The query is drawn first, then supports one by one from their own seeds, so the first
    ``k`` supports of a ``K``-shot episode equal the supports of the ``k``-shot episode.
    """
    seeds = _image_seeds(rng, 1 + shot)
    pool = [c for c in distractor_pool if c != cls]
    q_rng = np.random.default_rng(seeds[0])
    n_targets = int(q_rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    n_distract = int(q_rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    query, q_mask = render_scene(q_rng, cls, size, n_targets, list(q_rng.choice(pool, n_distract)))
    supports, s_masks = [], []
    for seed in seeds[1:]:
        s_rng = np.random.default_rng(seed)
        n_t = int(s_rng.choice([1, 2], p=[0.85, 0.15]))
        n_d = int(s_rng.integers(0, 3))
        img, mask = render_scene(s_rng, cls, size, n_t, list(s_rng.choice(pool, n_d)), min_visible=0.6)
        supports.append(img)
        s_masks.append(mask)
    return {"query": query, "query_mask": q_mask, "support": np.stack(supports),
            "support_mask": np.stack(s_masks), "class_id": np.int64(cls)}


class EmbeddedDataset(FewShotDataset):
    """Procedural few-shot benchmark (no files). See the module docstring for the protocol."""

    n_classes = N_CLASSES

    def __init__(self, root=None, fold: int = 0, split: str = "trn", shot: int = 1,
                 img_size: int = 128, use_ignore: bool = True, n_episodes: int = 1000,
                 seed: int = 0, boundary: int = 0):
        super().__init__(fold, split, shot, img_size, use_ignore)
        if boundary < 0:
            raise ValueError(f"boundary must be >= 0 pixels, got {boundary}")
        self.boundary = int(boundary)
        self.class_ids = fold_classes(self.fold, split)
        self.class_names = [CLASS_NAMES[c] for c in self.class_ids]
        self.n_episodes = int(n_episodes)
        self.seed = int(seed)
        self.epoch = 0
        pool = self.class_ids if split == "trn" else list(range(N_CLASSES))
        self.distractor_pool = pool

    def __len__(self) -> int:
        return self.n_episodes

    def set_epoch(self, epoch: int) -> None:
        """For ``trn``: shift the episode seeds so each epoch sees new episodes."""
        self.epoch = int(epoch)

    def episode_arrays(self, index: int) -> dict:
        """The raw uint8 arrays of episode ``index`` (same randomness as ``self[index]``)."""
        offset = self.epoch * self.n_episodes if self.split == "trn" else 0
        salt = SPLIT_SALT[self.split] * 100 + self.fold
        rng = np.random.default_rng([self.seed + offset + int(index), salt])
        if self.split == "trn":
            cls = self.class_ids[int(rng.integers(len(self.class_ids)))]
        else:
            cls = self.class_ids[int(index) % len(self.class_ids)]
        return render_episode_arrays(rng, cls, self.shot, self.img_size, self.distractor_pool)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        arr = self.episode_arrays(index)
        if self.boundary:
            arr["query_mask"] = with_boundary_band(arr["query_mask"], self.boundary, self.use_ignore)
        return arrays_to_episode(arr, self.img_size, self.shot,
                                 f"embedded/{self.split}/fold{self.fold}/ep{index:06d}")


def with_boundary_band(mask: np.ndarray, width: int, use_ignore: bool = True) -> np.ndarray:
    """Mark a band of ``width`` pixels on each side of the object outline as 255, like the
    boundary annotations of PASCAL VOC (the ignore label of Table S4). Without ``use_ignore``
    the band counts as background, as PASCAL's 255 pixels do when the ignore label is unused."""
    from skimage.morphology import dilation, disk, erosion

    fg = mask == 1
    band = dilation(fg, disk(width)).astype(bool) & ~erosion(fg, disk(width)).astype(bool)
    out = mask.copy()
    out[band] = 255 if use_ignore else 0
    return out


def arrays_to_episode(arr: dict, size: int, shot: int, name: str) -> dict:
    """Convert :func:`render_episode_arrays` output to the episode dict (first ``shot`` supports)."""
    return make_episode(arr["query"], arr["query_mask"], arr["support"][:shot], arr["support_mask"][:shot],
                        int(arr["class_id"]), f"{name}/query",
                        [f"{name}/support{k}" for k in range(shot)], size)


def generate_fixed_arrays(fold: int, n_episodes: int = FIXED_EPISODES) -> dict:
    """The fixed episodes of ``fold``: ``test`` episodes 0..n-1, 5-shot, 128x128, stacked uint8."""
    ds = EmbeddedDataset(fold=fold, split="test", shot=FIXED_MAX_SHOT, img_size=FIXED_SIZE,
                         n_episodes=n_episodes)
    eps = [ds.episode_arrays(i) for i in range(n_episodes)]
    return {key: np.stack([e[key] for e in eps]) for key in eps[0]}


def fixed_path(fold: int, directory: Path | None = None) -> Path:
    """Location of ``episodes_fold{fold}.npz``."""
    return Path(directory or FIXED_DIR) / f"episodes_fold{fold}.npz"


def sub_filter(img: np.ndarray) -> np.ndarray:
    """PNG-style 'Sub' filter along image rows (uint8, wraps mod 256): compresses ~1.7x better."""
    return np.diff(img, axis=-2, prepend=np.zeros_like(img[..., :1, :])).astype(np.uint8)


def unsub_filter(coded: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`sub_filter`."""
    return np.cumsum(coded, axis=-2, dtype=np.uint8)


def write_fixed(directory: Path | None = None, folds=range(N_FOLDS)) -> list[Path]:
    """Write the fixed episode files (compressed npz; images Sub-filtered) and return their paths."""
    paths = []
    for fold in folds:
        arr = generate_fixed_arrays(fold)
        for key in IMAGE_KEYS:
            arr[key] = sub_filter(arr[key])
        path = fixed_path(fold, directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **arr)
        paths.append(path)
    return paths


def load_fixed_arrays(fold: int, directory: Path | None = None) -> dict:
    """Load the stored uint8 arrays of ``fold`` (keys query, query_mask, support, support_mask,
    class_id); regenerate them in memory if the file is absent."""
    path = fixed_path(fold, directory)
    if not path.is_file():
        return generate_fixed_arrays(fold)
    with np.load(path) as data:
        arr = {key: data[key] for key in data.files}
    for key in IMAGE_KEYS:
        arr[key] = unsub_filter(arr[key])
    return arr


def load_fixed_episodes(fold: int, shot: int = 1, img_size: int = FIXED_SIZE,
                        directory: Path | None = None) -> list[dict]:
    """The fixed episodes of ``fold`` as episode dicts with ``shot`` (<= 5) supports each."""
    if not 1 <= shot <= FIXED_MAX_SHOT:
        raise ValueError(f"shot must be in 1..{FIXED_MAX_SHOT}, got {shot}")
    arr = load_fixed_arrays(fold, directory)
    n = arr["query"].shape[0]
    return [arrays_to_episode({k: v[i] for k, v in arr.items()}, img_size, shot,
                              f"embedded/test/fold{fold}/ep{i:06d}") for i in range(n)]


def render_class_gallery(n_per_class: int = 4, cell: int = 64, seed: int = 0,
                         classes=None) -> np.ndarray:
    """An image grid (uint8, rows = classes, columns = examples) of single class instances."""
    classes = list(range(N_CLASSES)) if classes is None else list(classes)
    rng = np.random.default_rng(seed)
    grid = np.zeros((len(classes) * cell, n_per_class * cell, 3), dtype=np.uint8)
    for row, cls in enumerate(classes):
        for col in range(n_per_class):
            canvas = smooth_noise(rng, cell) * 0.5 + 64
            inst = sample_instance(rng, cls, cell, (0.36, 0.42))
            inst.cy = inst.cx = cell / 2
            paint_instance(canvas, np.zeros((cell, cell), np.int16), inst, 0)
            grid[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] = np.clip(canvas, 0, 255)
    return grid


def main(argv=None) -> None:
    """CLI: ``--write-fixed`` regenerates ``data/embedded/episodes_fold*.npz``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-fixed", action="store_true", help="write the fixed episode files")
    parser.add_argument("--dir", type=Path, default=None, help=f"output folder (default {FIXED_DIR})")
    args = parser.parse_args(argv)
    if not args.write_fixed:
        parser.print_help()
        return
    for path in write_fixed(args.dir):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
