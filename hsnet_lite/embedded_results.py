"""The shipped model against the training-free baseline on held-out classes of the embedded
benchmark (fold 0 test split: classes 0-4, never seen in training), 1-shot and 5-shot, with
the paper's mIoU / FB-IoU (main paper Sec. 5); plus the prediction figure of the demo."""
from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.data import DataLoader

from .baseline import PrototypeBaseline
from .datasets import EMBEDDED_CLASS_NAMES, EmbeddedDataset, load_fixed_episodes
from .atomic_io import write_json_atomic
from .engine import evaluate_many, model_device
from .episode_figure import episode_iou, predictions_figure
from .pretrained import load_embedded_model, read_model_info

DEMO_EPISODES, DEMO_SHOTS, FOLD = 200, (1, 5), 0


def compare_on_embedded(episodes: int = DEMO_EPISODES, shots: tuple[int, ...] = DEMO_SHOTS, batch_size: int = 10,
                        workers: int = 1, progress: bool = True, model=None, img_size: int | None = None) -> dict:
    """``{"hsnet": {shot: scores}, "baseline": {shot: scores}}`` on the first ``episodes`` test
    episodes (seed 0) of fold 0; the baseline shares HSNet's frozen backbone."""
    model = model or load_embedded_model()
    methods = {"hsnet": model, "baseline": PrototypeBaseline(model.backbone)}
    ds = EmbeddedDataset(fold=FOLD, split="test", shot=max(shots), img_size=img_size or _img_size(),
                         n_episodes=episodes)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers)
    out = evaluate_many(methods, loader, ds.class_ids, shots, progress=progress, desc="embedded test")
    return {name: {k: {"miou": s["miou"], "fb_iou": s["fb_iou"], "episodes": s["episodes"]}
                   for k, s in per_shot.items()} for name, per_shot in out.items()}


def _img_size() -> int:
    """The image size the shipped model was trained at."""
    return int(read_model_info()["img_size"])


def format_comparison(results: dict) -> str:
    """A small table: rows = method, columns = mIoU / FB-IoU per shot."""
    shots = sorted(next(iter(results.values())))
    head = "method      " + "".join(f"  {k}-shot mIoU  FB-IoU" for k in shots)
    lines = [head]
    for name, per_shot in results.items():
        lines.append(f"{name:<12}" + "".join(f"  {per_shot[k]['miou']:11.1f} {per_shot[k]['fb_iou']:7.1f}"
                                             for k in shots))
    return "\n".join(lines)


@torch.no_grad()
def prediction_figure(path: str, model=None, n_rows: int = 5, shot: int = 1) -> str:
    """Save the stored fixed test episodes (one per held-out class) with HSNet's and the
    baseline's predictions to ``path``."""
    model = model or load_embedded_model()
    baseline = PrototypeBaseline(model.backbone)
    eps = load_fixed_episodes(FOLD, shot=shot, img_size=_img_size())[:n_rows]
    dev = model_device(model)
    batch = {k: torch.stack([e[k] for e in eps]).to(dev) for k in ("query_img", "support_imgs", "support_masks")}
    preds = {name: list(m.predict_mask(batch["query_img"], batch["support_imgs"], batch["support_masks"]).cpu())
             for name, m in (("HSNet", model), ("baseline", baseline))}
    scores = {name: [episode_iou(p, e["query_mask"]) for p, e in zip(masks, eps)] for name, masks in preds.items()}
    fig = predictions_figure(eps, preds, dict(enumerate(EMBEDDED_CLASS_NAMES)), scores)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def main(argv: list[str] | None = None) -> dict:
    """CLI: print the comparison table; ``--output`` also writes it as JSON (``data/trained/metrics.json``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=DEMO_EPISODES)
    p.add_argument("--output", default=None, help="JSON file for the results")
    args = p.parse_args(argv)
    t0 = time.time()
    results = compare_on_embedded(args.episodes)
    print(format_comparison(results))
    if args.output:
        write_json_atomic(args.output, {"benchmark": "embedded", "fold": FOLD, "split": "test", "seed": 0,
                                        "episodes": args.episodes, "img_size": _img_size(),
                                        "metric": "mIoU and FB-IoU in percent (paper protocol)",
                                        "results": results, "seconds": round(time.time() - t0, 1)})
    return results


if __name__ == "__main__":
    main()
