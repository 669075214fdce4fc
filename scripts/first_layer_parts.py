"""Where the first squeezing layers of each level lose to their bare convs (issue #6, section 1).

``python scripts/first_layer_parts.py [--rounds N] [--repeats R]`` times, interleaved, for f3, f2
and f1 layer 1 (ResNet50, 400x400, batch 1, inference, fp32, CPU):

* ``ours``: the layer on the channels-last 6D tensor, as in ``python -m hsnet_lite.bench`` (the
  fused kernel of :mod:`hsnet_lite.fast.native` where it is built);
* ``convs``: the same layer on its PyTorch path (two oneDNN convs; inside ``native.disabled()``);
* ``gather``: that path's pivot gather alone (x[:, :, :, ::s, ::s] into a contiguous tensor);
* ``given``: that path's two convs on pivots gathered beforehand (the query conv read as a
  dilated conv, the support conv adding into its output), the bias sum included;
* the bare convs: support slices and pivot images, each in NCHW and channels-last, laid out
  beforehand as in the bench's ``bare``.

It prints the times and each one's ratio to bare (the bench's target: at most 1.15). ``given`` is
checked equal to ``convs`` bit for bit, and ``ours`` to ``convs`` within 1e-5. Run it with
``OMP_WAIT_POLICY=PASSIVE``; with
``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296``
no call meets fresh pages. Outputs: ``results/first_layer_parts_fused.txt`` (2026-12-08) and, from
before the fused kernel, when ``ours`` was ``convs``, ``results/first_layer_parts.txt`` (2026-11-27).
"""
from __future__ import annotations

import argparse
import os

import torch

from hsnet_lite.bench import HSNET_LAYERS, LayerCase, interleaved, machine
from hsnet_lite.fast import native
from hsnet_lite.fast.strided_pivot import wide_contiguous

FIRST_LAYERS = [row for row in HSNET_LAYERS if row[0].endswith("layer 1")]


def one_round(repeats: int) -> list[str]:
    lines = []
    for name, cin, cout, k, s, dims in FIRST_LAYERS:
        case = LayerCase.build(cin, cout, k, s, dims)
        cp, xc = case.layer, case.xc
        strided = case.pivot_view()
        pivots = wide_contiguous(strided)

        def convs():
            with native.disabled():
                return cp(xc)

        plain = convs()
        if not torch.equal(case.given_pivots(pivots), plain.permute(0, 2, 3, 4, 5, 1)):
            raise AssertionError(f"{name}: the layer's convs on given pivots differ from the layer's convs")
        if not torch.allclose(cp(xc), plain, atol=1e-5):
            raise AssertionError(f"{name}: the layer differs from its PyTorch path")
        t = interleaved({"ours": lambda: cp(xc), "convs": convs, "gather": lambda: wide_contiguous(strided),
                         "given": lambda: case.given_pivots(pivots), **case.bare_calls()}, repeats, 0.02)
        bare = case.bare_time(t) * 1e3
        ms = {key: v.median * 1e3 for key, v in t.items()}
        lines.append(f"  {name:11s} ours {ms['ours']:6.2f}  convs {ms['convs']:6.2f}  gather {ms['gather']:5.2f}  "
                     f"given {ms['given']:6.2f}  bare {bare:6.2f} (s {ms['s']:.2f}, s_cl {ms['s_cl']:.2f}, "
                     f"q {ms['q']:.2f}, q_cl {ms['q_cl']:.2f})  ours/bare {ms['ours'] / bare:.2f}  "
                     f"convs/bare {ms['convs'] / bare:.2f}  given/bare {ms['given'] / bare:.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved runs per measurement")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(machine())
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')} GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')}")
    print("first squeezing layers, ms (medians of interleaved runs)")
    for r in range(args.rounds):
        print(f"round {r + 1}")
        print("\n".join(one_round(args.repeats)))


if __name__ == "__main__":
    main()
