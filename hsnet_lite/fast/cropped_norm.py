"""The first squeezing layer's group norm when its output is mostly one constant (exact).

Given the support window its input was cut to (:mod:`hsnet_lite.fast.support_crop`), the first
center-pivot conv of a level computes only a block of its output; everywhere else the output is
the bias. :func:`cropped_conv_norm` then normalises the block and adds the constant region to the
group statistics in closed form, and :class:`_CroppedGroupNorm` differentiates it the same way:
the constant region needs only per-channel sums of the output gradient.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..conv4d import CenterPivotConv4d
from ..correlation import workspace_buffer
from .folded_convs import needs_autograd
from .strided_pivot import ConstantOutside, outside_box
from .support_crop import CroppedCorrelation

if TYPE_CHECKING:
    from ..blocks import GroupNorm4d


def cropped_conv_norm(conv: CenterPivotConv4d, norm: GroupNorm4d,
                      corr: CroppedCorrelation) -> tuple[torch.Tensor, ConstantOutside | None]:
    """``norm(conv(C))`` for the first layer of f_p^sqz given the support window of C_p it reads
    (:mod:`hsnet_lite.fast.support_crop`).

    Every output of the conv outside its computed block is the bias, one constant vector: the
    group statistics add that region in closed form (n values equal to the bias), the region
    becomes one normalised constant, and only the block is normalised element-wise. This skips
    the group norm's passes over the constant region (half of a 27 MB tensor per image at
    400x400); with autograd, :class:`_CroppedGroupNorm` differentiates it the same way. The
    statistics are combined in float64.

    Returns the normalised output and, when it was computed this way, where it is constant
    (:class:`~hsnet_lite.fast.strided_pivot.ConstantOutside`, for the second layer), else None.
    """
    if not conv.fits(corr):
        return norm(conv(corr.to_full())), None
    if conv.query_conv.bias is None or not norm.affine:
        return norm(conv.forward_cropped(corr)), None
    block, bias = conv.cropped_block(corr)
    rows, cols = corr.rows, corr.cols
    geometry = _CropGeometry((rows.n_out, cols.n_out), (slice(rows.lo, rows.hi + 1), slice(cols.lo, cols.hi + 1)),
                             norm.num_groups, norm.eps, norm.relu)
    if needs_autograd(block, bias, norm.weight, norm.bias):
        out, const = _CroppedGroupNorm.apply(block, bias, norm.weight, norm.bias, geometry)
    else:
        b, ha, wa, _, _, o = block.shape
        full = (b, ha, wa, *geometry.size, o)
        out = workspace_buffer(full, block, block.dtype, False, corr.workspace, ("first squeeze layer", full[1:]))
        const = _normalise_into(out, block, bias, norm.weight, norm.bias, geometry)[-1]
    return out.permute(0, 5, 1, 2, 3, 4), ConstantOutside(const, *geometry.region)


@dataclass(frozen=True)
class _CropGeometry:
    """Where the computed block sits in the first layer's output, and the norm's settings."""

    size: tuple[int, int]  # support dims of the full output
    region: tuple[slice, slice]  # the block's rows and columns in it
    groups: int
    eps: float
    relu: bool


def _channel_sums(x: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel sums of a (B, ..., O) tensor, (B, O) in float64."""
    return x.reshape(x.shape[0], -1, x.shape[-1]).sum(1).double()


def _group_mean(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, O) per-channel values -> the mean over each channel group, repeated per channel."""
    b, o = x.shape
    return x.view(b, groups, o // groups).mean(2).repeat_interleave(o // groups, dim=1)


def _closed_form_stats(block: torch.Tensor, bias: torch.Tensor, geo: _CropGeometry,
                       scratch: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Group statistics of the full first-layer output (the block, the bias everywhere else):
    per-channel mean and 1/std (B, O), and the number of constant values per channel, float64.

    Two-pass on the block (its mean, then squared deviations from it), merged with the constant
    region and across each group's channels by the parallel variance formula (Chan et al.):
    a one-pass E[x^2] - E[x]^2 loses digits when the spread is small next to the mean. The squared
    deviations are written to ``scratch`` (as many elements as ``block``; the caller's output
    buffer, not yet filled, rather than a fresh tensor and its page faults).
    """
    b, ha, wa, nh, nw, o = block.shape
    n_block = ha * wa * nh * nw
    n_total = ha * wa * geo.size[0] * geo.size[1]  # values per channel and image
    n_const = n_total - n_block
    mean_b = _channel_sums(block) / n_block  # (B, O)
    deviations = scratch.view(-1)[:block.numel()].view(block.shape)
    m2_b = _channel_sums(torch.sub(block, mean_b.to(block.dtype).view(b, 1, 1, 1, 1, o), out=deviations).square_())
    delta = bias.double() - mean_b
    mean_c = mean_b + delta * (n_const / n_total)  # per-channel mean over the full output
    m2_c = m2_b + delta.square() * (n_block * n_const / n_total)
    mean = _group_mean(mean_c, geo.groups)
    var = _group_mean(m2_c / n_total + (mean_c - mean).square(), geo.groups)
    return mean, torch.rsqrt(var + geo.eps), n_const


def _normalise_into(out: torch.Tensor, block: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor,
                    beta: torch.Tensor, geo: _CropGeometry) -> tuple[torch.Tensor, ...]:
    """Fill ``out`` (B, Ha, Wa, H', W', O) with the normalised (and ReLU'd) first-layer output.
    Returns the statistics (mean, rstd, n_const, float64) and the value of the constant region,
    (B, O) in ``out``'s dtype."""
    b, o = block.shape[0], block.shape[-1]
    mean, rstd, n_const = _closed_form_stats(block, bias, geo, scratch=out)
    scale64 = rstd * weight.double()
    shift64 = beta.double() - mean * scale64
    const = torch.addcmul(shift64, bias.double().expand(b, o), scale64)
    scale, shift = scale64.to(block.dtype), shift64.to(block.dtype)
    value = (const.relu() if geo.relu else const).to(out.dtype)
    rows, cols = geo.region
    for piece in outside_box((rows.start, rows.stop, cols.start, cols.stop), geo.size):  # the constant region
        out[:, :, :, piece[0], piece[1]] = value.view(b, 1, 1, 1, 1, o)
    region = out[:, :, :, rows, cols]
    torch.addcmul(shift.view(b, 1, 1, 1, 1, o), block, scale.view(b, 1, 1, 1, 1, o), out=region)
    if geo.relu:
        region.relu_()
    return mean, rstd, n_const, const, value


class _CroppedGroupNorm(torch.autograd.Function):
    """GroupNorm (+ ReLU) of the first layer's output given as its block and the bias, with the
    group norm's gradient (x_hat = (x - mu) * rstd, dy' = weight * dy:
    dx = rstd * (dy' - mean(dy') - x_hat * mean(dy' x_hat)), means over the group) taken over
    the constant region in closed form: there x_hat is one value per channel, so the region
    needs only per-channel sums of the output gradient.

    Two outputs: the full (B, Ha, Wa, H', W', O) tensor and the constant region's value (B, O),
    which a layer may read in place of the region (:class:`~hsnet_lite.fast.strided_pivot.ConstantOutside`);
    the gradients of both reach the constant region.
    """

    @staticmethod
    def forward(ctx, block, bias, weight, beta, geo):  # noqa: D102
        b, ha, wa, _, _, o = block.shape
        out = block.new_empty(b, ha, wa, *geo.size, o)
        mean, rstd, n_const, const, value = _normalise_into(out, block, bias, weight, beta, geo)
        ctx.save_for_backward(block, bias, weight, out, mean, rstd, const)
        ctx.geo, ctx.n_const = geo, n_const
        return out, value

    @staticmethod
    def backward(ctx, grad, grad_value):  # noqa: D102
        block, bias, weight, out, mean, rstd, const = ctx.saved_tensors
        geo, n_const = ctx.geo, ctx.n_const
        b, o = block.shape[0], block.shape[-1]
        g = grad[:, :, :, geo.region[0], geo.region[1]].contiguous()  # the block's output gradient
        g_c = _channel_sums(grad) - _channel_sums(g) + grad_value.double()  # (B, O): the constant region's
        if geo.relu:
            g.masked_fill_(out[:, :, :, geo.region[0], geo.region[1]] <= 0, 0)
            g_c = g_c * (const > 0)
        xhat_c = (bias.double() - mean) * rstd  # (B, O): x_hat of the constant region
        temp = torch.mul(g, block)
        block_g = _channel_sums(g)
        sum_g = block_g + g_c  # sums over the whole output of dy and dy * x_hat, (B, O)
        sum_gx = rstd * (_channel_sums(temp) - mean * block_g) + g_c * xhat_c
        w64 = weight.double()
        n = n_const + block[0].numel() // o  # values per channel and image
        a = _group_mean(w64 * sum_g, geo.groups) / n  # mean(dy') over the group
        c = _group_mean(w64 * sum_gx, geo.groups) / n  # mean(dy' x_hat) over the group
        # dx = rstd * (w dy - a - (x - mu) * rstd * c) on the block: one multiply-add per term
        view = (b, 1, 1, 1, 1, o)
        k1 = -(rstd * rstd * c)
        k0 = -rstd * a - mean * k1
        d_block = torch.addcmul(k0.to(block.dtype).view(view), block, k1.to(block.dtype).view(view), out=temp)
        d_block.addcmul_(g, (rstd * w64).to(block.dtype).view(view))
        d_bias = (rstd * (w64 * g_c - n_const * (a + xhat_c * c))).sum(0)
        return d_block, d_bias.to(bias.dtype), sum_gx.sum(0).to(weight.dtype), sum_g.sum(0).to(weight.dtype), None
