"""Plots of episodes, feature maps and correlations for the teaching notebooks (matplotlib)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .datasets import EMBEDDED_CLASS_NAMES, denormalize, render_class_gallery
from .datasets.embedded import N_FOLDS, fold_classes


def _contour(ax, mask, color="yellow"):
    m = np.asarray(mask, dtype=float)
    if m.max() > 0:
        ax.contour(m, levels=[0.5], colors=color, linewidths=1.5)


def _off(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def show_episode(episode: dict, title: str = ""):
    """Query (with its mask outlined) and the K supports (with theirs), one row."""
    k = episode["support_imgs"].shape[0]
    fig, axes = plt.subplots(1, k + 1, figsize=(2.3 * (k + 1), 2.6))
    q_mask = episode["query_mask"].numpy()
    axes[0].imshow(denormalize(episode["query_img"]))
    _contour(axes[0], q_mask == 1, "cyan")
    axes[0].set_title("query (mask to predict)", fontsize=9)
    for i in range(k):
        axes[i + 1].imshow(denormalize(episode["support_imgs"][i]))
        _contour(axes[i + 1], episode["support_masks"][i].numpy())
        axes[i + 1].set_title(f"support {i + 1} + mask", fontsize=9)
    for ax in axes:
        _off(ax)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_class_gallery(n_per_class: int = 3, cell: int = 64, seed: int = 0):
    """The 20 embedded classes, one panel per fold (the 5 classes that fold tests)."""
    fig, axes = plt.subplots(1, N_FOLDS, figsize=(3.2 * N_FOLDS, 5.6))
    for fold, ax in enumerate(axes):
        classes = fold_classes(fold, "test")
        ax.imshow(render_class_gallery(n_per_class, cell, seed, classes))
        ax.set_yticks([cell * (i + 0.5) for i in range(len(classes))])
        ax.set_yticklabels([f"{c}: {EMBEDDED_CLASS_NAMES[c]}" for c in classes], fontsize=8)
        ax.set_xticks([])
        ax.set_title(f"fold {fold}: test classes", fontsize=10)
    fig.tight_layout()
    return fig


def show_photo_episode(support: np.ndarray, support_mask: np.ndarray, query: np.ndarray,
                       query_mask: np.ndarray, titles: Sequence[str] = ("support (left view) + mask",
                                                                         "query (right view), true mask")):
    """A 1-shot episode of real photos: support with its mask, query with the mask to predict."""
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.1))
    for ax, img, mask, title, color in zip(axes, (support, query), (support_mask, query_mask), titles,
                                           ("yellow", "cyan")):
        ax.imshow(img)
        _contour(ax, mask, color)
        ax.set_title(title, fontsize=9)
        _off(ax)
    fig.tight_layout()
    return fig


def feature_energy(feat: torch.Tensor) -> np.ndarray:
    """L2 norm over channels of a (1, C, H, W) or (C, H, W) feature: where it is "active"."""
    f = feat[0] if feat.dim() == 4 else feat
    return f.norm(dim=0).numpy()


def show_feature_pyramid(image: np.ndarray, feats: Sequence[torch.Tensor], levels: Sequence[int],
                         picks: Sequence[int]):
    """The image and, for each chosen feature index, its channel-norm map with size and level."""
    fig, axes = plt.subplots(1, len(picks) + 1, figsize=(2.6 * (len(picks) + 1), 2.6))
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    for ax, i in zip(axes[1:], picks):
        ax.imshow(feature_energy(feats[i]), cmap="viridis")
        c, h, w = feats[i].shape[1:]
        ax.set_title(f"layer {i + 1} (p={levels[i]})\n{c} x {h} x {w}", fontsize=9)
    for ax in axes:
        _off(ax)
    fig.tight_layout()
    return fig


def show_masking(image: np.ndarray, mask: np.ndarray, before: Sequence[torch.Tensor],
                 after: Sequence[torch.Tensor], picks: Sequence[int], levels: Sequence[int]):
    """Eq. 1 on images: for each chosen layer, feature energy before and after masking."""
    n = len(picks)
    fig, axes = plt.subplots(2, n + 1, figsize=(2.6 * (n + 1), 5.0))
    axes[0, 0].imshow(image)
    _contour(axes[0, 0], mask)
    axes[0, 0].set_title("support + mask $M^s$", fontsize=9)
    axes[1, 0].imshow(mask, cmap="gray")
    axes[1, 0].set_title("mask", fontsize=9)
    for col, i in enumerate(picks, start=1):
        e_before, e_after = feature_energy(before[i]), feature_energy(after[i])
        vmax = float(e_before.max())
        axes[0, col].imshow(e_before, cmap="viridis", vmin=0, vmax=vmax)
        axes[0, col].set_title(f"$F^s_{{{i + 1}}}$ (p={levels[i]}) before", fontsize=9)
        axes[1, col].imshow(e_after, cmap="viridis", vmin=0, vmax=vmax)
        axes[1, col].set_title(f"$\\hat F^s_{{{i + 1}}}$ after Eq. 1", fontsize=9)
    for ax in axes.ravel():
        _off(ax)
    fig.tight_layout()
    return fig


def show_correlation_maps(query: np.ndarray, support: np.ndarray, maps: Sequence[np.ndarray],
                          titles: Sequence[str], point: tuple[float, float],
                          match: tuple[float, float] | None = None, peaks: Sequence[tuple[float, float]] | None = None):
    """Query with its point, then each correlation map (upsampled) over the support image."""
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(3.0 * (len(maps) + 1), 2.6))
    axes[0].imshow(query)
    axes[0].plot(point[1], point[0], "o", ms=9, mfc="none", mec="yellow", mew=2)
    axes[0].set_title("query point", fontsize=9)
    for j, (ax, cmap, title) in enumerate(zip(axes[1:], maps, titles)):
        ax.imshow(support)
        ax.imshow(cmap, cmap="magma", alpha=0.65)
        if peaks is not None:
            ax.plot(peaks[j][1], peaks[j][0], "o", color="red", ms=6)
        if match is not None:
            ax.plot(match[1], match[0], "x", color="white", ms=9, mew=2)
        ax.set_title(title, fontsize=9)
    for ax in axes:
        _off(ax)
    fig.tight_layout()
    return fig
