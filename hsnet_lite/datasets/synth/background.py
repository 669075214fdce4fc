"""Cluttered backgrounds: smooth colour noise, optional real-photo crops, strokes and blobs."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

PHOTO_FILES = ("coffee.png", "astronaut.png", "chelsea.png", "rocket.jpg")


@functools.lru_cache(maxsize=None)
def _photos() -> tuple[np.ndarray, ...]:
    """The bundled scikit-image photos (no download); empty if scikit-image is absent."""
    try:
        import skimage.data
    except ImportError:  # pragma: no cover - scikit-image is a declared dependency
        return ()
    folder = Path(skimage.data.__file__).parent
    out = []
    for name in PHOTO_FILES:
        if (folder / name).is_file():
            with Image.open(folder / name) as im:
                out.append(np.asarray(im.convert("RGB")))
    return tuple(out)


def _upsample(small: np.ndarray, size: int) -> np.ndarray:
    im = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8))
    return np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float32)


def smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Two octaves of bilinearly upsampled random colour grids, float32 HxWx3 in [0, 255]."""
    coarse = rng.integers(2, 6)
    base = rng.uniform(40, 210, size=(coarse, coarse, 3))
    fine = rng.integers(8, 17)
    detail = rng.uniform(-30, 30, size=(fine, fine, 3)) + 128
    return _upsample(base, size) + _upsample(detail, size) - 128.0


def photo_crop(rng: np.random.Generator, size: int) -> np.ndarray | None:
    """A random crop of a bundled photo resized to ``size``; None when no photo is available."""
    photos = _photos()
    if not photos:
        return None
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.3, 0.8))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y:y + side, x:x + side])
    return np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.float32)


def _segment_distance(yy, xx, p0, p1):
    d = p1 - p0
    t = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / max(float(d @ d), 1e-6), 0, 1)
    return np.hypot(yy - (p0[0] + t * d[0]), xx - (p0[1] + t * d[1]))


def add_strokes(canvas: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Paint ``count`` thick random line segments in random colours, in place."""
    size = canvas.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(count):
        p0, p1 = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
        width = rng.uniform(0.004, 0.018) * size + 0.5
        color = rng.uniform(0, 255, 3)
        canvas[_segment_distance(yy, xx, p0, p1) < width] = color


def add_blobs(canvas: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Paint ``count`` irregular smooth blobs (never one of the object classes), in place."""
    size = canvas.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(count):
        cy, cx = rng.uniform(0, size, 2)
        rad = rng.uniform(0.05, 0.15) * size
        ph = rng.uniform(0, 2 * np.pi, 2)
        t = np.arctan2(yy - cy, xx - cx)
        edge = rad * (1 + 0.2 * np.sin(2 * t + ph[0]) + 0.1 * np.sin(3 * t + ph[1]))
        canvas[np.hypot(yy - cy, xx - cx) < edge] = rng.uniform(30, 220, 3)


def cluttered_background(rng: np.random.Generator, size: int, photo_prob: float = 0.35) -> np.ndarray:
    """A float32 HxWx3 background: noise or a photo crop, plus distractor strokes and blobs."""
    canvas = smooth_noise(rng, size)
    if rng.uniform() < photo_prob:
        photo = photo_crop(rng, size)
        if photo is not None:
            canvas = 0.75 * photo + 0.25 * canvas
    add_blobs(canvas, rng, int(rng.integers(1, 4)))
    add_strokes(canvas, rng, int(rng.integers(2, 7)))
    return canvas
