"""Skipping the support background in each level's first squeezing layer is exact."""
import copy

import pytest
import torch

from hsnet_lite import HSNet
from hsnet_lite.conv4d import CenterPivotConv4d, to_channels_last_6d
from hsnet_lite.correlation import hypercorrelation
from hsnet_lite.fast.support_crop import CroppedCorrelation, crop_positions, plan, window


@pytest.mark.parametrize("k,s", [(3, 2), (5, 4), (3, 1), (5, 2)])
@pytest.mark.parametrize("size", [7, 13, 25])
def test_window_holds_exactly_the_outputs_that_read_the_range(k, s, size):
    p = k // 2
    n_out = (size + 2 * p - k) // s + 1
    for first in range(size):
        for last in range(first, size):
            w = window(first, last, size, k, s)
            meets = [o for o in range(n_out) if s * o - p <= last and s * o - p + k - 1 >= first]
            assert (w.lo, w.hi, w.n_out) == (meets[0], meets[-1], n_out)
            assert w.start == s * w.lo - p and w.start + w.length - 1 == s * w.hi - p + k - 1


def sparse_corr(b, c, ha, wa, hb, wb, box, seed=0):
    """A correlation tensor that is zero outside the support box (y0, y1, x0, x1), and its keep mask."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.zeros(b, hb, wb, dtype=torch.bool)
    y0, y1, x0, x1 = box
    keep[:, y0:y1, x0:x1] = True
    corr = torch.rand(b, c, ha, wa, hb, wb, generator=g) * keep.view(b, 1, 1, 1, hb, wb)
    return to_channels_last_6d(corr), keep


def crop_of(full: torch.Tensor, keep: torch.Tensor, k: int, s: int) -> CroppedCorrelation:
    """The CroppedCorrelation of a dense tensor, cut the way hypercorrelation stores it."""
    rows, cols = plan(keep, (k, k), (s, s))
    b, c, ha, wa, hb, wb = full.shape
    crop = full.new_zeros(b, ha, wa, rows.length * cols.length, c)
    idx = keep[0].flatten().nonzero().squeeze(1)
    src, dst = crop_positions(idx, wb, rows, cols)
    crop[:, :, :, dst] = full.permute(0, 2, 3, 4, 5, 1).reshape(b, ha, wa, hb * wb, c)[:, :, :, src]
    return CroppedCorrelation(crop.view(b, ha, wa, rows.length, cols.length, c).permute(0, 5, 1, 2, 3, 4), rows, cols)


BOXES = [(3, 9, 4, 11), (0, 5, 0, 6), (18, 25, 19, 25), (0, 25, 10, 14), (12, 13, 12, 13)]


@pytest.mark.parametrize("k,s,cin", [(5, 4, 4), (3, 2, 3), (5, 4, 6)])
@pytest.mark.parametrize("box", BOXES)
def test_cropped_layer_equals_dense_layer_forward_and_gradients(k, s, cin, box):
    torch.manual_seed(0)
    layer = CenterPivotConv4d(cin, 8, k, s)
    full, keep = sparse_corr(2, cin, 6, 5, 25, 25, box)
    cropped = crop_of(full, keep, k, s)
    assert torch.equal(cropped.to_full(), full)
    with torch.no_grad():
        assert torch.allclose(layer.forward_cropped(cropped), layer(full), atol=1e-6)
    twin = copy.deepcopy(layer)
    target = torch.randn_like(layer(full))
    (layer(full) * target).sum().backward()
    (twin.forward_cropped(cropped) * target).sum().backward()
    for a, b in zip(layer.parameters(), twin.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5 * a.grad.abs().max().item())


def test_cropped_layer_with_another_kernel_falls_back_to_the_dense_tensor():
    full, keep = sparse_corr(1, 4, 5, 5, 25, 25, (3, 9, 4, 11))
    cropped = crop_of(full, keep, 5, 4)
    layer = CenterPivotConv4d(4, 8, 3, 2)  # not the layer the crop was cut for
    with torch.no_grad():
        assert torch.allclose(layer.forward_cropped(cropped), layer(full), atol=1e-6)


def test_plan_declines_large_or_empty_boxes():
    keep = torch.zeros(1, 25, 25, dtype=torch.bool)
    assert plan(keep, (5, 5), (4, 4)) is None  # nothing kept
    keep[0, 1:24, 1:24] = True
    assert plan(keep, (5, 5), (4, 4)) is None  # saves too little
    keep.zero_()[0, 5:9, 5:9] = True
    assert plan(keep, (3, 3), (4, 4)) is None  # a stride larger than the kernel skips rows
    keep = torch.zeros(1, 8, 8, dtype=torch.bool)
    keep[0, 7, 7] = True  # read by no output of a stride-4 kernel-5 conv: (8 + 4 - 5) // 4 + 1 = 2 outputs
    assert plan(keep, (5, 5), (4, 4)) is None


def box_masks(b, k, size, boxes):
    m = torch.zeros(b, k, size, size)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        m.view(-1, size, size)[i, y0:y1, x0:x1] = 1
    return m


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = HSNet("resnet50", weights=None).eval()
    with torch.no_grad():
        for p in net.learner.parameters():
            p.normal_(0, 0.05)
    return net


@pytest.mark.parametrize("b,k,boxes", [
    (1, 1, [(20, 90, 50, 120)]), (1, 1, [(0, 60, 0, 50)]), (1, 1, [(150, 200, 170, 200)]),
    (2, 1, [(20, 90, 50, 120), (30, 80, 60, 100)]), (1, 2, [(20, 90, 50, 120), (100, 150, 30, 60)]),
])
def test_cropped_hypercorrelation_gives_the_dense_one_and_the_same_logits(model, b, k, boxes):
    g = torch.Generator().manual_seed(1)
    q, s = torch.randn(b, 3, 200, 200, generator=g), torch.randn(b, k, 3, 200, 200, generator=g)
    m = box_masks(b, k, 200, boxes)
    with torch.no_grad():
        dense = model.hypercorrelation(q, s, m)
        cropped = model.hypercorrelation(q, s, m, crops=model.learner.support_windows())
        assert any(isinstance(c, CroppedCorrelation) for c in cropped.values()) or b * k > 1
        for p, c in cropped.items():
            assert torch.equal(c.to_full() if isinstance(c, CroppedCorrelation) else c, dense[p])
        assert torch.allclose(model.learner(cropped), model.learner(dense), atol=1e-6)


def test_workspace_reuse_gives_fresh_results_across_masks_and_sizes(model):
    g = torch.Generator().manual_seed(2)
    episodes = [(torch.randn(1, 3, size, size, generator=g), torch.randn(1, 1, 3, size, size, generator=g),
                 box_masks(1, 1, size, [box])) for size, box in
                [(200, (20, 90, 50, 120)), (200, (120, 190, 10, 60)), (160, (0, 160, 0, 160)), (200, (5, 40, 5, 40))]]
    fresh = copy.deepcopy(model)
    with torch.no_grad():
        reused = [model(*e) for e in episodes]  # one model: buffers reused and resized in between
        for e, out in zip(episodes, reused):
            workspace_free = fresh.learner(fresh.hypercorrelation(*e))
            expected = torch.nn.functional.interpolate(workspace_free, size=e[0].shape[-2:], mode="bilinear",
                                                       align_corners=True)
            assert torch.allclose(out, expected, atol=1e-5)
    with torch.no_grad():
        assert model._workspace()  # buffers were kept for reuse
    assert model._workspace() is None  # with gradients on, correlations are kept for the backward pass


def test_masked_correlation_uses_crops_only_when_asked():
    g = torch.Generator().manual_seed(3)
    q = [torch.randn(1, 8, 25, 25, generator=g).contiguous(memory_format=torch.channels_last)]
    s = [torch.randn(1, 8, 25, 25, generator=g)]
    masks = torch.zeros(1, 100, 100)
    masks[0, 10:40, 20:50] = 1
    s = [(f * torch.nn.functional.interpolate(masks[:, None], size=(25, 25), mode="bilinear",
                                              align_corners=True)).contiguous(memory_format=torch.channels_last)
         for f in s]
    plain = hypercorrelation(q, s, [1], support_masks=masks)[1]
    cropped = hypercorrelation(q, s, [1], support_masks=masks, crops={1: ((5, 5), (4, 4))})[1]
    assert isinstance(plain, torch.Tensor) and isinstance(cropped, CroppedCorrelation)
    assert cropped.crop.numel() < plain.numel() / 2
    assert torch.equal(cropped.to_full(), plain)


@pytest.mark.parametrize("b,k", [(1, 1), (2, 2)])
def test_masking_inside_the_correlation_equals_masking_first(b, k):
    g = torch.Generator().manual_seed(5)
    levels = [1, 1, 2]
    query = [torch.randn(b, 8, n, n, generator=g).contiguous(memory_format=torch.channels_last) for n in (12, 12, 6)]
    support = [torch.randn(b * k, 8, n, n, generator=g).contiguous(memory_format=torch.channels_last)
               for n in (12, 12, 6)]
    masks = box_masks(b * k, 1, 48, [(4, 20, 8, 30), (0, 48, 0, 48), (30, 48, 30, 48), (10, 12, 10, 12)][: b * k])[:, 0]
    masked = [f * torch.nn.functional.interpolate(masks[:, None], size=f.shape[-2:], mode="bilinear",
                                                  align_corners=True) for f in support]
    expected = hypercorrelation(query, masked, levels, support_masks=masks)
    got = hypercorrelation(query, support, levels, support_masks=masks, mask_support=True)
    for p in expected:
        assert torch.allclose(got[p], expected[p], atol=1e-6)
    with pytest.raises(ValueError, match="mask_support"):
        hypercorrelation(query, support, levels, mask_support=True)


def first_layer(relu=True, seed=1):
    """The first squeezing layer of level 1 (conv and norm) with a non-trivial affine norm."""
    from hsnet_lite.blocks import GroupNorm4d
    torch.manual_seed(seed)
    conv, norm = CenterPivotConv4d(4, 16, 5, 4), GroupNorm4d(4, 16, relu=relu)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return conv, norm


@pytest.mark.parametrize("box", BOXES)
def test_first_layer_norm_in_closed_form_equals_the_group_norm(box):
    from hsnet_lite.fast.cropped_norm import cropped_conv_norm
    conv, norm = first_layer()
    full, keep = sparse_corr(2, 4, 6, 5, 25, 25, box)
    full[1] *= 3.0  # per-image statistics differ
    cropped = crop_of(full, keep, 5, 4)
    cropped.workspace = {}
    with torch.no_grad():
        expected = norm(conv(full))
        for _ in range(2):  # the second call reuses the workspace buffer
            got, constant = cropped_conv_norm(conv, norm, cropped)
            assert torch.allclose(got, expected, atol=1e-5)
    assert len(cropped.workspace) == 1
    grad_path, constant = cropped_conv_norm(conv, norm, cropped)  # with autograd: a fresh tensor, same values
    assert grad_path.requires_grad and torch.allclose(grad_path, expected, atol=1e-5)
    # the constant region: every support position outside rows x cols holds constant.value
    outside = torch.ones(grad_path.shape[-2:], dtype=torch.bool)
    outside[constant.rows, constant.cols] = False
    if outside.any():
        values = grad_path.detach().permute(0, 2, 3, 4, 5, 1)[:, :, :, outside]  # (B, Ha, Wa, n, C)
        assert torch.equal(values, constant.value.detach().view(2, 1, 1, 1, 16).expand_as(values))


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("box", BOXES)
def test_first_layer_norm_gradients_in_closed_form_equal_float64_autograd(box, relu):
    """The hand-written backward of the cropped first layer (cropped_norm._CroppedGroupNorm) against
    autograd through the dense conv and group norm, evaluated in float64."""
    from hsnet_lite.fast.cropped_norm import cropped_conv_norm
    conv, norm = first_layer(relu)
    full, keep = sparse_corr(2, 4, 6, 5, 25, 25, box)
    full[1] *= 3.0
    cropped = crop_of(full, keep, 5, 4)
    conv64, norm64 = copy.deepcopy(conv).double(), copy.deepcopy(norm).double()
    out64 = norm64(conv64(full.double()))
    target = torch.randn(out64.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (out64 * target).sum().backward()
    out = cropped_conv_norm(conv, norm, cropped)[0]
    (out * target.float()).sum().backward()
    assert torch.allclose(out.double(), out64, atol=1e-5)
    for (name, p), p64 in zip([*conv.named_parameters(), *norm.named_parameters()],
                              [*conv64.parameters(), *norm64.parameters()]):
        scale = p64.grad.abs().max().item()
        assert (p.grad.double() - p64.grad).abs().max().item() <= 1e-4 * scale, name


def test_first_layer_norm_is_accurate_when_the_spread_is_small_next_to_the_mean():
    """Outputs dominated by the bias (as in a trained first layer) cost a one-pass E[x^2] - E[x]^2
    its digits; the closed form's two-pass statistics keep float64 accuracy."""
    from hsnet_lite.fast.cropped_norm import cropped_conv_norm
    conv, norm = first_layer()
    with torch.no_grad():
        conv.query_conv.bias.fill_(20.0)
    full, keep = sparse_corr(1, 4, 6, 5, 25, 25, BOXES[0])
    full *= 1e-2
    cropped = crop_of(full, keep, 5, 4)
    with torch.no_grad():
        expected = copy.deepcopy(norm).double()(copy.deepcopy(conv).double()(full.double()))
        got = cropped_conv_norm(conv, norm, cropped)[0].double()
    assert (got - expected).abs().max().item() < 2e-4 * expected.abs().max().item()


def test_a_compiled_learner_gets_dense_correlations(monkeypatch):
    net = HSNet("efficientnet-lite0", weights=None).eval()
    seen = []
    original = net.hypercorrelation
    monkeypatch.setattr(net, "hypercorrelation", lambda *a, **k: seen.append(k["crops"]) or original(*a, **k))
    monkeypatch.setattr(net.learner, "compile", lambda **kwargs: None)  # compiling itself is not under test
    q, s = torch.randn(1, 3, 96, 96), torch.randn(1, 1, 3, 96, 96)
    m = box_masks(1, 1, 96, [(10, 40, 10, 40)])
    with torch.no_grad():
        net(q, s, m)
        net.compile_learner()
        net(q, s, m)
    assert seen[0] == net.learner.support_windows() and seen[1] is None  # no recompiling per support window


@pytest.mark.parametrize("box", [(10, 30, 14, 36), (2, 38, 6, 44), (22, 24, 3, 47)])
def test_trained_squeeze_block_on_a_crop_equals_the_dense_block(box):
    """Level 1's whole squeezing block trained on a cropped correlation: the closed-form first
    norm hands the second layer its constant region (strided_pivot.ConstantOutside), whose
    pivots share one query conv. Output and every parameter gradient equal the dense block's,
    evaluated in float64."""
    from hsnet_lite.blocks import HSNetLearner
    torch.manual_seed(0)
    learner = HSNetLearner({1: 4})
    full, keep = sparse_corr(2, 4, 4, 3, 50, 50, box)
    cropped = crop_of(full, keep, 5, 4)
    dense64 = copy.deepcopy(learner.squeeze["1"]).double()
    out64 = dense64(full.double())
    target = torch.randn(out64.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (out64 * target).sum().backward()
    out = learner._squeeze(1, cropped)
    (out * target.float()).sum().backward()
    assert torch.allclose(out.double(), out64, atol=1e-5)
    for (name, p), p64 in zip(learner.squeeze["1"].named_parameters(), dense64.parameters()):
        assert (p.grad.double() - p64.grad).abs().max().item() <= 1e-4 * p64.grad.abs().max().item(), name
