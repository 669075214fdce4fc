"""Supplementary Sec. 3, Eq. 1-8, evaluated literally at one 4D position (for notebook 04).

These loops are slow on purpose: each mirrors one line of the derivation, so a notebook can
check every step numerically against the next. Single-channel tensors: the correlation
``c`` is (Ha, Wa, Hb, Wb), a dense kernel ``k`` is (k1, k2, k3, k4) with odd sizes, positions
are integer tuples, and outside the tensor ``c`` reads as 0 (zero padding).
"""
from __future__ import annotations

import itertools

import torch

Pos = tuple[int, int]


def _read(c: torch.Tensor, p: Pos, p2: Pos) -> float:
    """c(p, p') with zero padding."""
    ha, wa, hb, wb = c.shape
    if 0 <= p[0] < ha and 0 <= p[1] < wa and 0 <= p2[0] < hb and 0 <= p2[1] < wb:
        return float(c[p[0], p[1], p2[0], p2[1]])
    return 0.0


def window(center: Pos, size: tuple[int, int]) -> list[Pos]:
    """P(x): the positions of a (size[0] x size[1]) window centred on ``center``."""
    r0, r1 = size[0] // 2, size[1] // 2
    return [(center[0] + i, center[1] + j) for i in range(-r0, r0 + 1) for j in range(-r1, r1 + 1)]


def neighbourhood(x: Pos, x2: Pos, ksize: tuple[int, int, int, int]) -> list[tuple[Pos, Pos]]:
    """P(x, x') = P(x) x P(x'): every 4D neighbour of (x, x') in the dense window (Eq. 1)."""
    return list(itertools.product(window(x, ksize[:2]), window(x2, ksize[2:])))


def pivot_sets(x: Pos, x2: Pos, ksize: tuple[int, int, int, int]) -> tuple[list, list, list]:
    """P_c (Eq. 2: p = x), P_c' (Eq. 3: p' = x') and their union P_CP (Eq. 4)."""
    full = neighbourhood(x, x2, ksize)
    p_c = [(p, p2) for p, p2 in full if p == x]
    p_c2 = [(p, p2) for p, p2 in full if p2 == x2]
    p_cp = p_c + [q for q in p_c2 if q not in p_c]
    return p_c, p_c2, p_cp


def _tap(k: torch.Tensor, p: Pos, p2: Pos, x: Pos, x2: Pos) -> float:
    """k(p - x, p' - x') with the kernel's centre as offset 0."""
    k1, k2, k3, k4 = k.shape
    return float(k[p[0] - x[0] + k1 // 2, p[1] - x[1] + k2 // 2, p2[0] - x2[0] + k3 // 2, p2[1] - x2[1] + k4 // 2])


def conv_over(c: torch.Tensor, k: torch.Tensor, x: Pos, x2: Pos, positions) -> float:
    """sum over (p, p') in ``positions`` of c(p, p') k(p - x, p' - x'): Eq. 1 over any neighbour set."""
    return sum(_read(c, p, p2) * _tap(k, p, p2, x, x2) for p, p2 in positions)


def eq1(c: torch.Tensor, k: torch.Tensor, x: Pos, x2: Pos) -> float:
    """Dense 4D convolution at (x, x') (Eq. 1)."""
    return conv_over(c, k, x, x2, neighbourhood(x, x2, tuple(k.shape)))


def eq5(c: torch.Tensor, k: torch.Tensor, x: Pos, x2: Pos) -> float:
    """(c * k_c)(x, x') + (c * k_c')(x, x'): two 4D convolutions over P_c and P_c' (Eq. 5)."""
    p_c, p_c2, _ = pivot_sets(x, x2, tuple(k.shape))
    return conv_over(c, k, x, x2, p_c) + conv_over(c, k, x, x2, p_c2)


def eq6(c: torch.Tensor, k_c_2d: torch.Tensor, x: Pos, x2: Pos) -> float:
    """sum over p' in P(x') of c(x, p') k_c^2D(p' - x'): a 2D conv on the slice c(x, :) (Eq. 6)."""
    k3, k4 = k_c_2d.shape
    return sum(_read(c, x, p2) * float(k_c_2d[p2[0] - x2[0] + k3 // 2, p2[1] - x2[1] + k4 // 2])
               for p2 in window(x2, (k3, k4)))


def eq7(c: torch.Tensor, k_c2_2d: torch.Tensor, x: Pos, x2: Pos) -> float:
    """sum over p in P(x) of c(p, x') k_c'^2D(p - x): a 2D conv on the slice c(:, x') (Eq. 7)."""
    k1, k2 = k_c2_2d.shape
    return sum(_read(c, p, x2) * float(k_c2_2d[p[0] - x[0] + k1 // 2, p[1] - x[1] + k2 // 2])
               for p in window(x, (k1, k2)))


def pivot_kernels(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k_c^2D = k(0, :) and k_c'^2D = k(:, 0): the two 2D slices through the kernel centre."""
    k1, k2, k3, k4 = k.shape
    return k[k1 // 2, k2 // 2], k[:, :, k3 // 2, k4 // 2]


def eq8(c: torch.Tensor, k: torch.Tensor, x: Pos, x2: Pos) -> float:
    """Center-pivot 4D convolution at (x, x'): Eq. 6 plus Eq. 7 (Eq. 8)."""
    k_c, k_c2 = pivot_kernels(k)
    return eq6(c, k_c, x, x2) + eq7(c, k_c2, x, x2)
