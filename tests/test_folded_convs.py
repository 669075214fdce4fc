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
from hsnet_lite.fast.strided_pivot import wide_contiguous

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
    if add:  # the same result written over ``add``
        into = fused_conv(x, w, b, (stride,) * 2, (padding,) * 2, relu=relu, add=other, into_add=True)
        assert into.data_ptr() == other.data_ptr() and torch.equal(other, got)


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


@needs_onednn
@pytest.mark.parametrize("k,s,dims", [(5, 4, (5, 6, 13, 13)), (3, 1, (5, 5, 2, 2)), (3, 2, (6, 6, 4, 4))])
def test_packed_kernels_follow_weight_changes_and_stay_out_of_copies(k, s, dims):
    layer = CenterPivotConv4d(4, 8, k, s)
    x = to_channels_last_6d(torch.randn(2, 4, *dims))

    def check():  # the packed path against the dense 4D conv built from the current weights
        with torch.no_grad():
            assert torch.allclose(layer(x), layer.to_dense()(x.contiguous()), atol=1e-5)

    check()
    assert layer._packs.packs  # inference ran on packed kernels
    with torch.no_grad():
        layer.query_conv.weight.mul_(-2.0)  # in place, as an optimiser step
        layer.support_conv.weight.add_(0.5)
    check()
    layer.support_conv.weight.data = torch.randn_like(layer.support_conv.weight)  # new storage
    check()
    twin = copy.deepcopy(layer)  # oneDNN's packed kernels cannot be copied: they stay behind
    assert not twin._packs.packs
    again = pickle.loads(pickle.dumps(layer))
    with torch.no_grad():
        assert torch.equal(twin(x), layer(x)) and torch.equal(again(x), layer(x))


@needs_onednn
@pytest.mark.parametrize("relu,add", [(False, False), (True, False), (False, True), (True, True)])
def test_kernel_packs_run_packs_at_inference_and_records_autograd_otherwise(relu, add):
    """KernelPacks.run: without autograd, the packed oneDNN conv (``into_add`` writing over ``add``);
    with a weight that needs its gradient, PyTorch's ops and a graph; the same values either way."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 11, 9, generator=g).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(8, 6, 3, 3, generator=g), torch.randn(8, generator=g)
    expected = F.conv2d(x, w, b, 1, 1)
    other = torch.randn_like(expected).contiguous(memory_format=torch.channels_last) if add else None
    expected = expected + other if add else expected
    expected = expected.relu() if relu else expected
    packs = folded_convs.KernelPacks()
    target = other.clone() if add else None
    got = packs.run("conv", x, w, b, (1, 1), (1, 1), add=target, relu=relu, into_add=add)
    assert len(packs.packs) == 1 and torch.allclose(got, expected, atol=1e-5)
    if add:
        assert got.data_ptr() == target.data_ptr()
    trained = w.clone().requires_grad_()
    y = packs.run("conv", x, trained, b, (1, 1), (1, 1), add=other, relu=relu, into_add=add)
    assert y.requires_grad and torch.allclose(y, expected, atol=1e-5)
    y.sum().backward()
    assert trained.grad is not None and len(packs.packs) == 1
    if add:
        assert y.data_ptr() != other.data_ptr()


@needs_onednn
def test_kernel_packs_keep_only_the_last_shapes():
    layer = CenterPivotConv4d(4, 8, 3, 2)
    with torch.no_grad():
        for n in range(6, 16):
            layer(to_channels_last_6d(torch.randn(1, 4, n, n, 5, 5)))
    assert len(layer._packs.packs) == layer._packs.capacity


@pytest.mark.parametrize("channels,offset", [(4, 0), (8, 0), (6, 0), (3, 0), (4, 2)])
def test_wide_contiguous_copies_the_same_bytes(channels, offset):
    g = torch.Generator().manual_seed(channels)
    n = 2 * 7 * 9 * 11 * channels
    bits = torch.randint(-2**31, 2**31 - 1, (n + offset,), dtype=torch.int32, generator=g)
    x6 = bits[offset:].view(torch.float32).view(2, 7, 9, 11, channels)  # NaN payloads included
    strided = x6[:, 1:, :, ::3].permute(0, 3, 1, 2, 4)  # a gather, the channels still contiguous
    got = wide_contiguous(strided)
    assert got.is_contiguous() and got.dtype == torch.float32 and got.shape == strided.shape
    assert torch.equal(got.view(torch.int32), strided.contiguous().view(torch.int32))


def test_wide_contiguous_keeps_autograd():
    x = torch.randn(3, 5, 8, requires_grad=True)
    y = wide_contiguous(x[:, ::2])
    y.sum().backward()
    assert torch.equal(x.grad[:, ::2], torch.ones(3, 3, 8)) and x.grad[:, 1::2].abs().sum() == 0


@needs_onednn
def test_bottleneck_writes_over_its_residual_only_when_that_is_a_temporary():
    torch.manual_seed(0)
    bb = build_backbone("resnet50", weights=None)
    block = bb.net.layer1[1]  # no downsampling: the residual is the block's input itself
    x = torch.randn(1, 256, 12, 12).contiguous(memory_format=torch.channels_last)
    kept = x.clone()
    with torch.no_grad():
        out = bb._bottleneck_before_relu(block, x)
        expected = block.bn3(block.conv3(block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(kept))))))))
    assert torch.equal(x, kept)  # a caller's tensor is never overwritten
    assert torch.allclose(out, expected + kept, atol=1e-4)
