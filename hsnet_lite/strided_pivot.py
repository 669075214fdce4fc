"""Training a strided center-pivot 4D conv on the CPU with one hand-written backward pass.

A squeezing layer with support stride s (supplementary Eq. 8) sums two 2D convs of its
channels-last input x (B, Ha, Wa, Hb, Wb, C): the support conv (Eq. 6) reads all of x, the query
conv (Eq. 7) only the pivots x[:, :, :, ::s, ::s]. Left to autograd, the pivots' gradient is
scattered into a fresh zero tensor the size of x and then added to the support conv's input
gradient: two passes over the largest tensor of the level, plus the page faults of allocating
it. :class:`StridedCenterPivot` adds the pivots' gradient in place into the support conv's
input gradient instead (same values; only the order of the sum at the pivots differs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Pair = tuple[int, int]


def support_images(x6: torch.Tensor) -> torch.Tensor:
    """(B, Ha, Wa, H, W, C) channels-last -> the (B*Ha*Wa, C, H, W) channels-last images."""
    b, ha, wa, h, w, c = x6.shape
    return x6.reshape(b * ha * wa, h, w, c).permute(0, 3, 1, 2)


def pivot_images(x6: torch.Tensor) -> torch.Tensor:
    """(B, Ha, Wa, P, Q, C) -> a batch of B*P*Q channels-last (C, Ha, Wa) images (a copy)."""
    b, ha, wa, p, q, c = x6.shape
    images = x6.permute(0, 3, 4, 1, 2, 5).reshape(b * p * q, ha, wa, c).permute(0, 3, 1, 2)
    return images.contiguous(memory_format=torch.channels_last)


def from_pivot_images(images: torch.Tensor, b: int, p: int, q: int) -> torch.Tensor:
    """Inverse layout of :func:`pivot_images`: (B*P*Q, C, Ha, Wa) -> a (B, Ha, Wa, P, Q, C) view."""
    _, c, ha, wa = images.shape
    return images.permute(0, 2, 3, 1).reshape(b, p, q, ha, wa, c).permute(0, 3, 4, 1, 2, 5)


class StridedCenterPivot(torch.autograd.Function):
    """``support_conv(x) + query_conv(pivots of x)`` of a center-pivot layer, as a
    (B, Ha, Wa, Hb', Wb', O) tensor, from its channels-last (B, Ha, Wa, Hb, Wb, C) input ``xl``.

    ``bias`` is the sum of both convs' biases (or None); ``stride`` the support stride,
    ``padding`` = (query padding, support padding). Equal to the autograd path of
    :class:`~hsnet_lite.conv4d.CenterPivotConv4d` (tests/test_strided_pivot.py).
    """

    @staticmethod
    def forward(ctx, xl, query_weight, support_weight, bias, stride: Pair, padding: tuple[Pair, Pair]):  # noqa: D102
        b, ha, wa = xl.shape[:3]
        sh, sw = stride
        strided = xl[:, :, :, ::sh, ::sw]
        hb2, wb2 = strided.shape[3:5]
        pivots = pivot_images(strided)
        q = F.conv2d(pivots, query_weight, None, 1, padding[0])
        y = F.conv2d(support_images(xl), support_weight, bias, stride, padding[1])
        o = y.shape[1]  # odd kernels, padding k // 2: one output per pivot, (hb2, wb2)
        y = y.contiguous(memory_format=torch.channels_last)  # a no-op unless C or O is 1
        out = y.permute(0, 2, 3, 1).view(b, ha, wa, hb2, wb2, o)
        out.add_(from_pivot_images(q, b, hb2, wb2))
        ctx.save_for_backward(xl, pivots, query_weight, support_weight)
        ctx.conf = (stride, padding, bias is not None)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        xl, pivots, query_weight, support_weight = ctx.saved_tensors
        stride, padding, has_bias = ctx.conf
        need_x, need_qw, need_sw, need_bias = ctx.needs_input_grad[:4]
        b, ha, wa, hb2, wb2, o = grad.shape
        grad = grad.contiguous()
        g_images = grad.view(b * ha * wa, hb2, wb2, o).permute(0, 3, 1, 2)
        gx, g_sw, g_bias = torch.ops.aten.convolution_backward(
            g_images, support_images(xl), support_weight, [o] if has_bias else None, stride, padding[1], (1, 1),
            False, (0, 0), 1, (need_x, need_sw, need_bias and has_bias))
        g_q = pivot_images(grad)
        g_piv, g_qw, _ = torch.ops.aten.convolution_backward(
            g_q, pivots, query_weight, None, (1, 1), padding[0], (1, 1), False, (0, 0), 1, (need_x, need_qw, False))
        if need_x:
            gx = gx.permute(0, 2, 3, 1).reshape(xl.shape)
            gx[:, :, :, :: stride[0], :: stride[1]] += from_pivot_images(g_piv, b, hb2, wb2)
        return gx, g_qw, g_sw, g_bias, None, None
