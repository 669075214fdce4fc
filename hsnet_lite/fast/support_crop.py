"""Skipping the support background in the first squeezing layer of each level (exact).

With support feature masking (main paper Eq. 1), a support position outside the object has an
all-zero feature, so its correlation column C(., x') is exactly zero (Eq. 2). The first
center-pivot conv of a level (supplementary Eq. 8, support stride s, kernel k) sees it twice:

* support branch (Eq. 6): an output position x'' whose k x k window holds only zero columns is
  just the bias;
* query branch (Eq. 7): a pivot x' = s * x'' with a zero column convolves zeros: 0.

So outside the rows and columns of outputs whose window meets the object's bounding box, the
layer's output is the bias, and the layer needs the correlation only on the support window
those outputs read. :class:`CroppedCorrelation` holds exactly that window (with zero rows where
it runs past the support's border, i.e. the conv's padding); the correlation then fills a
tensor of about half the size for an object covering a quarter of the image, and the first
layer convolves about half of it. ``to_full()`` rebuilds the dense tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Window:
    """1D geometry: outputs ``lo..hi`` (inclusive) of a conv with kernel ``k``, stride ``s`` and
    padding ``k // 2`` read input positions ``start .. start + length - 1`` (``start`` may be
    negative and the end may pass ``size``: those are the padding zeros)."""

    k: int
    s: int
    lo: int
    hi: int
    size: int

    @property
    def start(self) -> int:
        return self.s * self.lo - self.k // 2

    @property
    def length(self) -> int:
        return self.s * (self.hi - self.lo) + self.k

    @property
    def n_out(self) -> int:
        return (self.size + 2 * (self.k // 2) - self.k) // self.s + 1


def window(first: int, last: int, size: int, k: int, s: int) -> Window:
    """The outputs whose window meets input positions ``first..last`` and the input they read."""
    p = k // 2
    n_out = (size + 2 * p - k) // s + 1
    lo = max(0, -(-(first + p - k + 1) // s))  # ceil
    hi = min(n_out - 1, (last + p) // s)
    return Window(k, s, lo, hi, size)


@dataclass
class CroppedCorrelation:
    """The part of a level's correlation (B, n, Ha, Wa, Hb, Wb) that its first squeezing layer
    reads: ``crop`` is (B, n, Ha, Wa, rows.length, cols.length), channels-last, support row r of
    the crop being row ``rows.start + r`` of the full tensor (zero outside it)."""

    crop: torch.Tensor
    rows: Window
    cols: Window
    workspace: dict | None = field(default=None, repr=False)  # inference buffers the first layer may reuse

    @property
    def shape(self) -> torch.Size:
        """Shape of the full correlation tensor."""
        return torch.Size((*self.crop.shape[:4], self.rows.size, self.cols.size))

    def to_full(self) -> torch.Tensor:
        """The dense correlation (B, n, Ha, Wa, Hb, Wb), zero outside the crop (channels-last)."""
        b, n, ha, wa = self.crop.shape[:4]
        full = self.crop.new_zeros(b, ha, wa, self.rows.size, self.cols.size, n)
        (crop_r, full_r), (crop_c, full_c) = _overlap(self.rows), _overlap(self.cols)
        full[:, :, :, full_r, full_c] = self.crop.permute(0, 2, 3, 4, 5, 1)[:, :, :, crop_r, crop_c]
        return full.permute(0, 5, 1, 2, 3, 4)


def _overlap(w: Window) -> tuple[slice, slice]:
    """(crop slice, full slice) of the crop positions that lie inside the support."""
    first, last = max(w.start, 0), min(w.start + w.length, w.size)
    return slice(first - w.start, last - w.start), slice(first, last)


def plan(keep: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[Window, Window] | None:
    """Row and column windows for ``keep`` (B*K, Hb, Wb) bool (all supports of a level at once),
    or ``None`` when cropping would not save at least a fifth of the support area."""
    hb, wb = keep.shape[-2:]
    rows_any, cols_any = keep.any(dim=(0, 2)), keep.any(dim=(0, 1))
    if not bool(rows_any.any()) or kernel[0] < stride[0] or kernel[1] < stride[1]:
        return None
    r = rows_any.nonzero().squeeze(1)
    c = cols_any.nonzero().squeeze(1)
    rows = window(int(r[0]), int(r[-1]), hb, kernel[0], stride[0])
    cols = window(int(c[0]), int(c[-1]), wb, kernel[1], stride[1])
    if rows.lo > rows.hi or cols.lo > cols.hi or rows.length * cols.length > 0.8 * hb * wb:
        return None  # (kept positions read by no output, past the last window: no savings to make)
    return rows, cols


def crop_positions(idx: torch.Tensor, wb: int, rows: Window, cols: Window) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat support positions ``idx`` (row-major in (Hb, Wb)) that fall inside the crop, and
    their flat positions in the crop."""
    r, c = idx // wb - rows.start, idx % wb - cols.start
    inside = (r >= 0) & (r < rows.length) & (c >= 0) & (c < cols.length)
    return idx[inside], (r * cols.length + c)[inside]
