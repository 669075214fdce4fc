"""Train HSNet: ``python -m hsnet_lite.train [options]`` (thin CLI over :func:`hsnet_lite.trainer.train`).

Examples::

    python -m hsnet_lite.train --epochs 5 --iters-per-epoch 100 --output runs/embedded
    python -m hsnet_lite.train --benchmark pascal --datapath ~/datasets --fold 0 --backbone resnet50 \\
        --batch-size 20 --epochs 200 --output runs/pascal_f0
    torchrun --nproc_per_node 4 -m hsnet_lite.train --benchmark coco --datapath ~/datasets --batch-size 10
    python -m hsnet_lite.train --output runs/embedded --epochs 10 --resume     # continue last.pt
"""
from __future__ import annotations

import argparse

from .cli_args import add_model_args, model_kwargs, run_cli
from .config import TrainConfig
from .trainer import train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hsnet_lite.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, batch_size=8)
    t = p.add_argument_group("training")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (paper: 1e-3)")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--iters-per-epoch", type=int, default=None,
                   help="batches per epoch (default: the whole training split; embedded: 1000 episodes)")
    t.add_argument("--val-episodes", type=int, default=None,
                   help="validation episodes per epoch (default 1000; embedded 100)")
    t.add_argument("--val-batch-size", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--output", default="runs/hsnet", help="folder for log.csv, best.pt, last.pt, results.json")
    t.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from OUTPUT/last.pt, or from the given checkpoint")
    t.add_argument("--write-digests", action="store_true",
                   help="every rank writes a SHA-256 of its learner weights (DDP checks)")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**model_kwargs(args), lr=args.lr, epochs=args.epochs, iters_per_epoch=args.iters_per_epoch,
                       val_episodes=args.val_episodes, val_batch_size=args.val_batch_size, seed=args.seed,
                       output=args.output, resume=args.resume, write_digests=args.write_digests)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    results = run_cli("hsnet_lite.train", lambda: train(config_from_args(args)))
    if results["rank"] == 0:
        print(f"best validation mIoU {results['best_val_miou']:.2f} (epoch {results['best_epoch']}); "
              f"results in {args.output}")
    return results


if __name__ == "__main__":
    main()
