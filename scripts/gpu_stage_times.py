"""Where a GPU episode's time goes, stage by stage (docs/performance.md).

Usage: python scripts/gpu_stage_times.py [resnet101|resnet50]   (on a CUDA GPU; on a CPU it
only times the eager stages, to try the script out)
Each stage of our inference (the backbone on query and supports in one pass, the
hypercorrelation, the learner, the upsampling) is timed eagerly (what the host needs to launch
it, or the GPU, whichever is slower) and replayed as a CUDA graph (the GPU's own time: the
launches no longer count); 1-shot (batch 1) and 5-shot episodes at 400x400, fp32 and then
with TF32 convolutions and matmuls. Means of 20 calls after warm-up.
"""
import os
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without an install
from hsnet_lite import bench  # noqa: E402
from hsnet_lite.cuda_graphs import record_graph  # noqa: E402
from hsnet_lite.model import episode_images  # noqa: E402
from hsnet_lite.validation import check_episode  # noqa: E402

CALLS = int(os.environ.get("STAGE_CALLS", "20"))  # calls per timing; STAGE_CALLS=1 tries the script out quickly


def eager_ms(fn) -> float:
    fn(); fn(); bench._sync()
    start = time.perf_counter()
    for _ in range(CALLS):
        fn()
    bench._sync()
    return (time.perf_counter() - start) / CALLS * 1e3


def graph_ms(fn) -> float:
    """Mean GPU time of ``fn`` replayed as a CUDA graph (NaN off a GPU)."""
    if bench.DEVICE.type != "cuda":
        return float("nan")
    graph, _ = record_graph(fn, bench.DEVICE)
    for _ in range(3):
        graph.replay()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    begin.record()
    for _ in range(CALLS):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return begin.elapsed_time(end) / CALLS


def stages(model, k: int) -> dict:
    """The stages of :meth:`HSNet.checked_forward` on one episode with K supports, as callables."""
    q, s, m = bench.episode(k, seed=3)
    s, m = check_episode(q, s, m)
    images = episode_images(q, s)
    feats = model.extract(images)
    correlate = partial(model.correlate, feats, q.shape[0], m)
    corr = correlate()
    low = model.learner(corr)
    return {
        f"backbone ({1 + k} images)": lambda: model.extract(images),
        "hypercorrelation": correlate,
        "learner (4D convs, norms, decoder)": lambda: model.learner(corr),
        "upsampling to 400x400": lambda: F.interpolate(low, size=q.shape[-2:], mode="bilinear",
                                                       align_corners=True).contiguous(),
        "whole episode": lambda: model.checked_forward(q, s, m),
    }


def main() -> None:
    bench.DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bench.BACKBONE = sys.argv[1] if len(sys.argv) > 1 else "resnet101"
    if bench.DEVICE.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(torch.cuda.get_device_name(), "torch", torch.__version__)
    ours, _ = bench.build_pair()
    print(f"{bench.NAMES[bench.BACKBONE]}, 400x400, batch 1; ms per call: eager (host launches included) / "
          "CUDA graph replay (GPU time)")
    for precision in ("fp32", "tf32"):
        with bench.tf32(precision == "tf32"), torch.no_grad():
            for k in (1, 5):
                print(f"\n{precision}, {k}-shot")
                for name, fn in stages(ours, k).items():
                    print(f"  {name:38s} eager {eager_ms(fn):7.2f}   graph {graph_ms(fn):7.2f}", flush=True)


if __name__ == "__main__":
    main()
