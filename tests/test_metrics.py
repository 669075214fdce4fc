"""mIoU and FB-IoU with the paper's protocol (areas summed per class, ignore label 255)."""
import pytest
import torch

from hsnet_lite import FewShotMeter, area_stats


def test_area_stats_and_ignore():
    pred = torch.tensor([[[1, 1, 0, 0]]])
    gt = torch.tensor([[[1, 0, 255, 0]]])
    inter, union = area_stats(pred, gt)
    assert inter.tolist() == [[1, 1]] and union.tolist() == [[2, 2]]  # bg: {3} vs {1,3}; fg: {0} vs {0,1}
    inter, union = area_stats(pred, gt, ignore_index=None)  # 255 scored as background
    assert inter.tolist() == [[2, 1]] and union.tolist() == [[3, 2]]


def test_areas_are_summed_per_class_before_iou():
    meter = FewShotMeter([3, 7])
    big_gt = torch.zeros(1, 10, 10, dtype=torch.long)
    big_gt[0, :, :5] = 1
    big_pred = big_gt.clone()
    big_pred[0, 0, :5] = 0  # 45/50 right
    tiny_gt = torch.zeros(1, 10, 10, dtype=torch.long)
    tiny_gt[0, 0, 0] = 1
    tiny_pred = torch.zeros_like(tiny_gt)  # missed entirely
    meter.update(big_pred, big_gt, [3])
    meter.update(tiny_pred, tiny_gt, [3])
    meter.update(big_gt, big_gt, [7])
    iou = meter.class_iou()
    assert iou[3] == pytest.approx(100 * 45 / 51)  # not the mean of per-episode IoUs (45, 0)
    assert iou[7] == pytest.approx(100.0)
    assert meter.miou() == pytest.approx((100 * 45 / 51 + 100) / 2)
    fg = (45 + 50) / (51 + 50)
    bg = (50 + 99 + 50) / (55 + 100 + 50)
    assert meter.fb_iou() == pytest.approx(100 * (fg + bg) / 2)
    assert meter.summary()["episodes"] == 3


def test_class_without_episodes_counts_as_zero_and_bad_ids_rejected():
    meter = FewShotMeter([0, 1])
    gt = torch.ones(1, 4, 4, dtype=torch.long)
    meter.update(gt, gt, [0])
    assert meter.miou() == pytest.approx(50.0)
    with pytest.raises(ValueError, match="class id 5"):
        meter.update(gt, gt, [5])
    with pytest.raises(ValueError, match="pred and gt"):
        meter.update(gt[0], gt[0], [0])
    with pytest.raises(ValueError, match="only 0 and 1"):
        meter.update(gt * 2, gt, [0])


def test_meter_takes_predictions_on_the_model_device(device):
    """Training and evaluation on a GPU hand the meter CUDA masks; its sums stay float64 on the CPU."""
    meter = FewShotMeter([3])
    gt = torch.zeros(2, 6, 6, dtype=torch.long, device=device)
    gt[:, :3] = 1
    pred = gt.clone()
    pred[1] = 0
    meter.update(pred, gt, torch.tensor([3, 3], device=device))
    meter.update(pred, gt, [3, 3])
    assert all(t.device.type == "cpu" and t.dtype == torch.float64 for t in (*meter.inter.values(), *meter.union.values()))
    assert meter.class_iou()[3] == pytest.approx(50.0) and meter.summary()["episodes"] == 4
