"""Support feature masking (main paper Eq. 1) and multi-layer 4D correlation (Eq. 2-3).

A hypercorrelation is a dict ``{p: C_p}`` from pyramid level p to the tensor
C_p of shape (B, |Q_p|, Ha, Wa, Hb, Wb): the cosine similarities of every query position
(Ha, Wa) with every support position (Hb, Wb), ReLU-clamped, for each layer of level p
stacked along the channel axis (Tables S5-S7, "Correlation layer").
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .fast import support_crop
from .fast.folded_convs import fused_conv, needs_autograd, onednn_available
from .fast.support_crop import CroppedCorrelation

EPS = 1e-5


def resize_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinearly resize a (B, H, W) mask to ``size`` (align_corners=True), as (B, 1, h, w)."""
    return F.interpolate(mask.unsqueeze(1).float(), size=tuple(size), mode="bilinear", align_corners=True)


def mask_features(feats: Sequence[torch.Tensor], mask: torch.Tensor) -> list[torch.Tensor]:
    """Eq. 1: Hadamard product of each support feature with the mask resized to its size."""
    return [f * resize_mask(mask, f.shape[-2:]).to(f.dtype) for f in feats]


def l2_normalize(feat: torch.Tensor, eps: float = EPS, out: torch.Tensor | None = None) -> torch.Tensor:
    """Divide a (B, C, H, W) feature by its L2 norm over channels plus ``eps`` (into ``out``, an
    optional tensor of the same shape, possibly strided)."""
    return torch.div(feat, feat.norm(p=2, dim=1, keepdim=True) + eps, out=out)


def _cosine(query_n: torch.Tensor, support_n: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (before the ReLU) as a (B*K, Ha, Wa, Hb, Wb) tensor."""
    b, c, ha, wa = query_n.shape
    bk, _, hb, wb = support_n.shape
    if bk % b:
        raise ValueError(f"support batch {bk} is not a multiple of the query batch {b}")
    q = query_n.flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, Ha*Wa, C): a view when channels-last
    s = support_n.flatten(2).view(b, bk // b, c, hb * wb)  # (B, K, C, Hb*Wb)
    return torch.matmul(q, s).view(bk, ha, wa, hb, wb)


def cosine_correlation(query_n: torch.Tensor, support_n: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """ReLU(cosine) between L2-normalised features.

    ``query_n`` (B, C, Ha, Wa) and ``support_n`` (B*K, C, Hb, Wb) give (B*K, Ha, Wa, Hb, Wb):
    with K supports per query, each query feature is read once and broadcast, not copied.
    ``out``: an optional (B*K, Ha, Wa, Hb, Wb) tensor, possibly strided, that receives the result.
    """
    corr = _cosine(query_n, support_n)
    return corr.clamp(min=0) if out is None else torch.clamp(corr, min=0, out=out)


def hypercorrelation(
    query_feats: Sequence[torch.Tensor],
    support_feats: Sequence[torch.Tensor],
    feature_levels: Sequence[int],
    normalized: bool = False,
    support_masks: torch.Tensor | None = None,
    workspace: dict | None = None,
    crops: dict[int, tuple[tuple[int, int], tuple[int, int]]] | None = None,
    mask_support: bool = False,
) -> dict[int, torch.Tensor | CroppedCorrelation]:
    """Stack the per-layer correlations of each pyramid level (Eq. 3).

    Args:
        query_feats, support_feats: the L features of query and (masked) support, same order.
        feature_levels: pyramid level p of each of the L features.
        normalized: set when the features were already passed through :func:`l2_normalize`;
            with ``mask_support``, only the query features. Otherwise each query is normalised
            once, however many supports it has (on the CPU straight into the buffer the
            correlation reads).
        support_masks: the (B*K, H, W) masks the support features were multiplied with
            (:func:`mask_features`), if they were. A support position where the resized mask is
            0 has an all-zero feature, so its correlations are exactly 0: they are written as
            zeros without being computed (the background of the support costs nothing). CPU only:
            on a GPU, one full matmul per layer beats gathering the kept columns.
        workspace: optional dict in which the CPU path keeps its output buffers between calls
            and reuses them (a fresh 100 MB buffer costs about 20 ms of page faults on first
            touch). The results are then views of those buffers, overwritten by the next call
            with the same dict: only for a caller that consumes them at once (HSNet.forward).
        crops: ``{p: (kernel, stride)}`` of the first squeezing layer of level p: with the
            masks, level p's result is then the :class:`~hsnet_lite.fast.support_crop.CroppedCorrelation`
            that layer reads, when that saves work (CPU only; see :mod:`hsnet_lite.fast.support_crop`).
        mask_support: the support features are raw (neither masked nor normalised): Eq. 1 and
            the normalisation are applied here, with ``support_masks``. On the CPU only the kept
            support positions are masked and normalised (a quarter of the work for an object
            covering a quarter of the image).
    Returns:
        ``{p: C_p}`` with C_p of shape (B, n_p, Ha, Wa, Hb, Wb), layers shallow to deep, stored
        channels-last (memory order B, Ha, Wa, Hb, Wb, n_p), the layout the learner works in:
        each layer's ReLU(cosine) is written straight into its slot, one pass, no stacking copy.
    """
    if not (len(query_feats) == len(support_feats) == len(feature_levels)):
        raise ValueError(
            f"got {len(query_feats)} query features, {len(support_feats)} support features "
            f"and {len(feature_levels)} levels; they must match"
        )
    if mask_support and support_masks is None:
        raise ValueError("mask_support=True needs the support_masks to apply")
    lazy = mask_support and support_masks.device.type == "cpu" and not needs_autograd(*support_feats)
    if mask_support and not lazy:
        support_feats = [l2_normalize(f) for f in mask_features(support_feats, support_masks)]
    per_level: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for q, s, p in zip(query_feats, support_feats, feature_levels):
        if not normalized:
            s = s if mask_support else l2_normalize(s)
        per_level.setdefault(p, []).append((q, s))
    out = {}
    for p, pairs in sorted(per_level.items()):
        if torch.is_grad_enabled() and any(t.requires_grad for pair in pairs for t in pair):
            # autograd cannot differentiate through out=; stack (a copy) and keep the layout
            pairs = pairs if normalized else [(l2_normalize(q), s) for q, s in pairs]
            stacked = torch.stack([cosine_correlation(q, s) for q, s in pairs], dim=-1)
            out[p] = stacked.permute(0, 5, 1, 2, 3, 4)
            continue
        keep = weights = None
        if support_masks is not None and support_masks.device.type == "cpu":  # on a GPU one matmul is faster
            weights = resize_mask(support_masks, pairs[0][1].shape[-2:]).flatten(1)  # (B*K, Hb*Wb)
            keep = weights != 0
        window = None
        if keep is not None and crops and p in crops:
            window = support_crop.plan(keep.view(-1, *pairs[0][1].shape[-2:]), *crops[p])
        corr = _stacked_correlation(pairs, keep, workspace, p, window, weights if lazy else None, not normalized)
        if window is not None:
            out[p] = CroppedCorrelation(corr.permute(0, 5, 1, 2, 3, 4), *window, workspace=workspace)
        else:
            out[p] = corr.permute(0, 5, 1, 2, 3, 4)
    return out


# Support positions are skipped only when at most this fraction of them is kept: past it, one
# full matmul per layer beats gathering the kept columns and scattering the result.
SPARSE_MAX_FRACTION = 0.8


def _positions(feat: torch.Tensor) -> torch.Tensor:
    """A (C, H, W) feature as the (H*W, C) matrix of its positions: a view when channels-last
    (then gathering kept positions reads whole rows and never copies the rest)."""
    return feat.permute(1, 2, 0).reshape(-1, feat.shape[0])


# On the CPU, the support positions correlated by one grouped conv are capped so that its
# output stays under glibc's largest mmap threshold (32 MiB): larger outputs (a full mask at
# level 1 gives 100 MB) are fresh pages on every call, about 20 ms of page faults per 100 MB
# here. 24 MiB was the fastest cap measured (16 and 8 MiB chunks run the conv less efficiently).
CHUNK_BYTES = 24 << 20


def _support_kernel(supports: Sequence[torch.Tensor], positions: torch.Tensor | slice,
                    mask: torch.Tensor | None) -> torch.Tensor:
    """The given support positions of n layers of one width, stacked as the (n*N, C) kernel of
    :func:`_relu_cosines` (one layer: its (N, C) rows): ``supports`` are (C, Hb, Wb) features,
    ``positions`` the N positions (indices or a slice). With ``mask`` (N, 1) each row is masked
    (Eq. 1) and L2-normalised (channels on dim 1, as for images). Every layer's rows are
    gathered, masked and normalised in place in their slice of the kernel (no per-layer
    temporaries, no concatenation), with the same arithmetic as on separate rows."""
    first = _positions(supports[0])
    count = len(range(first.shape[0])[positions]) if isinstance(positions, slice) else positions.numel()
    kernel = first.new_empty(len(supports) * count, first.shape[1])
    for i, feat in enumerate(supports):
        rows, dest = _positions(feat), kernel[i * count : (i + 1) * count]
        if isinstance(positions, slice):
            dest.copy_(rows[positions])
        else:
            torch.index_select(rows, 0, positions, out=dest)
        if mask is not None:
            l2_normalize(dest.mul_(mask.to(dest.dtype)), out=dest)
    return kernel


def _write_cosines(corr: torch.Tensor, query: torch.Tensor, supports: Sequence[torch.Tensor],
                   idx: torch.Tensor | None, dest: torch.Tensor | None, mask: torch.Tensor | None) -> None:
    """ReLU(cosine) of the query image (1, n*C, Ha, Wa) with one support's n layers (C, Hb, Wb)
    written into ``corr`` (Ha*Wa, positions, n): at every position (``idx`` None), or at the
    kept positions ``idx`` into the columns ``dest``. ``mask`` (N, 1): Eq. 1's weights of the
    positions used. On the CPU, one grouped conv per chunk of positions (:data:`CHUNK_BYTES`)."""
    n, hw = len(supports), corr.shape[0]
    count = supports[0].shape[1] * supports[0].shape[2] if idx is None else idx.numel()
    step = max(1, CHUNK_BYTES // (hw * n * corr.element_size())) if corr.device.type == "cpu" else count
    for start in range(0, count, step):
        part = slice(start, min(start + step, count))
        kernel = _support_kernel(supports, part if idx is None else idx[part], None if mask is None else mask[part])
        _store(corr, _relu_cosines(query, kernel, n).transpose(1, 2), part, dest)  # (Ha*Wa, chunk, n)


def _store(corr: torch.Tensor, cos: torch.Tensor, part: slice, dest: torch.Tensor | None) -> None:
    """Write ``cos`` (Ha*Wa, k, n), the positions ``part`` of those correlated, into ``corr``
    (Ha*Wa, positions, n): into its columns ``part`` when every position is stored (``dest``
    None), else into the columns ``dest[part]``."""
    if dest is None:
        corr[:, part].copy_(cos)
    else:
        corr.index_copy_(1, dest[part], cos)


def _relu_cosines(query: torch.Tensor, support_rows: torch.Tensor, groups: int) -> torch.Tensor:
    """ReLU(cosine) of every query position with a few support positions, in ``groups`` layers at once.

    ``query``: the (1, n*C, Ha, Wa) normalised query features of the n layers, concatenated;
    ``support_rows``: (n*k, C), the k kept support positions of each layer. Returns
    (Ha*Wa, n, k). On the CPU in fp32 this runs as one grouped 1x1 convolution of the query
    image with the support vectors as kernels and the ReLU fused: oneDNN's convolutions beat
    the BLAS matmul at these shapes by about 1.6x, and a channels-last query gives the output
    in this layout directly. Elsewhere, one matmul per layer.
    """
    _, nc, ha, wa = query.shape
    c = nc // groups
    if onednn_available(query):
        out = fused_conv(query, support_rows.contiguous().view(-1, c, 1, 1), None, groups=groups, relu=True)
        return out.permute(0, 2, 3, 1).reshape(ha * wa, groups, -1)
    q = query.flatten(2).view(groups, c, ha * wa).transpose(1, 2)  # (n, Ha*Wa, C)
    return torch.bmm(q, support_rows.view(groups, -1, c).transpose(1, 2)).clamp_(min=0).transpose(0, 1)


def workspace_buffer(shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype, zero: bool,
                     workspace: dict | None, key: object) -> torch.Tensor:
    """An output buffer: fresh, or the front of the flat ``workspace[key]`` when that is large
    enough and of the right dtype and device (it grows to the largest size asked for)."""
    if workspace is None:
        return (like.new_zeros if zero else like.new_empty)(shape, dtype=dtype)
    numel = math.prod(shape)
    flat = workspace.get(key)
    if flat is None or flat.numel() < numel or flat.dtype != dtype or flat.device != like.device:
        flat = workspace[key] = like.new_empty(numel, dtype=dtype)
    buf = flat[:numel].view(shape)
    return buf.zero_() if zero else buf


def _stacked_correlation(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], keep: torch.Tensor | None,
                         workspace: dict | None = None, key: object = None,
                         window: tuple[support_crop.Window, support_crop.Window] | None = None,
                         mask_weights: torch.Tensor | None = None, raw_queries: bool = False) -> torch.Tensor:
    """The correlations of one level stacked as a (B*K, Ha, Wa, Hb, Wb, n) tensor, computed in place.

    ``keep``: (B*K, Hb*Wb) bool, False where the support feature is known to be zero in every
    layer; those columns are exact zeros and are not computed. On the CPU each support is
    correlated with its query in one call for all n layers (:func:`_relu_cosines`); elsewhere,
    without skipped columns, one batched matmul per layer. With ``window`` (rows, cols), only that
    window of the support dims is stored: (B*K, Ha, Wa, rows.length, cols.length, n).
    ``mask_weights``: (B*K, Hb*Wb) resized masks when the supports are raw: each support position
    used is masked (Eq. 1) and normalised here. ``raw_queries``: the query features are not yet
    normalised; where the n layers are correlated as one image (CPU, same widths), each query is
    normalised straight into that image (no normalised copy of the query features is made).
    """
    b, _, ha, wa = pairs[0][0].shape
    bk, _, hb, wb = pairs[0][1].shape
    n = len(pairs)
    counts = keep.sum(dim=1).tolist() if keep is not None else [hb * wb] * bk
    sparse = [c <= SPARSE_MAX_FRACTION * hb * wb for c in counts]
    same_width = len({q.shape[1] for q, _ in pairs}) == 1
    matmuls = window is None and not any(sparse) and not (onednn_available(pairs[0][0]) and same_width)
    if raw_queries and (matmuls or not same_width):  # only the query image below normalises in place
        pairs, raw_queries = [(l2_normalize(q), s) for q, s in pairs], False
    if matmuls:
        corr = None  # one batched matmul per layer, clamped straight into its slot
        for i, (q, s) in enumerate(pairs):
            if mask_weights is not None:
                s = l2_normalize(s * mask_weights.view(bk, 1, hb, wb).to(s.dtype))
            cos = _cosine(q, s)
            if corr is None:
                corr = cos.new_empty(bk, ha, wa, hb, wb, n)
            torch.clamp(cos, min=0, out=corr[..., i])
        return corr
    q0, s0 = pairs[0]
    dtype = torch.result_type(q0, s0)
    if window is not None:
        hb, wb = window[0].length, window[1].length  # the stored support window
    corr = workspace_buffer((bk, ha * wa, hb * wb, n), q0, dtype, any(sparse) or window is not None, workspace, key)
    queries = {}
    for j in range(bk):  # support j, of query j // K
        idx = keep[j].nonzero().squeeze(1) if sparse[j] or window is not None else None
        dest = idx
        if window is not None:
            idx, dest = support_crop.crop_positions(idx, pairs[0][1].shape[-1], *window)
        if idx is not None and not idx.numel():
            continue  # an empty mask: all zeros
        m = None
        if mask_weights is not None:  # Eq. 1 and the normalisation, on the rows used only
            m = (mask_weights[j] if idx is None else mask_weights[j, idx]).unsqueeze(1)
        qi = j * b // bk
        if same_width:
            if qi not in queries:  # the query features of the n layers as one (1, n*C, Ha, Wa) image
                nc = sum(q.shape[1] for q, _ in pairs)
                image = workspace_buffer((1, ha, wa, nc), q0, q0.dtype, False, workspace, (key, "query", qi))
                queries[qi] = _query_image([q[qi : qi + 1] for q, _ in pairs], image.permute(0, 3, 1, 2), raw_queries)
            _write_cosines(corr[j], queries[qi], [s[j] for _, s in pairs], idx, dest, m)
            continue
        # layers of different widths (EfficientNet-Lite0): one call per layer
        rows = [_support_kernel([s[j]], slice(None) if idx is None else idx, m) for _, s in pairs]  # (N, C) each
        cos = torch.stack([_relu_cosines(q[qi : qi + 1], r, 1)[:, 0] for (q, _), r in zip(pairs, rows)], dim=-1)
        _store(corr[j], cos, slice(None), dest)
    return corr.view(bk, ha, wa, hb, wb, n)


def _query_image(queries: Sequence[torch.Tensor], image: torch.Tensor, raw: bool) -> torch.Tensor:
    """The (1, C_i, Ha, Wa) query features of a level's layers written side by side into ``image``
    (1, sum C_i, Ha, Wa), each divided by its L2 norm on the way when ``raw``."""
    if not raw:
        return torch.cat(list(queries), dim=1, out=image)
    start = 0
    for q in queries:
        l2_normalize(q, out=image[:, start : start + q.shape[1]])
        start += q.shape[1]
    return image
