"""Architecture table: every tensor shape and parameter count of HSNet, as in Tables S5-S7."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .blocks import pool_support_dims, upsample_query_dims
from .engine import model_device
from .model import HSNet


@dataclass
class Row:
    """One line of the table: layer name, input and output shapes (batch dim dropped), params."""

    layer: str
    inputs: str
    output: str
    params: int | None


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape[1:]))


def _grouped(feats: list[torch.Tensor]) -> str:
    """'(2048, 13, 13) x 3, (1024, 25, 25) x 6, ...' deepest first, like Tables S5-S7."""
    groups: list[list] = []
    for f in reversed(feats):
        s = _shape(f)
        if groups and groups[-1][0] == s:
            groups[-1][1] += 1
        else:
            groups.append([s, 1])
    return ", ".join(f"{s} x {n}" for s, n in groups)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def architecture_table(model: HSNet, img_size: int = 400) -> list[Row]:
    """Run one random 1-shot episode through ``model`` (on its device) and record every stage."""
    model.eval()
    dev = model_device(model)
    q = torch.randn(1, 3, img_size, img_size, device=dev)
    s = torch.randn(1, 1, 3, img_size, img_size, device=dev)
    m = torch.ones(1, 1, img_size, img_size, device=dev)
    feats = model.extract(q)
    bb = model.config["backbone"]
    rows = [Row(f"{bb} backbone (query and support)", f"(3, {img_size}, {img_size})", _grouped(feats),
                _count(model.backbone))]
    rows.append(Row("masking layer (Eq. 1)", f"features + mask (1, {img_size}, {img_size})", _grouped(feats), None))
    hc = model.hypercorrelation(q, s, m)
    rows.append(Row("correlation layer (cosine, ReLU)", "query and support features",
                    ", ".join(f"C{p} {_shape(hc[p])}" for p in sorted(hc, reverse=True)), None))
    learner = model.learner
    sqz = {}
    for p in learner.levels:
        sqz[p] = learner.squeeze[str(p)](hc[p])
        rows.append(Row(f"squeezing block f{p}", f"C{p} {_shape(hc[p])}", _shape(sqz[p]), _count(learner.squeeze[str(p)])))
    coarse = sqz[learner.levels[0]]
    for prev, p in zip(learner.levels, learner.levels[1:]):
        mix = learner.mix[f"{prev}{p}"]
        coarse = mix(upsample_query_dims(coarse, sqz[p].shape[2:4]) + sqz[p])
        rows.append(Row(f"mixing block {prev}->{p}", f"{_shape(sqz[p])} + upsampled", _shape(coarse), _count(mix)))
    z = pool_support_dims(coarse)
    rows.append(Row("pooling layer (mean over support dims)", _shape(coarse), _shape(z), None))
    rows.append(Row("decoder (+ bilinear to image size)", _shape(z), f"(2, {img_size}, {img_size})", _count(learner.decoder)))
    rows.append(Row("all learnable", "", "", model.learnable_parameters()))
    return rows


def format_table(rows: list[Row]) -> str:
    """Plain-text table with thousands separators."""
    cells = [(r.layer, r.inputs, r.output, "-" if r.params is None else f"{r.params:,}") for r in rows]
    header = ("layer", "input", "output", "# params")
    widths = [max(len(c[i]) for c in cells + [header]) for i in range(3)]
    lines = [f"{header[0]:<{widths[0]}}  {header[2]:<{widths[2]}}  {header[3]:>11}"]
    lines.append("-" * len(lines[0]))
    for c in cells:
        lines.append(f"{c[0]:<{widths[0]}}  {c[2]:<{widths[2]}}  {c[3]:>11}")
    return "\n".join(lines)
