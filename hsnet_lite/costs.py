"""What HSNet's tensors and 4D convolutions cost: memory, parameters, multiply-adds, time.

* Hypercorrelation memory (main paper Sec. 4.1): C_p holds |L_p| (H_p W_p)^2 numbers.
* 4D convolutions (supplementary Sec. 3): a dense kernel has k1 k2 k3 k4 taps per
  (input, output) channel pair (Eq. 1), the center-pivot kernel k1 k2 + k3 k4 (Eq. 8), so the
  dense cost grows with k^4 and the center-pivot one with 2 k^2.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch

from .conv4d import CenterPivotConv4d, Conv4d, _as4

BYTES_FLOAT32 = 4


def hypercorrelation_numel(level_counts: dict[int, int], level_sizes: dict[int, int | tuple[int, int]]) -> dict[int, int]:
    """Numbers in each C_p: |L_p| * (H_p W_p)^2, for square (int) or (H, W) level sizes."""
    out = {}
    for p, n in level_counts.items():
        size = level_sizes[p]
        h, w = (size, size) if isinstance(size, int) else size
        out[p] = n * (h * w) ** 2
    return out


def hypercorrelation_bytes(level_counts: dict[int, int], level_sizes: dict[int, int | tuple[int, int]],
                           bytes_per_number: int = BYTES_FLOAT32) -> dict[int, int]:
    """Bytes of each C_p for one query-support pair (float32 by default)."""
    return {p: n * bytes_per_number for p, n in hypercorrelation_numel(level_counts, level_sizes).items()}


def conv4d_params(in_ch: int, out_ch: int, kernel_size: int | Sequence[int], center_pivot: bool,
                  bias: bool = True) -> int:
    """Learnable numbers of one 4D conv layer.

    Dense (Eq. 1): C_in C_out k1 k2 k3 k4 + C_out. Center-pivot (Eq. 8): two 2D kernels,
    C_in C_out (k1 k2 + k3 k4), and two biases 2 C_out.
    """
    k = _as4(kernel_size, "kernel_size")
    if center_pivot:
        return in_ch * out_ch * (k[0] * k[1] + k[2] * k[3]) + (2 * out_ch if bias else 0)
    return in_ch * out_ch * k[0] * k[1] * k[2] * k[3] + (out_ch if bias else 0)


def conv4d_macs(in_ch: int, out_ch: int, kernel_size: int | Sequence[int], out_positions: int,
                center_pivot: bool) -> int:
    """Multiply-adds of one layer: taps per output x C_in x C_out x output positions (biases left out)."""
    k = _as4(kernel_size, "kernel_size")
    taps = k[0] * k[1] + k[2] * k[3] if center_pivot else k[0] * k[1] * k[2] * k[3]
    return taps * in_ch * out_ch * out_positions


@dataclass
class ConvTiming:
    """Median seconds of one forward pass of each layer for one kernel size."""

    kernel: int
    dense_s: float
    center_pivot_s: float

    @property
    def ratio(self) -> float:
        return self.dense_s / self.center_pivot_s


@torch.no_grad()
def time_conv4d(kernels: Sequence[int], in_ch: int = 4, out_ch: int = 8, size: int = 12,
                repeats: int = 3, seed: int = 0) -> list[ConvTiming]:
    """Time dense :class:`Conv4d` against :class:`CenterPivotConv4d` on a (1, C, n, n, n, n) tensor.

    Each layer runs once to warm up, then ``repeats`` times; the median is kept. Timings vary
    from run to run: print them only as rounded ratios or plot them.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, in_ch, size, size, size, size, generator=gen)
    results = []
    for k in kernels:
        secs = []
        for layer in (Conv4d(in_ch, out_ch, k), CenterPivotConv4d(in_ch, out_ch, k)):
            layer(x)
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                layer(x)
                runs.append(time.perf_counter() - start)
            secs.append(sorted(runs)[len(runs) // 2])
        results.append(ConvTiming(k, secs[0], secs[1]))
    return results
