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
other dtypes, a PyTorch without these oneDNN ops) the plain folded convs run. A bottleneck's last
conv may also write its result over the residual it adds, when that is a temporary
(``into_add``).

The learner's convolutions are trainable, so their packs (:class:`KernelPacks`) follow the
weights: rebuilt whenever a weight changes, used at inference only. A center-pivot conv's
support branch adds its result into the query branch's output the same way (``into_add``).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

PACKED_SHAPES = 2  # image shapes whose reordered kernels are kept (e.g. 1-shot and 5-shot batches)

Folder = Callable[[nn.Conv2d], tuple[torch.Tensor, torch.Tensor]]
Kernel = torch.Tensor | Callable[[], torch.Tensor]  # a conv kernel, or a function making it


def _onednn_ops_present() -> bool:
    """True when this PyTorch build has oneDNN and the fused / reorder ops used here."""
    ops = getattr(torch.ops, "mkldnn", None)
    return (torch.backends.mkldnn.is_available() and ops is not None
            and hasattr(ops, "_convolution_pointwise") and hasattr(ops, "_reorder_convolution_weight"))


_ONEDNN_OPS = _onednn_ops_present()  # checked once, at import


def onednn_available(x: torch.Tensor) -> bool:
    """True when ``x`` can run through oneDNN's fused, prepacked convolutions (CPU, fp32, no autocast)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and _ONEDNN_OPS
    )


def needs_autograd(*tensors: torch.Tensor | None) -> bool:
    """True when autograd must record an op on these tensors (oneDNN's fused ops are not
    differentiable: they run only where this is False)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def plain_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride=(1, 1), padding=(0, 0),
               dilation=(1, 1), groups: int = 1, relu: bool = False, add: torch.Tensor | None = None) -> torch.Tensor:
    """``relu(conv2d(x, weight, bias) + add)`` with PyTorch's own ops: what :func:`fused_conv` computes
    (bit for bit), for the devices, dtypes and compiled graphs where oneDNN's fused ops do not run."""
    y = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    if add is not None:
        y = y.add_(add)
    return F.relu_(y) if relu else y


def fused_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride=(1, 1), padding=(0, 0),
               dilation=(1, 1), groups: int = 1, relu: bool = False, add: torch.Tensor | None = None,
               into_add: bool = False) -> torch.Tensor:
    """``relu(conv2d(x, weight, bias) + add)`` in one oneDNN call (ReLU and ``add`` optional), the
    output in ``x``'s memory format; ``weight`` may be a reordered oneDNN kernel. With
    ``into_add``, the result overwrites ``add`` (no new output tensor). Inference only, CPU fp32
    (:func:`onednn_available`)."""
    geometry = (list(padding), list(stride), list(dilation), groups)
    mkldnn = torch.ops.mkldnn
    if add is None:
        return mkldnn._convolution_pointwise(x, weight, bias, *geometry, "relu" if relu else "none", [], "")
    op = mkldnn._convolution_pointwise_.binary if into_add else mkldnn._convolution_pointwise.binary
    first, second = (add, x) if into_add else (x, add)
    return op(first, second, weight, bias, *geometry, "add", None, "relu" if relu else None, [], None)


def reorder_kernel(weight: torch.Tensor, stride, padding, dilation, groups: int, shape: Sequence[int]) -> torch.Tensor:
    """``weight`` reordered into the blocked layout oneDNN's convolution reads for inputs of
    ``shape`` (an opaque oneDNN tensor that :func:`fused_conv` accepts as its kernel)."""
    return torch.ops.mkldnn._reorder_convolution_weight(
        weight.detach().contiguous(), list(padding), list(stride), list(dilation), groups, list(shape))


class KernelPacks:
    """oneDNN-reordered copies of a trainable layer's conv kernels, kept between inference calls.

    The learner's convolutions run at the same shapes episode after episode; handing oneDNN a
    kernel already in its blocked layout (as :class:`FoldedConvs` does for the backbone) spares a
    reorder of the kernel on every call, which costs up to a third of a small layer's time. A pack
    is keyed by a name, the conv geometry and the input shape, and belongs to the kernel's
    ``source`` parameter: it is rebuilt when that parameter's storage or version counter changes
    (an optimiser step or ``load_state_dict`` writes in place). The entry holds the source's
    storage, so its address cannot be reused by another tensor while the entry lives. The last
    ``capacity`` packs are kept; copies and pickles start empty. Inference only, CPU fp32
    (:func:`onednn_available`).
    """

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self.packs: OrderedDict[tuple, tuple[torch.Tensor, int, torch.Tensor]] = OrderedDict()

    def conv(self, name: object, x: torch.Tensor, weight: Kernel, bias: torch.Tensor | None,
             stride=(1, 1), padding=(0, 0), dilation=(1, 1), add: torch.Tensor | None = None,
             source: torch.Tensor | None = None, relu: bool = False, into_add: bool = False) -> torch.Tensor:
        """:func:`fused_conv` of ``x`` with ``weight`` given to oneDNN packed. ``weight``: the kernel,
        or a function making it from ``source`` (called only when the pack is (re)built);
        ``source``: the parameter the kernel comes from, by default ``weight`` itself; ``add`` and
        ``into_add`` as for :func:`fused_conv`. Inside a compiled graph it runs :func:`plain_conv`
        (nothing packed, nothing written over ``add``), so callers need no guard of their own."""
        if source is None:
            if callable(weight):
                raise ValueError("KernelPacks.conv: a kernel given as a function needs its source parameter")
            source = weight
        if torch.compiler.is_compiling():  # inductor fuses and packs by itself; oneDNN's ops would break the graph
            return plain_conv(x, weight() if callable(weight) else weight, bias, stride, padding, dilation,
                              relu=relu, add=add)
        packed = self.get(name, weight, source, stride, padding, dilation, x.shape)
        return fused_conv(x, packed, bias, stride, padding, dilation, relu=relu, add=add, into_add=into_add)

    def run(self, name: object, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            stride=(1, 1), padding=(0, 0), dilation=(1, 1), add: torch.Tensor | None = None,
            relu: bool = False, into_add: bool = False) -> torch.Tensor:
        """``relu(conv2d(x, weight, bias) + add)`` the fastest way it can run: through :meth:`conv`
        where oneDNN can (:func:`onednn_available`, and no autograd to record), else with
        PyTorch's own ops (:func:`plain_conv`). With ``into_add`` the oneDNN path writes the result
        over ``add``; callers use the returned tensor either way."""
        if onednn_available(x) and not needs_autograd(x, weight, bias, add):
            return self.conv(name, x, weight, bias, stride, padding, dilation, add=add, relu=relu, into_add=into_add)
        return plain_conv(x, weight, bias, stride, padding, dilation, relu=relu, add=add)

    def get(self, name: object, weight: Kernel, source: torch.Tensor, stride, padding, dilation,
            shape: Sequence[int]) -> torch.Tensor:
        """The packed ``weight`` (a kernel or a function making it) for inputs of ``shape``; the
        kernel itself for an inference-mode source, whose changes cannot be tracked."""
        if source.is_inference():
            return weight() if callable(weight) else weight
        key = (name, tuple(stride), tuple(padding), tuple(dilation), tuple(shape))
        entry = self.packs.pop(key, None)
        if entry is None or entry[0].data_ptr() != source.data_ptr() or entry[1] != source._version:
            packed = reorder_kernel(weight() if callable(weight) else weight, stride, padding, dilation, 1, shape)
            entry = (source.detach(), source._version, packed)
        self.packs[key] = entry
        while len(self.packs) > self.capacity:
            self.packs.popitem(last=False)
        return entry[2]

    def __getstate__(self) -> dict:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["capacity"])


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

    def __call__(self, m: nn.Conv2d, x: torch.Tensor, relu: bool = False, add: torch.Tensor | None = None,
                 into_add: bool = False) -> torch.Tensor:
        if not self.onednn:
            w, b = self.weights[m]
            return plain_conv(x, w, b, m.stride, m.padding, m.dilation, m.groups, relu=relu, add=add)
        w, b = self._packed(m, x)
        return fused_conv(x, w, b, m.stride, m.padding, m.dilation, m.groups, relu=relu, add=add, into_add=into_add)

    def _packed(self, m: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (m, tuple(x.shape))
        if key not in self.packed:
            w, b = self.folder(m)
            w = reorder_kernel(w, m.stride, m.padding, m.dilation, m.groups, x.shape)
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
