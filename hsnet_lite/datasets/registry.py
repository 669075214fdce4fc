"""Build datasets by name and list the classes of a fold without loading any data."""
from __future__ import annotations

from .coco import CocoDataset, coco_fold_classes
from .embedded import EmbeddedDataset, fold_classes as embedded_fold_classes
from .fss import FssDataset, split_fss_classes
from .pascal import PascalDataset, pascal_fold_classes

DATASETS = {"pascal": PascalDataset, "coco": CocoDataset, "fss": FssDataset, "embedded": EmbeddedDataset}
N_CLASSES = {"pascal": 20, "coco": 80, "fss": 1000, "embedded": 20}
DEFAULT_IMG_SIZE = {"pascal": 400, "coco": 400, "fss": 400, "embedded": 128}


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return name


def build_dataset(name: str, root=None, fold: int = 0, split: str = "trn", shot: int = 1,
                  img_size: int | None = None, **kw):
    """Instantiate dataset ``name`` ("pascal", "coco", "fss", "embedded").

    ``img_size=None`` uses the dataset's default (400, or 128 for "embedded"); extra keyword
    arguments (``use_ignore``, ``split_dir``, ``n_episodes``, ``seed``) are passed through.
    """
    cls = DATASETS[_check_name(name)]
    if root is None and name != "embedded":
        raise ValueError(f"dataset {name!r} needs root= (the folder holding its official layout)")
    size = DEFAULT_IMG_SIZE[name] if img_size is None else int(img_size)
    return cls(root, fold=fold, split=split, shot=shot, img_size=size, **kw)


def classes_in_fold(name: str, fold: int, split: str, root=None, split_dir=None) -> list[int]:
    """0-based class indices used by ``split`` of ``fold``.

    For "fss" the indices refer to the sorted class folders; given ``root`` (and optionally
    ``split_dir``) they are read from the data, otherwise the full 1000-class data and the
    derived split of :func:`split_fss_classes` are assumed.
    """
    _check_name(name)
    if name == "pascal":
        return pascal_fold_classes(fold, split)
    if name == "coco":
        return coco_fold_classes(fold, split)
    if name == "embedded":
        return embedded_fold_classes(fold, split)
    if root is not None:
        return list(FssDataset(root, fold=fold, split=split, split_dir=split_dir).class_ids)
    names = [f"{i:04d}" for i in range(N_CLASSES["fss"])]
    return [int(n) for n in split_fss_classes(names)[split]]
