"""``python -m hsnet_lite.bench``: hsnet-lite against the authors'-style baseline, in one run.

Everything is measured here and now, on this machine's CPU (or GPU), in fp32, side by side with
:mod:`hsnet_lite.reference` (the authors' way: index_select pruning and permute/contiguous
round trips in every center-pivot conv, the whole network once per support in K-shot):

1. center-pivot layer: dense :class:`~hsnet_lite.conv4d.Conv4d` vs
   :class:`~hsnet_lite.conv4d.CenterPivotConv4d`, then every squeezing / mixing layer of a
   ResNet50 HSNet at 400x400 against the reference CP conv and against the two bare
   ``conv2d`` calls it is made of, run on inputs already laid out for them;
2. 1-shot inference, 3. one training step (batch 2, frozen backbone, Adam),
4. a 5-shot episode, 5. peak memory of a 1-shot episode (fresh subprocesses);
6. optional faster modes (bf16 autocast, torch.compile) with their mask agreement to fp32.

Both networks hold the same weights (the baseline's random weights loaded into ours with
:func:`~hsnet_lite.checkpoints.load_official_checkpoint`) and every row prints the largest
absolute difference of their outputs. Times are medians of interleaved runs (ours, baseline,
ours, ...), so a load change on a shared machine hits both alike; each row also gives the ratio
of the process CPU time, which a busy machine disturbs less than the wall clock. On a machine
shared with other jobs, run it as ``OMP_WAIT_POLICY=PASSIVE python -m hsnet_lite.bench``: idle
OpenMP threads then sleep instead of spinning, and a descheduled thread no longer stalls every
parallel region of both networks (the ratios become stable; the setting is printed).

``--device cuda`` runs sections 1-6 on a GPU (fp32 with TF32 off; TF32 and CUDA graphs are
extra modes; memory from torch's allocator statistics) and ``--backbone resnet101`` switches
sections 2-6 to the paper's efficiency backbone; ``scripts/gpu_bench.sh`` runs that set.
``--rounds N`` runs sections 1-5 N times and ends with every row's ratio in each round and in
how many rounds it met its target (on a shared machine a single run can land either side).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from .checkpoints import load_official_checkpoint, our_key_to_official
from .conv4d import CenterPivotConv4d, Conv4d, channels_last_view, to_channels_last_6d
from .cuda_graphs import CapturedHSNet
from .fast import native
from .model import HSNet
from .reference import ReferenceCPConv4d, ReferenceHSNet
from .trainer import make_optimizer

IMG = 400
DEVICE = torch.device("cpu")  # set by --device
BACKBONE = "resnet50"  # set by --backbone
SECTIONS = ("layers", "1shot", "train", "5shot", "memory", "modes")
MODES = ("bf16", "compile", "tf32", "cudagraphs")
NAMES = {"resnet50": "ResNet50", "resnet101": "ResNet101"}
# Squeezing and mixing layers of a ResNet50 HSNet at 400x400:
# name, in, out, kernel, support stride, (Ha, Wa, Hb, Wb) of the input.
HSNET_LAYERS = [
    ("f3 layer 1", 3, 16, 3, 2, (13, 13, 13, 13)), ("f3 layer 2", 16, 64, 3, 2, (13, 13, 7, 7)),
    ("f3 layer 3", 64, 128, 3, 2, (13, 13, 4, 4)),
    ("f2 layer 1", 6, 16, 5, 4, (25, 25, 25, 25)), ("f2 layer 2", 16, 64, 3, 2, (25, 25, 7, 7)),
    ("f2 layer 3", 64, 128, 3, 2, (25, 25, 4, 4)),
    ("f1 layer 1", 4, 16, 5, 4, (50, 50, 50, 50)), ("f1 layer 2", 16, 64, 5, 4, (50, 50, 13, 13)),
    ("f1 layer 3", 64, 128, 3, 2, (50, 50, 4, 4)),
    ("mix 3->2 (x3)", 128, 128, 3, 1, (25, 25, 2, 2)), ("mix 2->1 (x3)", 128, 128, 3, 1, (50, 50, 2, 2)),
]
QUICK_LAYERS = ("f1 layer 1", "f1 layer 2", "f1 layer 3", "mix 2->1 (x3)")
TARGETS = {"layer": 1.15, "1shot": 2.0, "train": 2.0, "5shot": 2.0}


# ----------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Wall-clock and process-CPU seconds of repeated runs of one callable."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    inner: int = 1  # calls per sample (tiny layers are looped to rise above the clock's noise)

    @property
    def median(self) -> float:
        return statistics.median(self.wall) / self.inner

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu) / self.inner


def _sync() -> None:
    """Wait for queued GPU work (timings on a GPU must include it); a no-op on the CPU."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, min_sample_s: float = 0.0) -> dict[str, Timing]:
    """Run every callable once to warm up, then ``repeats`` rounds of one run of each in turn.

    With ``min_sample_s``, a callable faster than that is looped inside each sample. On a GPU
    every sample waits for the device before and after, and samples last at least 50 ms.
    """
    if DEVICE.type != "cpu":
        min_sample_s = max(min_sample_s, 0.05)
    out = {}
    for name, fn in fns.items():
        fn()  # warm-up (first calls pick kernels, fill caches)
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        first = time.perf_counter() - start
        inner = max(1, int(min_sample_s / max(first, 1e-6))) if min_sample_s else 1
        out[name] = Timing(inner=inner)
    for _ in range(repeats):
        for name, fn in fns.items():
            t = out[name]
            _sync()
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(t.inner):
                fn()
            _sync()
            t.wall.append(time.perf_counter() - w0)
            t.cpu.append(time.process_time() - c0)
    return out


def machine() -> str:
    """CPU model, cores, threads, torch version and the load average."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    wait = os.environ.get("OMP_WAIT_POLICY", "default")
    tunables = os.environ.get("GLIBC_TUNABLES")  # e.g. fixed malloc thresholds: no fresh pages for either network
    if DEVICE.type == "cuda":
        props = torch.cuda.get_device_properties(DEVICE)
        return (f"GPU {props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA "
                f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; fp32 with TF32 off; "
                f"host CPU {model}, {os.cpu_count()} cores; load average {load}")
    return (f"CPU {model}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads (oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}, OMP_WAIT_POLICY {wait}"
            f"{f', GLIBC_TUNABLES {tunables}' if tunables else ''}), fp32; fused center-pivot kernel "
            f"(hsnet_lite.fast.native): {native.status()}; load average {load}")


@dataclass(frozen=True)
class Verdict:
    """One row's ratio against its target: a speedup must reach it, a time or memory ratio
    (``at_most``) must stay under it."""

    row: str
    ratio: float
    target: float
    at_most: bool = False

    @property
    def met(self) -> bool:
        return self.ratio <= self.target if self.at_most else self.ratio >= self.target


VERDICTS: list[Verdict] = []  # every named verdict of this run, in order (for the --rounds summary)


def verdict(ratio: float, target: float, row: str | None = None, at_most: bool = False) -> str:
    """PASS or MISS; with a ``row`` name, also recorded in :data:`VERDICTS`."""
    v = Verdict(row or "", ratio, target, at_most)
    if row:
        VERDICTS.append(v)
    return "PASS" if v.met else "MISS"


def summary(verdicts: list[Verdict]) -> list[str]:
    """Each row's ratio in every round and in how many rounds it met its target."""
    rows: dict[str, list[Verdict]] = {}
    for v in verdicts:
        rows.setdefault(v.row, []).append(v)
    rounds = max((len(vs) for vs in rows.values()), default=0)
    lines = [f"Summary over {rounds} rounds: each row's ratio in every round; target met in how many", ""]
    for row, vs in rows.items():
        op = "<=" if vs[0].at_most else ">="
        ratios = " ".join(f"{v.ratio:5.2f}" for v in vs)
        lines.append(f"  {row:36s} {ratios}   target {op} {vs[0].target:g}   met in {sum(v.met for v in vs)} of {len(vs)}")
    return lines


# ----------------------------------------------------------------------------- models and episodes


def object_masks(k: int, size: int = IMG) -> torch.Tensor:
    """(1, k, size, size) support masks: ellipses covering 19-25% of the image, like an object."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    masks = []
    for i in range(k):
        cy, cx = size * (0.5 + 0.06 * ((i % 3) - 1)), size * (0.47 + 0.05 * ((i % 2) * 2 - 1))
        ry, rx = size * (0.35 - 0.03 * i), size * (0.225 + 0.01 * i)
        masks.append((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).float())
    return torch.stack(masks).unsqueeze(0)


def episode(k: int, batch: int = 1, seed: int = 0, full_mask: bool = False):
    """Random ImageNet-like images (B, 3, 400, 400) / (B, K, 3, 400, 400) and object-like masks."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, 3, IMG, IMG, generator=g)
    s = torch.randn(batch, k, 3, IMG, IMG, generator=g)
    m = torch.ones(batch, k, IMG, IMG) if full_mask else object_masks(k).expand(batch, k, IMG, IMG).clone()
    return q.to(DEVICE), s.to(DEVICE), m.to(DEVICE)


def build_pair(seed: int = 0) -> tuple[HSNet, ReferenceHSNet]:
    """The baseline with random weights and our HSNet holding the very same weights.

    The decoder's last bias is shifted so that about half of the 1-shot episode's pixels are
    predicted foreground (a random network otherwise predicts one class almost everywhere,
    which would make every mask agreement trivially 100%).
    """
    torch.manual_seed(seed)
    ref = ReferenceHSNet(BACKBONE).to(DEVICE).eval()
    with torch.no_grad():
        logits = ref(*_one_shot_args(episode(1)))
        ref.hpn_learner.decoder2[2].bias[1] -= (logits[:, 1] - logits[:, 0]).median()
    ours = HSNet(BACKBONE, weights=None)
    load_official_checkpoint(ours, {"module." + k: v for k, v in ref.state_dict().items()})
    return ours.to(DEVICE).eval(), ref


def _one_shot_args(ep):
    """(query, support, mask) of a K=1 episode as the baseline takes them (no K dim)."""
    q, s, m = ep
    return q, s[:, 0], m[:, 0]


@dataclass
class LayerCase:
    """One squeezing / mixing layer of section 1 with a random input: the layer, its input ``x``
    (B, C, Ha, Wa, Hb, Wb) and ``xc`` (the same, channels-last 6D, what the learner hands it),
    and in ``bare`` the inputs of its two bare convs, laid out for them: the support slices
    (B*Ha*Wa, C, Hb, Wb) under ``"s"`` and the pivots' query images (B*P*Q, C, Ha, Wa) under
    ``"q"``, NCHW, and both channels-last under ``"s_cl"`` and ``"q_cl"``."""

    layer: CenterPivotConv4d
    x: torch.Tensor
    xc: torch.Tensor
    bare: dict[str, torch.Tensor]

    @staticmethod
    def build(cin: int, cout: int, k: int, s: int, dims: tuple[int, int, int, int]) -> "LayerCase":
        """A CP conv ``cin -> cout``, kernel ``k``, support stride ``s`` (seed 0) on a (1, cin, *dims) input."""
        torch.manual_seed(0)
        cp = CenterPivotConv4d(cin, cout, k, s).to(DEVICE)
        x = torch.rand(1, cin, *dims, device=DEVICE)
        ha, wa, hb, wb = dims
        xs = x.permute(0, 2, 3, 1, 4, 5).reshape(-1, cin, hb, wb).contiguous()
        xq = x[..., ::s, ::s].permute(0, 4, 5, 1, 2, 3).reshape(-1, cin, ha, wa).contiguous()
        cl = torch.channels_last
        bare = {"s": xs, "q": xq, "s_cl": xs.contiguous(memory_format=cl), "q_cl": xq.contiguous(memory_format=cl)}
        return LayerCase(cp, x, to_channels_last_6d(x), bare)

    def bare_calls(self) -> dict[str, Callable[[], object]]:
        """The support conv on ``xs`` and the query conv on ``xq``, in both layouts."""
        conv = {"s": self.layer.support_conv, "q": self.layer.query_conv}
        return {name: (lambda c=conv[name[0]], t=t: c(t)) for name, t in self.bare.items()}

    def xl(self) -> torch.Tensor:
        """``xc`` as the (B, Ha, Wa, Hb, Wb, C) view the layer's branches read."""
        return channels_last_view(self.xc)[0]

    def pivot_view(self) -> torch.Tensor:
        """The layer's pivots: ``xc``'s strided support positions, a (B, Ha, Wa, P, Q, C) view."""
        return self.layer.pivots(self.xl())

    def given_pivots(self, pivots: torch.Tensor) -> torch.Tensor:
        """Eq. 8 at inference on the CPU with the pivots already gathered into a contiguous
        tensor (``wide_contiguous(self.pivot_view())``): the layer's two convs and the bias sum,
        without the gather. -> (B, Ha, Wa, P, Q, O), bit-identical to the layer."""
        cp = self.layer
        return cp._support_branch(self.xl(), cp.summed_bias(), cp.dilated_pivot_conv(pivots))

    @staticmethod
    def bare_time(t: dict[str, Timing]) -> float:
        """The two bare convs' time, each in its faster layout."""
        return min(t["s"].median, t["s_cl"].median) + min(t["q"].median, t["q_cl"].median)


# ----------------------------------------------------------------------------- sections


def bench_layers(repeats: int, quick: bool) -> list[str]:
    lines = ["1. Center-pivot 4D conv layer (batch 1, forward, ms)", ""]
    lines.append(f"  {'dense Conv4d vs CenterPivotConv4d, (1, 8, 12,12,12,12) -> 8 channels':72s}")
    x = torch.randn(1, 8, 12, 12, 12, 12, device=DEVICE)
    with torch.no_grad():
        for k in (3, 5):
            cp = CenterPivotConv4d(8, 8, k).to(DEVICE)
            dense = cp.to_dense().to(DEVICE)
            xc = to_channels_last_6d(x)
            diff = (cp(xc) - dense(x)).abs().max().item()
            t = interleaved({"dense": lambda: dense(x), "cp": lambda: cp(xc)}, repeats, 0.02)
            lines.append(f"    k={k}: dense {t['dense'].median * 1e3:8.2f}   center-pivot {t['cp'].median * 1e3:7.2f}   "
                         f"dense / CP {t['dense'].median / t['cp'].median:6.1f}x   max|diff| {diff:.1e}")
    lines += ["", "  HSNet's layers (ResNet50, 400x400). bare = the two conv2d calls of the layer on inputs already",
              "  laid out for them (best of NCHW and channels-last); ours runs on the channels-last 6D tensor",
              "  the learner keeps (path: 'fused' = the fused kernel of hsnet_lite.fast.native, 'convs' = its two",
              "  oneDNN convs); target: ours within 15% of bare (ours / bare <= 1.15).", ""]
    head = (f"  {'layer':15s} {'in -> out':>11s} {'path':>6s} {'ours':>8s} {'bare':>8s} {'baseline':>9s} "
            f"{'ours/bare':>10s} {'base/ours':>10s} {'cpu b/o':>8s} {'max|diff|':>10s}  target")
    lines.append(head)
    tot = {"ours": 0.0, "bare": 0.0, "ref": 0.0}
    with torch.no_grad():
        for name, cin, cout, k, s, dims in HSNET_LAYERS:
            if quick and name not in QUICK_LAYERS:
                continue
            case = LayerCase.build(cin, cout, k, s, dims)
            cp, x, xc = case.layer, case.x, case.xc
            ref = ReferenceCPConv4d(cin, cout, k, s).to(DEVICE)
            ref.conv1.load_state_dict(cp.query_conv.state_dict())
            ref.conv2.load_state_dict(cp.support_conv.state_dict())
            diff = (cp(xc) - ref(x)).abs().max().item()
            t = interleaved({"ours": lambda: cp(xc), "ref": lambda: ref(x), **case.bare_calls()}, repeats, 0.02)
            bare = case.bare_time(t)
            ours_t, ref_t = t["ours"].median, t["ref"].median
            n = 3 if name.startswith("mix") else 1
            tot["ours"] += n * ours_t
            tot["bare"] += n * bare
            tot["ref"] += n * ref_t
            cpu = t["ref"].median_cpu / t["ours"].median_cpu
            path = "fused" if cp.runs_fused(case.xl()) else "convs"
            lines.append(f"  {name:15s} {cin:>4d} -> {cout:<4d} {path:>6s} {ours_t * 1e3:8.2f} {bare * 1e3:8.2f} {ref_t * 1e3:9.2f} "
                         f"{ours_t / bare:10.2f} {ref_t / ours_t:9.2f}x {cpu:7.2f}x {diff:10.1e}  "
                         f"{verdict(ours_t / bare, TARGETS['layer'], f'ours/bare, {name}', at_most=True)}")
    lines.append(f"  {'all layers':15s} {'':11s} {'':6s} {tot['ours'] * 1e3:8.1f} {tot['bare'] * 1e3:8.1f} {tot['ref'] * 1e3:9.1f} "
                 f"{tot['ours'] / tot['bare']:10.2f} {tot['ref'] / tot['ours']:9.2f}x {'':8s} {'':10s}  "
                 f"{verdict(tot['ours'] / tot['bare'], TARGETS['layer'], 'ours/bare, all layers', at_most=True)}")
    return lines


def _row(label: str, t_ours: Timing, t_ref: Timing, target: float, diff: str, name: str) -> str:
    """One timed row; ``name`` labels its speedup in the --rounds summary."""
    ratio = t_ref.median / t_ours.median
    cpu = t_ref.median_cpu / t_ours.median_cpu
    digits = 0 if min(t_ours.median, t_ref.median) >= 0.1 else 2
    return (f"  {label:34s} {t_ours.median * 1e3:9.{digits}f} {t_ref.median * 1e3:9.{digits}f} {ratio:7.2f}x {cpu:7.2f}x "
            f"{'>= ' + format(target, 'g') + 'x':>7s}  {verdict(ratio, target, name)}   {diff}")


ROW_HEAD = (f"  {'':34s} {'ours ms':>9s} {'base ms':>9s} {'speedup':>8s} {'cpu':>8s} {'target':>7s}  result   agreement")


def bench_one_shot(ours: HSNet, ref: ReferenceHSNet, repeats: int) -> list[str]:
    lines = [f"2. 1-shot inference, {NAMES[BACKBONE]}, 400x400, batch 1 (model(query, support, mask) -> logits)", "", ROW_HEAD]
    for full in (False, True):
        q, s, m = episode(1, full_mask=full)
        label = "full mask (no background)" if full else f"object mask ({m.mean().item():.0%} of the image)"
        with torch.no_grad():
            diff = (ours(q, s, m) - ref(q, s[:, 0], m[:, 0])).abs().max().item()
            t = interleaved({"ours": lambda: ours(q, s, m), "ref": lambda: ref(q, s[:, 0], m[:, 0])}, repeats)
        lines.append(_row(label, t["ours"], t["ref"], TARGETS["1shot"], f"logits max|diff| {diff:.1e}",
                          f"speedup, 1-shot, {'full' if full else 'object'} mask"))
    return lines


def bench_train(ours: HSNet, ref: ReferenceHSNet, repeats: int) -> list[str]:
    lines = ["3. One training step: forward, cross-entropy, backward of the learner, Adam (lr 1e-3);",
             "   batch 2, 1-shot, frozen backbone; ours: hsnet_lite.train's Adam (fused on a GPU),",
             "   baseline: the authors' plain torch.optim.Adam", "", ROW_HEAD]
    q, s, m = episode(1, batch=2, seed=1)
    gt = (torch.rand(2, IMG, IMG, generator=torch.Generator().manual_seed(2)) > 0.5).long().to(DEVICE)
    ours, ref = copy.deepcopy(ours), copy.deepcopy(ref)  # training changes the weights: use copies
    ours.train()
    ref.train()
    ref.backbone.eval()
    ref.backbone.requires_grad_(False)
    opt_ours = make_optimizer(ours, lr=1e-3)  # what hsnet_lite.train uses: fused Adam on a GPU
    opt_ref = torch.optim.Adam(ref.hpn_learner.parameters(), lr=1e-3)  # the authors' plain Adam

    def step_ours():
        opt_ours.zero_grad(set_to_none=True)
        logits = ours(q, s, m)
        ours.loss(logits, gt).backward()
        return logits

    def step_ref():
        opt_ref.zero_grad(set_to_none=True)
        logits = ref(q, s[:, 0], m[:, 0])
        F.cross_entropy(logits, gt).backward()
        return logits

    # agreement on the very first step, from identical weights: logits and every gradient
    lo, lr_ = step_ours(), step_ref()
    g_ref = dict(ref.named_parameters())
    pairs = [(p.grad, g_ref[our_key_to_official("learner." + k)[len("module."):]].grad)
             for k, p in ours.learner.named_parameters()]
    gdiff = max((a - b).abs().max().item() for a, b in pairs)
    gcos = min(F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item() for a, b in pairs)
    diff = (lo - lr_).abs().max().item()

    def full_step(step, opt):
        step()
        opt.step()

    t = interleaved({"ours": lambda: full_step(step_ours, opt_ours), "ref": lambda: full_step(step_ref, opt_ref)}, repeats)
    ours.eval()
    ref.eval()
    lines.append(_row(f"train step (object masks, {m.mean().item():.0%})", t["ours"], t["ref"], TARGETS["train"],
                      f"logits max|diff| {diff:.1e}; gradients max|diff| {gdiff:.1e}, cosine >= {gcos:.7f}",
                      "speedup, training step"))
    return lines


def bench_five_shot(ours: HSNet, ref: ReferenceHSNet, repeats: int) -> list[str]:
    lines = ["4. 5-shot episode -> mask (ours: query features once, 5 supports and learner batched;",
             "   baseline: the whole network once per support); paper's vote", "", ROW_HEAD]
    q, s, m = episode(5, seed=3)
    cover = m.mean(dim=(2, 3)).flatten()
    with torch.no_grad():
        a, b = ours.predict_mask(q, s, m), ref.predict_mask_nshot(q, s, m).long()
        agree = (a == b).float().mean().item() * 100
        if agree < 100:  # where do the votes differ? at pixels whose logit margin is within fp32 noise
            logits = ours(q, s, m)
            margin = (logits[:, :, 1] - logits[:, :, 0]).abs().amin(dim=1)  # smallest margin over the shots
            agree_note = f" (all where a shot's |logit margin| <= {margin[a != b].max().item():.0e})"
        else:
            agree_note = ""
        t = interleaved({"ours": lambda: ours.predict_mask(q, s, m), "ref": lambda: ref.predict_mask_nshot(q, s, m)},
                        repeats)
    label = f"object masks ({cover.min().item():.0%}-{cover.max().item():.0%} of the image)"
    lines.append(_row(label, t["ours"], t["ref"], TARGETS["5shot"], f"masks equal on {agree:.3f}% of pixels{agree_note}",
                      "speedup, 5-shot"))
    return lines


def _read_status(key: str) -> int:
    """A field of /proc/self/status in bytes (Linux), e.g. VmRSS or VmHWM."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> bool:
    """Reset the kernel's resident-set high-water mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(which: str, threads: int) -> dict:
    """Run in a fresh process: peak resident memory of 1-shot episodes of one network."""
    torch.set_num_threads(threads)
    start = _read_status("VmRSS")
    torch.manual_seed(0)
    model = HSNet("resnet50", weights=None).eval() if which == "ours" else ReferenceHSNet("resnet50").eval()
    q, s, m = episode(1)
    run = (lambda: model(q, s, m)) if which == "ours" else (lambda: model(q, s[:, 0], m[:, 0]))  # noqa: E731
    built = _read_status("VmRSS")
    with torch.no_grad():
        run()  # cold: the first episode (includes one-off work such as folding BatchNorm)
        cold_peak = _read_status("VmHWM")  # (not ru_maxrss: Linux carries it over from the parent across exec)
        resettable = _reset_peak()
        before = _read_status("VmRSS")
        run()  # warm: a later episode
        warm_peak = _read_status("VmHWM")
    return {"start": start, "built": built, "cold_peak": cold_peak, "before": before, "warm_peak": warm_peak,
            "resettable": resettable}


def bench_memory(threads: int) -> list[str]:
    if DEVICE.type == "cuda":
        return bench_gpu_memory()
    lines = ["5. Peak memory of a 1-shot ResNet50 episode, 400x400 (MB; lower is better)", ""]
    res = {}
    for which in ("ours", "ref"):
        cmd = [sys.executable, "-m", "hsnet_lite.bench", "--memory-child", which, "--threads", str(threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res[which] = json.loads(out.stdout.strip().splitlines()[-1])
    mb = 1 / 2**20
    for label, key, row in (("model + first episode, above the RSS after `import torch`", "total", "first episode"),
                            ("a later episode, above the RSS before it", "episode", "later episode")):
        vals = {}
        for which, r in res.items():
            vals[which] = (r["cold_peak"] - r["start"]) if key == "total" else (r["warm_peak"] - r["before"])
        result = verdict(vals["ours"] / vals["ref"], 1.0, f"memory ours/base, {row}", at_most=True)
        lines.append(f"  {label:60s} ours {vals['ours'] * mb:7.0f}   baseline {vals['ref'] * mb:7.0f}   "
                     f"ours/base {vals['ours'] / vals['ref']:5.2f}  target <= 1.00  {result}")
    model_mb = {w: (r["built"] - r["start"]) * mb for w, r in res.items()}
    lines += ["", f"  (models alone: ours {model_mb['ours']:.0f} MB, baseline {model_mb['ref']:.0f} MB.) Method: each network",
              "  runs in a fresh Python process; peak = the kernel's resident-set high-water mark VmHWM",
              "  (/proc/self/status), reset before the later episode by writing 5 to /proc/self/clear_refs"
              + ("" if all(r["resettable"] for r in res.values()) else " (NOT available here: the later-episode row is unreliable)") + ";",
              "  every byte the episode touches counts: tensors, oneDNN scratch memory, allocator slack."]
    return lines


@contextlib.contextmanager
def tf32(enabled: bool):
    """Switch TF32 for cuDNN convolutions and CUDA matmuls; restores the previous setting."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def bench_gpu_memory() -> list[str]:
    """Peak GPU memory of a 1-shot episode above what the models hold (torch's allocator statistics)."""
    name = NAMES[BACKBONE]
    lines = [f"5. Peak GPU memory of a 1-shot {name} episode, 400x400, batch 1 (MB; lower is better)", ""]
    torch.manual_seed(0)
    q, s, m = episode(1)
    vals = {}
    for which in ("ours", "ref"):
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(DEVICE)
        model = (HSNet(BACKBONE, weights=None) if which == "ours" else ReferenceHSNet(BACKBONE)).to(DEVICE).eval()
        run = (lambda: model(q, s, m)) if which == "ours" else (lambda: model(q, s[:, 0], m[:, 0]))  # noqa: E731
        with torch.no_grad():
            run()  # cold: folds BatchNorm, picks kernels
            torch.cuda.synchronize(DEVICE)
            before = torch.cuda.memory_allocated(DEVICE)
            torch.cuda.reset_peak_memory_stats(DEVICE)
            out = run()
            torch.cuda.synchronize(DEVICE)
            vals[which] = (torch.cuda.max_memory_allocated(DEVICE) - before, before - base)
        del model, run, out
    mb = 1 / 2**20
    result = verdict(vals["ours"][0] / vals["ref"][0], 1.0, "memory ours/base, later episode", at_most=True)
    lines.append(f"  {'a later episode, above the memory allocated before it':60s} ours {vals['ours'][0] * mb:7.0f}   "
                 f"baseline {vals['ref'][0] * mb:7.0f}   ours/base {vals['ours'][0] / vals['ref'][0]:5.2f}  "
                 f"target <= 1.00  {result}")
    lines += ["", f"  (held between episodes, models included: ours {vals['ours'][1] * mb:.0f} MB, baseline "
              f"{vals['ref'][1] * mb:.0f} MB.) Method: torch.cuda.max_memory_allocated after",
              "  torch.cuda.reset_peak_memory_stats; tensors only (the CUDA context and cuDNN workspaces outside",
              "  torch's allocator are not counted)."]
    return lines


def trained_model_agreement(n_episodes: int) -> str:
    """bf16 vs fp32 masks of the shipped trained HSNet (EfficientNet-Lite0, embedded benchmark)
    on the first test episodes of fold 0: the agreement a trained model actually sees."""
    try:
        from .datasets import EmbeddedDataset
        from .pretrained import load_embedded_model, read_model_info

        model = load_embedded_model().to(DEVICE)
        size = int(read_model_info()["img_size"])
    except Exception as err:  # noqa: BLE001 - the shipped model is optional here
        return f"shipped trained model not available ({type(err).__name__}); skipped"
    ds = EmbeddedDataset(fold=0, split="test", shot=5, img_size=size, n_episodes=n_episodes)
    eps = [ds[i] for i in range(n_episodes)]
    q, s, m = (torch.stack([e[k] for e in eps]).to(DEVICE) for k in ("query_img", "support_imgs", "support_masks"))
    parts = []
    with torch.no_grad():
        for shot in (1, 5):
            args = (q, s[:, :shot], m[:, :shot])
            fp32 = model.predict_mask(*args)
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
                low = model.predict_mask(*args)
            parts.append(f"{shot}-shot {(low == fp32).float().mean().item() * 100:.2f}%")
    return (f"shipped trained model (EfficientNet-Lite0, {n_episodes} embedded test episodes, {size}x{size}): "
            f"mask agreement {', '.join(parts)}")


def bench_modes(ours: HSNet, modes: list[str], repeats: int, quick: bool) -> Iterator[str]:
    """Section 6, line by line as each measurement finishes (compiling takes minutes: a run cut
    short by a time limit still shows the modes it finished)."""
    yield from [f"6. Optional faster modes, ours only, same {NAMES[BACKBONE]} episodes (1-shot: batch 1; 5-shot: section 4's).",
             "   agreement = pixels whose predicted class equals the fp32 prediction. The random network's",
             "   logits are small and its decoder bias is centred, so many pixels sit near a tie: agreement",
             "   there is a worst case; the shipped trained model gives the agreement a trained HSNet sees.", ""]
    cases = {"1-shot": episode(1), "5-shot": episode(5, seed=3)}
    with torch.no_grad():
        fp32_masks = {c: ours.predict_mask(*e) for c, e in cases.items()}
        fp32_logits = {c: ours(*e) for c, e in cases.items()}
    for mode in modes:
        if mode == "bf16":
            def forward(e, mask=False):
                with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
                    return ours.predict_mask(*e) if mask else ours(*e)
            label = f"bf16 autocast: with torch.autocast({DEVICE.type!r}, dtype=torch.bfloat16): model.predict_mask(...)"
        elif mode == "cudagraphs":
            if DEVICE.type != "cuda":
                continue  # CUDA graphs replay recorded GPU work: GPU only
            graphs: dict[int, CapturedHSNet] = {}

            def forward(e, mask=False, graphs=graphs):
                graph = graphs.get(id(e)) or graphs.setdefault(id(e), CapturedHSNet(ours, *e))
                return graph.predict_mask(*e) if mask else graph(*e)
            label = ("the whole episode (backbone, correlation, learner) replayed as one CUDA graph, fp32: "
                     "hsnet_lite.cuda_graphs.CapturedHSNet(model, *episode)")
        elif mode == "tf32":
            if DEVICE.type != "cuda":
                continue  # TF32 is a GPU (Ampere and later) matmul / convolution mode

            def forward(e, mask=False):
                with tf32(True):
                    return ours.predict_mask(*e) if mask else ours(*e)
            label = "TF32 convolutions and matmuls (torch.backends.cudnn/cuda.matmul.allow_tf32 = True)"
        elif mode == "compile":
            fast = copy.deepcopy(ours).compile_learner()

            def forward(e, mask=False, fast=fast):
                return fast.predict_mask(*e) if mask else fast(*e)
            label = "torch.compile of the learner, fp32: model.compile_learner()"
        else:
            raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
        yield f"  {label}"
        with torch.no_grad():
            for case, e in cases.items():
                t0 = time.perf_counter()
                masks = forward(e, mask=True)
                first = time.perf_counter() - t0
                agree = (masks == fp32_masks[case]).float().mean().item() * 100
                diff = (forward(e).float() - fp32_logits[case]).abs().max().item()
                scale = fp32_logits[case].abs().max().item()
                t = interleaved({"fp32": lambda: ours.predict_mask(*e), "mode": lambda: forward(e, mask=True)}, repeats)
                d = 0 if t["mode"].median >= 0.1 else 2
                yield (f"    {case}: fp32 {t['fp32'].median * 1e3:6.{d}f} ms, {mode} {t['mode'].median * 1e3:6.{d}f} ms "
                       f"= {t['fp32'].median / t['mode'].median:.2f}x (cpu {t['fp32'].median_cpu / t['mode'].median_cpu:.2f}x; "
                       f"first call {first:.1f} s); logits max|diff| {diff:.1e} (max |logit| {scale:.1e}); "
                       f"agreement {agree:.2f}%")
        if mode == "bf16":
            yield "    " + trained_model_agreement(8 if quick else 24)


# ----------------------------------------------------------------------------- main


def _run_sections(sections: list[str], ours: HSNet | None, ref: ReferenceHSNet | None, repeats: int,
                  args: argparse.Namespace) -> None:
    """One round of the timed sections (1-4) and the memory section, printed as they finish."""
    few = max(3, repeats // 2) if args.quick else repeats
    runs = [("layers", lambda: bench_layers(repeats, args.quick)), ("1shot", lambda: bench_one_shot(ours, ref, repeats)),
            ("train", lambda: bench_train(ours, ref, few)), ("5shot", lambda: bench_five_shot(ours, ref, few)),
            ("memory", lambda: bench_memory(args.threads))]
    for name, run in runs:
        if name in sections:
            print("\n".join(run()) + "\n", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hsnet_lite.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and layers (about a third of the time)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved runs per measurement (default 7, quick 3)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the timed and memory sections this many times, then summarise each row's ratios "
                        "and in how many rounds it met its target (optional modes run once)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--modes", default=None, help=f"optional modes for section 6: comma-separated subset of "
                        f"{','.join(MODES)} (default: all; --quick: bf16 only, as compiling takes minutes; tf32 only on a GPU)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: time on a GPU, fp32 with TF32 off")
    parser.add_argument("--backbone", default="resnet50", choices=tuple(NAMES),
                        help="backbone of sections 2-6 (section 1 and the CPU memory section use ResNet50's shapes)")
    parser.add_argument("--memory-child", choices=("ours", "ref"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global DEVICE, BACKBONE
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here")
    DEVICE, BACKBONE = torch.device(args.device), args.backbone
    if DEVICE.type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # true fp32 (TF32 is a mode)
        torch.backends.cudnn.benchmark = True
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.threads)))
        return
    sections = [s for s in args.sections.split(",") if s]
    if set(sections) - set(SECTIONS):
        parser.error(f"unknown section(s) {sorted(set(sections) - set(SECTIONS))}; choose from {SECTIONS}")
    repeats = args.repeats or (3 if args.quick else 7)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    modes = [m for m in (args.modes if args.modes is not None else "bf16" if args.quick else ",".join(MODES)).split(",") if m]
    if set(modes) - set(MODES):
        parser.error(f"unknown mode(s) {sorted(set(modes) - set(MODES))}; choose from {MODES}")
    print("hsnet-lite benchmark: ours (hsnet_lite) vs baseline (hsnet_lite.reference, the authors' way)")
    print(machine())
    print(f"median of {repeats} interleaved runs after a warm-up run; speedup = baseline / ours (wall clock),"
          " cpu = the same ratio of process CPU time\n")
    started = time.perf_counter()
    VERDICTS.clear()
    ours = ref = None
    if {"1shot", "train", "5shot", "modes"} & set(sections):
        ours, ref = build_pair()
    for r in range(args.rounds):
        if args.rounds > 1:
            print(f"===== round {r + 1} of {args.rounds}\n", flush=True)
        _run_sections(sections, ours, ref, repeats, args)
    if "modes" in sections and modes:
        del ref
        for line in bench_modes(ours, modes, repeats, args.quick):
            print(line, flush=True)
        print()
    if args.rounds > 1:
        print("\n".join(summary(VERDICTS)) + "\n")
    print(f"done in {time.perf_counter() - started:.0f} s; {machine().split('; ')[-1]}")


if __name__ == "__main__":
    main()
