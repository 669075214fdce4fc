"""Input checks for episodes: every bad input gets an error that names what is wrong."""
from __future__ import annotations

import torch


def _check_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_image(img: torch.Tensor, name: str, rank: int) -> None:
    """Float image tensor of the given rank with 3 channels at dim -3."""
    _check_tensor(img, name)
    if img.dim() != rank:
        layout = "(B, 3, H, W)" if rank == 4 else "(B, K, 3, H, W)"
        raise ValueError(f"{name} must have shape {layout}, got {tuple(img.shape)} (rank {img.dim()})")
    if not img.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (normalised image), got dtype {img.dtype}")
    if img.shape[-3] != 3:
        raise ValueError(f"{name} must have 3 colour channels at dim -3, got {img.shape[-3]} (shape {tuple(img.shape)})")


def check_binary_mask(mask: torch.Tensor, name: str) -> None:
    """Mask of 0/1 values (bool, integer or float); 255 'ignore' pixels must be zeroed first."""
    _check_tensor(mask, name)
    if mask.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {mask.dtype}")
    if mask.dtype != torch.bool:
        bad = (mask != 0) & (mask != 1)
        if bad.any():
            found = torch.unique(mask[bad])[:5].tolist()
            raise ValueError(
                f"{name} must be binary (0 background, 1 foreground); found other values {found}. "
                "Set ignore (255) pixels to 0 in support masks."
            )


def check_episode(
    query_img: torch.Tensor, support_imgs: torch.Tensor, support_masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate one batch of episodes and return supports as (B, K, 3, H, W), masks as (B, K, H, W) float.

    A 1-shot batch may also pass supports (B, 3, H, W) with masks (B, H, W).
    """
    check_image(query_img, "query_img", 4)
    _check_tensor(support_imgs, "support_imgs")
    _check_tensor(support_masks, "support_masks")
    if support_imgs.dim() == 4 and support_masks.dim() == 3:
        support_imgs, support_masks = support_imgs.unsqueeze(1), support_masks.unsqueeze(1)
    check_image(support_imgs, "support_imgs", 5)
    if support_masks.dim() != 4:
        raise ValueError(f"support_masks must have shape (B, K, H, W), got {tuple(support_masks.shape)}")
    b, k = support_imgs.shape[:2]
    if query_img.shape[0] != b:
        raise ValueError(f"batch sizes differ: query_img has {query_img.shape[0]}, support_imgs has {b}")
    if support_masks.shape[:2] != (b, k):
        raise ValueError(
            f"support_masks (B, K) = {tuple(support_masks.shape[:2])} does not match support_imgs (B, K) = {(b, k)}"
        )
    if k < 1:
        raise ValueError("an episode needs at least one support image (K >= 1)")
    if support_masks.shape[-2:] != support_imgs.shape[-2:]:
        raise ValueError(
            f"support mask size {tuple(support_masks.shape[-2:])} does not match support image size "
            f"{tuple(support_imgs.shape[-2:])}"
        )
    if support_imgs.shape[-2:] != query_img.shape[-2:]:
        raise ValueError(
            f"support image size {tuple(support_imgs.shape[-2:])} differs from query size "
            f"{tuple(query_img.shape[-2:])}; resize both to the same size (the paper uses 400x400)"
        )
    check_binary_mask(support_masks, "support_masks")
    return support_imgs, support_masks.float()


def check_query_mask(mask: torch.Tensor, like: torch.Tensor, name: str = "query_mask") -> None:
    """Ground-truth query mask (B, H, W) of 0, 1 and optionally 255 (ignore)."""
    _check_tensor(mask, name)
    if mask.dim() != 3 or mask.shape[0] != like.shape[0] or mask.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"{name} must have shape {(like.shape[0], *like.shape[-2:])}, got {tuple(mask.shape)}")
    if mask.is_floating_point() and not torch.equal(mask, mask.round()):
        raise ValueError(f"{name} must hold integer labels 0, 1 or 255")
    bad = (mask != 0) & (mask != 1) & (mask != 255)
    if bad.any():
        raise ValueError(f"{name} must hold only 0, 1 and 255 (ignore); found {torch.unique(mask[bad])[:5].tolist()}")
