"""Twenty shape families, each an implicit function of object-frame coordinates.

Every function takes ``u, v`` arrays (the object frame, object roughly inside the unit disk,
``v`` pointing down) and returns a boolean inside-mask.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

ShapeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _polar(u, v):
    return np.hypot(u, v), np.arctan2(v, u)


def star(u, v):
    r, t = _polar(u, v)
    w = np.abs(((t * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2.0
    return r < 0.38 + 0.62 * w ** 2


def heart(u, v):
    x, y = u * 1.15, -v * 1.15 + 0.1
    return (x * x + y * y - 1.0) ** 3 - x * x * y ** 3 < 0


def ring(u, v):
    r = np.hypot(u, v)
    return (r > 0.55) & (r < 1.0)


def cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au < 0.3) & (av < 1.0)) | ((av < 0.3) & (au < 1.0))


def crescent(u, v):
    return (np.hypot(u, v) < 1.0) & (np.hypot(u - 0.45, v) > 0.78)


def triangle(u, v):
    return (v < 0.5) & (v > -1.0 + 1.732 * np.abs(u))


def arrow(u, v):
    shaft = (np.abs(v) < 0.22) & (u > -1.0) & (u < 0.2)
    head = (u >= 0.2) & (u < 1.0) & (np.abs(v) < (1.0 - u) * 1.1)
    return shaft | head


def holed_ellipse(u, v):
    return (u * u + (v / 0.6) ** 2 < 1.0) & (np.hypot(u - 0.35, v) > 0.25)


def l_shape(u, v):
    stem = (u > -0.9) & (u < -0.3) & (np.abs(v) < 1.0)
    foot = (u > -0.9) & (u < 0.9) & (v > 0.4) & (v < 1.0)
    return stem | foot


def spiral(u, v):
    r, t = _polar(u, v)
    turns = 2.5
    phase = (r * turns - (t % (2 * np.pi)) / (2 * np.pi)) % 1.0
    return (phase < 0.5) & (r < 1.0) & (r > 0.06)


def gear(u, v):
    r, t = _polar(u, v)
    return (r < 0.72 + 0.24 * (np.cos(8 * t) > 0)) & (r > 0.28)


def diamond(u, v):
    return np.abs(u) + np.abs(v) < 1.0


def hexagon(u, v):
    au, av = np.abs(u), np.abs(v)
    return (av < 0.85) & (0.85 * au + 0.49 * av < 0.85)


def t_shape(u, v):
    bar = (np.abs(u) < 0.95) & (v > -0.95) & (v < -0.45)
    stem = (np.abs(u) < 0.25) & (v > -0.95) & (v < 0.95)
    return bar | stem


def trefoil(u, v):
    r, t = _polar(u, v)
    return r < 0.3 + 0.7 * np.abs(np.cos(1.5 * t))


def bowtie(u, v):
    au = np.abs(u)
    return ((np.abs(v) < au * 0.9) & (au < 1.0)) | (np.hypot(u, v) < 0.2)


def horseshoe(u, v):
    r = np.hypot(u, v)
    return (r > 0.5) & (r < 1.0) & ~((v < 0.0) & (np.abs(u) < 0.55))


def dumbbell(u, v):
    bells = (np.hypot(u - 0.6, v) < 0.4) | (np.hypot(u + 0.6, v) < 0.4)
    return bells | ((np.abs(u) < 0.6) & (np.abs(v) < 0.14))


def chevron(u, v):
    au = np.abs(u)
    return (au < 1.0) & (v > au - 0.75) & (v < au - 0.15)


def semicircle(u, v):
    return (np.hypot(u, v) < 1.0) & (v > -0.15)


SHAPES: tuple[tuple[str, ShapeFn], ...] = (
    ("star", star), ("heart", heart), ("ring", ring), ("cross", cross), ("crescent", crescent),
    ("triangle", triangle), ("arrow", arrow), ("holed-ellipse", holed_ellipse), ("L-shape", l_shape),
    ("spiral", spiral), ("gear", gear), ("diamond", diamond), ("hexagon", hexagon),
    ("T-shape", t_shape), ("trefoil", trefoil), ("bowtie", bowtie), ("horseshoe", horseshoe),
    ("dumbbell", dumbbell), ("chevron", chevron), ("semicircle", semicircle),
)
