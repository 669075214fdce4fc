"""Training a strided center-pivot 4D conv on the CPU with one hand-written backward pass.

A squeezing layer with support stride s (supplementary Eq. 8) sums two 2D convs of its
channels-last input x (B, Ha, Wa, Hb, Wb, C): the support conv (Eq. 6) reads all of x, the query
conv (Eq. 7) only the pivots x[:, :, :, ::s, ::s]. Left to autograd, the pivots' gradient is
scattered into a fresh zero tensor the size of x and then added to the support conv's input
gradient: two passes over the largest tensor of the level, plus the page faults of allocating
it. :class:`StridedCenterPivot` adds the pivots' gradient in place into the support conv's
input gradient instead (same values; only the order of the sum at the pivots differs).

The second squeezing layer can also be told where its input is one constant per channel
(:class:`ConstantOutside`: the first layer's output outside the block its cropped support
window produced, :mod:`hsnet_lite.fast.cropped_norm`). Every pivot there sees the same constant
(C, Ha, Wa) image, so the query conv runs once per image for all of them, forward and backward;
at level 1 with an object mask that is 12 of the 16 pivots.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

Pair = tuple[int, int]


@dataclass(frozen=True)
class ConstantOutside:
    """A channels-last (B, Ha, Wa, Hb, Wb, C) tensor equals ``value[b, c]`` at every support
    position outside ``rows`` x ``cols`` (``value``: (B, C), part of the autograd graph)."""

    value: torch.Tensor
    rows: slice
    cols: slice

    def pivot_box(self, stride: Pair, size: Pair) -> tuple[int, int, int, int]:
        """Pivot rows r0:r1 and columns c0:c1 inside rows x cols, for a layer of support stride
        ``stride`` on an input of support size ``size`` (its pivot (i, j) reads (s_h i, s_w j))."""
        (sh, sw), (hb, wb) = stride, size
        r0, r1 = -(-self.rows.start // sh), min(-(-hb // sh), (self.rows.stop - 1) // sh + 1)
        c0, c1 = -(-self.cols.start // sw), min(-(-wb // sw), (self.cols.stop - 1) // sw + 1)
        return r0, max(r0, r1), c0, max(c0, c1)


def outside_box(box: tuple[int, int, int, int], size: Pair) -> list[tuple[slice, slice]]:
    """The pivot grid (``size``) minus the box r0:r1 x c0:c1 (possibly empty), as at most four
    non-empty (rows, cols) slices: the rows above and below the box, then the columns beside it."""
    (r0, r1, c0, c1), (n, m) = box, size
    pieces = [(slice(0, r0), slice(0, m)), (slice(r1, n), slice(0, m)),
              (slice(r0, r1), slice(0, c0)), (slice(r0, r1), slice(c1, m))]
    return [(r, c) for r, c in pieces if r.stop > r.start and c.stop > c.start]


def support_images(x6: torch.Tensor) -> torch.Tensor:
    """(B, Ha, Wa, H, W, C) channels-last -> the (B*Ha*Wa, C, H, W) channels-last images."""
    b, ha, wa, h, w, c = x6.shape
    return x6.reshape(b * ha * wa, h, w, c).permute(0, 3, 1, 2)


# bit-for-bit carriers of 16 and 8 bytes for :func:`wide_contiguous`
_WIDE_DTYPES = ((16, torch.complex128), (8, torch.float64))


def wide_contiguous(x: torch.Tensor) -> torch.Tensor:
    """``x.contiguous()`` for a strided view whose last dim (the channels) is contiguous, copied
    in units as wide as a position's channels allow: PyTorch's copy moves the C floats of each
    position one by one, so gathering the pivots of a 4-channel first layer goes about 3x faster
    as one 16-byte element per position. The same bytes either way; CPU, without autograd only
    (the plain copy otherwise, and in a compiled graph)."""
    if (x.is_contiguous() or x.device.type != "cpu" or x.dim() == 0 or x.stride(-1) != 1 or x.requires_grad
            or torch.compiler.is_compiling()):  # (inductor generates no code for complex copies)
        return x.contiguous()
    nbytes = x.shape[-1] * x.element_size()
    for width, carrier in _WIDE_DTYPES:
        ratio = width // x.element_size()
        if ratio > 1 and nbytes % width == 0 and x.storage_offset() % ratio == 0 \
                and all(st % ratio == 0 for st in x.stride()[:-1]):
            return x.view(carrier).contiguous().view(x.dtype)
    return x.contiguous()


def pivot_images(x6: torch.Tensor) -> torch.Tensor:
    """(B, Ha, Wa, P, Q, C) -> a batch of B*P*Q channels-last (C, Ha, Wa) images (a copy)."""
    b, ha, wa, p, q, c = x6.shape
    images = wide_contiguous(x6.permute(0, 3, 4, 1, 2, 5)).view(b * p * q, ha, wa, c).permute(0, 3, 1, 2)
    return images.contiguous(memory_format=torch.channels_last)


def from_pivot_images(images: torch.Tensor, b: int, p: int, q: int) -> torch.Tensor:
    """Inverse layout of :func:`pivot_images`: (B*P*Q, C, Ha, Wa) -> a (B, Ha, Wa, P, Q, C) view."""
    _, c, ha, wa = images.shape
    return images.permute(0, 2, 3, 1).reshape(b, p, q, ha, wa, c).permute(0, 3, 4, 1, 2, 5)


def constant_image(value: torch.Tensor, ha: int, wa: int) -> torch.Tensor:
    """The (B, C, Ha, Wa) channels-last image equal to ``value[b, c]`` (B, C) everywhere."""
    b, c = value.shape
    return value.view(b, c, 1, 1).expand(b, c, ha, wa).contiguous(memory_format=torch.channels_last)


class StridedCenterPivot(torch.autograd.Function):
    """``support_conv(x) + query_conv(pivots of x)`` of a center-pivot layer, as a
    (B, Ha, Wa, Hb', Wb', O) tensor, from its channels-last (B, Ha, Wa, Hb, Wb, C) input ``xl``.

    ``bias`` is the sum of both convs' biases (or None); ``stride`` the support stride,
    ``padding`` = (query padding, support padding). Equal to the autograd path of
    :class:`~hsnet_lite.conv4d.CenterPivotConv4d` (tests/test_strided_pivot.py).

    With ``const`` (B, C) and ``box`` = (r0, r1, c0, c1) (:meth:`ConstantOutside.pivot_box`), the
    pivots outside the box read the constant image ``const`` instead of ``xl``: one query conv per
    image for all of them, and their gradient goes to ``const`` (the caller guarantees that ``xl``
    equals ``const`` there, so the sum is the same function of the layer's input).
    """

    @staticmethod
    def forward(ctx, xl, query_weight, support_weight, bias, stride: Pair, padding: tuple[Pair, Pair],
                const=None, box=None):  # noqa: D102
        b, ha, wa = xl.shape[:3]
        sh, sw = stride
        strided = xl[:, :, :, ::sh, ::sw]
        hb2, wb2 = strided.shape[3:5]
        r0, r1, c0, c1 = box = box if const is not None else (0, hb2, 0, wb2)
        y = F.conv2d(support_images(xl), support_weight, bias, stride, padding[1])
        o = y.shape[1]  # odd kernels, padding k // 2: one output per pivot, (hb2, wb2)
        y = y.contiguous(memory_format=torch.channels_last)  # a no-op unless C or O is 1
        out = y.permute(0, 2, 3, 1).view(b, ha, wa, hb2, wb2, o)
        pivots = image = None
        if r1 > r0 and c1 > c0:
            pivots = pivot_images(strided[:, :, :, r0:r1, c0:c1])
            q = F.conv2d(pivots, query_weight, None, 1, padding[0])
            out[:, :, :, r0:r1, c0:c1] += from_pivot_images(q, b, r1 - r0, c1 - c0)
        pieces = outside_box(box, (hb2, wb2)) if const is not None else []
        if pieces:
            image = constant_image(const, ha, wa)
            q = F.conv2d(image, query_weight, None, 1, padding[0]).permute(0, 2, 3, 1)  # (B, Ha, Wa, O)
            for rows, cols in pieces:
                out[:, :, :, rows, cols] += q.view(b, ha, wa, 1, 1, o)
        ctx.save_for_backward(xl, pivots, image, query_weight, support_weight)
        ctx.conf = (stride, padding, bias is not None, box, pieces)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        xl, pivots, image, query_weight, support_weight = ctx.saved_tensors
        stride, padding, has_bias, (r0, r1, c0, c1), pieces = ctx.conf
        need_x, need_qw, need_sw, need_bias = ctx.needs_input_grad[:4]
        b, ha, wa, hb2, wb2, o = grad.shape
        grad = grad.contiguous()
        g_images = grad.view(b * ha * wa, hb2, wb2, o).permute(0, 3, 1, 2)
        gx, g_sw, g_bias = torch.ops.aten.convolution_backward(
            g_images, support_images(xl), support_weight, [o] if has_bias else None, stride, padding[1], (1, 1),
            False, (0, 0), 1, (need_x, need_sw, need_bias and has_bias))
        g_qw = g_const = g_piv = None
        if pivots is not None:
            g_q = pivot_images(grad[:, :, :, r0:r1, c0:c1])
            g_piv, g_qw, _ = torch.ops.aten.convolution_backward(
                g_q, pivots, query_weight, None, (1, 1), padding[0], (1, 1), False, (0, 0), 1, (need_x, need_qw, False))
        if image is not None:  # every constant pivot's gradient, summed: one conv backward per image
            g_sum = sum(grad[:, :, :, rows, cols].sum(dim=(3, 4)) for rows, cols in pieces)  # (B, Ha, Wa, O)
            need_const = ctx.needs_input_grad[6]
            g_image, g_qw_c, _ = torch.ops.aten.convolution_backward(
                g_sum.permute(0, 3, 1, 2), image, query_weight, None, (1, 1), padding[0], (1, 1), False, (0, 0), 1,
                (need_const, need_qw, False))
            g_const = g_image.sum(dim=(2, 3)) if need_const else None
            if need_qw:
                g_qw = g_qw_c if g_qw is None else g_qw + g_qw_c
        if need_x:
            gx = gx.permute(0, 2, 3, 1).reshape(xl.shape)
            if g_piv is not None:
                gx[:, :, :, :: stride[0], :: stride[1]][:, :, :, r0:r1, c0:c1] += from_pivot_images(
                    g_piv, b, r1 - r0, c1 - c0)
        return gx, g_qw, g_sw, g_bias, None, None, g_const, None
