"""Compose scenes: textured, rotated, scaled class objects on cluttered backgrounds.

A class is a (shape family, texture, hue) triple; every instance jitters scale, rotation,
aspect, colour and texture frequency. Objects are painted in a random z-order so targets can
be partially occluded by distractors; the returned mask marks the *visible* target pixels.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from .background import cluttered_background
from .shapes import SHAPES
from .textures import TEXTURES

N_CLASSES = len(SHAPES)
GOLDEN = 0.6180339887


@dataclass(frozen=True)
class ClassSpec:
    """Appearance of one embedded class."""

    name: str
    shape: int
    texture: int
    hue: float
    freq: float


def class_specs() -> tuple[ClassSpec, ...]:
    """The 20 classes: shape k, texture k mod 10, golden-ratio spaced hue, class texture frequency."""
    specs = []
    for k, (shape_name, _) in enumerate(SHAPES):
        tex = k % len(TEXTURES)
        specs.append(ClassSpec(f"{shape_name}/{TEXTURES[tex][0]}", k, tex, (k * GOLDEN) % 1.0,
                               3.0 + (k * 7) % 4))
    return tuple(specs)


CLASS_SPECS = class_specs()


@dataclass
class Instance:
    """Pose and appearance of one object instance (pixels, radians)."""

    cls: int
    cy: float
    cx: float
    radius: float
    angle: float
    aspect: float
    freq: float
    offset: tuple
    colors: tuple


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))) * 255.0


def sample_instance(rng: np.random.Generator, cls: int, size: int, radius_range: tuple) -> Instance:
    """Draw a random pose, colour jitter and texture frequency for class ``cls``."""
    spec = CLASS_SPECS[cls]
    radius = rng.uniform(*radius_range) * size
    cy, cx = rng.uniform(0.55 * radius, size - 0.55 * radius, 2)
    hue = spec.hue + rng.normal(0, 0.025)
    sat, val = rng.uniform(0.55, 0.95), rng.uniform(0.65, 1.0)
    colors = (_hsv(hue, sat, val), _hsv(hue + 0.06, sat * 0.6, val * 0.4))
    return Instance(cls, float(cy), float(cx), float(radius), float(rng.uniform(0, 2 * np.pi)),
                    float(np.exp(rng.uniform(-0.25, 0.25))), spec.freq * rng.uniform(0.75, 1.3),
                    tuple(rng.uniform(-1, 1, 2)), colors)


def _frame(inst: Instance, size: int):
    """Bounding box slices and object-frame coordinates (u, v) of an instance."""
    half = inst.radius * max(inst.aspect, 1 / inst.aspect) * 1.05 + 1
    y0, y1 = max(int(inst.cy - half), 0), min(int(inst.cy + half) + 1, size)
    x0, x1 = max(int(inst.cx - half), 0), min(int(inst.cx + half) + 1, size)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - inst.cy, xx - inst.cx
    c, s = np.cos(inst.angle), np.sin(inst.angle)
    u = (c * dx + s * dy) / (inst.radius * inst.aspect)
    v = (-s * dx + c * dy) / (inst.radius / inst.aspect)
    return (slice(y0, y1), slice(x0, x1)), u, v


def paint_instance(canvas: np.ndarray, labels: np.ndarray, inst: Instance, obj_id: int) -> int:
    """Paint an instance into ``canvas`` and ``labels`` in place; returns its in-frame pixel area."""
    spec = CLASS_SPECS[inst.cls]
    box, u, v = _frame(inst, canvas.shape[0])
    inside = SHAPES[spec.shape][1](u, v)
    if not inside.any():
        return 0
    weight = TEXTURES[spec.texture][1](u + inst.offset[0], v + inst.offset[1], inst.freq)[..., None]
    shade = (1.0 - 0.25 * np.clip(u * u + v * v, 0, 1))[..., None]
    color = (inst.colors[0] * (1 - weight) + inst.colors[1] * weight) * shade
    canvas[box][inside] = color[inside]
    labels[box][inside] = obj_id
    return int(inside.sum())


def _place_targets(rng, cls, count, size, radius_range):
    placed: list[Instance] = []
    for _ in range(count):
        for _attempt in range(30):
            inst = sample_instance(rng, cls, size, radius_range)
            if all(np.hypot(inst.cy - p.cy, inst.cx - p.cx) > 0.9 * (inst.radius + p.radius) for p in placed):
                break
        placed.append(inst)
    return placed


def _paint(background, targets, distractors, order):
    canvas = background.copy()
    labels = np.full(canvas.shape[:2], -1, dtype=np.int16)
    objects = targets + distractors
    areas = {i: paint_instance(canvas, labels, objects[i], i) for i in order}
    visible = [int((labels == i).sum()) / max(areas[i], 1) for i in range(len(targets))]
    mask = (labels >= 0) & (labels < len(targets))
    return canvas, mask, min(visible) if visible else 1.0


def render_scene(rng: np.random.Generator, cls: int, size: int, n_targets: int,
                 distractor_classes: list, min_visible: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Render one image holding ``n_targets`` instances of ``cls`` among distractor objects.

    Returns ``(image uint8 HxWx3, mask uint8 HxW in {0, 1})``; the mask covers every visible
    target pixel. Layouts where a target is less than ``min_visible`` visible are redrawn.
    """
    background = cluttered_background(rng, size)
    t_range = (0.14, 0.26) if n_targets == 1 else (0.10, 0.18)
    for _attempt in range(6):
        targets = _place_targets(rng, cls, n_targets, size, t_range)
        distractors = [sample_instance(rng, int(c), size, (0.08, 0.22)) for c in distractor_classes]
        order = [int(i) for i in rng.permutation(len(targets) + len(distractors))]
        canvas, mask, vis = _paint(background, targets, distractors, order)
        if vis >= min_visible and mask.sum() > 0.004 * size * size:
            break
    else:  # fall back to painting the targets on top of every distractor
        order = list(range(len(targets), len(targets) + len(distractors))) + list(range(len(targets)))
        canvas, mask, _ = _paint(background, targets, distractors, order)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), mask.astype(np.uint8)
