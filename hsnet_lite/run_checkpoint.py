"""Our training checkpoints (``best.pt`` by validation mIoU, ``last.pt`` after every epoch).

Content: the learner's state dict (the backbone is frozen ImageNet weights, rebuilt from the
config), the Adam state, the number of finished epochs, the RNG states of torch / numpy /
python, the run config, the best validation mIoU so far and the epoch log. Everything is
tensors and plain Python values, so ``torch.load(..., weights_only=True)`` reads it.
"""
from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

from .checkpoints import save_atomic
from .config import RESUME_FIELDS, ModelConfig
from .model import HSNet
from .rng import capture_rng_state

FORMAT = "hsnet-lite-run-v1"


def make_checkpoint(model: HSNet, optimizer: torch.optim.Optimizer, epochs_done: int, config: dict,
                    best_miou: float, best_epoch: int, history: list[dict]) -> dict:
    """Everything needed to continue a run exactly (see the module docstring)."""
    return {
        "format": FORMAT,
        "learner": {k: v.detach().cpu().clone() for k, v in model.learner.state_dict().items()},
        "model_config": dict(model.config, levels=list(model.config["levels"])),
        "optimizer": optimizer.state_dict(),
        "epoch": int(epochs_done),
        "rng": capture_rng_state(),
        "config": config,
        "best_miou": float(best_miou),
        "best_epoch": int(best_epoch),
        "history": history,
    }


def save_checkpoint(ckpt: dict, path: str) -> None:
    """Atomic write (a crash leaves the previous file intact)."""
    save_atomic(ckpt, path)


def load_checkpoint(path: str) -> dict:
    """Read one of our checkpoints; errors name the file and what is wrong with it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not an hsnet-lite training checkpoint (for the authors' "
                         "best_model.pt use --official-checkpoint)")
    return ckpt


def check_resume_compatible(saved: dict, current: dict) -> None:
    """A resumed run must use the same model, data and optimiser settings as the saved one."""
    diffs = [f"{k}: saved {saved.get(k)!r}, now {current.get(k)!r}"
             for k in RESUME_FIELDS if _norm(saved.get(k)) != _norm(current.get(k))]
    if diffs:
        raise ValueError("cannot resume: the checkpoint was trained with other settings (" + "; ".join(diffs) + ")")


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def model_from_checkpoint(ckpt: dict, weights_path: str | None = None) -> HSNet:
    """An HSNet rebuilt from a checkpoint's config (backbone weights as trained), learner loaded."""
    cfg = ModelConfig.from_dict(ckpt["config"])
    cfg.check()
    model = HSNet(cfg.backbone, weights=cfg.backbone_weights, weights_path=weights_path or cfg.weights_path,
                  levels=cfg.levels, layers=cfg.layers, use_support_mask=cfg.use_support_mask)
    model.learner.load_state_dict({k: v.float() for k, v in ckpt["learner"].items()})
    return model


def learner_digest(model: nn.Module) -> str:
    """SHA-256 of the learner's parameters and buffers (sorted keys, raw bytes)."""
    module = getattr(model, "module", model)
    h = hashlib.sha256()
    for key, value in sorted(module.learner.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
