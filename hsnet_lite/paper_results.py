"""The paper's published numbers (supplementary Tables S1-S4, FACTS.md), for side-by-side tables.

All values are mIoU in percent on PASCAL-5i unless a key says otherwise; per-fold lists are
folds 5^0..5^3 and ``mean`` is their average as printed in the paper.
"""
from __future__ import annotations

# Table S1: K-shot with ResNet50 (the 1-shot-trained model evaluated with K supports).
TABLE_S1 = {
    "pascal": {1: 64.0, 5: 69.5, 10: 70.6},
    "coco": {1: 39.2, 5: 46.9, 10: 48.7},
}

# Table S2: which layers (ResNet101). Keys are our `layers=` names.
TABLE_S2 = {
    "shallow": {1: {"folds": [57.1, 64.7, 57.5, 57.0], "mean": 59.1},
                5: {"folds": [63.7, 69.8, 66.0, 63.4], "mean": 65.7}},
    "deep": {1: {"folds": [60.6, 68.6, 58.2, 59.2], "mean": 61.7},
             5: {"folds": [66.7, 72.0, 65.9, 65.4], "mean": 67.5}},
    "all": {1: {"folds": [67.3, 72.3, 62.0, 63.1], "mean": 66.2},
            5: {"folds": [71.8, 74.4, 67.0, 68.3], "mean": 70.4}},
}

# Table S3: which pyramid levels (ResNet101). Keys are our `levels=` tuples.
TABLE_S3 = {
    (3,): {1: {"folds": [54.3, 62.8, 52.0, 52.8], "mean": 55.5},
           5: {"folds": [60.2, 67.0, 59.4, 59.9], "mean": 61.6}},
    (2, 3): {1: {"folds": [64.3, 70.3, 60.5, 60.4], "mean": 63.9},
             5: {"folds": [69.7, 73.2, 65.2, 64.9], "mean": 68.2}},
    (1, 2, 3): TABLE_S2["all"],
}

# Table S4: scored WITHOUT the ignore label, beside the main paper's WITH-ignore numbers.
TABLE_S4 = {
    "vgg16": {"without": {1: {"folds": [53.6, 61.7, 55.0, 50.3], "miou": 55.2, "fbiou": 70.5},
                          5: {"folds": [58.3, 64.7, 58.9, 54.6], "miou": 59.1, "fbiou": 73.5}}},
    "resnet50": {"without": {1: {"folds": [57.4, 66.8, 55.8, 56.5], "miou": 59.1, "fbiou": 73.8},
                             5: {"folds": [62.6, 69.2, 62.5, 62.4], "miou": 64.2, "fbiou": 77.4}},
                 "with": {1: {"miou": 64.0, "fbiou": 76.7}, 5: {"miou": 69.5, "fbiou": 80.6}}},
    "resnet101": {"without": {1: {"folds": [60.1, 67.8, 57.3, 59.0], "miou": 61.1, "fbiou": 74.4},
                              5: {"folds": [63.9, 69.9, 62.0, 63.6], "miou": 64.8, "fbiou": 77.1}},
                  "with": {1: {"miou": 66.2, "fbiou": 77.6}, 5: {"miou": 70.4, "fbiou": 80.6}}},
}

# Headline results (FACTS.md), mIoU 1-shot / 5-shot.
HEADLINE = {
    ("pascal", "resnet50"): (64.0, 69.5), ("pascal", "resnet101"): (66.2, 70.4),
    ("coco", "resnet50"): (39.2, 46.9), ("coco", "resnet101"): (41.2, 49.5),
    ("fss", "resnet50"): (85.5, 87.8), ("fss", "resnet101"): (86.5, 88.5),
}
