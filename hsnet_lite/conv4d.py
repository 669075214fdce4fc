"""4D convolutions on correlation tensors of shape (B, C, Ha, Wa, Hb, Wb).

Dims (Ha, Wa) are the *query* positions x and (Hb, Wb) the *support* positions x'
(supplementary Sec. 3). Two layers live here:

* :class:`Conv4d` -- the dense 4D convolution of supplementary Eq. 1, a teaching and
  testing reference whose cost grows with k^4.
* :class:`CenterPivotConv4d` -- the paper's center-pivot 4D convolution, Eq. 8: one 2D
  convolution over the query dims (kernel ``k_c'``, Eq. 7) plus one over the support dims
  (kernel ``k_c``, Eq. 6). Its cost grows with 2 k^2.

Both are written without any permute of the 6D tensor: a 2D convolution over two of the
four spatial dims is a 3D convolution whose kernel is 1 along a flattened third dim.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Int4 = tuple[int, int, int, int]


def _as4(value: int | Sequence[int], name: str) -> Int4:
    """Expand an int to a 4-tuple and check a given tuple has four entries."""
    if isinstance(value, int):
        return (value,) * 4
    value = tuple(int(v) for v in value)
    if len(value) != 4:
        raise ValueError(f"{name} must be an int or have 4 entries, got {value}")
    return value  # type: ignore[return-value]


def check_corr_tensor(x: torch.Tensor, in_channels: int, layer: str) -> None:
    """Raise a clear error unless ``x`` is a float (B, C, Ha, Wa, Hb, Wb) tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{layer} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 6:
        raise ValueError(
            f"{layer} expects a 6D correlation tensor (B, C, Ha, Wa, Hb, Wb), got shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(f"{layer} expects {in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise TypeError(f"{layer} expects a floating-point tensor, got dtype {x.dtype}")


class Conv4d(nn.Module):
    """Dense 4D convolution (supplementary Eq. 1) with zero padding.

    ``weight`` has shape (out, in, k1, k2, k3, k4). The convolution is computed as a sum
    over the first kernel dim of 3D convolutions, so it is exact and reasonably fast, but
    its cost still grows with k^4: it is the baseline that center-pivot replaces.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _as4(kernel_size, "kernel_size")
        self.stride = _as4(stride, "stride")
        self.padding = _as4(padding, "padding") if padding is not None else tuple(k // 2 for k in self.kernel_size)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        fan_in = in_channels * int(torch.tensor(self.kernel_size).prod())
        nn.init.uniform_(self.weight, -fan_in**-0.5, fan_in**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_corr_tensor(x, self.in_channels, "Conv4d")
        k0, s0, p0 = self.kernel_size[0], self.stride[0], self.padding[0]
        x = F.pad(x, (0, 0, 0, 0, 0, 0, p0, p0))  # pad dim 2 (Ha) only; conv3d pads the rest
        b, c, ha, wa, hb, wb = x.shape
        n_out = (ha - k0) // s0 + 1
        out = None
        for a in range(k0):
            slab = x[:, :, a : a + s0 * (n_out - 1) + 1 : s0]  # (B, C, n_out, Wa, Hb, Wb)
            slab = slab.transpose(1, 2).reshape(b * n_out, c, wa, hb, wb)
            y = F.conv3d(slab, self.weight[:, :, a], None, self.stride[1:], self.padding[1:])
            out = y if out is None else out + y
        out = out.reshape(b, n_out, *out.shape[1:]).transpose(1, 2)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1, 1)
        return out.contiguous()


class CenterPivotConv4d(nn.Module):
    """Center-pivot 4D convolution (supplementary Eq. 8).

    ``query_conv`` holds ``k_c'^{2D} = k(:, 0)``: a 2D kernel over the query dims (Ha, Wa),
    applied at every (strided) support position. ``support_conv`` holds
    ``k_c^{2D} = k(0, :)``: a 2D kernel over the support dims (Hb, Wb) with stride
    ``support_stride``, applied at every query position. The output is their sum, so the
    layer equals a dense :class:`Conv4d` whose kernel is zero off the center-pivot cross
    (see :meth:`to_dense`). As in HSNet, strides shrink only the support dims; the query
    dims keep their size (``padding = k // 2``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        support_stride: int | Sequence[int] = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        k = _as4(kernel_size, "kernel_size")
        if any(v % 2 == 0 for v in k):
            raise ValueError(f"center-pivot kernels need odd sizes to have a center, got {k}")
        s = (support_stride,) * 2 if isinstance(support_stride, int) else tuple(support_stride)
        if len(s) != 2 or min(s) < 1:
            raise ValueError(f"support_stride must be a positive int or a pair, got {support_stride}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.support_stride = k, s
        self.query_conv = nn.Conv2d(in_channels, out_channels, k[:2], padding=(k[0] // 2, k[1] // 2), bias=bias)
        self.support_conv = nn.Conv2d(
            in_channels, out_channels, k[2:], stride=s, padding=(k[2] // 2, k[3] // 2), bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_corr_tensor(x, self.in_channels, "CenterPivotConv4d")
        b, c, ha, wa, hb, wb = x.shape
        sh, sw = self.support_stride
        # Eq. 6 (support subspace): conv over (Hb, Wb) for every query position.
        w2 = self.support_conv.weight.unsqueeze(2)  # (O, C, 1, k3, k4)
        out_s = F.conv3d(
            x.reshape(b, c, ha * wa, hb, wb), w2, self.support_conv.bias,
            (1, sh, sw), (0,) + self.support_conv.padding,
        )
        hb2, wb2 = out_s.shape[-2:]
        # Eq. 7 (query subspace): conv over (Ha, Wa) at the strided support positions.
        pivots = x[..., ::sh, ::sw] if (sh, sw) != (1, 1) else x
        w1 = self.query_conv.weight.unsqueeze(-1)  # (O, C, k1, k2, 1)
        out_q = F.conv3d(
            pivots.reshape(b, c, ha, wa, hb2 * wb2), w1, self.query_conv.bias,
            1, self.query_conv.padding + (0,),
        )
        return out_s.view(b, -1, ha, wa, hb2, wb2) + out_q.view(b, -1, ha, wa, hb2, wb2)

    def to_dense(self) -> Conv4d:
        """The equivalent dense :class:`Conv4d` (kernel zero off the center-pivot cross).

        Both 2D biases add up in the dense bias; the centre tap receives both centre
        weights, as Eq. 5 sums the two kernels.
        """
        k = self.kernel_size
        dense = Conv4d(self.in_channels, self.out_channels, k, (1, 1) + self.support_stride,
                       tuple(v // 2 for v in k), bias=self.query_conv.bias is not None)
        w = torch.zeros_like(dense.weight)
        w[:, :, :, :, k[2] // 2, k[3] // 2] += self.query_conv.weight.detach()
        w[:, :, k[0] // 2, k[1] // 2, :, :] += self.support_conv.weight.detach()
        with torch.no_grad():
            dense.weight.copy_(w)
            if dense.bias is not None:
                dense.bias.copy_(self.query_conv.bias + self.support_conv.bias)
        return dense


def center_pivot_mask(kernel_size: int | Sequence[int]) -> torch.Tensor:
    """Boolean (k1, k2, k3, k4) mask of the center-pivot cross P_CP (supplementary Eq. 4)."""
    k = _as4(kernel_size, "kernel_size")
    mask = torch.zeros(k, dtype=torch.bool)
    mask[:, :, k[2] // 2, k[3] // 2] = True  # p' = x': query neighbours (Eq. 3)
    mask[k[0] // 2, k[1] // 2, :, :] = True  # p = x: support neighbours (Eq. 2)
    return mask
