"""4D convolutions on correlation tensors of shape (B, C, Ha, Wa, Hb, Wb).

Dims (Ha, Wa) are the *query* positions x and (Hb, Wb) the *support* positions x'
(supplementary Sec. 3). Two layers live here:

* :class:`Conv4d` -- the dense 4D convolution of supplementary Eq. 1, a teaching and
  testing reference whose cost grows with k^4.
* :class:`CenterPivotConv4d` -- the paper's center-pivot 4D convolution, Eq. 8: one 2D
  convolution over the query dims (kernel ``k_c'``, Eq. 7) plus one over the support dims
  (kernel ``k_c``, Eq. 6). Its cost grows with 2 k^2.

Both are written without any permute copy of the 6D tensor. :class:`CenterPivotConv4d` works
fastest on a *channels-last* 6D tensor (memory order B, Ha, Wa, Hb, Wb, C; see
:func:`to_channels_last_6d`): there, both of its 2D convolutions read the input in place --

* support dims: the tensor viewed as a batch of B*Ha*Wa channels-last images (C, Hb, Wb);
* query dims: the tensor viewed as B channels-last images (C, Ha, Wa*Hb*Wb), convolved with a
  dilation of Hb*Wb along the second axis, so each kernel tap along Wa steps over a whole
  support slice, and padding k//2 * Hb*Wb is exactly the zero padding of Wa;

and both write the same memory order, so the two halves add up without any reordering. HSNet's
learner keeps every 4D tensor channels-last; a standard (contiguous) input is converted on entry
and the output is given back contiguous.

At inference on the CPU, the strided (squeezing) layers run instead as one fused kernel compiled
for the machine (:mod:`hsnet_lite.fast.native`), which reads the input once, needs no gather of
the pivots and adds the two branches in registers; where it cannot be built, the path above.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .fast import native
from .fast.folded_convs import KernelPacks, needs_autograd, onednn_available
from .fast.strided_pivot import (ConstantOutside, StridedCenterPivot, constant_image, from_pivot_images, pivot_images,
                                 support_images, wide_contiguous)
from .fast.support_crop import CroppedCorrelation

Int4 = tuple[int, int, int, int]
# Devices on which the query branch of inference reads the channels-last tensor in place with a
# dilated conv (oneDNN on the CPU); elsewhere the pivots are gathered into a batch of images.
DILATED_QUERY_DEVICES = {"cpu"}
# Layers the fused kernel (hsnet_lite.fast.native) runs at CPU inference: the squeezing layers
# (strided, at most this many input channels; output channels a multiple of 16). The mixing layers
# (no stride, a 2x2 support) keep oneDNN's convs, which run them as fast.
FUSED_MAX_IN_CHANNELS = 64


def is_channels_last_6d(x: torch.Tensor) -> bool:
    """True when the (B, C, Ha, Wa, Hb, Wb) tensor is stored in the order (B, Ha, Wa, Hb, Wb, C)."""
    return x.dim() == 6 and x.permute(0, 2, 3, 4, 5, 1).is_contiguous()


def channels_last_view(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The (B, C, Ha, Wa, Hb, Wb) tensor as a contiguous (B, Ha, Wa, Hb, Wb, C) tensor -- a view
    when ``x`` is stored channels-last, a copy otherwise -- and whether it was a view."""
    xl = x.permute(0, 2, 3, 4, 5, 1)
    in_place = xl.is_contiguous()
    return (xl if in_place else xl.contiguous()), in_place


def to_channels_last_6d(x: torch.Tensor) -> torch.Tensor:
    """The same (B, C, Ha, Wa, Hb, Wb) tensor stored channels-last (a copy unless it already is)."""
    return x.permute(0, 2, 3, 4, 5, 1).contiguous().permute(0, 5, 1, 2, 3, 4)


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
        self._tap_index: dict = {}  # (Hb, Wb, device) -> kernel-tap index of _support_matrix
        self._matrix_cache: tuple | None = None  # (key, matrix) of the last inference call
        self._packs = KernelPacks()  # oneDNN-packed kernels of CPU inference
        self._fused_packs = native.PackedKernels()  # kernels of the fused CPU inference kernel

    def forward(self, x: torch.Tensor, constant: ConstantOutside | None = None) -> torch.Tensor:
        """Eq. 8 on ``x`` (B, C, Ha, Wa, Hb, Wb). ``constant``, optional, says where ``x`` is one
        value per channel (the first squeezing layer's output on a cropped window): the query conv
        then runs once per image for all the pivots there (:meth:`_constant_pivots` at inference,
        :class:`~hsnet_lite.fast.strided_pivot.StridedCenterPivot` for a strided layer trained on
        the CPU)."""
        check_corr_tensor(x, self.in_channels, "CenterPivotConv4d")
        xl, channels_last = channels_last_view(x)  # (B, Ha, Wa, Hb, Wb, C)
        bias = self.summed_bias()
        if self._trains_strided(xl):  # Eq. 8 with a hand-written backward (hsnet_lite.fast.strided_pivot)
            k = self.kernel_size
            padding = ((k[0] // 2, k[1] // 2), (k[2] // 2, k[3] // 2))
            const, box = None, None
            if constant is not None:
                const, box = constant.value, constant.pivot_box(self.support_stride, xl.shape[3:5])
            out = StridedCenterPivot.apply(xl, self.query_conv.weight, self.support_conv.weight, bias,
                                           self.support_stride, padding, const, box)
        elif constant is None and self.runs_fused(xl):  # Eq. 8 in one pass (hsnet_lite.fast.native)
            # (given ``constant``, the path below is faster: it skips the pivots known to be constant)
            out = self._fused(xl, bias, self.support_conv.padding)
        else:
            q = self._query_branch(xl, constant)  # Eq. 7, as a (B, Ha, Wa, Hb', Wb', O) tensor
            out = self._support_branch(xl, bias, q)  # Eq. 6, plus q: Eq. 8
        out = out.permute(0, 5, 1, 2, 3, 4)
        return out if channels_last else out.contiguous()

    def summed_bias(self) -> torch.Tensor | None:
        """The two convs' biases added up (Eq. 8 sums the branches, so one conv carries both), or None."""
        qb, sb = self.query_conv.bias, self.support_conv.bias
        return None if qb is None else qb + sb

    def pivots(self, xl: torch.Tensor) -> torch.Tensor:
        """The strided support positions the query conv runs at: a (B, Ha, Wa, P, Q, C) view of the
        channels-last (B, Ha, Wa, Hb, Wb, C) ``xl`` (``xl`` itself for a support stride of 1)."""
        sh, sw = self.support_stride
        return xl[:, :, :, ::sh, ::sw] if (sh, sw) != (1, 1) else xl

    def runs_fused(self, xl: torch.Tensor) -> bool:
        """True when inference on the channels-last (B, Ha, Wa, Hb, Wb, C) ``xl`` runs as the fused
        kernel of :mod:`hsnet_lite.fast.native`: a strided layer with at most
        :data:`FUSED_MAX_IN_CHANNELS` inputs and a multiple of 16 outputs, fp32 on the CPU, nothing
        for autograd to record, outside a compiled graph, and the kernel built on this machine."""
        return (self.support_stride != (1, 1) and self.in_channels <= FUSED_MAX_IN_CHANNELS
                and native.supports(xl, self.out_channels)
                and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
                and not needs_autograd(xl, *self.parameters()) and native.available())

    def _fused(self, xl: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]) -> torch.Tensor:
        """Eq. 8 by the fused kernel, the support conv with ``padding``: (B, Ha, Wa, Hb', Wb', O)."""
        qw, sw = self.query_conv.weight, self.support_conv.weight
        return native.center_pivot(xl, qw, sw, bias, self.support_stride, padding, self._fused_packs.get(qw, sw))

    def _trains_strided(self, xl: torch.Tensor) -> bool:
        """True for a strided layer trained on the CPU: :class:`StridedCenterPivot` runs it
        (the support slice larger than the kernel; otherwise the small-slice map below)."""
        kh, kw = self.kernel_size[2:]
        return (torch.is_grad_enabled() and xl.device.type == "cpu" and self.support_stride != (1, 1)
                and xl.shape[3] * xl.shape[4] > kh * kw and needs_autograd(xl, *self.parameters()))

    def _support_branch(self, xl: torch.Tensor, bias: torch.Tensor | None, add: torch.Tensor) -> torch.Tensor:
        """Eq. 6: a 2D conv over (Hb, Wb) at every query position, on the channels-last view, plus
        ``add`` (the query branch's (B, Ha, Wa, Hb', Wb', O) output), the sum of Eq. 8.

        At inference on the CPU, oneDNN adds the conv's result into ``add`` in place (a sum post-op:
        ``add`` is the caller's temporary, overwritten with the sum); otherwise ``add`` is added in
        place to the conv's output. Returns the (B, Ha, Wa, Hb', Wb', O) sum.
        """
        b, ha, wa, hb, wb, c = xl.shape
        o, (hb2, wb2) = self.out_channels, add.shape[3:5]
        conv = self.support_conv
        kh, kw = conv.kernel_size
        if hb * wb <= kh * kw:
            # The whole support slice is no larger than the kernel (the mixing blocks' 2x2): the
            # conv is one small linear map of the slice, computed without the padded taps.
            hb2, wb2 = self._support_size(hb, wb)
            bias = None if bias is None else bias.repeat(hb2 * wb2)
            if xl.device.type != "cpu":
                flat = F.linear(xl.reshape(b * ha * wa, hb * wb * c), self._support_matrix(hb, wb), bias)
                return flat.add_(add.reshape(flat.shape)).view(b, ha, wa, hb2, wb2, o)  # (B*Ha*Wa, Hb'*Wb'*O)
            # on the CPU, the map as a 1x1 conv of the (Hb*Wb*C, Ha, Wa) image: oneDNN's conv runs
            # faster than the matmul, forward and backward, and at inference adds ``add`` as a post-op
            image = xl.reshape(b, ha, wa, hb * wb * c).permute(0, 3, 1, 2)
            other = add.reshape(b, ha, wa, hb2 * wb2 * o).permute(0, 3, 1, 2)
            if onednn_available(xl) and not needs_autograd(conv.weight, xl, add, bias):
                # only the packed matrix is kept, built when the weight has changed
                kernel = lambda: self._support_matrix(hb, wb, keep=False)[:, :, None, None]  # noqa: E731
                y = self._packs.conv(("matrix", hb, wb), image, kernel, bias, add=other, source=conv.weight,
                                     into_add=True)
            else:
                y = F.conv2d(image, self._support_matrix(hb, wb)[:, :, None, None], bias).add_(other)
            return y.permute(0, 2, 3, 1).reshape(b, ha, wa, hb2, wb2, o)
        images = support_images(xl)
        other = add.reshape(b * ha * wa, hb2, wb2, o).permute(0, 3, 1, 2)
        y = self._packs.run("support", images, conv.weight, bias, self.support_stride, conv.padding, add=other,
                            into_add=True)
        return y.permute(0, 2, 3, 1).reshape(b, ha, wa, hb2, wb2, o)

    def _query_branch(self, xl: torch.Tensor, constant: ConstantOutside | None = None) -> torch.Tensor:
        """Eq. 7: a 2D conv over (Ha, Wa) at every strided support position (the pivots).

        Inference on the CPU reads the channels-last view with a dilated conv (no copy for a
        support stride of 1; strided pivots are gathered first, with
        :func:`~hsnet_lite.fast.strided_pivot.wide_contiguous`), its kernel packed once for oneDNN
        (:class:`~hsnet_lite.fast.folded_convs.KernelPacks`). When the
        kernel is being trained, or on a GPU, the pivots are copied to a batch of (C, Ha, Wa)
        images instead: oneDNN's weight gradient of a dilated conv is several times slower than
        the plain one (see :data:`DILATED_QUERY_DEVICES`). Training on the CPU uses
        :meth:`_query_branch_grouped` for a support stride of 1, and
        :class:`~hsnet_lite.fast.strided_pivot.StridedCenterPivot` (both branches, with its own
        backward) for a larger one. At inference, given ``constant``, :meth:`_constant_pivots` runs it.
        """
        sh, sw = self.support_stride
        conv = self.query_conv
        training = torch.is_grad_enabled() and conv.weight.requires_grad
        if training and (sh, sw) == (1, 1) and xl.device.type == "cpu":
            return self._query_branch_grouped(xl)
        pivots = self.pivots(xl)
        if constant is None or needs_autograd(pivots, conv.weight, constant.value):
            return self._pivot_conv(pivots)
        return self._constant_pivots(pivots, constant, xl.shape[3:5])

    def _constant_pivots(self, pivots: torch.Tensor, constant: ConstantOutside, size: tuple[int, int]) -> torch.Tensor:
        """Eq. 7 at the pivots (B, Ha, Wa, P, Q, C), at inference, when ``constant`` says where the
        input is one value per channel (the first squeezing layer's output outside its cropped
        block, :mod:`hsnet_lite.fast.cropped_norm`): every pivot outside the box reads the same
        constant (C, Ha, Wa) image, so the query conv runs once per image for all of them, and on
        the pivots inside the box (at level 1 with the benchmark's object mask, 4 of the 16)."""
        b, ha, wa, p, q, _ = pivots.shape
        r0, r1, c0, c1 = constant.pivot_box(self.support_stride, size)
        conv = self.query_conv
        image = constant_image(constant.value, ha, wa)
        flat = self._packs.run("query, constant", image, conv.weight, None, (1, 1), conv.padding)
        o = flat.shape[1]
        out = flat.permute(0, 2, 3, 1).reshape(b, ha, wa, 1, 1, o).expand(b, ha, wa, p, q, o).contiguous()
        if r1 > r0 and c1 > c0:
            out[:, :, :, r0:r1, c0:c1] = self._pivot_conv(pivots[:, :, :, r0:r1, c0:c1])
        return out

    def _pivot_conv(self, pivots: torch.Tensor) -> torch.Tensor:
        """The query conv at each given pivot: (B, Ha, Wa, P, Q, C) -> (B, Ha, Wa, P, Q, O)."""
        conv = self.query_conv
        training = torch.is_grad_enabled() and conv.weight.requires_grad
        b, ha, wa, hb, wb, c = pivots.shape
        if training or pivots.device.type not in DILATED_QUERY_DEVICES:
            out = F.conv2d(pivot_images(pivots), conv.weight, None, 1, conv.padding)
            return from_pivot_images(out, b, hb, wb)
        return self.dilated_pivot_conv(wide_contiguous(pivots))

    def dilated_pivot_conv(self, pivots: torch.Tensor) -> torch.Tensor:
        """Eq. 7 at inference on the CPU, on pivots already gathered into a contiguous
        (B, Ha, Wa, P, Q, C) tensor: that tensor read in place as B channels-last (C, Ha, Wa*P*Q)
        images, convolved with a dilation of P*Q along the second axis. -> (B, Ha, Wa, P, Q, O)."""
        conv = self.query_conv
        b, ha, wa, hb, wb, c = pivots.shape
        d = hb * wb
        images = pivots.view(b, ha, wa * d, c).permute(0, 3, 1, 2)  # (B, C, Ha, Wa*P*Q)
        padding, dilation = (conv.padding[0], conv.padding[1] * d), (1, d)
        out = self._packs.run("query", images, conv.weight, None, (1, 1), padding, dilation)
        return out.permute(0, 2, 3, 1).reshape(b, ha, wa, hb, wb, self.out_channels)

    def forward_cropped(self, corr: CroppedCorrelation) -> torch.Tensor:
        """The layer on a level's correlation given as the support window it reads
        (:mod:`hsnet_lite.fast.support_crop`): equal to ``forward(corr.to_full())``.

        Both branches run on the window only (:meth:`cropped_block`); every other output is the
        bias (zero columns in both branches).
        """
        if not self.fits(corr):
            return self.forward(corr.to_full())
        block, bias = self.cropped_block(corr)
        rows, cols = corr.rows, corr.cols
        if bias is None:
            bias = block.new_zeros(self.out_channels)
        region = (slice(rows.lo, rows.hi + 1), slice(cols.lo, cols.hi + 1))
        out = _BlockInConstant.apply(block, bias, (rows.n_out, cols.n_out), region)
        return out.permute(0, 5, 1, 2, 3, 4)

    def fits(self, corr: CroppedCorrelation) -> bool:
        """True when ``corr`` was cut for this layer's support kernel and stride."""
        return ((corr.rows.k, corr.cols.k) == self.kernel_size[2:]
                and (corr.rows.s, corr.cols.s) == self.support_stride)

    def cropped_block(self, corr: CroppedCorrelation) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The outputs ``rows.lo..rows.hi`` x ``cols.lo..cols.hi`` of the layer on a cropped
        correlation, as a (B, Ha, Wa, nh, nw, O) tensor, and the bias every other output equals.

        The support conv runs without padding (the window carries its padding zeros) and gives
        exactly those outputs; their pivots sit at window positions k//2 + s*i.
        """
        rows, cols = corr.rows, corr.cols
        x = corr.crop
        check_corr_tensor(x, self.in_channels, "CenterPivotConv4d")
        xl = channels_last_view(x)[0]
        b, ha, wa = xl.shape[:3]
        nh, nw = rows.hi - rows.lo + 1, cols.hi - cols.lo + 1
        conv = self.support_conv
        bias = self.summed_bias()
        if self.runs_fused(xl):  # the window carries its padding: the support conv pads nothing
            return self._fused(xl, bias, (0, 0)), bias
        pivots = xl[:, :, :, rows.k // 2 :: rows.s, cols.k // 2 :: cols.s][:, :, :, :nh, :nw]
        q = self._pivot_conv(pivots)
        images = support_images(xl)
        other = q.reshape(b * ha * wa, nh, nw, self.out_channels).permute(0, 3, 1, 2)
        flat = self._packs.run("support", images, conv.weight, bias, self.support_stride, (0, 0), add=other,
                               into_add=True)
        return flat.permute(0, 2, 3, 1).reshape(b, ha, wa, nh, nw, self.out_channels), bias

    def _query_branch_grouped(self, xl: torch.Tensor) -> torch.Tensor:
        """Eq. 7 for a support stride of 1 (every support position is a pivot), copy-free in
        both directions: the channels-last tensor *is* a batch of (Hb*Wb*C, Ha, Wa) channels-last
        images, and one grouped conv (Hb*Wb groups, the kernel repeated in each) convolves every
        support position's (C, Ha, Wa) slice with the same kernel. Its output is already laid out
        as (B, Ha, Wa, Hb, Wb, O). Used to train on the CPU (the mixing blocks), where it spares
        the gather / scatter copies of the pivots and their gradients.
        """
        conv = self.query_conv
        b, ha, wa, hb, wb, c = xl.shape
        groups = hb * wb
        images = xl.reshape(b, ha, wa, groups * c).permute(0, 3, 1, 2)
        out = F.conv2d(images, conv.weight.repeat(groups, 1, 1, 1), None, 1, conv.padding, 1, groups)
        return out.permute(0, 2, 3, 1).reshape(b, ha, wa, hb, wb, self.out_channels)

    def _support_size(self, hb: int, wb: int) -> tuple[int, int]:
        """(Hb', Wb'): the support conv's output size on an (hb, wb) slice."""
        (kh, kw), (sh, sw), (ph, pw) = self.support_conv.kernel_size, self.support_stride, self.support_conv.padding
        return (hb + 2 * ph - kh) // sh + 1, (wb + 2 * pw - kw) // sw + 1

    def _support_matrix(self, hb: int, wb: int, keep: bool = True) -> torch.Tensor:
        """The support conv on an (hb, wb) slice as a (Hb'*Wb'*O, hb*wb*C) matrix.

        Entry ((i', j', o), (i, j, c)) is the kernel tap ``weight[o, c, i - s*i' + p, j - s*j' + p]``
        or zero off the kernel, so ``slice @ matrix.T`` equals the padded, strided conv. At
        inference the matrix of the last call is kept (unless not ``keep``) while the weight is
        unchanged.
        """
        conv = self.support_conv
        kh, kw = conv.kernel_size
        (sh, sw), (ph, pw) = self.support_stride, conv.padding
        hb2, wb2 = self._support_size(hb, wb)
        key = (hb, wb, conv.weight.device)
        idx = self._tap_index.get(key)
        if idx is None:
            ti = torch.arange(hb).view(1, -1) - sh * torch.arange(hb2).view(-1, 1) + ph  # (hb2, hb)
            tj = torch.arange(wb).view(1, -1) - sw * torch.arange(wb2).view(-1, 1) + pw  # (wb2, wb)
            ti, tj = ti.view(hb2, 1, hb, 1), tj.view(1, wb2, 1, wb)
            valid = (ti >= 0) & (ti < kh) & (tj >= 0) & (tj < kw)
            idx = torch.where(valid, ti * kw + tj, kh * kw).reshape(hb2 * wb2, hb * wb)  # kh*kw: a zero tap
            idx = self._tap_index[key] = idx.to(conv.weight.device)
        cached = keep and not needs_autograd(conv.weight)  # inference: reuse the matrix while the weight is unchanged
        cache_key = (key, conv.weight.data_ptr(), conv.weight._version, conv.weight.dtype)
        if cached and self._matrix_cache is not None and self._matrix_cache[0] == cache_key:
            return self._matrix_cache[1]
        o, c = conv.weight.shape[:2]
        taps = F.pad(conv.weight.reshape(o, c, kh * kw), (0, 1))  # (O, C, kh*kw + 1), last tap zero
        matrix = taps[:, :, idx]  # (O, C, Hb'*Wb', hb*wb)
        matrix = matrix.permute(2, 0, 3, 1).reshape(hb2 * wb2 * o, hb * wb * c)
        if cached and not conv.weight.is_inference():
            self._matrix_cache = (cache_key, matrix)
        return matrix

    def to_dense(self) -> Conv4d:
        """The equivalent dense :class:`Conv4d` (kernel zero off the center-pivot cross).

        Both 2D biases add up in the dense bias; the centre tap receives both centre
        weights, as Eq. 5 sums the two kernels.
        """
        k = self.kernel_size
        dense = Conv4d(self.in_channels, self.out_channels, k, (1, 1) + self.support_stride,
                       tuple(v // 2 for v in k), bias=self.query_conv.bias is not None).to(self.query_conv.weight)
        w = torch.zeros_like(dense.weight)
        w[:, :, :, :, k[2] // 2, k[3] // 2] += self.query_conv.weight.detach()
        w[:, :, k[0] // 2, k[1] // 2, :, :] += self.support_conv.weight.detach()
        with torch.no_grad():
            dense.weight.copy_(w)
            if dense.bias is not None:
                dense.bias.copy_(self.summed_bias())
        return dense


class _BlockInConstant(torch.autograd.Function):
    """A (B, Ha, Wa, H', W', O) tensor equal to ``bias`` everywhere but on the support ``region``
    (rows, cols), where it is ``block``: built in one pass, and differentiated without the copies
    autograd makes for an in-place slice assignment (the bias gradient is the sum of the output
    gradient outside the region)."""

    @staticmethod
    def forward(ctx, block, bias, size, region):  # noqa: D102
        b, ha, wa, _, _, o = block.shape
        out = bias.expand(b, ha, wa, *size, o).contiguous()
        out[:, :, :, region[0], region[1]] = block
        ctx.region = region
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        inside = grad[:, :, :, ctx.region[0], ctx.region[1]]
        grad_bias = grad.sum(dim=(0, 1, 2, 3, 4)) - inside.sum(dim=(0, 1, 2, 3, 4))
        return inside, grad_bias, None, None


def center_pivot_mask(kernel_size: int | Sequence[int]) -> torch.Tensor:
    """Boolean (k1, k2, k3, k4) mask of the center-pivot cross P_CP (supplementary Eq. 4)."""
    k = _as4(kernel_size, "kernel_size")
    mask = torch.zeros(k, dtype=torch.bool)
    mask[:, :, k[2] // 2, k[3] // 2] = True  # p' = x': query neighbours (Eq. 3)
    mask[k[0] // 2, k[1] // 2, :, :] = True  # p = x: support neighbours (Eq. 2)
    return mask
