"""Run configurations for training and evaluation, with checks that name what is wrong.

Defaults follow the paper's protocol (main paper Sec. 5, FACTS.md): Adam with lr 1e-3, the
ImageNet backbone frozen, 1000 test episodes with a fixed seed for PASCAL-5i / COCO-20i, all
queries for FSS-1000. The offline ``embedded`` benchmark defaults to EfficientNet-Lite0 at
128x128; the real benchmarks to ResNet50 at 400x400.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

from .backbones import BACKBONES
from .datasets.registry import DATASETS, DEFAULT_IMG_SIZE
from .model import LAYER_CHOICES

N_FOLDS = {"pascal": 4, "coco": 4, "embedded": 4, "fss": 1}
WEIGHTS_CHOICES = ("imagenet", "none")
# Fields that change the network or the data it sees: a resumed run must agree on them.
MODEL_FIELDS = ("backbone", "levels", "layers", "use_support_mask")
RESUME_FIELDS = MODEL_FIELDS + ("benchmark", "fold", "shot", "batch_size", "img_size", "seed", "lr",
                                "iters_per_epoch")


def default_backbone(benchmark: str) -> str:
    """EfficientNet-Lite0 (offline) for ``embedded``, ResNet50 for the paper's benchmarks."""
    return "efficientnet-lite0" if benchmark == "embedded" else "resnet50"


@dataclass
class ModelConfig:
    """Which network: backbone and its weights, plus the ablation variants (Tables S2, S3, Fig. S14)."""

    benchmark: str = "embedded"
    datapath: str | None = None
    fold: int = 0
    backbone: str | None = None
    weights: str = "imagenet"
    weights_path: str | None = None
    levels: tuple[int, ...] = (1, 2, 3)
    layers: str = "all"
    use_support_mask: bool = True
    shot: int = 1
    img_size: int | None = None
    batch_size: int = 8
    workers: int = 0
    device: str | None = None
    progress: bool = True
    split_dir: str | None = None

    def check(self) -> None:
        """Raise ValueError naming the first bad setting; fills in benchmark defaults."""
        if self.benchmark not in DATASETS:
            raise ValueError(f"unknown benchmark {self.benchmark!r}; choose one of {sorted(DATASETS)}")
        folds = N_FOLDS[self.benchmark]
        if not 0 <= int(self.fold) < folds:
            raise ValueError(f"fold {self.fold} is out of range for {self.benchmark}: use 0..{folds - 1}")
        if self.benchmark != "embedded" and not self.datapath:
            raise ValueError(f"benchmark {self.benchmark!r} needs --datapath (the folder holding its official layout)")
        self.backbone = self.backbone or default_backbone(self.benchmark)
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {BACKBONES}")
        if self.weights not in WEIGHTS_CHOICES:
            raise ValueError(f"weights must be one of {WEIGHTS_CHOICES}, got {self.weights!r}")
        if self.weights_path is not None and not os.path.isfile(self.weights_path):
            raise FileNotFoundError(f"backbone weights file not found: {self.weights_path}")
        self.levels = tuple(sorted(set(int(p) for p in self.levels)))
        if not self.levels or set(self.levels) - {1, 2, 3}:
            raise ValueError(f"levels must be a non-empty subset of 1 2 3, got {list(self.levels)}")
        if self.layers not in LAYER_CHOICES:
            raise ValueError(f"layers must be one of {LAYER_CHOICES}, got {self.layers!r}")
        _positive(self, "shot", "batch_size")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        self.img_size = int(self.img_size or DEFAULT_IMG_SIZE[self.benchmark])
        if self.img_size < 32:
            raise ValueError(f"img_size must be at least 32 (the backbone downsamples by 32), got {self.img_size}")

    @property
    def backbone_weights(self) -> str | None:
        """``weights`` as :func:`hsnet_lite.build_backbone` takes it (``None`` for "none")."""
        return None if self.weights == "none" else self.weights

    def to_dict(self) -> dict:
        """A plain dict (lists, not tuples) for JSON files and checkpoints."""
        out = asdict(self)
        out["levels"] = list(self.levels)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """Build from a dict, ignoring keys this class does not have."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class TrainConfig(ModelConfig):
    """Everything :func:`hsnet_lite.trainer.train` needs (see ``python -m hsnet_lite.train -h``)."""

    lr: float = 1e-3
    epochs: int = 1
    iters_per_epoch: int | None = None
    val_episodes: int | None = None
    val_batch_size: int | None = None
    seed: int = 0
    output: str = "runs/hsnet"
    resume: str | None = None
    write_digests: bool = False

    def check(self) -> None:
        super().check()
        _positive(self, "epochs")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("iters_per_epoch", "val_episodes", "val_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {getattr(self, name)}")
        self.val_batch_size = self.val_batch_size or self.batch_size


@dataclass
class EvalConfig(ModelConfig):
    """Everything :func:`hsnet_lite.evaluation.evaluate` needs (``python -m hsnet_lite.evaluate -h``)."""

    method: str = "hsnet"
    checkpoint: str | None = None
    official_checkpoint: str | None = None
    pretrained: bool = False
    episodes: int | None = None
    seed: int = 0
    split: str = "test"
    use_ignore: bool = True
    baseline_levels: tuple[int, ...] = (1, 2)
    output: str | None = None
    batch_size: int = 4

    def check(self) -> None:
        super().check()
        if self.method not in ("hsnet", "baseline"):
            raise ValueError(f"method must be 'hsnet' or 'baseline', got {self.method!r}")
        sources = [s for s in ("checkpoint", "official_checkpoint") if getattr(self, s)]
        sources += ["pretrained"] if self.pretrained else []
        if self.method == "hsnet" and len(sources) != 1:
            raise ValueError("evaluating HSNet needs exactly one of --checkpoint (ours), "
                             f"--official-checkpoint (authors' best_model.pt) or --pretrained; got {sources or 'none'}")
        for name in ("checkpoint", "official_checkpoint"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise FileNotFoundError(f"{name.replace('_', ' ')} not found: {path}")
        if self.pretrained and self.benchmark != "embedded":
            raise ValueError("--pretrained is the model trained on the embedded benchmark; use --benchmark embedded")
        if self.episodes is not None and self.episodes < 1:
            raise ValueError(f"episodes must be >= 1 (or unset), got {self.episodes}")
        if self.split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {self.split!r}")


def _positive(cfg: object, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
