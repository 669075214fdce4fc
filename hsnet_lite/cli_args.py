"""Command-line options shared by ``python -m hsnet_lite.train`` and ``python -m hsnet_lite.evaluate``."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from .backbones import BackboneWeightsUnavailable, BACKBONES
from .config import WEIGHTS_CHOICES
from .datasets.errors import DatasetNotFoundError
from .datasets.registry import DATASETS
from .model import LAYER_CHOICES

# Errors a user can fix from the command line: printed as one message, exit status 2.
USER_ERRORS = (ValueError, FileNotFoundError, DatasetNotFoundError, BackboneWeightsUnavailable)


def add_model_args(p: argparse.ArgumentParser, batch_size: int) -> None:
    """Benchmark, data, backbone, ablation-variant and runtime options."""
    g = p.add_argument_group("data")
    g.add_argument("--benchmark", default="embedded", choices=sorted(DATASETS),
                   help="embedded (offline, default), pascal (PASCAL-5i), coco (COCO-20i) or fss (FSS-1000)")
    g.add_argument("--datapath", default=None, help="root folder holding the benchmark's official layout")
    g.add_argument("--fold", type=int, default=0, help="test fold (0..3; fss has only fold 0)")
    g.add_argument("--shot", type=int, default=1, help="support images per episode (K)")
    g.add_argument("--img-size", type=int, default=None, help="square image size (default 128 embedded, 400 others)")
    g.add_argument("--split-dir", default=None, help="folder with the authors' split lists (optional)")
    m = p.add_argument_group("model")
    m.add_argument("--backbone", default=None, choices=BACKBONES,
                   help="default efficientnet-lite0 for embedded, resnet50 otherwise")
    m.add_argument("--weights", default="imagenet", choices=WEIGHTS_CHOICES, help="backbone initialisation")
    m.add_argument("--weights-path", default=None, help="local backbone state-dict file")
    m.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3], help="pyramid levels (Table S3)")
    m.add_argument("--layers", default="all", choices=LAYER_CHOICES, help="layers per level (Table S2)")
    m.add_argument("--no-support-mask", action="store_true", help="drop support feature masking, Eq. 1 (Fig. S14)")
    r = p.add_argument_group("runtime")
    r.add_argument("--batch-size", type=int, default=batch_size, help="episodes per batch (per process)")
    r.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    r.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda when available")
    r.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def model_kwargs(args: argparse.Namespace) -> dict:
    """The :class:`~hsnet_lite.config.ModelConfig` fields from parsed options."""
    return {"benchmark": args.benchmark, "datapath": args.datapath, "fold": args.fold, "shot": args.shot,
            "img_size": args.img_size, "backbone": args.backbone, "weights": args.weights,
            "weights_path": args.weights_path, "levels": tuple(args.levels), "layers": args.layers,
            "use_support_mask": not args.no_support_mask, "batch_size": args.batch_size,
            "workers": args.workers, "device": args.device, "progress": not args.no_progress,
            "split_dir": args.split_dir}


def run_cli(prog: str, fn: Callable[[], object]) -> object:
    """Call ``fn``; a user error exits with status 2 and its message (no traceback)."""
    try:
        return fn()
    except USER_ERRORS as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
