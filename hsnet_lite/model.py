"""HSNet: frozen backbone -> hypercorrelation -> learner -> mask logits (main paper Fig. 2).

Variants used by the ablations are plain configuration:

* ``levels``: which pyramid levels are used (Table S3: ``(3,)``, ``(2, 3)``, ``(1, 2, 3)``).
* ``layers``: ``"all"`` layers of each level (C_p, the method), ``"deep"`` (only the deepest
  layer of each level, C_p^deep) or ``"shallow"`` (only the shallowest, C_p^shallow), Table S2.
* ``use_support_mask``: ``False`` drops Eq. 1 (the co-segmentation variant of Fig. S14).
"""
from __future__ import annotations

import threading
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import FrozenBackbone, build_backbone, fast_format
from .blocks import HSNetLearner
from .correlation import hypercorrelation
from .validation import check_episode, check_query_mask

LAYER_CHOICES = ("all", "deep", "shallow")


def select_layers(feature_levels: Sequence[int], levels: Sequence[int], layers: str) -> list[int]:
    """Indices of the backbone features kept for the chosen levels and layer rule (Table S2)."""
    if layers not in LAYER_CHOICES:
        raise ValueError(f"layers must be one of {LAYER_CHOICES}, got {layers!r}")
    if not levels or set(levels) - {1, 2, 3}:
        raise ValueError(f"levels must be a non-empty subset of (1, 2, 3), got {levels}")
    keep = []
    for p in sorted(set(levels)):
        ids = [i for i, lvl in enumerate(feature_levels) if lvl == p]
        keep += ids if layers == "all" else [ids[-1] if layers == "deep" else ids[0]]
    return keep


def kshot_vote(votes: torch.Tensor) -> torch.Tensor:
    """The paper's K-shot rule: (B, K, H, W) 0/1 predictions -> (B, H, W) mask.

    Sum the K binary masks, divide by the largest vote in each image (at least 1) and
    threshold at 0.5: a pixel is foreground when it got at least half the top vote.
    """
    total = votes.float().sum(dim=1)
    top = total.flatten(1).max(dim=1).values.clamp(min=1).view(-1, 1, 1)
    return (total / top >= 0.5).long()


def mask_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, H, W) 0/1 mask from :meth:`HSNet.forward`'s logits: the argmax for 1-shot (B, 2, H, W),
    :func:`kshot_vote` of each support's argmax for K-shot (B, K, 2, H, W)."""
    dim = 1 if logits.dim() == 4 else 2
    if logits.shape[dim] == 2:  # argmax of two classes (ties -> 0, like argmax), without a slow reduction
        labels = (logits.select(dim, 1) > logits.select(dim, 0)).long()
    else:
        labels = logits.argmax(dim=dim)
    return labels if dim == 1 else kshot_vote(labels)


def episode_images(query_img: torch.Tensor, support_imgs: torch.Tensor) -> torch.Tensor:
    """The B queries (B, 3, H, W) and their B*K supports (B, K, 3, H, W) as one backbone batch,
    queries first: each query goes through the backbone once however large K is."""
    return torch.cat([query_img, support_imgs.flatten(0, 1)])


class HSNet(nn.Module):
    """Hypercorrelation Squeeze Network.

    Args:
        backbone: a name from :data:`hsnet_lite.backbones.BACKBONES` or a built backbone.
        weights: ``"imagenet"`` or ``None`` (random backbone, for tests and teaching).
        weights_path: optional local state-dict file for the backbone.
        levels, layers, use_support_mask: ablation settings (module docstring).
    """

    def __init__(
        self,
        backbone: str | FrozenBackbone = "resnet50",
        weights: str | None = "imagenet",
        weights_path: str | None = None,
        levels: Sequence[int] = (1, 2, 3),
        layers: str = "all",
        use_support_mask: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, weights, weights_path) if isinstance(backbone, str) else backbone
        self.layer_ids = select_layers(self.backbone.feature_levels, levels, layers)
        self.feature_levels = [self.backbone.feature_levels[i] for i in self.layer_ids]
        self.config = {"backbone": self.backbone.name, "levels": tuple(sorted(set(levels))),
                       "layers": layers, "use_support_mask": use_support_mask}
        self.use_support_mask = use_support_mask
        counts = {p: self.feature_levels.count(p) for p in sorted(set(self.feature_levels))}
        self.learner = HSNetLearner(counts)

    def extract(self, img: torch.Tensor) -> list[torch.Tensor]:
        """The backbone features this configuration uses, shallow to deep (channels-last on the
        CPU, where the correlation reads them without a copy; the standard layout on a GPU)."""
        feats = self.backbone(img, channels_last=fast_format(img.device) == torch.channels_last)
        return [feats[i] for i in self.layer_ids]

    @torch.no_grad()
    def hypercorrelation(
        self, query_img: torch.Tensor, support_imgs: torch.Tensor, support_masks: torch.Tensor,
        workspace: dict | None = None, crops: dict | None = None,
    ) -> dict[int, torch.Tensor]:
        """Hypercorrelation pyramid of B episodes with K supports each, batch B*K.

        The B queries and all B*K supports go through the backbone together, in one batch
        (each query once per episode, however large K is); queries are L2-normalised once.
        ``workspace``, ``crops``: see :func:`hsnet_lite.correlation.hypercorrelation` (used by
        :meth:`forward`).
        """
        feats = self.extract(episode_images(query_img, support_imgs))
        return self.correlate(feats, query_img.shape[0], support_masks, workspace, crops)

    @torch.no_grad()
    def correlate(
        self, feats: list[torch.Tensor], b: int, support_masks: torch.Tensor,
        workspace: dict | None = None, crops: dict | None = None,
    ) -> dict[int, torch.Tensor]:
        """The hypercorrelation from the backbone features of :func:`episode_images` (the first
        ``b`` of the batch are the queries) and the (B, K, H, W) support masks."""
        masks = support_masks.flatten(0, 1) if self.use_support_mask else None
        # raw features: each query is normalised once, on the CPU straight into the buffer the
        # correlation reads; with the masks, the support background's correlations (exact zeros)
        # are not computed and Eq. 1 is applied where they are (mask_support)
        return hypercorrelation([f[:b] for f in feats], [f[b:] for f in feats], self.feature_levels,
                                support_masks=masks, workspace=workspace, crops=crops,
                                mask_support=masks is not None)

    def forward(
        self, query_img: torch.Tensor, support_imgs: torch.Tensor, support_masks: torch.Tensor
    ) -> torch.Tensor:
        """Mask logits at the query's size.

        Args:
            query_img: (B, 3, H, W) ImageNet-normalised.
            support_imgs: (B, K, 3, H, W); support_masks: (B, K, H, W) of 0/1.
        Returns:
            (B, 2, H, W) for K = 1; (B, K, 2, H, W), one prediction per support, for K > 1
            (combine them with :meth:`predict_mask`).
        """
        support_imgs, support_masks = check_episode(query_img, support_imgs, support_masks)
        # a compiled learner would recompile for every new support window: it gets dense tensors
        crops = None if self.__dict__.get("_learner_compiled") else self.learner.support_windows()
        return self.checked_forward(query_img, support_imgs, support_masks, self._workspace(), crops)

    def checked_forward(
        self, query_img: torch.Tensor, support_imgs: torch.Tensor, support_masks: torch.Tensor,
        workspace: dict | None = None, crops: dict | None = None,
    ) -> torch.Tensor:
        """:meth:`forward` on inputs already checked by :func:`~hsnet_lite.validation.check_episode`
        (supports (B, K, 3, H, W), float masks (B, K, H, W)); no host synchronisation on a GPU,
        so that :class:`~hsnet_lite.cuda_graphs.CapturedHSNet` can record it as a CUDA graph.
        ``workspace``, ``crops``: see :func:`hsnet_lite.correlation.hypercorrelation`."""
        b, k = support_imgs.shape[:2]
        hypercorr = self.hypercorrelation(query_img, support_imgs, support_masks, workspace, crops=crops)
        logits = self.learner(hypercorr)
        logits = F.interpolate(logits, size=query_img.shape[-2:], mode="bilinear", align_corners=True)
        logits = logits.contiguous()  # the learner works channels-last; hand back the standard layout
        return logits if k == 1 else logits.view(b, k, *logits.shape[1:])

    def _workspace(self) -> dict | None:
        """Buffers the correlation reuses between inference calls of this thread (no autograd graph
        can hold them then: the learner consumes the correlation at once); ``None`` while
        gradients are enabled, when the first layers keep their input for the backward pass."""
        if torch.is_grad_enabled():
            return None
        local = self.__dict__.setdefault("_workspaces", threading.local())
        if not hasattr(local, "buffers"):
            local.buffers = {}
        return local.buffers

    def __getstate__(self) -> dict:
        """Copies and pickles leave the reusable buffers behind."""
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k != "_workspaces"}

    @torch.no_grad()
    def predict_mask(
        self, query_img: torch.Tensor, support_imgs: torch.Tensor, support_masks: torch.Tensor
    ) -> torch.Tensor:
        """(B, H, W) 0/1 query mask: argmax for 1-shot, :func:`kshot_vote` for K-shot."""
        return mask_from_logits(self(query_img, support_imgs, support_masks))

    def compile_learner(self, **compile_kwargs) -> "HSNet":
        """Optional speed mode: compile the learner in place with ``torch.compile``.

        ``nn.Module.compile`` keeps the module tree, so ``state_dict`` keys, checkpoints and
        :func:`~hsnet_lite.checkpoints.load_official_checkpoint` are unaffected. Each new input
        shape (batch size, image size, K) is compiled on its first call, which takes about a
        minute on a small CPU; later calls reuse it. ``python -m hsnet_lite.bench --modes
        compile`` reports the speed and the agreement of its masks with the eager fp32 ones.
        """
        self.learner.compile(**compile_kwargs)
        self.__dict__["_learner_compiled"] = True
        return self

    @staticmethod
    def loss(logits: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
        """2-class cross-entropy on the query mask; as in the authors' training, ignore
        (255) pixels count as background."""
        check_query_mask(query_mask, logits)
        target = query_mask.long().masked_fill(query_mask == 255, 0)
        return F.cross_entropy(logits, target)

    def learnable_parameters(self) -> int:
        """Number of trainable parameters (the learner; the backbone is frozen)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
