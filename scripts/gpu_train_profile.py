"""Where a training step's time goes, ours vs the authors'-style baseline (docs/performance.md).

Usage: python scripts/gpu_train_profile.py [cuda|cpu] [resnet101|resnet50]
Times (medians of 15) the whole step (batch 2, 1-shot, frozen backbone, same weights), the
backbone, inference and the learner alone; on a GPU it then prints torch.profiler's tables of
one step of each, sorted by GPU time (fp32, TF32 off, as `python -m hsnet_lite.bench`).
"""
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without an install
from hsnet_lite import bench  # noqa: E402

dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
bench.DEVICE = torch.device(dev)
bench.BACKBONE = sys.argv[2] if len(sys.argv) > 2 else "resnet101"
if dev == "cuda":
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
ours, ref = bench.build_pair()
q, s, m = bench.episode(1, batch=2, seed=1)
gt = (torch.rand(2, bench.IMG, bench.IMG, generator=torch.Generator().manual_seed(2)) > 0.5).long().to(bench.DEVICE)
ours.train(); ref.train(); ref.backbone.eval(); ref.backbone.requires_grad_(False)


sync = bench._sync  # wait for queued GPU work; a no-op on the CPU


def t(fn, n=15):
    """Median ms of n sequential calls after two warm-up calls (the benchmark's own
    :func:`hsnet_lite.bench.interleaved` alternates callables; here each part is timed alone)."""
    fn(); fn(); sync()
    ts = []
    for _ in range(n):
        sync(); a = time.perf_counter(); fn(); sync(); ts.append(time.perf_counter() - a)
    return round(statistics.median(ts) * 1e3, 2)


def step_ours():
    ours.zero_grad(set_to_none=True)
    ours.loss(ours(q, s, m), gt).backward()


def step_ref():
    ref.zero_grad(set_to_none=True)
    F.cross_entropy(ref(q, s[:, 0], m[:, 0]), gt).backward()


print("step ours", t(step_ours), "ref", t(step_ref))
with torch.no_grad():
    print("backbone 4 images ours", t(lambda: ours.extract(torch.cat([q, s[:, 0]]))),
          "ref 2x2", t(lambda: (ref.extract_feats(q), ref.extract_feats(s[:, 0]))))
    print("inference fwd ours", t(lambda: ours(q, s, m)), "ref", t(lambda: ref(q, s[:, 0], m[:, 0])))
with torch.no_grad():
    corr = ours.hypercorrelation(q, s, m)
    rq, rs = ref.extract_feats(q), ref.extract_feats(s[:, 0])
    rc = ref.correlation(rq, rs)


def learner_ours():
    ours.zero_grad(set_to_none=True)
    ours.learner(corr).float().pow(2).mean().backward()


def learner_ref():
    ref.zero_grad(set_to_none=True)
    ref.hpn_learner(rc).float().pow(2).mean().backward()


try:
    print("learner fwd+bwd ours", t(learner_ours), "ref", t(learner_ref))
except Exception as err:  # noqa: BLE001
    print("learner-only timing failed:", type(err).__name__, err)
if dev == "cuda":
    from torch.profiler import ProfilerActivity, profile
    for name, fn in (("OURS", step_ours), ("REF", step_ref)):
        fn(); sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            fn(); sync()
        print(name)
        print(p.key_averages().table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=70))
