"""Reproduce the supplementary's ablation tables (S1-S4) and the no-masking variant (Fig. S14).

One table = a list of model variants, each trained per fold with the project's training
command and evaluated with the paper's protocol. Two run modes, one setting:

* ``"cpu-mini"`` (default): the embedded benchmark, the offline EfficientNet-Lite0, fold 0,
  a few hundred training episodes per variant: minutes on a laptop CPU. Training runs
  in-process through :func:`hsnet_lite.trainer.train` (what ``python -m hsnet_lite.train``
  calls), so it is the same code path as the GPU mode.
* ``"gpu"``: the paper's protocol on PASCAL-5i (all four folds, the table's paper backbone,
  400x400, batch 20), each training launched as ``torchrun --nproc_per_node <all GPUs> -m
  hsnet_lite.train ...`` and resumed from ``last.pt`` when re-run.
* ``"gpu-embedded"``: the embedded benchmark at a larger scale (all folds, more iterations),
  for a lent GPU machine.

Every evaluation is appended to ``results/<mode>/table_<name>.json`` (atomically), and runs
already present there are skipped, so an interrupted reproduction resumes where it stopped.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import paper_results as paper
from .atomic_io import write_json_atomic
from .config import TrainConfig
from .datasets.registry import build_dataset
from .metrics import IGNORE, FewShotMeter
from .run_checkpoint import load_checkpoint, model_from_checkpoint
from .trainer import train

RUN_MODES = ("cpu-mini", "gpu", "gpu-embedded")
RESULTS_ENV = "HSNET_LITE_RESULTS"
REPO_ROOT = Path(__file__).resolve().parents[1]


def from_root(path: str) -> str:
    """``path`` if absolute, else relative to the repository root (not to the notebook's folder)."""
    return path if os.path.isabs(path) else str(REPO_ROOT / path)


@dataclass(frozen=True)
class Variant:
    """One row of a table: a model configuration (see :class:`hsnet_lite.HSNet`)."""

    key: str
    label: str
    levels: tuple[int, ...] = (1, 2, 3)
    layers: str = "all"
    use_support_mask: bool = True

    def train_args(self) -> list[str]:
        args = ["--levels", *map(str, self.levels), "--layers", self.layers]
        return args + ([] if self.use_support_mask else ["--no-support-mask"])


ALL = Variant("all", "C_p, all layers (ours)")
TABLE_VARIANTS = {
    "S1": [ALL],
    "S2": [Variant("shallow", "C_p^shallow", layers="shallow"), Variant("deep", "C_p^deep", layers="deep"), ALL],
    "S3": [Variant("C3", "C^(3)", levels=(3,)), Variant("C23", "C^(2:3)", levels=(2, 3)),
           replace(ALL, label="C (ours)")],
    "S4": [ALL],
    "S14": [ALL, Variant("nomask", "no support masking", use_support_mask=False)],
}
TABLE_SHOTS = {"S1": (1, 5, 10), "S2": (1, 5), "S3": (1, 5), "S4": (1, 5), "S14": (1, 5)}
PAPER_BACKBONE = {"S1": "resnet50", "S2": "resnet101", "S3": "resnet101", "S4": "resnet50", "S14": "resnet50"}


@dataclass(frozen=True)
class Scale:
    """Where and how long: benchmark, image size, folds, and the training budget per variant."""

    benchmark: str
    img_size: int
    folds: tuple[int, ...]
    batch_size: int
    epochs: int
    iters_per_epoch: int | None
    val_episodes: int | None
    test_episodes: int | None
    backbone: str | None = None  # None: the paper's backbone for the table
    boundary: int = 0  # embedded only: width of the 255 ignore band (Table S4)


SCALES = {
    "cpu-mini": Scale("embedded", 96, (0,), 8, 4, 75, 40, 100, "efficientnet-lite0", boundary=1),
    "gpu": Scale("pascal", 400, (0, 1, 2, 3), 20, 200, None, 1000, 1000),
    "gpu-embedded": Scale("embedded", 256, (0, 1, 2, 3), 20, 30, 200, 500, 1000, "efficientnet-lite0",
                          boundary=2),
}


@dataclass
class Step:
    """One training run of the plan; ``command`` is what the GPU mode executes."""

    table: str
    variant: Variant
    fold: int
    output: str
    train_args: list[str]
    command: list[str] = field(default_factory=list)

    @property
    def folder(self) -> str:
        """The run folder on disk (``output`` is shown relative to the repository root)."""
        return from_root(self.output)

    def done(self) -> bool:
        return os.path.isfile(os.path.join(self.folder, "results.json"))

    def args(self, resume: bool) -> list[str]:
        """Training options with the run folder resolved, plus ``--resume`` when continuing."""
        args = list(self.train_args)
        args[args.index("--output") + 1] = self.folder
        return args + (["--resume"] if resume else [])


def scale_for(mode: str) -> Scale:
    if mode not in RUN_MODES:
        raise ValueError(f"run mode must be one of {RUN_MODES}, got {mode!r}")
    return SCALES[mode]


def plan(table: str, mode: str = "cpu-mini", n_gpus: int | None = None, datapath: str | None = None,
         runs_root: str = "runs/ablations", scale: Scale | None = None) -> list[Step]:
    """The training runs that reproduce ``table`` (one per variant and fold), with their commands.

    The 1-shot-trained model serves every K (Table S1, as in the paper).
    """
    if table not in TABLE_VARIANTS:
        raise ValueError(f"unknown table {table!r}; choose one of {sorted(TABLE_VARIANTS)}")
    sc = scale or scale_for(mode)
    if sc.benchmark != "embedded" and not datapath:
        raise ValueError(f"mode {mode!r} trains on {sc.benchmark}: pass datapath= (the dataset root)")
    n = n_gpus if n_gpus is not None else max(torch.cuda.device_count(), 1)
    backbone = sc.backbone or PAPER_BACKBONE[table]
    per_process = sc.batch_size if mode == "cpu-mini" else max(1, sc.batch_size // n)  # total batch as the paper
    steps = []
    for variant in TABLE_VARIANTS[table]:
        for fold in sc.folds:
            out = os.path.join(runs_root, mode, f"{sc.benchmark}_{backbone}_{variant.key}_fold{fold}")
            args = ["--benchmark", sc.benchmark, "--fold", str(fold), "--backbone", backbone,
                    "--img-size", str(sc.img_size), "--batch-size", str(per_process),
                    "--epochs", str(sc.epochs), "--seed", "0", "--output", out, *variant.train_args()]
            args += ["--datapath", datapath] if datapath else []
            args += ["--iters-per-epoch", str(sc.iters_per_epoch)] if sc.iters_per_epoch else []
            args += ["--val-episodes", str(sc.val_episodes)] if sc.val_episodes else []
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   "-m", "hsnet_lite.train", *args, "--no-progress"]
            steps.append(Step(table, variant, fold, out, args, cmd))
    return steps


def format_plan(steps: list[Step]) -> str:
    """The launch plan as shell commands (what ``--dry-run`` prints; ``python`` = this interpreter)."""
    lines = []
    for s in steps:
        resume = ["--resume"] if os.path.isfile(os.path.join(s.folder, "last.pt")) else []
        lines.append(shlex.join(["python", *s.command[1:], *resume]))
    return "\n".join(lines)


def run_training(step: Step, mode: str) -> None:
    """Train one variant: in-process for the CPU mini mode, via torchrun otherwise; resumes."""
    if step.done():
        return
    args = step.args(resume=os.path.isfile(os.path.join(step.folder, "last.pt")))
    if mode == "cpu-mini":
        from .train import build_parser, config_from_args

        cfg: TrainConfig = config_from_args(build_parser().parse_args(args + ["--no-progress"]))
        cfg.device = "cpu"
        with contextlib.redirect_stdout(io.StringIO()):  # per-epoch lines carry timings
            train(cfg)
    else:
        cmd = step.command[: step.command.index("hsnet_lite.train") + 1] + args + ["--no-progress"]
        subprocess.run(cmd, check=True, cwd=REPO_ROOT)


@torch.no_grad()
def score_predictions(model, dataset, batch_size: int = 4, device: str = "cpu") -> dict[str, dict]:
    """Score the SAME predictions with and without the ignore label (Table S4)."""
    meters = {"with": FewShotMeter(dataset.class_ids, IGNORE), "without": FewShotMeter(dataset.class_ids, None)}
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    model = model.to(device).eval()
    for batch in loader:
        pred = model.predict_mask(batch["query_img"].to(device), batch["support_imgs"].to(device),
                                  batch["support_masks"].to(device)).cpu()
        for meter in meters.values():
            meter.update(pred, batch["query_mask"], batch["class_id"])
    return {k: m.summary() for k, m in meters.items()}


def machine() -> str:
    """A short description of the device that ran the evaluation."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"CPU {platform.machine()} ({os.cpu_count()} cores)"


def results_path(table: str, mode: str, root: str | None = None) -> str:
    """``<root>/<mode>/table_<table>.json``. Without ``root``: ``$HSNET_LITE_RESULTS`` when set
    (``make test`` points it at a temporary folder, so that a test run leaves the committed
    results alone), else ``results/`` of the repository."""
    root = root or os.environ.get(RESULTS_ENV) or "results"
    return os.path.join(from_root(root), mode, f"table_{table}.json")


def load_results(table: str, mode: str, root: str | None = None) -> list[dict]:
    path = results_path(table, mode, root)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return json.load(f)["records"]


def evaluate_step(step: Step, shots, mode: str, scale: Scale, device: str) -> list[dict]:
    """Evaluate one trained variant for every K with the paper's protocol (fixed seed 0)."""
    model = model_from_checkpoint(load_checkpoint(os.path.join(step.folder, "best.pt")))
    with open(os.path.join(step.folder, "results.json")) as f:
        trained = json.load(f)
    extra = {"boundary": scale.boundary} if scale.benchmark == "embedded" and scale.boundary else {}
    records = []
    for k in shots:
        ds = build_dataset(scale.benchmark, root=trained["config"].get("datapath"), fold=step.fold, split="test",
                           shot=k, img_size=scale.img_size, n_episodes=scale.test_episodes, seed=0, **extra)
        scores = score_predictions(model, ds, device=device)
        records.append({"table": step.table, "variant": step.variant.key, "label": step.variant.label,
                        "fold": step.fold, "shot": k, "miou": scores["with"]["miou"],
                        "fb_iou": scores["with"]["fb_iou"], "miou_no_ignore": scores["without"]["miou"],
                        "fb_iou_no_ignore": scores["without"]["fb_iou"], "episodes": scores["with"]["episodes"],
                        "benchmark": scale.benchmark, "backbone": model.config["backbone"],
                        "img_size": scale.img_size, "best_epoch": trained["best_epoch"],
                        "train_seconds": trained["seconds"], "machine": machine()})
    return records


def run_table(table: str, mode: str = "cpu-mini", datapath: str | None = None, runs_root: str = "runs/ablations",
              results_root: str | None = None, n_gpus: int | None = None, scale: Scale | None = None,
              reuse_results: bool = True) -> list[dict]:
    """Train and evaluate every variant of ``table`` that the results file does not hold yet.

    Trainings are skipped when their run folder already holds ``results.json`` (and resumed
    from ``last.pt`` when interrupted). ``reuse_results=False`` re-evaluates every variant
    (the CPU mini notebooks do, so that CI re-runs the whole pipeline).
    """
    sc = scale or scale_for(mode)
    device = "cuda" if torch.cuda.is_available() and mode != "cpu-mini" else "cpu"
    records = load_results(table, mode, results_root) if reuse_results else []
    for step in plan(table, mode, n_gpus, datapath, runs_root, sc):
        have = {(r["variant"], r["fold"]) for r in records}
        if (step.variant.key, step.fold) in have:
            continue
        run_training(step, mode)
        records += evaluate_step(step, TABLE_SHOTS[table], mode, sc, device)
        write_json_atomic(results_path(table, mode, results_root),
                          {"table": table, "mode": mode, "scale": sc.__dict__, "records": records})
    return records


def ordering(records: list[dict], shot: int, metric: str = "miou") -> list[str]:
    """Variant keys sorted from best to worst (mean over folds) at ``shot``."""
    means = {v: m for (v, k), m in summarize(records, metric).items() if k == shot}
    return sorted(means, key=lambda v: -means[v])


def summarize(records: list[dict], metric: str = "miou") -> dict[tuple[str, int], float]:
    """Mean over folds of ``metric`` per (variant, shot)."""
    acc: dict[tuple[str, int], list[float]] = {}
    for r in records:
        acc.setdefault((r["variant"], r["shot"]), []).append(r[metric])
    return {k: round(sum(v) / len(v), 1) for k, v in acc.items()}


def paper_value(table: str, variant: str, shot: int, metric: str = "miou") -> float | None:
    """The paper's mean over folds for this cell (PASCAL-5i), or None where it gives none."""
    if table == "S1":
        return paper.TABLE_S1["pascal"].get(shot)
    if table == "S2":
        return paper.TABLE_S2[variant][shot]["mean"]
    if table == "S3":
        levels = {"C3": (3,), "C23": (2, 3), "all": (1, 2, 3)}[variant]
        return paper.TABLE_S3[levels][shot]["mean"]
    if table == "S4":
        key = "miou" if metric.startswith("miou") else "fbiou"
        which = "without" if metric.endswith("no_ignore") else "with"
        return paper.TABLE_S4["resnet50"][which][shot][key]
    return None  # S14: the supplementary shows pictures only


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hsnet_lite.ablations", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True, choices=sorted(TABLE_VARIANTS))
    p.add_argument("--mode", default="cpu-mini", choices=RUN_MODES)
    p.add_argument("--datapath", default=None)
    p.add_argument("--gpus", type=int, default=None, help="processes per run (default: all visible GPUs)")
    p.add_argument("--dry-run", action="store_true", help="print the launch plan and exit")
    args = p.parse_args(argv)
    steps = plan(args.table, args.mode, args.gpus, args.datapath)
    if args.dry_run:
        print(format_plan(steps))
        return
    for r in run_table(args.table, args.mode, args.datapath, n_gpus=args.gpus):
        print(f"{r['variant']:>8} fold {r['fold']} {r['shot']:>2}-shot: mIoU {r['miou']:.1f} FB-IoU {r['fb_iou']:.1f}")


if __name__ == "__main__":
    main()


METRIC_NAMES = {"miou": "mIoU", "fb_iou": "FB-IoU", "miou_no_ignore": "mIoU (no ignore)",
                "fb_iou_no_ignore": "FB-IoU (no ignore)"}


def comparison_rows(table: str, columns: dict[str, list[dict]], metrics=("miou",)) -> list[list[str]]:
    """Rows (variant x shot x metric) with one measured column per run mode and the paper's value.

    ``columns`` maps a column title (e.g. "CPU mini") to its records; a mode without records
    shows "-". The difference to the paper is given for the paper-protocol GPU mode only.
    """
    means = {title: {m: summarize(recs, m) for m in metrics} for title, recs in columns.items()}
    rows = []
    for variant in TABLE_VARIANTS[table]:
        for shot in TABLE_SHOTS[table]:
            for metric in metrics:
                row = [variant.label, f"{shot}-shot", METRIC_NAMES[metric]]
                for title in columns:
                    v = means[title][metric].get((variant.key, shot))
                    row.append("-" if v is None else f"{v:.1f}")
                ref = paper_value(table, variant.key, shot, metric)
                row.append("-" if ref is None else f"{ref:.1f}")
                rows.append(row)
    return rows


def format_comparison(table: str, columns: dict[str, list[dict]], metrics=("miou",)) -> str:
    """A plain-text table: measured columns beside the paper's numbers (PASCAL-5i, mean of folds)."""
    header = ["variant", "K", "metric", *columns, "paper"]
    rows = comparison_rows(table, columns, metrics)
    if "GPU (paper protocol)" in columns:
        gi = header.index("GPU (paper protocol)")
        header.append("GPU - paper")
        for r in rows:
            r.append("-" if "-" in (r[gi], r[-1]) else f"{float(r[gi]) - float(r[-1]):+.1f}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), "-" * len(line(header))] + [line(r) for r in rows])


def comparison_figure(table: str, columns: dict[str, list[dict]], metric: str = "miou", title: str = ""):
    """Grouped bars: each variant and K, one bar per measured column plus the paper's value."""
    import matplotlib.pyplot as plt

    rows = comparison_rows(table, columns, (metric,))
    names = list(columns) + ["paper"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(rows) * len(names) / 2, 3.4))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        vals = [float(r[3 + j]) if r[3 + j] != "-" else 0.0 for r in rows]
        ax.bar([i + j * width for i in range(len(rows))], vals, width, label=name)
    ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(rows))])
    ax.set_xticklabels([f"{r[0]}\n{r[1]}" for r in rows], fontsize=8)
    ax.set_ylabel(METRIC_NAMES[metric])
    ax.set_title(title or f"Table {table}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
