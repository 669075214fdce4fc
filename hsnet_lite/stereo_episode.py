"""A 1-shot episode made of real photos: the two views of ``skimage.data.stereo_motorcycle()``.

The support is the left view, the query the right view. Both masks come from the dataset's
ground-truth disparity, not from a person: the motorcycle stands in front of the shelves and
the floor, so its disparity is larger than that of the background of its own row, and a
left pixel (y, x) with disparity d shows the same point as the right pixel (y, x - d).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from skimage import measure, morphology

from .explore import load_stereo_pair


def _close(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    """Binary closing that treats the image border like the inside (pad, close, crop)."""
    padded = np.pad(mask.astype(bool), radius + 1, mode="edge")
    closed = ndimage.binary_closing(padded, morphology.disk(radius))
    return closed[radius + 1:-radius - 1, radius + 1:-radius - 1]


def near_object_mask(disparity: np.ndarray, margin_frac: float = 0.15, border_frac: float = 0.06,
                     min_area_frac: float = 0.01) -> np.ndarray:
    """0/1 mask of the regions (of at least ``min_area_frac`` of the image) that stand out in
    front of their surroundings.

    A pixel counts when its disparity exceeds that of its own row's background, the median
    over the leftmost and rightmost ``border_frac`` of the row (the shelves up top, the floor
    lower down: a level floor has the same disparity along a row), by ``margin_frac`` of the
    largest disparity.
    """
    finite = np.isfinite(disparity)
    d = np.where(finite, disparity, np.nan)
    h, w = d.shape
    edge = max(1, int(border_frac * w))
    row_background = np.nanmedian(np.concatenate([d[:, :edge], d[:, -edge:]], axis=1), axis=1)
    row_background = np.nan_to_num(row_background, nan=0.0)
    margin = margin_frac * float(np.nanmax(d))
    near = finite & (np.nan_to_num(d, nan=0.0) > row_background[:, None] + margin)
    labels = measure.label(ndimage.binary_opening(near, morphology.disk(1)))
    areas = np.bincount(labels.ravel())
    areas[0] = 0
    areas[np.unique(labels[: max(1, h // 20)])] = 0  # regions reaching the top rows: shelf boards
    if areas.max() == 0:
        raise ValueError("no near region found in the disparity map")
    keep = np.nonzero(areas >= min_area_frac * near.size)[0]
    mask = _close(np.isin(labels, keep))
    return mask.astype(np.uint8)


def warp_mask_to_right(mask: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """Move every foreground left pixel (y, x) to (y, round(x - d)) in the right view."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask & np.isfinite(disparity))
    xr = np.round(xs - disparity[ys, xs]).astype(int)
    keep = (xr >= 0) & (xr < w)
    out = np.zeros_like(mask)
    out[ys[keep], xr[keep]] = 1
    return _close(out).astype(np.uint8)


def stereo_episode(size: tuple[int, int] = (192, 288)) -> dict:
    """The stereo pair as a 1-shot episode at ``size`` (H, W).

    Returns uint8 ``support`` (left) and ``query`` (right) images, their 0/1 masks
    ``support_mask`` and ``query_mask``, the left ``disparity`` and the ImageNet-normalised
    tensors ``support_t``/``query_t`` (1, 3, H, W).
    """
    pair = load_stereo_pair(size)
    s_mask = near_object_mask(pair["disparity"])
    q_mask = warp_mask_to_right(s_mask, pair["disparity"])
    return {"support": pair["left"], "query": pair["right"], "support_mask": s_mask, "query_mask": q_mask,
            "disparity": pair["disparity"], "support_t": pair["left_t"], "query_t": pair["right_t"],
            "support_mask_t": torch.from_numpy(s_mask).float()[None]}
