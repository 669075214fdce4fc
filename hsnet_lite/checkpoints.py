"""Checkpoints: the authors' released ``best_model.pt`` files, and our own atomic saves.

The released checkpoints were saved from ``nn.DataParallel``: every key starts with
``module.``; the learner lives under ``module.hpn_learner.`` (``encoder_layer4/3/2`` are the
squeezing blocks of pyramid levels 3/2/1, ``encoder_layer4to3`` and ``encoder_layer3to2`` the
mixing blocks, ``decoder1``/``decoder2`` the decoder; ``conv1`` of a center-pivot conv is its
query-dims kernel, ``conv2`` its support-dims kernel) and the backbone under
``module.backbone.`` with torchvision's names.
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import torch
from torch import nn

from .atomic_io import public_mode

# (official pattern, our pattern) pairs, applied after stripping "module.".
_LEARNER_NAMES = [
    ("encoder_layer4to3.", "mix.32."), ("encoder_layer3to2.", "mix.21."),
    ("encoder_layer4.", "squeeze.3."), ("encoder_layer3.", "squeeze.2."), ("encoder_layer2.", "squeeze.1."),
    ("decoder1.0.", "decoder.conv1."), ("decoder1.2.", "decoder.conv2."),
    ("decoder2.0.", "decoder.conv3."), ("decoder2.2.", "decoder.conv4."),
]
_CONV_NAMES = [(r"\.conv1\.", ".query_conv."), (r"\.conv2\.", ".support_conv.")]


def official_key_to_ours(key: str) -> str | None:
    """Map one official key to ours; ``None`` for keys we do not hold (fc / classifier)."""
    key = key[len("module."):] if key.startswith("module.") else key
    if key.startswith("backbone."):
        rest = key[len("backbone."):]
        if rest.startswith(("fc.", "classifier.")):
            return None
        return "backbone.net." + rest
    if not key.startswith("hpn_learner."):
        raise KeyError(f"unexpected key in official checkpoint: {key!r}")
    rest = key[len("hpn_learner."):]
    for theirs, ours in _LEARNER_NAMES:
        if rest.startswith(theirs):
            rest = ours + rest[len(theirs):]
            if ours.startswith(("squeeze", "mix")):
                for pat, rep in _CONV_NAMES:
                    rest = re.sub(pat, rep, rest)
            return "learner." + rest
    raise KeyError(f"unexpected learner key in official checkpoint: {key!r}")


def our_key_to_official(key: str) -> str:
    """Inverse of :func:`official_key_to_ours` (with the ``module.`` prefix)."""
    if key.startswith("backbone.net."):
        return "module.backbone." + key[len("backbone.net."):]
    rest = key[len("learner."):]
    for theirs, ours in _LEARNER_NAMES:
        if rest.startswith(ours):
            rest = theirs + rest[len(ours):]
            rest = rest.replace(".query_conv.", ".conv1.").replace(".support_conv.", ".conv2.")
            return "module.hpn_learner." + rest
    raise KeyError(f"no official name for {key!r}")


def to_official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our HSNet's state dict under the official names (what DataParallel would have saved)."""
    return {our_key_to_official(k): v for k, v in model.state_dict().items()}


def load_official_checkpoint(model: nn.Module, path_or_state: str | dict, strict: bool = True) -> nn.Module:
    """Load an authors' ``best_model.pt`` into an :class:`~hsnet_lite.HSNet` (learner and backbone).

    Args:
        model: an HSNet built with the checkpoint's backbone (``levels=(1, 2, 3)``, ``layers="all"``).
        path_or_state: the file, or an already loaded state dict.
        strict: require that every learner parameter of ``model`` is set by the checkpoint.
    """
    if isinstance(path_or_state, (str, os.PathLike)):
        if not os.path.isfile(path_or_state):
            raise FileNotFoundError(f"checkpoint not found: {path_or_state}")
        state = torch.load(path_or_state, map_location="cpu", weights_only=True)
    else:
        state = path_or_state
    mapped = {}
    for key, value in state.items():
        ours = official_key_to_ours(key)
        if ours is not None:
            mapped[ours] = value
    own = model.state_dict()
    unknown = sorted(set(mapped) - set(own))
    missing = sorted(k for k in own if k.startswith("learner.") and k not in mapped)
    if unknown or (strict and missing):
        raise ValueError(
            f"checkpoint does not fit this model (backbone {getattr(model, 'config', {}).get('backbone')}): "
            f"{len(unknown)} unexpected keys {unknown[:3]}, {len(missing)} missing learner keys {missing[:3]}"
        )
    for key, value in mapped.items():
        if own[key].shape != value.shape:
            raise ValueError(f"checkpoint does not fit this model: shape mismatch for {key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
    model.load_state_dict(mapped, strict=False)
    return model


def save_atomic(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash mid-write leaves the previous file intact, never a truncated checkpoint.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        public_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
