"""Few-shot segmentation datasets sharing one episode interface (see :mod:`.base`)."""
from .base import IGNORE_LABEL, FewShotDataset, make_episode
from .coco import CocoDataset, coco_fold_classes
from .download import ChecksumError, download, extract_archive
from .embedded import (CLASS_NAMES as EMBEDDED_CLASS_NAMES, EmbeddedDataset, generate_fixed_arrays,
                       load_fixed_arrays, load_fixed_episodes, render_class_gallery, write_fixed)
from .errors import DatasetNotFoundError
from .fss import FssDataset, split_fss_classes
from .pascal import VOC_CLASSES, PascalDataset, pascal_fold_classes
from .registry import DATASETS, N_CLASSES, build_dataset, classes_in_fold
from .transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize, image_to_tensor, resize_mask

__all__ = [
    "IGNORE_LABEL", "FewShotDataset", "make_episode", "CocoDataset", "coco_fold_classes",
    "ChecksumError", "download", "extract_archive", "EMBEDDED_CLASS_NAMES", "EmbeddedDataset",
    "generate_fixed_arrays", "load_fixed_arrays", "load_fixed_episodes", "render_class_gallery",
    "write_fixed", "DatasetNotFoundError", "FssDataset", "split_fss_classes", "VOC_CLASSES",
    "PascalDataset", "pascal_fold_classes", "DATASETS", "N_CLASSES", "build_dataset",
    "classes_in_fold", "IMAGENET_MEAN", "IMAGENET_STD", "denormalize", "image_to_tensor",
    "resize_mask",
]
