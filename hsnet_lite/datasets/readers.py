"""Small image/mask readers (PIL based) used by the benchmark datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 array."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_label(path: Path) -> np.ndarray:
    """Read a label PNG (palette or grayscale) as an HxW uint8 array of raw label values."""
    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            im = im.convert("L")
        return np.asarray(im)


def read_gray(path: Path) -> np.ndarray:
    """Read an image as HxW uint8 luminance (palette images are converted through their colours)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))
