"""HSNet's learnable part: squeezing blocks, mixing blocks, pooling and decoder (Sec. 4.2-4.3,
Tables S5-S7). Everything here is trained; the backbone is not.

Squeezing block f_p^sqz: three [CP 4D conv, GroupNorm(4), ReLU], channels n_p -> 16 -> 64 ->
128, strides on the support dims only, so the support dims shrink to about 2x2 while the
query dims keep their size. Mixing block f_p^mix: upsample the coarser block's query dims
bilinearly, add, then three [CP 4D conv 128 -> 128, k 3, GroupNorm, ReLU].

Every 4D tensor of the learner is kept channels-last (memory order B, Ha, Wa, Hb, Wb, C, see
:mod:`hsnet_lite.conv4d`): the convs, GroupNorm, ReLU, upsampling and pooling below all read and
write it in place, with no permute copies between layers.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .conv4d import CenterPivotConv4d, is_channels_last_6d, to_channels_last_6d
from .fast.cropped_norm import cropped_conv_norm
from .fast.folded_convs import KernelPacks, needs_autograd
from .fast.support_crop import CroppedCorrelation

CHANNELS = (16, 64, 128)
GROUPS = 4
# Per pyramid level p: kernel sizes and support-dim strides of the three layers of f_p^sqz.
SQUEEZE_CONFIG = {3: ((3, 3, 3), (2, 2, 2)), 2: ((5, 3, 3), (4, 2, 2)), 1: ((5, 5, 3), (4, 4, 2))}


class GroupNorm4d(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state-dict keys) for 6D correlation tensors, with the
    block's ReLU fused in (``relu=True``).

    A channels-last 6D tensor is normalised as a (B, C, Ha*Wa*Hb*Wb, 1) channels-last image. On
    the CPU, PyTorch's group norm reads and writes that layout in place, so the tensor stays
    channels-last; its CUDA kernel (used while training on a GPU) copies the input to the standard
    layout and returns that layout, which the next layers accept. GPU inference uses
    :meth:`_split_forward`, which keeps the layout. The ReLU is applied in place to the norm's own
    output, not to a 6D view of it: an in-place op on a view would make autograd copy the
    gradient back.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 relu: bool = False) -> None:
        super().__init__(num_groups, num_channels, eps, affine)
        self.relu = relu

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu=True" if self.relu else "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_channels_last_6d(x):
            out = super().forward(x)
            return F.relu_(out) if self.relu else out
        b, c, *dims = x.shape
        if x.device.type != "cpu" and not needs_autograd(x, self.weight, self.bias):
            return self._split_forward(x)
        image = x.permute(0, 2, 3, 4, 5, 1).reshape(b, -1, 1, c).permute(0, 3, 1, 2)
        out = F.group_norm(image, self.num_groups, self.weight, self.bias, self.eps)
        if self.relu:
            out = F.relu_(out)
        return out.permute(0, 2, 3, 1).reshape(b, *dims, c).permute(0, 5, 1, 2, 3, 4)

    def _split_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same group norm as one parallel reduction plus one fused multiply-add (GPU inference).

        PyTorch's CUDA group norm gives each of the B*G groups a single thread block, and a
        group here holds millions of values (e.g. 16 channels x 50^4 positions / 4 groups), so
        it runs on 4 of a GPU's 132 multiprocessors. ``torch.var_mean`` splits every group over
        many blocks; normalisation and the affine map then fold into one ``addcmul``.

        Not used in training: differentiated by autograd these lines launch about 36 small
        kernels per layer, and a GPU training step is bound by the host launching kernels, so
        PyTorch's group norm (one kernel forward, two backward) makes the step faster (an A/B on
        an H100, docs/performance.md).
        """
        b, c, *dims = x.shape
        g = self.num_groups
        xv = x.permute(0, 2, 3, 4, 5, 1).reshape(b, -1, g, c // g)  # a view of the channels-last tensor
        var, mean = torch.var_mean(xv, dim=(1, 3), correction=0, keepdim=True)  # (B, 1, G, 1)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight.view(1, 1, g, c // g)
        shift = -mean * scale
        if self.affine:
            shift = shift + self.bias.view(1, 1, g, c // g)
        out = torch.addcmul(shift, xv, scale)
        if self.relu:
            out = F.relu_(out)
        return out.reshape(b, *dims, c).permute(0, 5, 1, 2, 3, 4)


def conv4d_block(in_ch: int, out_chs: Sequence[int], kernels: Sequence[int], strides: Sequence[int]) -> nn.Sequential:
    """[CenterPivotConv4d, GroupNorm, ReLU] x len(out_chs): indices 0, 3, 6 are the convs.

    The ReLU runs fused into the GroupNorm (:class:`GroupNorm4d`); its slot (2, 5, 8) holds an
    ``nn.Identity`` so that module indices and state-dict keys stay those of the paper's layout.
    """
    layers: list[nn.Module] = []
    for out_ch, k, s in zip(out_chs, kernels, strides):
        layers += [CenterPivotConv4d(in_ch, out_ch, k, s), GroupNorm4d(GROUPS, out_ch, relu=True), nn.Identity()]
        in_ch = out_ch
    return nn.Sequential(*layers)


def squeeze_block(level: int, in_channels: int) -> nn.Sequential:
    """f_p^sqz for pyramid level p (kernel sizes and strides as in FACTS.md)."""
    kernels, strides = SQUEEZE_CONFIG[level]
    return conv4d_block(in_channels, CHANNELS, kernels, strides)


def mix_block(channels: int = CHANNELS[-1]) -> nn.Sequential:
    """f_p^mix: three 128 -> 128 CP 4D convs with kernel 3 and stride 1."""
    return conv4d_block(channels, (channels,) * 3, (3, 3, 3), (1, 1, 1))


def upsample_query_dims(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear (align_corners=True) resize of the query dims (Ha, Wa) of a 6D tensor.

    Channels-last: the tensor is a (B, Hb*Wb*C, Ha, Wa) channels-last image, resized in place of
    any permute. Otherwise trilinear interpolation over (Ha, Wa, Hb*Wb) with the last dim kept,
    exactly the 2D bilinear resize of each support slice.
    """
    b, c, ha, wa, hb, wb = x.shape
    if (ha, wa) == tuple(size):
        return x
    if is_channels_last_6d(x):
        image = x.permute(0, 2, 3, 4, 5, 1).reshape(b, ha, wa, hb * wb * c).permute(0, 3, 1, 2)
        y = F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=True)
        return y.permute(0, 2, 3, 1).reshape(b, size[0], size[1], hb, wb, c).permute(0, 5, 1, 2, 3, 4)
    y = F.interpolate(x.reshape(b, c, ha, wa, hb * wb), size=(*size, hb * wb), mode="trilinear", align_corners=True)
    return y.view(b, c, size[0], size[1], hb, wb)


def pool_support_dims(x: torch.Tensor) -> torch.Tensor:
    """Pooling layer: average over the two support dims, (B, C, Ha, Wa, Hb, Wb) -> (B, C, Ha, Wa)
    (channels-last in, channels-last out)."""
    if is_channels_last_6d(x):
        b, c, ha, wa, hb, wb = x.shape
        return x.permute(0, 2, 3, 4, 5, 1).reshape(b, ha, wa, hb * wb, c).mean(dim=3).permute(0, 3, 1, 2)
    return x.mean(dim=(-2, -1))


class Decoder(nn.Module):
    """conv3x3 128->128, ReLU, conv3x3 128->64, ReLU, bilinear x2, conv3x3 64->64, ReLU, conv3x3 64->2."""

    def __init__(self, in_ch: int = 128, mid_ch: int = 64, n_classes: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(in_ch, mid_ch, 3, padding=1)
        self.conv3 = nn.Conv2d(mid_ch, mid_ch, 3, padding=1)
        self.conv4 = nn.Conv2d(mid_ch, n_classes, 3, padding=1)
        self._packs = KernelPacks()  # oneDNN-packed kernels of CPU inference

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self._conv("conv2", self._conv("conv1", z, relu=True), relu=True)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self._conv("conv4", self._conv("conv3", x, relu=True))

    def _conv(self, name: str, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        """Conv ``name`` (then a ReLU): at inference on the CPU, one oneDNN call with the kernel
        packed once and the ReLU fused (:meth:`~hsnet_lite.fast.folded_convs.KernelPacks.run`)."""
        m = getattr(self, name)
        return self._packs.run(name, x, m.weight, m.bias, m.stride, m.padding, relu=relu)


class HSNetLearner(nn.Module):
    """Squeeze every level, mix coarse to fine, pool the support dims, decode (Fig. 2).

    Args:
        level_channels: ``{p: n_p}``, the number of stacked correlations at each pyramid level
            used (all three for the method, fewer for the Table S3 ablations).
    """

    def __init__(self, level_channels: dict[int, int]) -> None:
        super().__init__()
        if not level_channels or set(level_channels) - {1, 2, 3}:
            raise ValueError(f"level_channels must map levels among 1, 2, 3 to channels, got {level_channels}")
        self.levels = sorted(level_channels, reverse=True)  # coarse to fine, e.g. [3, 2, 1]
        self.squeeze = nn.ModuleDict({str(p): squeeze_block(p, level_channels[p]) for p in self.levels})
        self.mix = nn.ModuleDict({f"{a}{b}": mix_block() for a, b in zip(self.levels, self.levels[1:])})
        self.decoder = Decoder()

    def encode(self, hypercorr: dict[int, torch.Tensor]) -> torch.Tensor:
        """Squeeze and mix the hypercorrelation into a (B, 128, H1, W1, 2, 2) tensor.

        Works channels-last throughout; a standard-layout hypercorrelation is converted first.
        """
        top = self.levels[0]
        coarse = self._squeeze(top, hypercorr[top])
        for prev, p in zip(self.levels, self.levels[1:]):
            sqz = self._squeeze(p, hypercorr[p])
            if coarse.shape[-2:] != sqz.shape[-2:]:
                raise ValueError(
                    f"squeezed support dims differ between levels ({tuple(coarse.shape[-2:])} vs "
                    f"{tuple(sqz.shape[-2:])}); choose an image size whose feature sizes squeeze alike, e.g. 400"
                )
            coarse = self.mix[f"{prev}{p}"](upsample_query_dims(coarse, sqz.shape[2:4]) + sqz)
        return coarse

    def _squeeze(self, p: int, corr: torch.Tensor | CroppedCorrelation) -> torch.Tensor:
        """f_p^sqz on C_p, given dense (converted to channels-last) or as the support window its
        first layer reads (:mod:`hsnet_lite.fast.support_crop`)."""
        block = self.squeeze[str(p)]
        if isinstance(corr, CroppedCorrelation):
            x, constant = cropped_conv_norm(block[0], block[1], corr)
            return block[4:](block[3](x, constant))
        return block(corr if is_channels_last_6d(corr) else to_channels_last_6d(corr))

    def support_windows(self) -> dict[int, tuple[tuple[int, int], tuple[int, int]]]:
        """``{p: (kernel, support stride)}`` of each level's first squeezing layer (what
        :func:`~hsnet_lite.correlation.hypercorrelation` needs to crop C_p for it)."""
        return {p: (self.squeeze[str(p)][0].kernel_size[2:], self.squeeze[str(p)][0].support_stride)
                for p in self.levels}

    def forward(self, hypercorr: dict[int, torch.Tensor]) -> torch.Tensor:
        """Logits at the finest query resolution x2, (B, 2, 2*H1, 2*W1)."""
        return self.decoder(pool_support_dims(self.encode(hypercorr)))
