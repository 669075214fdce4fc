"""The frozen backbone's convolutions with BatchNorm folded in, run the fastest way the device allows.

HSNet's backbone is frozen (main paper Sec. 4.1), so at inference every ``bn(conv(x))`` is one
conv with a rescaled kernel (:func:`hsnet_lite.backbones.fold_batchnorm`). On the CPU in fp32,
PyTorch's oneDNN build can go further, as ``torch.compile`` does with its CPU freezing passes:

* the bias, a following ReLU and a residual addition run inside the convolution (oneDNN
  post-ops), instead of as separate passes over the activation;
* each kernel is reordered once into the blocked layout oneDNN's kernel for that input shape
  reads (``torch.ops.mkldnn._reorder_convolution_weight``), instead of on every call.

The results are bit-for-bit those of ``F.conv2d`` followed by ``add_`` and ``relu_``
(``tests/test_speed_equivalence.py``). A reordered kernel suits one input shape only, so the
packs are kept for the last :data:`PACKED_SHAPES` image shapes. Anywhere else (GPU, bf16 autocast,
other dtypes, a PyTorch without these oneDNN ops) the plain folded convs run.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

PACKED_SHAPES = 2  # image shapes whose reordered kernels are kept (e.g. 1-shot and 5-shot batches)

Folder = Callable[[nn.Conv2d], tuple[torch.Tensor, torch.Tensor]]


def onednn_available(x: torch.Tensor) -> bool:
    """True when ``x`` can run through oneDNN's fused, prepacked convolutions (CPU, fp32, no autocast)."""
    ops = getattr(torch.ops, "mkldnn", None)
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
        and ops is not None
        and hasattr(ops, "_convolution_pointwise")
        and hasattr(ops, "_reorder_convolution_weight")
    )


def needs_autograd(*tensors: torch.Tensor | None) -> bool:
    """True when autograd must record an op on these tensors (oneDNN's fused ops are not
    differentiable: they run only where this is False)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def fused_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride=(1, 1), padding=(0, 0),
               dilation=(1, 1), groups: int = 1, relu: bool = False, add: torch.Tensor | None = None) -> torch.Tensor:
    """``relu(conv2d(x, weight, bias) + add)`` in one oneDNN call (ReLU and ``add`` optional), the
    output in ``x``'s memory format; ``weight`` may be a reordered oneDNN kernel. Inference
    only, CPU fp32 (:func:`onednn_available`)."""
    geometry = (list(padding), list(stride), list(dilation), groups)
    mkldnn = torch.ops.mkldnn
    if add is None:
        return mkldnn._convolution_pointwise(x, weight, bias, *geometry, "relu" if relu else "none", [], "")
    return mkldnn._convolution_pointwise.binary(x, add, weight, bias, *geometry, "add", None,
                                                "relu" if relu else None, [], None)


class FoldedConvs:
    """``convs(m, x, relu=False, add=None)`` = ``relu(bn(m(x)) + add)`` for a backbone conv ``m``.

    Args:
        weights: ``{conv: (weight, bias)}`` folded kernels (the plain path).
        folder: makes one folded ``(weight, bias)`` on demand (the oneDNN path reorders it and
            keeps only the reordered copy, so the folded model is held once).
        onednn: use oneDNN's fused, prepacked convolutions (see :func:`onednn_available`).
    """

    def __init__(self, weights: dict | None = None, folder: Folder | None = None, onednn: bool = False) -> None:
        self.weights, self.folder, self.onednn = weights, folder, onednn
        self.packed: dict[tuple[nn.Conv2d, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, m: nn.Conv2d, x: torch.Tensor, relu: bool = False, add: torch.Tensor | None = None) -> torch.Tensor:
        if not self.onednn:
            w, b = self.weights[m]
            y = F.conv2d(x, w, b, m.stride, m.padding, m.dilation, m.groups)
            if add is not None:
                y = y.add_(add)
            return F.relu_(y) if relu else y
        w, b = self._packed(m, x)
        return fused_conv(x, w, b, m.stride, m.padding, m.dilation, m.groups, relu=relu, add=add)

    def _packed(self, m: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (m, tuple(x.shape))
        if key not in self.packed:
            w, b = self.folder(m)
            w = torch.ops.mkldnn._reorder_convolution_weight(
                w.contiguous(), list(m.padding), list(m.stride), list(m.dilation), m.groups, list(x.shape))
            self.packed[key] = (w, b)
        return self.packed[key]


class PackCache:
    """The :class:`FoldedConvs` of the last :data:`PACKED_SHAPES` image shapes, least recent dropped."""

    def __init__(self) -> None:
        self.by_shape: OrderedDict[tuple[int, ...], FoldedConvs] = OrderedDict()

    def get(self, shape: tuple[int, ...], folder: Folder) -> FoldedConvs:
        convs = self.by_shape.pop(shape, None) or FoldedConvs(folder=folder, onednn=True)
        self.by_shape[shape] = convs
        while len(self.by_shape) > PACKED_SHAPES:
            self.by_shape.popitem(last=False)
        return convs
