"""Helpers of notebook 07: training curves, per-episode predictions and the protocol's scores."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from hsnet_lite import HSNet  # noqa: E402
from hsnet_lite.baseline import PrototypeBaseline  # noqa: E402
from hsnet_lite.datasets import EmbeddedDataset  # noqa: E402
from hsnet_lite.engine import evaluate_many  # noqa: E402
from hsnet_lite.metrics import area_stats  # noqa: E402
from hsnet_lite.teaching import EXERCISES, check_answer  # noqa: E402
from hsnet_lite.training_viz import (collect_predictions, episode_ious, format_epoch, iteration_losses,  # noqa: E402
                                     masks_from_areas, moving_average, naive_episode_miou, protocol_scores,
                                     training_curves_figure, with_first_supports, worst_episodes)

ROW = {"epoch": 2, "train_loss": 0.23456, "train_miou": 12.345, "val_loss": 0.2, "val_miou": 0.04,
       "val_fb_iou": 45.96, "lr": 1e-3, "seconds": 12.3}


def test_iteration_losses_flatten_epochs_in_order():
    steps, losses, ends = iteration_losses({2: [0.3, 0.2], 1: [0.7, 0.5, 0.4]})
    assert steps.tolist() == [1, 2, 3, 4, 5]
    assert losses.tolist() == [0.7, 0.5, 0.4, 0.3, 0.2]
    assert ends == [3, 5]


def test_moving_average_is_a_trailing_mean():
    assert moving_average([1, 3, 5, 7], 2).tolist() == [1, 2, 4, 6]
    assert moving_average([2, 4], 10).tolist() == [2, 3]
    with pytest.raises(ValueError):
        moving_average([1.0], 0)


def test_training_curves_figure_and_epoch_line():
    fig = training_curves_figure({1: [0.7, 0.5], 2: [0.4, 0.3]}, [ROW | {"epoch": 1}, ROW], smooth=2)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="epochs"):
        training_curves_figure({1: [0.7]}, [ROW, ROW])
    line = format_epoch(ROW)
    assert line == "epoch 2: train loss 0.23, mIoU 12.3 | val loss 0.20, mIoU 0.0, FB-IoU 46.0"
    assert "second" not in line


def test_naive_mean_differs_from_the_protocol():
    # class 0: a large object found well (IoU 75) and a 1-pixel object missed; class 1: IoU 1/3
    gt = torch.zeros(3, 4, 4, dtype=torch.long)
    pred = torch.zeros_like(gt)
    gt[0, :2] = 1
    pred[0, :2, :3] = 1        # 6 of the 8 object pixels, nothing extra
    gt[1, 3, 3] = 1            # missed
    gt[2, 1, :2] = 1
    pred[2, 1, 1:3] = 1        # intersection 1, union 3
    assert naive_episode_miou(pred, gt) == pytest.approx((75 + 0 + 100 / 3) / 3)
    scores = protocol_scores(pred, gt, torch.tensor([0, 0, 1]), [0, 1])
    assert scores["class_iou"][0] == pytest.approx(100 * 6 / 9)
    assert scores["miou"] == pytest.approx((100 * 6 / 9 + 100 / 3) / 2)
    assert episode_ious(pred, gt) == pytest.approx([75.0, 0.0, 100 / 3])
    with pytest.raises(ValueError):
        naive_episode_miou([], [])


@pytest.mark.parametrize("gt, pred, overlap", [(40, 36, 34), (4, 0, 0), (0, 0, 0), (60, 40, 0), (100, 100, 100)])
def test_masks_from_areas_have_the_asked_areas(gt, pred, overlap):
    p, g = masks_from_areas(gt, pred, overlap)
    assert p.shape == g.shape == (10, 10)
    assert int(g.sum()) == gt and int(p.sum()) == pred
    inter, union = area_stats(p[None], g[None])
    assert int(inter[0, 1]) == overlap and int(union[0, 1]) == gt + pred - overlap


def test_masks_from_areas_refuse_impossible_areas():
    with pytest.raises(ValueError, match="overlap"):
        masks_from_areas(5, 3, 4)
    with pytest.raises(ValueError, match="fit"):
        masks_from_areas(60, 60, 10)


def test_exercise_07_sums_areas_per_class(capsys):
    solution = EXERCISES["07-miou-areas"].solve()
    assert solution == pytest.approx(100 * (30 / 50 + 50 / 70) / 2, abs=0.05)
    check_answer("07-miou-areas", solution)
    assert "correct" in capsys.readouterr().out
    check_answer("07-miou-areas", None)
    assert "Not answered yet" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="Hint"):
        check_answer("07-miou-areas", 47.5)   # the naive mean over episodes


def test_worst_episodes_lowest_first_ties_by_index():
    assert worst_episodes([50.0, 10.0, 10.0, 0.0, 90.0], 3) == [3, 1, 2]


def test_collect_predictions_agree_with_the_engine():
    torch.manual_seed(0)
    ds = EmbeddedDataset(fold=0, split="test", shot=3, img_size=64, n_episodes=4)
    hsnet = HSNet("efficientnet-lite0", weights=None).eval()
    models = {"hsnet": hsnet, "baseline": PrototypeBaseline(hsnet.backbone)}
    out = collect_predictions(models, ds, shots=(1, 3), batch_size=3)
    assert out["gts"].shape == (4, 64, 64) and out["class_ids"].tolist() == [0, 1, 2, 3]
    assert set(out["masks"]) == {("hsnet", 1), ("hsnet", 3), ("baseline", 1), ("baseline", 3)}
    ref = evaluate_many(models, DataLoader(ds, batch_size=2), ds.class_ids, (1, 3), progress=False)
    for (name, k), masks in out["masks"].items():
        assert masks.dtype == torch.uint8 and set(masks.unique().tolist()) <= {0, 1}
        ours = protocol_scores(masks, out["gts"], out["class_ids"], ds.class_ids)
        assert ours["miou"] == pytest.approx(ref[name][k]["miou"])
        assert ours["fb_iou"] == pytest.approx(ref[name][k]["fb_iou"])
    one = with_first_supports(ds[0], 1)
    assert one["support_imgs"].shape[0] == 1 and one["support_masks"].shape[0] == 1
    assert np.array_equal(one["query_img"], ds[0]["query_img"])


def test_teaching_helpers_run_the_model_on_its_device(device, tmp_path):
    from hsnet_lite.embedded_results import prediction_figure
    from hsnet_lite.summary import architecture_table

    torch.manual_seed(0)
    hsnet = HSNet("efficientnet-lite0", weights=None).eval().to(device)
    ds = EmbeddedDataset(fold=0, split="test", shot=1, img_size=64, n_episodes=2)
    masks = collect_predictions({"hsnet": hsnet}, ds, shots=(1,))["masks"]["hsnet", 1]
    assert masks.device.type == "cpu" and masks.shape == (2, 64, 64)
    rows = {r.layer: r for r in architecture_table(hsnet, 128)}
    assert rows["all learnable"].params == hsnet.learnable_parameters()
    assert prediction_figure(str(tmp_path / "pred.png"), model=hsnet, n_rows=2).endswith("pred.png")


def test_collect_predictions_needs_enough_supports():
    ds = EmbeddedDataset(fold=0, split="test", shot=1, img_size=64, n_episodes=1)
    base = PrototypeBaseline("efficientnet-lite0", weights=None)
    with pytest.raises(ValueError, match="fewer than shot"):
        collect_predictions({"b": base}, ds, shots=(1, 2))
