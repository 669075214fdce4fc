"""The README's main job: ``python -m hsnet_lite.demo``.

1. Prints the architecture table (every tensor shape and parameter count, Tables S5-S7) for
   the chosen backbone at 400x400 (shapes and counts do not depend on the weights, so the
   paper's backbones are built with random weights here and nothing is downloaded).
2. Correlates the real stereo pair ``skimage.data.stereo_motorcycle()`` with the offline
   ImageNet EfficientNet-Lite0 and saves ``figures/stereo_hypercorrelation.png``.
3. Evaluates the shipped HSNet (EfficientNet-Lite0 + the learner in ``data/trained/``, trained
   on the embedded benchmark's fold 0) 1-shot and 5-shot on the held-out test classes with the
   paper's mIoU / FB-IoU, beside the training-free prototype baseline, and saves
   ``figures/embedded_predictions.png``.
"""
from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from .backbones import BACKBONES, build_backbone  # noqa: E402
from .embedded_results import DEMO_EPISODES, compare_on_embedded, format_comparison, prediction_figure  # noqa: E402
from .explore import CorrelationExplorer, load_stereo_pair, stereo_match_errors, stereo_sample_points  # noqa: E402
from .model import HSNet  # noqa: E402
from .plots import stereo_correlation_figure  # noqa: E402
from .summary import architecture_table, format_table  # noqa: E402


def print_architecture(backbone: str, img_size: int = 400) -> None:
    torch.manual_seed(0)
    model = HSNet(backbone, weights=None)
    print(f"HSNet with {backbone} at {img_size}x{img_size} (shapes without the batch dim)")
    print(format_table(architecture_table(model, img_size)))


def stereo_demo(out_dir: str, point: tuple[int, int] = (200, 300)) -> str:
    """Save the stereo hypercorrelation figure; returns its path."""
    pair = load_stereo_pair()
    backbone = build_backbone("efficientnet-lite0", weights="imagenet")
    explorer = CorrelationExplorer.build(backbone, pair["left_t"], pair["right_t"])
    points = stereo_sample_points(pair["disparity"], 200, seed=0)
    errors = stereo_match_errors(explorer, pair["disparity"], points)
    print("\nStereo pair (skimage stereo_motorcycle), EfficientNet-Lite0 ImageNet features:")
    print("median distance from correlation peak to the true match, per layer (pixels):")
    for lvl in (1, 2, 3):
        ids = explorer.layers_of(lvl)
        print(f"  level {lvl}: " + ", ".join(f"{errors[i]:.1f}" for i in ids))
    fig = stereo_correlation_figure(explorer, pair["left"], pair["right"], pair["disparity"], point, errors)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "stereo_hypercorrelation.png")
    fig.savefig(path, dpi=110)
    print(f"saved {path}")
    return path


def embedded_demo(out_dir: str, episodes: int = DEMO_EPISODES) -> dict:
    """Print HSNet vs the baseline on held-out embedded classes and save the prediction figure."""
    print(f"\nShipped HSNet vs training-free prototype baseline: embedded benchmark, fold 0 held-out "
          f"classes, first {episodes} test episodes (seed 0), mIoU / FB-IoU in percent:")
    results = compare_on_embedded(episodes, progress=False)
    print(format_comparison(results))
    path = prediction_figure(os.path.join(out_dir, "embedded_predictions.png"))
    print(f"saved {path}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50", choices=BACKBONES)
    parser.add_argument("--img-size", type=int, default=400)
    parser.add_argument("--figures", default="figures")
    parser.add_argument("--episodes", type=int, default=DEMO_EPISODES,
                        help="held-out test episodes for the shipped-model evaluation")
    args = parser.parse_args(argv)
    print_architecture(args.backbone, args.img_size)
    stereo_demo(args.figures)
    embedded_demo(args.figures, args.episodes)


if __name__ == "__main__":
    main()
