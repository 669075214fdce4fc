"""Look inside a hypercorrelation: the correlation of one query position over the support image.

The interactive explorer of notebook 03 only calls these functions; they are unit-tested.
Positions are given in IMAGE pixels (row y, column x) and mapped to each layer's grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .backbones import IMAGENET_MEAN, IMAGENET_STD, FrozenBackbone
from .correlation import hypercorrelation, mask_features


def to_tensor(image: np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 (H, W, 3) image -> ImageNet-normalised (1, 3, h, w) float tensor."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255).unsqueeze(0)
    if size is not None:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class CorrelationExplorer:
    """Per-layer 4D correlations of one query/support pair.

    Attributes:
        corrs: one (Ha, Wa, Hb, Wb) tensor per backbone layer, shallow to deep.
        levels: pyramid level of each layer. image_size: (H, W) of both images.
    """

    corrs: list[torch.Tensor]
    levels: list[int]
    image_size: tuple[int, int]

    @classmethod
    @torch.no_grad()
    def build(cls, backbone: FrozenBackbone, query: torch.Tensor, support: torch.Tensor,
              support_mask: torch.Tensor | None = None) -> "CorrelationExplorer":
        """Correlate (1, 3, H, W) query and support; mask the support (Eq. 1) when given."""
        if query.shape != support.shape or query.dim() != 4 or query.shape[0] != 1:
            raise ValueError(f"query and support must both be (1, 3, H, W); got {tuple(query.shape)}, {tuple(support.shape)}")
        qf, sf = backbone(query), backbone(support)
        if support_mask is not None:
            sf = mask_features(sf, support_mask.view(1, *support_mask.shape[-2:]))
        corrs = []
        for q, s in zip(qf, sf):  # one layer at a time keeps every layer separate
            corrs.append(hypercorrelation([q], [s], [1])[1][0, 0])
        return cls(corrs, list(backbone.feature_levels), tuple(query.shape[-2:]))

    def layers_of(self, level: int) -> list[int]:
        return [i for i, p in enumerate(self.levels) if p == level]

    def query_cell(self, layer: int, y: float, x: float) -> tuple[int, int]:
        """Grid cell of image pixel (y, x) on ``layer``'s query grid."""
        ha, wa = self.corrs[layer].shape[:2]
        h, w = self.image_size
        return min(int(y * ha / h), ha - 1), min(int(x * wa / w), wa - 1)

    def layer_map(self, layer: int, y: float, x: float) -> torch.Tensor:
        """(Hb, Wb) correlation of query pixel (y, x) with every support cell of one layer."""
        if not 0 <= y < self.image_size[0] or not 0 <= x < self.image_size[1]:
            raise ValueError(f"query position (y={y}, x={x}) lies outside the image {self.image_size}")
        i, j = self.query_cell(layer, y, x)
        return self.corrs[layer][i, j]

    def level_map(self, level: int, y: float, x: float) -> torch.Tensor:
        """Mean over the layers of one pyramid level, as the stacked C_p channels would see it."""
        ids = self.layers_of(level)
        if not ids:
            raise ValueError(f"no layer at pyramid level {level}; levels present: {sorted(set(self.levels))}")
        return torch.stack([self.layer_map(i, y, x) for i in ids]).mean(0)

    def upsampled(self, cmap: torch.Tensor) -> np.ndarray:
        """A correlation map resized (bilinear) to the support image, as a numpy array."""
        big = F.interpolate(cmap[None, None], size=self.image_size, mode="bilinear", align_corners=False)
        return big[0, 0].numpy()

    def peak(self, cmap: torch.Tensor) -> tuple[float, float]:
        """Image-pixel centre (y, x) of the support cell where ``cmap`` is largest."""
        hb, wb = cmap.shape
        idx = int(torch.argmax(cmap))
        h, w = self.image_size
        return ((idx // wb + 0.5) * h / hb, (idx % wb + 0.5) * w / wb)


def stereo_match_errors(explorer: CorrelationExplorer, disparity: np.ndarray, points: np.ndarray) -> list[float]:
    """Median distance (pixels) between each layer's correlation peak and the true match.

    ``explorer`` correlates the LEFT image (query) with the RIGHT one (support); a left pixel
    (y, x) with disparity d matches right pixel (y, x - d). ``points`` is an (N, 2) array of
    (y, x) left-image positions with valid disparity, in the explorer's image size.
    """
    errors = []
    for layer in range(len(explorer.corrs)):
        dists = []
        for y, x in points:
            py, px = explorer.peak(explorer.layer_map(layer, float(y), float(x)))
            dists.append(np.hypot(py - y, px - (x - disparity[int(y), int(x)])))
        errors.append(float(np.median(dists)))
    return errors


def stereo_sample_points(disparity: np.ndarray, n: int, seed: int = 0, margin: int = 8) -> np.ndarray:
    """``n`` random (y, x) positions with a finite, positive disparity whose match lies in the image."""
    h, w = disparity.shape
    ys, xs = np.mgrid[margin:h - margin, margin:w - margin]
    d = disparity[ys, xs]
    ok = np.isfinite(d) & (d > 0) & (xs - d >= 0)
    cand = np.stack([ys[ok], xs[ok]], 1)
    if len(cand) == 0:
        raise ValueError("disparity map has no valid pixels")
    rng = np.random.default_rng(seed)
    return cand[rng.choice(len(cand), size=min(n, len(cand)), replace=False)]


def load_stereo_pair(size: tuple[int, int] = (384, 576)) -> dict:
    """``skimage.data.stereo_motorcycle()`` resized to ``size`` (H, W).

    Returns uint8 ``left``/``right`` images, ImageNet-normalised ``left_t``/``right_t``
    tensors and the left image's ``disparity`` in resized pixels (inf where unknown).
    """
    from skimage import data
    from skimage.transform import resize

    left, right, disp = data.stereo_motorcycle()
    h, w = size
    left_r = (resize(left, size, order=1, anti_aliasing=True) * 255).round().astype(np.uint8)
    right_r = (resize(right, size, order=1, anti_aliasing=True) * 255).round().astype(np.uint8)
    rows = (np.arange(h) * disp.shape[0] / h).astype(int)
    cols = (np.arange(w) * disp.shape[1] / w).astype(int)
    disp_r = disp[rows][:, cols] * (w / disp.shape[1])
    return {"left": left_r, "right": right_r, "disparity": disp_r,
            "left_t": to_tensor(left_r), "right_t": to_tensor(right_r)}
