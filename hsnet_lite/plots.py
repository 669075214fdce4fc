"""Figures the README and notebooks show (matplotlib, Agg-safe)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .explore import CorrelationExplorer


def stereo_correlation_figure(explorer: CorrelationExplorer, left: np.ndarray, right: np.ndarray,
                              disparity: np.ndarray, point: tuple[int, int], errors: list[float] | None = None):
    """Query point on the left image; each pyramid level's correlation over the right image.

    The white cross marks the true match from the ground-truth disparity, the red dot the
    correlation peak. With ``errors`` (per-layer median peak error) a bar chart is added.
    """
    y, x = point
    match = (y, x - disparity[y, x])
    levels = sorted(set(explorer.levels), reverse=True)
    ncols = 1 + len(levels) + (1 if errors is not None else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(3.6 * ncols, 3.2))
    axes[0].imshow(left)
    axes[0].plot(x, y, "o", ms=9, mfc="none", mec="yellow", mew=2)
    axes[0].set_title("query (left) and its point")
    for ax, p in zip(axes[1:], levels):
        cmap = explorer.level_map(p, y, x)
        ax.imshow(right)
        ax.imshow(explorer.upsampled(cmap), cmap="magma", alpha=0.6)
        py, px = explorer.peak(cmap)
        ax.plot(px, py, "o", color="red", ms=7)
        ax.plot(match[1], match[0], "x", color="white", ms=10, mew=2)
        ax.set_title(f"level p={p}: mean of {len(explorer.layers_of(p))} layers")
    for ax in axes[: 1 + len(levels)]:
        ax.axis("off")
    if errors is not None:
        ax = axes[-1]
        colors = ["C0" if lv == 1 else "C1" if lv == 2 else "C2" for lv in explorer.levels]
        ax.bar(range(1, len(errors) + 1), errors, color=colors)
        ax.set_xlabel("layer (shallow -> deep)")
        ax.set_ylabel("median peak error (px)")
        ax.set_title("match error per layer")
    fig.tight_layout()
    return fig
