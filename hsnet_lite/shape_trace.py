"""Follow tensor shapes through HSNet's squeezing and mixing blocks (Sec. 4.2, Table S6).

Two views that must agree: the arithmetic of a strided, padded convolution
(``floor((n + 2 * (k // 2) - k) / s) + 1`` on each support dim, query dims unchanged) and the
shapes actually recorded with forward hooks while the network runs.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .blocks import SQUEEZE_CONFIG
from .conv4d import CenterPivotConv4d


def conv_out_size(n: int, kernel: int, stride: int) -> int:
    """Output length of a convolution with padding ``kernel // 2`` (as in every HSNet 4D conv)."""
    return (n + 2 * (kernel // 2) - kernel) // stride + 1


def squeeze_support_trace(level: int, size: int) -> list[int]:
    """Support size after each of the three layers of f_level^sqz, starting from ``size``."""
    kernels, strides = SQUEEZE_CONFIG[level]
    out = []
    for k, s in zip(kernels, strides):
        size = conv_out_size(size, k, s)
        out.append(size)
    return out


@contextmanager
def record_conv4d_shapes(module: nn.Module) -> Iterator[list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    """Record (name, input shape, output shape) of every CenterPivotConv4d inside ``module``.

    Use as ``with record_conv4d_shapes(model) as log: model(...)``; shapes drop the batch dim.
    """
    log: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    handles = []
    for name, sub in module.named_modules():
        if isinstance(sub, CenterPivotConv4d):
            def hook(mod, inputs, output, name=name):
                log.append((name, tuple(inputs[0].shape[1:]), tuple(output.shape[1:])))
            handles.append(sub.register_forward_hook(hook))
    try:
        yield log
    finally:
        for h in handles:
            h.remove()


def describe_layer(name: str) -> str:
    """'learner.squeeze.1.3' -> 'f1 layer 2' ; 'learner.mix.21.6' -> 'mix 2->1 layer 3'."""
    parts = name.split(".")
    idx = int(parts[-1]) // 3 + 1
    if "squeeze" in parts:
        return f"f{parts[-2]} layer {idx}"
    a, b = parts[-2]
    return f"mix {a}->{b} layer {idx}"


@torch.no_grad()
def upsample_reference(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The mixing block's upsampling written the slow, obvious way: a 2D bilinear resize
    (align_corners=True) of the query dims of every support slice, one slice at a time."""
    b, c, ha, wa, hb, wb = x.shape
    out = torch.empty(b, c, size[0], size[1], hb, wb, dtype=x.dtype)
    for i in range(hb):
        for j in range(wb):
            out[..., i, j] = nn.functional.interpolate(x[..., i, j], size=size, mode="bilinear", align_corners=True)
    return out
