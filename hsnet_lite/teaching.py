"""Helpers the teaching notebooks share: exercise checks, figure saving, feature-shape tables.

Every notebook ends with an exercise. The learner writes an answer into a variable and runs
``check_answer("<exercise id>", answer)``: the expected value is computed here from the
package itself (never typed in by hand), so the check stays true if the package changes.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

FIGURES_ENV = "HSNET_LITE_FIGURES"
REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- figures


def figures_dir() -> Path:
    """Where notebooks save figures: ``$HSNET_LITE_FIGURES`` if set, else ``<repo>/figures``."""
    path = Path(os.environ.get(FIGURES_ENV) or REPO_ROOT / "figures")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, name: str, dpi: int = 100) -> str:
    """Save ``fig`` as ``figures/<name>`` (PNG, fixed dpi) and return the repo-relative name.

    The returned text never holds an absolute path, so a notebook can print it under nbval.
    """
    if not name.endswith(".png"):
        raise ValueError(f"figures are saved as PNG; got {name!r}")
    fig.savefig(figures_dir() / name, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return f"figures/{name}"


# ---------------------------------------------------------------- exercises


@dataclass(frozen=True)
class Exercise:
    """One notebook exercise: a question and a function computing its answer from the package."""

    question: str
    solve: Callable[[], Any]
    hint: str


def _fold_2_pascal_test_names() -> list[str]:
    from .datasets import VOC_CLASSES, pascal_fold_classes

    return [VOC_CLASSES[c] for c in pascal_fold_classes(2, "test")]


def _embedded_support_mask_shape() -> tuple[int, ...]:
    from .datasets import load_fixed_episodes

    return tuple(load_fixed_episodes(fold=1, shot=3)[0]["support_masks"].shape)


def _resnet50_level_sizes_320() -> list[int]:
    from .backbones import build_backbone

    with torch.no_grad():
        feats = build_backbone("resnet50", weights=None)(torch.zeros(1, 3, 320, 320))
    return sorted({f.shape[-1] for f in feats}, reverse=True)


def _vgg16_c1_megabytes() -> float:
    from .costs import hypercorrelation_bytes

    return round(hypercorrelation_bytes({1: 3}, {1: 50})[1] / 2**20, 1)


def _cp_params_5533() -> int:
    from .conv4d import CenterPivotConv4d

    return sum(p.numel() for p in CenterPivotConv4d(16, 64, (5, 5, 3, 3)).parameters())


def _squeeze_trace_256() -> list[int]:
    from .shape_trace import squeeze_support_trace

    return squeeze_support_trace(1, 32)


def _vote_example() -> list[list[int]]:
    from .model import kshot_vote

    return kshot_vote(VOTE_EXAMPLE.unsqueeze(0))[0].tolist()


# Five 1-shot predictions (K = 5) of a 2x3 query, for the exercise of notebook 06.
VOTE_EXAMPLE = torch.tensor([
    [[1, 1, 0], [0, 0, 0]],
    [[1, 1, 0], [1, 0, 0]],
    [[1, 0, 0], [1, 0, 1]],
    [[1, 1, 0], [0, 0, 0]],
    [[0, 1, 0], [1, 0, 0]],
])


def _miou_areas_example() -> float:
    from .metrics import FewShotMeter
    from .training_viz import masks_from_areas

    meter = FewShotMeter({c for c, *_ in MIOU_EXAMPLE})
    for cls, gt, pred, overlap in MIOU_EXAMPLE:
        p, g = masks_from_areas(gt, pred, overlap)
        meter.update(p[None], g[None], [cls])
    return round(meter.miou(), 1)


def _vote_pixels_abc() -> list[str]:
    from .model import kshot_vote
    votes = torch.tensor([[[[1, 1, 1]], [[1, 1, 0]], [[1, 0, 0]]]])  # (B=1, K=3, H=1, W=3): pixels A, B, C
    return [name for name, on in zip("ABC", kshot_vote(votes)[0, 0].tolist()) if on]


def _deep_channels_resnet101() -> tuple[int, ...]:
    from .model import HSNet
    levels = HSNet("resnet101", weights=None, layers="deep").feature_levels
    return tuple(levels.count(p) for p in (1, 2, 3))


def _params_levels_23() -> int:
    from .model import HSNet
    return HSNet("resnet101", weights=None, levels=(2, 3)).learnable_parameters()


def _ignore_label_ious() -> tuple[float, ...]:
    from .metrics import area_stats
    pred, gt = torch.tensor([[[1, 1, 0, 0]]]), torch.tensor([[[1, 255, 0, 0]]])
    return tuple(round(100 * float(inter[0, 1] / union[0, 1]), 1)
                 for inter, union in (area_stats(pred, gt, 255), area_stats(pred, gt, None)))


def _complement_changes_unmasked_correlation() -> bool:
    from .model import HSNet
    model = HSNet("efficientnet-lite0", weights=None, use_support_mask=False).eval()
    g = torch.Generator().manual_seed(0)
    q, s = torch.randn(1, 3, 64, 64, generator=g), torch.randn(1, 1, 3, 64, 64, generator=g)
    m = (torch.rand(1, 1, 64, 64, generator=g) > 0.5).float()
    with torch.no_grad():
        a, b = model.hypercorrelation(q, s, m), model.hypercorrelation(q, s, 1 - m)
    return not all(torch.equal(a[p], b[p]) for p in a)


# Four 10x10 query episodes for the exercise of notebook 07:
# (class id, object pixels, predicted pixels, overlap of the two).
MIOU_EXAMPLE = ((0, 40, 30, 30), (0, 10, 0, 0), (1, 8, 17, 5), (1, 48, 47, 45))

EXERCISES: dict[str, Exercise] = {
    "01-pascal-fold2": Exercise(
        "Which VOC class names does PASCAL-5i fold 2 test on (a list of 5 names)?",
        _fold_2_pascal_test_names, "fold i tests VOC ids 5i+1..5i+5; VOC_CLASSES is 0-based"),
    "01-support-mask-shape": Exercise(
        "The shape (a tuple) of episode['support_masks'] for load_fixed_episodes(fold=1, shot=3)?",
        _embedded_support_mask_shape, "K masks of the episode's image size, one per support"),
    "02-resnet50-sizes-320": Exercise(
        "The spatial sizes [level 1, level 2, level 3] of ResNet50's features for a 320x320 image?",
        _resnet50_level_sizes_320, "strides 8, 16 and 32; a stride-2 conv rounds up"),
    "03-vgg16-c1-mb": Exercise(
        "The memory (MiB, float32, one decimal) of C_1 for VGG16 at 400x400?",
        _vgg16_c1_megabytes, "|L_1| (H_1 W_1)^2 numbers of 4 bytes; 1 MiB = 2**20 bytes"),
    "04-cp-params": Exercise(
        "How many learnable numbers (weights and biases) has CenterPivotConv4d(16, 64, (5, 5, 3, 3))?",
        _cp_params_5533, "one 2D kernel over the query dims (5x5), one over the support dims (3x3), two biases"),
    "05-squeeze-256": Exercise(
        "For a 256x256 image (level-1 size 32), the support size after each of f1's three layers?",
        _squeeze_trace_256, "floor((n + 2 (k//2) - k) / s) + 1 with f1's kernels 5, 5, 3 and strides 4, 4, 2"),
    "06-kshot-vote": Exercise(
        "The 2x3 mask (a list of lists of 0/1) that the K-shot vote makes of VOTE_EXAMPLE?",
        _vote_example, "sum the votes, divide by the largest sum, keep pixels >= 0.5"),
    "07-miou-areas": Exercise(
        "The paper's mIoU (percent, one decimal) of the four episodes of MIOU_EXAMPLE?",
        _miou_areas_example, "per class, sum the intersections and the unions over its episodes and divide, "
        "then average the classes' IoUs (not the mean of the episodes' IoUs)"),
    "08-vote-pixels": Exercise(
        "Three 1-shot predictions mark pixel A in all three masks, B in two and C in one: which pixels "
        "does the vote keep (a list of names)?",
        _vote_pixels_abc, "the top vote is 3; the vote keeps pixels with at least half of it"),
    "09-deep-channels": Exercise(
        "The correlation channels (n1, n2, n3) that each level's first squeezing layer receives for "
        "ResNet101 with layers='deep'?",
        _deep_channels_resnet101, "C_p^deep keeps one layer per level (the last one)"),
    "10-params-levels-23": Exercise(
        "How many learnable parameters has HSNet('resnet101', weights=None, levels=(2, 3))?",
        _params_levels_23, "two squeezing blocks, one mixing block and the decoder (Tables S5-S7)"),
    "11-ignore-label-iou": Exercise(
        "Ground truth [1, 255, 0, 0], prediction [1, 1, 0, 0]: the foreground IoU in percent with the "
        "ignore label and without it (a tuple)?",
        _ignore_label_ious, "with it, the 255 pixel leaves both areas; without it, it is background "
        "that the prediction marks as object"),
    "12-no-mask-complement": Exercise(
        "Without support masking, does the hypercorrelation change when the support mask is replaced "
        "by its complement (True or False)?",
        _complement_changes_unmasked_correlation, "the mask enters HSNet only through Eq. 1"),
}


def _same(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, torch.Tensor):
        a = a.tolist()
    if isinstance(a, np.ndarray):
        a = a.tolist()
    if isinstance(b, float) or isinstance(a, float):
        try:
            return math.isclose(float(a), float(b), abs_tol=tol)
        except (TypeError, ValueError):
            return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b))
    return a == b


def check_answer(exercise: str, answer: Any, tol: float = 0.05) -> None:
    """Check a learner's answer and print the verdict (returns nothing, so a notebook cell
    ending with it shows only the printed line).

    ``answer=None`` means "not tried yet": the question is printed and nothing is checked, so
    a notebook still runs top to bottom. A wrong answer raises ``AssertionError`` with a hint.
    """
    if exercise not in EXERCISES:
        raise KeyError(f"unknown exercise {exercise!r}; known: {sorted(EXERCISES)}")
    ex = EXERCISES[exercise]
    if answer is None:
        print(f"Exercise {exercise}: {ex.question}\nNot answered yet: replace None with your answer.")
        return
    expected = ex.solve()
    if not _same(answer, expected, tol):
        raise AssertionError(f"Exercise {exercise}: {answer!r} is not right. Hint: {ex.hint}.")
    print(f"Exercise {exercise}: correct, {answer!r}.")


# ---------------------------------------------------------------- feature pyramids


@dataclass
class LevelRow:
    """Features of one pyramid level: shape of each feature and how many there are."""

    level: int
    shapes: list[tuple[int, ...]]

    @property
    def summary(self) -> str:
        groups: list[list] = []
        for s in reversed(self.shapes):  # deepest first, as the tables list them
            if groups and groups[-1][0] == s:
                groups[-1][1] += 1
            else:
                groups.append([s, 1])
        return ", ".join(f"{s} x {n}" for s, n in groups)


@torch.no_grad()
def feature_pyramid(backbone, img_size: int = 400) -> list[LevelRow]:
    """Run a blank image through ``backbone`` and group its features by pyramid level 3, 2, 1."""
    feats = backbone(torch.zeros(1, 3, img_size, img_size))
    rows = []
    for p in (3, 2, 1):
        shapes = [tuple(f.shape[1:]) for f, lv in zip(feats, backbone.feature_levels) if lv == p]
        rows.append(LevelRow(p, shapes))
    return rows


def matches_paper(rows: list[LevelRow], backbone_name: str) -> bool:
    """True when every level has the number and shape of features of Tables S5-S7."""
    from .paper_architecture import FEATURES

    want = FEATURES[backbone_name]
    return all(row.shapes == [want[row.level][0]] * want[row.level][1] for row in rows)
