"""Figure of few-shot predictions: one row per episode, columns support(s) with their mask,
query, each method's prediction and the ground truth (the layout of the paper's Fig. 5)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .datasets.transforms import denormalize

EDGE_COLOR = np.array([255, 255, 0], dtype=np.float32)
IGNORE_COLOR = np.array([255, 255, 255], dtype=np.float32)


def overlay(img: torch.Tensor, mask: torch.Tensor, dim: float = 0.3) -> np.ndarray:
    """A normalised (3, H, W) image with the mask shown whatever the object's colours: background
    darkened, foreground (1) kept with a yellow outline, ignore (255) pixels white."""
    rgb = denormalize(img).astype(np.float32)
    m = mask.detach().cpu().numpy()
    fg = m == 1
    rgb[~fg] *= dim
    rgb[outline(fg)] = EDGE_COLOR
    rgb[m == 255] = IGNORE_COLOR
    return rgb.clip(0, 255).astype(np.uint8)


def outline(fg: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-neighbour outside the foreground."""
    pad = np.pad(fg, 1, mode="edge")
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return fg & ~inner


def predictions_figure(episodes: list[dict], predictions: dict[str, list[torch.Tensor]],
                       class_names: dict[int, str] | None = None, scores: dict[str, list[float]] | None = None):
    """``episodes``: episode dicts; ``predictions``: method name -> one (H, W) 0/1 mask per episode;
    ``scores``: optional method name -> per-episode foreground IoU (percent) shown in the titles."""
    shot = episodes[0]["support_imgs"].shape[0]
    cols = shot + 2 + len(predictions)
    fig, axes = plt.subplots(len(episodes), cols, figsize=(1.9 * cols, 1.95 * len(episodes)), squeeze=False)
    for row, ep in enumerate(episodes):
        cls = int(ep["class_id"])
        panels = [(overlay(ep["support_imgs"][k], ep["support_masks"][k]), f"support {k + 1}") for k in range(shot)]
        panels.append((denormalize(ep["query_img"]), f"query ({(class_names or {}).get(cls, cls)})"))
        for name, masks in predictions.items():
            score = f" {scores[name][row]:.0f}" if scores else ""
            panels.append((overlay(ep["query_img"], masks[row]), f"{name}{score}"))
        panels.append((overlay(ep["query_img"], ep["query_mask"]), "ground truth"))
        for ax, (im, title) in zip(axes[row], panels):
            ax.imshow(im)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return fig


def episode_iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Foreground IoU (percent) of one (H, W) prediction, ignore (255) pixels excluded."""
    valid = gt != 255
    p, g = (pred == 1) & valid, (gt == 1) & valid
    union = int((p | g).sum())
    return 100.0 * int((p & g).sum()) / union if union else 100.0
