"""Drawn diagrams for the notebooks: HSNet's three stages (main paper Fig. 2) and the dense
and center-pivot 4D kernels as wires between two 2D windows (supplementary Fig. S1).

Everything is plain matplotlib (no pyplot state is needed beyond creating the figure), so the
figures are the same on every machine.
"""
from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from .conv4d import center_pivot_mask

STAGE_COLORS = ("#dbe9f6", "#fde3c8", "#d9f0d3")


def _box(ax, x, y, w, h, text, color="white", fontsize=8.5):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc=color, ec="#333333", lw=1.0))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start, end, color="#333333"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, color=color, lw=1.2))


def _cube_stack(ax, x, y, size, n, color, label):
    """n offset squares standing for the stacked 4D correlations of one level."""
    for i in range(min(n, 4)):
        ax.add_patch(Rectangle((x + 0.06 * i, y + 0.06 * i), size, size, fc=color, ec="#333333", lw=0.8))
    ax.text(x + size / 2 + 0.1, y - 0.18, label, ha="center", va="top", fontsize=8)


def _thumb(fig, ax, x, y, w, h, image, mask=None, title=""):
    """Draw ``image`` (optionally with a mask overlay) inside data box (x, y, w, h) of ``ax``."""
    (x0, y0), (x1, y1) = ax.transData.transform([(x, y), (x + w, y + h)])
    inv = fig.transFigure.inverted()
    (fx0, fy0), (fx1, fy1) = inv.transform([(x0, y0), (x1, y1)])
    sub = fig.add_axes((fx0, fy0, fx1 - fx0, fy1 - fy0))
    sub.imshow(image)
    if mask is not None:
        sub.contour(mask, levels=[0.5], colors="yellow", linewidths=1.5)
    sub.set_xticks([])
    sub.set_yticks([])
    sub.set_title(title, fontsize=8, pad=2)


def draw_hsnet_overview(query: np.ndarray | None = None, support: np.ndarray | None = None,
                        support_mask: np.ndarray | None = None, level_counts=(4, 6, 3)):
    """HSNet's three stages as boxes and arrows (main paper Fig. 2).

    Optional uint8 images put a real query and support (with its mask) at the input.
    ``level_counts`` are |L_1|, |L_2|, |L_3| (ResNet50's by default).
    """
    fig = plt.figure(figsize=(13, 4.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 13)
    ax.set_ylim(0, 4.6)
    ax.axis("off")
    stages = [(1.75, 4.55, "1  hypercorrelation construction\n(frozen backbone, Eq. 1, cosine + ReLU)"),
              (6.45, 4.2, "2  4D-convolutional pyramid encoder\n(squeeze support dims, mix levels, pool)"),
              (10.8, 2.1, "3  2D decoder")]
    for (x, w, title), color in zip(stages, STAGE_COLORS):
        ax.add_patch(FancyBboxPatch((x, 0.15), w, 4.1, boxstyle="round,pad=0.02,rounding_size=0.15",
                                    fc=color, ec="none"))
        ax.text(x + w / 2, 4.05, title, ha="center", va="top", fontsize=9.5, weight="bold")
    # inputs
    if query is not None and support is not None:
        _thumb(fig, ax, 0.1, 2.2, 1.4, 1.4, query, title="query $I^q$")
        _thumb(fig, ax, 0.1, 0.35, 1.4, 1.4, support, support_mask, title="support $I^s$, $M^s$")
    else:
        _box(ax, 0.1, 2.4, 1.4, 1.0, "query\n$I^q$")
        _box(ax, 0.1, 0.6, 1.4, 1.0, "support\n$I^s$, mask $M^s$")
    # stage 1
    _box(ax, 1.95, 1.55, 1.35, 1.2, "frozen\nbackbone\n(ImageNet)")
    _arrow(ax, (1.5, 2.9), (1.95, 2.3))
    _arrow(ax, (1.5, 1.1), (1.95, 1.9))
    _box(ax, 3.55, 2.35, 1.2, 0.85, "query\nfeatures $F^q_l$")
    _box(ax, 3.55, 0.55, 1.2, 1.05, "masked support\n$\\hat F^s_l = F^s_l \\odot M^s$\n(Eq. 1)", fontsize=8)
    _arrow(ax, (3.3, 2.3), (3.55, 2.7))
    _arrow(ax, (3.3, 2.0), (3.55, 1.2))
    _box(ax, 4.95, 1.25, 1.2, 1.2, "cosine\nsimilarity,\nReLU,\nstack per level", fontsize=8)
    _arrow(ax, (4.75, 2.75), (4.95, 2.1))
    _arrow(ax, (4.75, 1.1), (4.95, 1.6))
    # hypercorrelation pyramid
    n1, n2, n3 = level_counts
    _cube_stack(ax, 6.6, 2.85, 0.35, n3, "#9ecae1", f"$C_3$: {n3} x 13$^4$")
    _cube_stack(ax, 6.55, 1.75, 0.55, n2, "#6baed6", f"$C_2$: {n2} x 25$^4$")
    _cube_stack(ax, 6.5, 0.45, 0.8, n1, "#3182bd", f"$C_1$: {n1} x 50$^4$")
    _arrow(ax, (6.15, 1.85), (6.5, 3.0))
    _arrow(ax, (6.15, 1.85), (6.55, 2.0))
    _arrow(ax, (6.15, 1.85), (6.5, 0.9))
    # stage 2
    _box(ax, 7.85, 2.8, 0.75, 0.55, "$f^{sqz}_3$")
    _box(ax, 7.85, 1.75, 0.75, 0.55, "$f^{sqz}_2$")
    _box(ax, 7.85, 0.6, 0.75, 0.55, "$f^{sqz}_1$")
    for y_from, y_to in ((3.05, 3.07), (2.05, 2.02), (0.95, 0.87)):
        _arrow(ax, (7.3, y_from), (7.85, y_to))
    _box(ax, 8.95, 2.2, 0.8, 0.6, "$f^{mix}_2$")
    _box(ax, 8.95, 0.75, 0.8, 0.6, "$f^{mix}_1$")
    _arrow(ax, (8.6, 3.07), (8.95, 2.65))
    _arrow(ax, (8.6, 2.02), (8.95, 2.35))
    _arrow(ax, (8.6, 0.87), (8.95, 1.0))
    _arrow(ax, (9.35, 2.2), (9.35, 1.35))
    _box(ax, 9.95, 0.75, 0.7, 0.6, "pool\n$x'$", fontsize=8)
    _arrow(ax, (9.75, 1.05), (9.95, 1.05))
    # stage 3
    _box(ax, 10.95, 0.75, 0.8, 0.6, "2D\nconvs", fontsize=8)
    _arrow(ax, (10.65, 1.05), (10.95, 1.05))
    _box(ax, 11.95, 0.75, 0.85, 0.6, "mask\n$\\hat M^q$", fontsize=8)
    _arrow(ax, (11.75, 1.05), (11.95, 1.05))
    ax.text(11.85, 2.2, "Z: (128, 50, 50)\n-> (2, 400, 400)\nlogits", ha="center", fontsize=8)
    return fig


def _grid_points(k: int, x0: float) -> dict[tuple[int, int], tuple[float, float]]:
    return {(i, j): (x0 + j, k - 1 - i) for i in range(k) for j in range(k)}


def _draw_windows(ax, k: int, gap: float):
    left = _grid_points(k, 0.0)
    right = _grid_points(k, k - 1 + gap)
    for pts, label in ((left, "query window $P(\\mathbf{x})$"), (right, "support window $P(\\mathbf{x}')$")):
        xs, ys = zip(*pts.values())
        ax.scatter(xs, ys, s=60, c="white", edgecolors="black", zorder=3)
        c = pts[(k // 2, k // 2)]
        ax.scatter([c[0]], [c[1]], s=80, c="black", zorder=4)
        ax.text(np.mean(xs), -0.9, label, ha="center", fontsize=9)
    return left, right


def draw_kernel_wires(k: int = 3):
    """Supplementary Fig. S1: each wire between a query-window pixel p and a support-window
    pixel p' is one weight k(p - x, p' - x'). Left: dense kernel (k^4 wires). Right:
    center-pivot kernel, wires only where p = x (P_c, Eq. 2) or p' = x' (P_c', Eq. 3)."""
    mask = center_pivot_mask(k).numpy()
    gap = 2.5
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, dense in zip(axes, (True, False)):
        left, right = _draw_windows(ax, k, gap)
        n = 0
        for (i, j), (a, b) in itertools.product(itertools.product(range(k), repeat=2), repeat=2):
            if not dense and not mask[i, j, a, b]:
                continue
            (x0, y0), (x1, y1) = left[(i, j)], right[(a, b)]
            if dense:
                color, lw = "#777777", 0.5
            elif (i, j) == (k // 2, k // 2) and (a, b) == (k // 2, k // 2):
                color, lw = "black", 1.6
            elif (i, j) == (k // 2, k // 2):
                color, lw = "#d62728", 1.1  # p = x: P_c, the support-dim kernel k_c
            else:
                color, lw = "#1f77b4", 1.1  # p' = x': P_c', the query-dim kernel k_c'
            ax.plot([x0, x1], [y0, y1], color=color, lw=lw, zorder=1)
            n += 1
        title = (f"dense 4D kernel: {n} = k$^4$ weights" if dense else
                 f"center-pivot kernel: {n} = 2k$^2$ - 1 positions\n"
                 "red: p = x (Eq. 2), blue: p' = x' (Eq. 3)")
        ax.set_title(title, fontsize=10)
        ax.set_xlim(-0.6, 2 * (k - 1) + gap + 0.6)
        ax.set_ylim(-1.3, k - 0.4)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle(f"4D kernels of size ({k}, {k}, {k}, {k}); black dots: the centres x and x'", fontsize=10)
    fig.tight_layout()
    return fig
