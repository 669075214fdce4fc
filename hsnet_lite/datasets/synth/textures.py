"""Ten surface patterns; each maps object-frame coordinates to a mixing weight in [0, 1]."""
from __future__ import annotations

from typing import Callable

import numpy as np

TextureFn = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


def stripes(u, v, f):
    return (np.sin(np.pi * f * u) > 0).astype(np.float32)


def checks(u, v, f):
    return ((np.floor(u * f) + np.floor(v * f)) % 2).astype(np.float32)


def dots(u, v, f):
    du = (u * f) % 1.0 - 0.5
    dv = (v * f) % 1.0 - 0.5
    return (np.hypot(du, dv) < 0.3).astype(np.float32)


def radial(u, v, f):
    return np.clip(np.hypot(u, v), 0.0, 1.0).astype(np.float32)


def linear(u, v, f):
    return np.clip((u + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)


def rings(u, v, f):
    return (np.sin(np.pi * f * np.hypot(u, v)) > 0).astype(np.float32)


def waves(u, v, f):
    return (np.sin(np.pi * f * u + 2.0 * np.sin(np.pi * f * v / 2.0)) > 0).astype(np.float32)


def grid(u, v, f):
    return (((u * f) % 1.0 < 0.25) | ((v * f) % 1.0 < 0.25)).astype(np.float32)


def diagonal(u, v, f):
    return (np.sin(np.pi * f * (u + v) * 0.7071) > 0).astype(np.float32)


def mottled(u, v, f):
    return (0.5 + 0.5 * np.sin(0.8 * f * u) * np.cos(1.1 * f * v)).astype(np.float32)


TEXTURES: tuple[tuple[str, TextureFn], ...] = (
    ("stripes", stripes), ("checks", checks), ("dots", dots), ("radial", radial),
    ("linear", linear), ("rings", rings), ("waves", waves), ("grid", grid),
    ("diagonal", diagonal), ("mottled", mottled),
)
