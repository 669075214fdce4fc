"""oneDNN's fused, prepacked convolutions compute what the plain ops compute (no timing here)."""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from hsnet_lite import correlation
from hsnet_lite.fast import folded_convs
from hsnet_lite.backbones import build_backbone
from hsnet_lite.conv4d import CenterPivotConv4d, to_channels_last_6d
from hsnet_lite.fast.folded_convs import FoldedConvs, fused_conv, onednn_available

needs_onednn = pytest.mark.skipif(not onednn_available(torch.zeros(1)), reason="oneDNN fused ops unavailable")


@needs_onednn
@pytest.mark.parametrize("stride,padding,relu,add", [(1, 0, False, False), (1, 1, True, False),
                                                       (2, 1, False, True), (4, 2, True, True)])
def test_fused_conv_equals_conv_add_relu(stride, padding, relu, add):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, 17, 15, generator=g).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(16, 8, 5, 5, generator=g), torch.randn(16, generator=g)
    expected = F.conv2d(x, w, b, stride, padding)
    other = torch.randn_like(expected).contiguous(memory_format=torch.channels_last) if add else None
    if add:
        expected = expected + other
    if relu:
        expected = expected.relu()
    got = fused_conv(x, w, b, (stride,) * 2, (padding,) * 2, relu=relu, add=other)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(got, expected, atol=1e-4)


@needs_onednn
def test_prepacked_backbone_is_bit_identical_to_the_plain_folded_convs(monkeypatch):
    torch.manual_seed(0)
    bb = build_backbone("resnet50", weights=None)
    img = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        fused = bb(img, channels_last=True)
        again = bb(img, channels_last=True)  # the packed kernels, reused
        plain_weights = bb.folded()
        monkeypatch.setattr(type(bb), "folded_convs", lambda self, x: FoldedConvs(weights=plain_weights))
        plain = bb(img, channels_last=True)
    for a, b, c in zip(fused, again, plain):
        assert torch.equal(a, b) and torch.equal(a, c)


@needs_onednn
def test_pack_cache_keeps_the_last_shapes_and_skips_copies():
    bb = build_backbone("resnet50", weights=None)
    with torch.no_grad():
        for size in (64, 80, 96):
            bb(torch.randn(1, 3, size, size))
    shapes = list(bb.__dict__["_pack_cache"][1].by_shape)
    assert shapes == [(1, 3, 80, 80), (1, 3, 96, 96)][-folded_convs.PACKED_SHAPES:]
    twin = copy.deepcopy(bb)  # oneDNN's reordered kernels cannot be copied: they stay behind
    assert "_pack_cache" not in twin.__dict__
    pickle.loads(pickle.dumps(bb))
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(twin(img)[-1], bb(img)[-1])


def test_backbone_passes_gradients_to_an_input_that_requires_them():
    bb = build_backbone("resnet50", weights=None)
    img = torch.randn(1, 3, 64, 64, requires_grad=True)
    bb(img)[-1].sum().backward()  # the fused ops are not differentiable: they must not run here
    assert img.grad is not None and img.grad.abs().sum() > 0


@pytest.mark.parametrize("k,s,dims", [(5, 4, (5, 6, 13, 13)), (3, 1, (5, 5, 2, 2)), (3, 2, (6, 6, 4, 4))])
def test_cp_conv_passes_gradients_to_its_input_with_frozen_weights(k, s, dims):
    layer = CenterPivotConv4d(4, 8, k, s).requires_grad_(False)
    x = to_channels_last_6d(torch.randn(2, 4, *dims)).requires_grad_(True)
    layer(x).square().sum().backward()
    twin = CenterPivotConv4d(4, 8, k, s)
    twin.load_state_dict(layer.state_dict())
    with torch.no_grad():
        assert torch.allclose(layer(x), twin.to_dense()(x.contiguous()), atol=1e-5)
    y = x.detach().clone().requires_grad_(True)
    twin.to_dense()(y).square().sum().backward()
    assert torch.allclose(x.grad, y.grad, atol=1e-4)


def test_support_matrix_cache_follows_weight_updates():
    layer = CenterPivotConv4d(6, 5, 3, 1)
    x = to_channels_last_6d(torch.randn(1, 6, 4, 4, 2, 2))
    with torch.no_grad():
        first = layer(x)
        layer.support_conv.weight.mul_(2.0)  # an in-place update (as an optimizer step does)
        second = layer(x)
        fresh = CenterPivotConv4d(6, 5, 3, 1)
        fresh.load_state_dict(layer.state_dict())
        assert not torch.allclose(first, second)
        assert torch.equal(second, fresh(x))


@pytest.mark.parametrize("widths", [(8, 8, 8), (8, 12)])
def test_correlation_as_a_convolution_equals_the_matmul(monkeypatch, widths):
    g = torch.Generator().manual_seed(4)
    q = [F.normalize(torch.randn(2, c, 9, 7, generator=g), dim=1).contiguous(memory_format=torch.channels_last)
         for c in widths]
    s = [F.normalize(torch.randn(4, c, 6, 5, generator=g), dim=1).contiguous(memory_format=torch.channels_last)
         for c in widths]
    masks = torch.zeros(4, 6, 5)
    masks[:, 1:3, 1:4] = 1  # a small object in every support ...
    masks[2] = 1  # ... but one: a dense support within the sparse path
    s = [f * masks[:, None] for f in s]
    levels = [1] * len(widths)
    fast = correlation.hypercorrelation(q, s, levels, normalized=True, support_masks=masks)[1]
    monkeypatch.setattr(correlation, "onednn_available", lambda x: False)
    slow = correlation.hypercorrelation(q, s, levels, normalized=True, support_masks=masks)[1]
    manual = torch.stack([torch.einsum("bchw,bkcxy->bkhwxy", a, b.view(2, 2, *b.shape[1:])).flatten(0, 1).clamp(min=0)
                          for a, b in zip(q, s)], dim=1)
    assert torch.allclose(fast, manual, atol=1e-6) and torch.allclose(slow, manual, atol=1e-6)
