"""Backbone feature pyramids (Tables S5-S7), weights handling, freezing."""
import os

import numpy as np
import pytest
import torch
from skimage import data

from hsnet_lite import BackboneWeightsUnavailable, HSNet, build_backbone
from hsnet_lite.explore import to_tensor

# (channels, size) per pyramid level at 400x400, deepest first as in the tables
EXPECTED = {
    "vgg16": [(512, 12, 1), (512, 25, 3), (512, 50, 3)],
    "resnet50": [(2048, 13, 3), (1024, 25, 6), (512, 50, 4)],
    "resnet101": [(2048, 13, 3), (1024, 25, 23), (512, 50, 4)],
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_feature_shapes_match_tables(name):
    bb = build_backbone(name, weights=None)
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 400, 400))
    got = []
    for p in (3, 2, 1):
        level = [f for f, lvl in zip(feats, bb.feature_levels) if lvl == p]
        assert len({tuple(f.shape) for f in level}) == 1
        got.append((level[0].shape[1], level[0].shape[2], len(level)))
    assert got == EXPECTED[name]


def test_resnet_taps_are_before_relu():
    bb = build_backbone("resnet50", weights=None)
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 128, 128))
    # after the residual add and before the ReLU, features have negative values
    assert all(f.min() < 0 for f in feats)
    # the next block's input is ReLU(feature): re-running the last block on it reproduces the tap
    net = bb.net
    with torch.no_grad():
        x = torch.relu(feats[-2])
        assert torch.allclose(bb._bottleneck_before_relu(net.layer4[2], x), feats[-1], atol=1e-5)


def test_vgg_taps_are_conv_outputs_before_relu():
    bb = build_backbone("vgg16", weights=None)
    with torch.no_grad():
        img = torch.randn(1, 3, 96, 96)
        feats = bb(img)
        x = img
        for i in range(18):
            x = bb.net.features[i](x)
    assert torch.equal(feats[0], x)  # index 17 = conv4_1 output
    assert feats[0].min() < 0


def test_efficientnet_pyramid_and_imagenet_weights_classify_cat():
    bb = build_backbone("efficientnet-lite0", weights="imagenet")
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 400, 400))
        logits = bb.classify(to_tensor(data.chelsea(), size=(224, 224)))
    assert bb.level_counts == {1: 2, 2: 6, 3: 5}
    sizes = {p: {f.shape[-1] for f, lvl in zip(feats, bb.feature_levels) if lvl == p} for p in (1, 2, 3)}
    assert sizes == {1: {50}, 2: {25}, 3: {13}}
    assert 281 <= int(logits.argmax()) <= 285  # an ImageNet cat class


def test_random_efficientnet_does_not_classify_cat_confidently():
    bb = build_backbone("efficientnet-lite0", weights=None)
    with torch.no_grad():
        p = bb.classify(to_tensor(data.chelsea(), size=(224, 224))).softmax(1)
    assert p[0, 281:286].sum() < 0.5


def test_offline_without_cached_weights_raises_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(BackboneWeightsUnavailable, match="weights_path") as info:
        build_backbone("resnet50", weights="imagenet")
    assert "resnet50-" in str(info.value) and str(tmp_path) in str(info.value)


def test_weights_from_torch_cache_and_from_file(tmp_path, monkeypatch):
    from torchvision import models

    src = models.resnet50(weights=None)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    name = os.path.basename(models.ResNet50_Weights.IMAGENET1K_V1.url)
    torch.save(src.state_dict(), cache / name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    bb = build_backbone("resnet50", weights="imagenet")
    assert torch.equal(bb.net.conv1.weight, src.conv1.weight)
    bb2 = build_backbone("resnet50", weights=None, weights_path=str(cache / name))
    assert torch.equal(bb2.net.layer4[2].conv3.weight, src.layer4[2].conv3.weight)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_backbone("resnet50", weights_path=str(tmp_path / "nope.pth"))


def test_unknown_backbone_and_weights():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet18")
    with pytest.raises(ValueError, match="weights"):
        build_backbone("vgg16", weights="coco")


def test_backbone_frozen_and_stays_in_eval_mode():
    model = HSNet("efficientnet-lite0", weights=None)
    model.train()
    assert model.learner.training
    assert not model.backbone.training
    assert not any(m.training for m in model.backbone.modules())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    bn = model.backbone.net._bn0
    before = bn.running_mean.clone()
    q = torch.randn(1, 3, 64, 64)
    model(q, q[:, None], torch.ones(1, 1, 64, 64)).sum().backward()
    assert torch.equal(bn.running_mean, before)
    assert all(p.grad is None for p in model.backbone.parameters())
