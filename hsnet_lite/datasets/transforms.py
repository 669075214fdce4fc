"""Resize + ImageNet normalisation helpers shared by every dataset.

Images are resized bilinearly (aspect ratio not kept, as in the paper) and normalised with
the ImageNet mean/std; label masks are resized with nearest neighbour so label values
(0, class ids, 255 ignore) survive unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _as_hwc_uint8(img) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    return np.array(arr[:, :, :3], dtype=np.uint8)  # writable copy (torch warns on read-only arrays)


def image_to_tensor(img, size: int) -> torch.Tensor:
    """Turn an HxWx3 uint8 image (array or PIL) into a normalised float32 (3, size, size) tensor."""
    arr = _as_hwc_uint8(img)
    t = torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)
    if t.shape[1:] != (size, size):
        t = F.interpolate(t[None], size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)[0].clamp_(0.0, 1.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((t - mean) / std).contiguous()


def resize_mask(mask, size: int) -> torch.Tensor:
    """Resize an HxW label mask (array, PIL or tensor) with nearest neighbour; returns int64 (size, size)."""
    t = mask.long() if torch.is_tensor(mask) else torch.from_numpy(np.array(mask, dtype=np.int64))
    if t.ndim != 2:
        raise ValueError(f"expected an HxW mask, got shape {tuple(t.shape)}")
    if t.shape != (size, size):
        t = F.interpolate(t[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()
    return t


def denormalize(img: torch.Tensor) -> np.ndarray:
    """Undo the ImageNet normalisation of a (3, H, W) tensor; returns an HxWx3 uint8 array for display."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=img.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=img.dtype).view(3, 1, 1)
    rgb = (img.detach().cpu() * std + mean).clamp(0.0, 1.0)
    return (rgb.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
