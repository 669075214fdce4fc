"""Helpers of the teaching notebooks: exercises, formulas, derivation steps, diagrams."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hsnet_lite import CenterPivotConv4d, Conv4d, HSNet  # noqa: E402
from hsnet_lite import derivation as eq  # noqa: E402
from hsnet_lite.costs import conv4d_macs, conv4d_params, hypercorrelation_bytes, hypercorrelation_numel, time_conv4d  # noqa: E402
from hsnet_lite.paper_architecture import EXACT_PARAMS, ROUNDED_PARAMS, correlation_shapes, round_count  # noqa: E402
from hsnet_lite.shape_trace import (conv_out_size, describe_layer, record_conv4d_shapes,  # noqa: E402
                                    squeeze_support_trace, upsample_reference)
from hsnet_lite.blocks import upsample_query_dims  # noqa: E402
from hsnet_lite.teaching import EXERCISES, check_answer, save_figure  # noqa: E402


@pytest.mark.parametrize("name", ["01-pascal-fold2", "01-support-mask-shape", "03-vgg16-c1-mb", "04-cp-params",
                                  "05-squeeze-256", "06-kshot-vote", "08-vote-pixels", "09-deep-channels",
                                  "10-params-levels-23", "11-ignore-label-iou", "12-no-mask-complement"])
def test_exercises_accept_their_solution_and_reject_others(name, capsys):
    solution = EXERCISES[name].solve()
    check_answer(name, solution)
    assert "correct" in capsys.readouterr().out
    check_answer(name, None)
    assert "Not answered yet" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="Hint"):
        check_answer(name, "certainly wrong")
    with pytest.raises(KeyError):
        check_answer("no-such-exercise", 1)


def test_exercise_values():
    assert EXERCISES["01-pascal-fold2"].solve() == ["diningtable", "dog", "horse", "motorbike", "person"]
    assert EXERCISES["03-vgg16-c1-mb"].solve() == 71.5
    assert EXERCISES["04-cp-params"].solve() == 16 * 64 * 34 + 128
    assert EXERCISES["05-squeeze-256"].solve() == [8, 2, 1]
    assert EXERCISES["06-kshot-vote"].solve() == [[1, 1, 0], [1, 0, 0]]
    assert EXERCISES["08-vote-pixels"].solve() == ["A", "B"]  # votes 3, 2, 1 against a threshold of 1.5
    assert EXERCISES["09-deep-channels"].solve() == (1, 1, 1)
    assert EXERCISES["10-params-levels-23"].solve() == 167_584 + 185_120 + 886_272 + 259_458  # Tables S5-S7
    assert EXERCISES["11-ignore-label-iou"].solve() == (100.0, 50.0)
    assert EXERCISES["12-no-mask-complement"].solve() is False
    check_answer("03-vgg16-c1-mb", 71.52)  # within the tolerance: no AssertionError


def test_hypercorrelation_memory_formula():
    numel = hypercorrelation_numel({1: 4, 2: 6, 3: 3}, {1: 50, 2: 25, 3: 13})
    assert numel == {1: 4 * 50**4, 2: 6 * 25**4, 3: 3 * 13**4}
    assert hypercorrelation_bytes({1: 2}, {1: (3, 4)}) == {1: 2 * 144 * 4}


@pytest.mark.parametrize("k", [3, (5, 3, 3, 5)])
def test_conv4d_param_formula_matches_layers(k):
    assert conv4d_params(3, 5, k, center_pivot=False) == sum(p.numel() for p in Conv4d(3, 5, k).parameters())
    assert conv4d_params(3, 5, k, center_pivot=True) == sum(p.numel() for p in CenterPivotConv4d(3, 5, k).parameters())
    assert conv4d_macs(2, 3, 3, 10, False) == 81 * 60 and conv4d_macs(2, 3, 3, 10, True) == 18 * 60


def test_time_conv4d_returns_positive_timings():
    (t,) = time_conv4d([3], in_ch=1, out_ch=1, size=4, repeats=1)
    assert t.kernel == 3 and t.dense_s > 0 and t.center_pivot_s > 0 and t.ratio > 0


def test_derivation_steps_agree():
    g = torch.Generator().manual_seed(1)
    c = torch.rand(4, 5, 5, 4, generator=g)
    k = torch.randn(3, 5, 3, 3, generator=g)
    for x, x2 in [((0, 0), (0, 0)), ((2, 3), (1, 2)), ((3, 4), (4, 3))]:
        p_c, p_c2, p_cp = eq.pivot_sets(x, x2, tuple(k.shape))
        assert len(p_c) == 9 and len(p_c2) == 15 and len(p_cp) == 23
        k_c, k_c2 = eq.pivot_kernels(k)
        assert eq.conv_over(c, k, x, x2, p_c) == pytest.approx(eq.eq6(c, k_c, x, x2), abs=1e-5)
        assert eq.conv_over(c, k, x, x2, p_c2) == pytest.approx(eq.eq7(c, k_c2, x, x2), abs=1e-5)
        assert eq.eq5(c, k, x, x2) == pytest.approx(eq.eq8(c, k, x, x2), abs=1e-5)
    dense = Conv4d(1, 1, tuple(k.shape), bias=False)
    with torch.no_grad():
        dense.weight.copy_(k[None, None])
        out = dense(c[None, None])[0, 0]
    assert float(out[2, 3, 1, 2]) == pytest.approx(eq.eq1(c, k, (2, 3), (1, 2)), abs=1e-4)


def test_squeeze_trace_and_hooks_agree_with_the_network():
    assert conv_out_size(50, 5, 4) == 13
    assert squeeze_support_trace(1, 50) == [13, 4, 2] and squeeze_support_trace(3, 12) == [6, 3, 2]
    torch.manual_seed(0)
    model = HSNet("efficientnet-lite0", weights=None).eval()
    x = torch.randn(1, 3, 128, 128)
    with record_conv4d_shapes(model) as log, torch.no_grad():
        model(x, x[None], torch.ones(1, 1, 128, 128))
    assert len(log) == 15  # 3 squeezing + 2 mixing blocks of 3 layers
    names = [describe_layer(n) for n, _, _ in log]
    assert names[:3] == ["f3 layer 1", "f3 layer 2", "f3 layer 3"] and names[-1] == "mix 2->1 layer 3"
    f1 = [out[-1] for n, _, out in log if describe_layer(n).startswith("f1 ")]
    assert f1 == squeeze_support_trace(1, 16)
    with torch.no_grad():  # hooks are removed afterwards
        model(x, x[None], torch.ones(1, 1, 128, 128))
    assert len(log) == 15


def test_upsample_reference_matches_package():
    x = torch.randn(1, 2, 5, 4, 2, 3)
    assert torch.allclose(upsample_reference(x, (9, 7)), upsample_query_dims(x, (9, 7)), atol=1e-6)


def test_paper_tables():
    assert correlation_shapes("resnet101")[2] == (23, 25, 25, 25, 25)
    for name, parts in EXACT_PARAMS.items():
        assert {p: round_count(n) for p, n in parts.items()} == ROUNDED_PARAMS[name]


def test_save_figure_writes_png_and_returns_relative_name(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setenv("HSNET_LITE_FIGURES", str(tmp_path))
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    assert save_figure(fig, "x.png") == "figures/x.png"
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError):
        save_figure(fig, "x.svg")
    plt.close(fig)


def test_diagrams_and_plots_draw():
    import matplotlib.pyplot as plt

    from hsnet_lite.diagrams import draw_hsnet_overview, draw_kernel_wires
    from hsnet_lite.viz import show_class_gallery

    fig = draw_kernel_wires(3)
    n_wires = [len(ax.lines) for ax in fig.axes]
    assert n_wires == [81, 17]
    draw_hsnet_overview()
    img = np.zeros((16, 16, 3), np.uint8)
    draw_hsnet_overview(img, img, np.ones((16, 16)))
    show_class_gallery(n_per_class=1, cell=32)
    plt.close("all")


def test_stereo_episode_masks():
    from hsnet_lite.stereo_episode import stereo_episode, warp_mask_to_right

    ep = stereo_episode(size=(96, 144))
    assert ep["support_mask"].shape == ep["query_mask"].shape == (96, 144)
    assert 0.1 < ep["support_mask"].mean() < 0.5 and 0.1 < ep["query_mask"].mean() < 0.5
    m = np.zeros((4, 8), np.uint8)
    m[1, 5] = 1
    assert warp_mask_to_right(m, np.full((4, 8), 2.0)).nonzero()[1].tolist() == [3]
