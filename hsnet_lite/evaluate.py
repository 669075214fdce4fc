"""Evaluate with the paper's protocol: ``python -m hsnet_lite.evaluate [options]``
(thin CLI over :func:`hsnet_lite.evaluation.evaluate`).

Examples::

    python -m hsnet_lite.evaluate --pretrained --shot 5                        # shipped embedded model
    python -m hsnet_lite.evaluate --method baseline --shot 1                   # training-free baseline
    python -m hsnet_lite.evaluate --checkpoint runs/embedded/best.pt --episodes 300
    python -m hsnet_lite.evaluate --benchmark pascal --datapath ~/datasets --fold 0 \\
        --backbone resnet50 --official-checkpoint best_model.pt --shot 5 [--no-ignore]
"""
from __future__ import annotations

import argparse
import os

from .cli_args import add_model_args, model_kwargs, run_cli
from .config import EvalConfig
from .evaluation import evaluate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hsnet_lite.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, batch_size=4)
    e = p.add_argument_group("evaluation")
    e.add_argument("--method", default="hsnet", choices=("hsnet", "baseline"),
                   help="HSNet, or the training-free masked-average-pooling prototype baseline")
    e.add_argument("--checkpoint", default=None, help="our training checkpoint (best.pt / last.pt)")
    e.add_argument("--official-checkpoint", default=None, help="the authors' released best_model.pt")
    e.add_argument("--pretrained", action="store_true", help="the shipped model (embedded benchmark, fold 0)")
    e.add_argument("--episodes", type=int, default=None,
                   help="test episodes (default 1000 for pascal/coco/embedded, all queries for fss)")
    e.add_argument("--seed", type=int, default=0, help="episode seed (fixed: the paper's protocol)")
    e.add_argument("--split", default="test", choices=("val", "test"))
    e.add_argument("--no-ignore", action="store_true", help="score boundary (255) pixels as background (Table S4)")
    e.add_argument("--baseline-levels", type=int, nargs="+", default=[1, 2],
                   help="pyramid levels whose deepest feature the baseline uses")
    e.add_argument("--output", default=None, help="write the results to this JSON file")
    return p


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(**model_kwargs(args), method=args.method, checkpoint=args.checkpoint,
                      official_checkpoint=args.official_checkpoint, pretrained=args.pretrained,
                      episodes=args.episodes, seed=args.seed, split=args.split, use_ignore=not args.no_ignore,
                      baseline_levels=tuple(args.baseline_levels), output=args.output)


def format_results(r: dict) -> str:
    """One line: what was evaluated and its mIoU / FB-IoU."""
    scoring = "" if r["ignore_boundary"] else ", boundary not ignored"
    return (f"{r['method']} on {r['benchmark']} fold {r['fold']} ({r['split']}, {r['shot']}-shot, "
            f"{r['episodes']} episodes{scoring}): mIoU {r['miou']:.1f}  FB-IoU {r['fb_iou']:.1f}")


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    results = run_cli("hsnet_lite.evaluate", lambda: evaluate(config_from_args(args)))
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_results(results))
    return results


if __name__ == "__main__":
    main()
