"""What single layers' correlations find: measurements for notebook 03 (main paper Sec. 4.1).

* Stereo: :func:`hsnet_lite.explore.stereo_match_errors` (peak vs ground-truth match).
* Few-shot episodes: :func:`peak_hit_rate`, how often a query *object* position's correlation peak
  lands on the support object when the support is NOT masked, i.e. whether a layer alone can tell
  the class apart from the clutter around it.
"""
from __future__ import annotations

import numpy as np
import torch

from .backbones import FrozenBackbone
from .explore import CorrelationExplorer


def sample_mask_points(mask: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` random (y, x) pixels where ``mask`` is 1."""
    ys, xs = np.nonzero(np.asarray(mask) == 1)
    if len(ys) == 0:
        raise ValueError("mask has no foreground pixel")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(ys), size=min(n, len(ys)), replace=False)
    return np.stack([ys[pick], xs[pick]], 1)


def peak_hit_rate(explorer: CorrelationExplorer, query_mask: np.ndarray, support_mask: np.ndarray,
                  n_points: int = 50, seed: int = 0) -> list[float]:
    """Per layer: share of query foreground points whose correlation peak is a support object pixel."""
    points = sample_mask_points(query_mask, n_points, seed)
    sm = np.asarray(support_mask)
    rates = []
    for layer in range(len(explorer.corrs)):
        hits = 0
        for y, x in points:
            py, px = explorer.peak(explorer.layer_map(layer, float(y), float(x)))
            hits += int(sm[min(int(py), sm.shape[0] - 1), min(int(px), sm.shape[1] - 1)] == 1)
        rates.append(hits / len(points))
    return rates


@torch.no_grad()
def episodes_peak_hit_rate(backbone: FrozenBackbone, episodes: list[dict], n_points: int = 50,
                           seed: int = 0) -> np.ndarray:
    """:func:`peak_hit_rate` of unmasked supports, averaged over 1-shot ``episodes``, per layer."""
    rates = []
    for i, ep in enumerate(episodes):
        explorer = CorrelationExplorer.build(backbone, ep["query_img"][None], ep["support_imgs"][:1])
        rates.append(peak_hit_rate(explorer, (ep["query_mask"] == 1).numpy(), ep["support_masks"][0].numpy(),
                                   n_points, seed + i))
    return np.mean(rates, axis=0)


def chance_hit_rate(episodes: list[dict]) -> float:
    """Hit rate of a peak placed at random: the mean foreground share of the supports."""
    return float(np.mean([float(ep["support_masks"][0].mean()) for ep in episodes]))
