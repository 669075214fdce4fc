"""Every speed optimisation computes the same thing as the plain way (no timing asserted here).

Covered: the channels-last center-pivot conv (both query-branch variants, the small-support
linear map, fused biases), the fused GroupNorm+ReLU, channels-last upsampling and pooling,
the in-place / masked-support correlation, the folded-BatchNorm backbone and its cache,
HSNet against the authors'-style reference end to end (forward, K-shot, gradients), the
two-class argmax, the bf16 / compile modes, and the benchmark's helpers.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from hsnet_lite import HSNet, load_official_checkpoint
from hsnet_lite.backbones import build_backbone
from hsnet_lite.blocks import GroupNorm4d, mix_block, pool_support_dims, squeeze_block, upsample_query_dims
from hsnet_lite.conv4d import CenterPivotConv4d, channels_last_view, is_channels_last_6d, to_channels_last_6d
from hsnet_lite.correlation import cosine_correlation, hypercorrelation, l2_normalize, mask_features
from hsnet_lite.model import kshot_vote
from hsnet_lite.reference import ReferenceCPConv4d, ReferenceHSNet


def reference_twin(cp: CenterPivotConv4d) -> ReferenceCPConv4d:
    k, s = cp.kernel_size[0], cp.support_stride[0]
    ref = ReferenceCPConv4d(cp.in_channels, cp.out_channels, k, s)
    ref.conv1.load_state_dict(cp.query_conv.state_dict())
    ref.conv2.load_state_dict(cp.support_conv.state_dict())
    return ref


# kernel, support stride, in, out, (Ha, Wa, Hb, Wb): the HSNet layer kinds at a small size
CP_CASES = [
    (3, 2, 3, 16, (7, 6, 13, 13)),   # f3 layer 1
    (5, 4, 4, 16, (6, 5, 25, 25)),   # f1/f2 layer 1
    (5, 4, 16, 8, (5, 6, 13, 13)),   # f1 layer 2
    (3, 2, 8, 12, (6, 6, 4, 4)),     # last squeeze layer: 4x4 -> 2x2
    (3, 1, 16, 16, (7, 5, 2, 2)),    # mixing layer: 2x2 support, the linear-map path
    (3, 1, 4, 6, (5, 5, 3, 3)),      # 3x3 support = kernel area: linear-map path, stride 1
    (3, 1, 1, 4, (5, 5, 1, 3)),      # one input channel (a level with a single layer)
    (3, 2, 2, 1, (5, 4, 6, 6)),      # one output channel
]


def test_channels_last_view_is_a_view_only_of_a_channels_last_tensor():
    x = torch.rand(2, 3, 4, 5, 6, 7)
    expected = x.permute(0, 2, 3, 4, 5, 1)
    copied, in_place = channels_last_view(x)
    assert not in_place and copied.is_contiguous() and torch.equal(copied, expected)
    assert copied.data_ptr() != x.data_ptr()
    xc = to_channels_last_6d(x)
    viewed, in_place = channels_last_view(xc)
    assert in_place and viewed.is_contiguous() and torch.equal(viewed, expected)
    assert viewed.data_ptr() == xc.data_ptr()


@pytest.mark.parametrize("k,s,cin,cout,dims", CP_CASES)
def test_channels_last_cp_conv_equals_reference_forward(k, s, cin, cout, dims):
    cp = CenterPivotConv4d(cin, cout, k, s)
    ref = reference_twin(cp)
    x = torch.rand(2, cin, *dims)
    with torch.no_grad():
        expected = ref(x)
        out_std = cp(x)
        out_cl = cp(to_channels_last_6d(x))
    assert out_std.shape == expected.shape == out_cl.shape
    if cin > 1:  # (with one channel both layouts coincide; the layer then answers channels-last)
        assert out_std.is_contiguous()  # standard layout in -> standard layout out
    assert is_channels_last_6d(out_cl)  # channels-last in -> channels-last out
    assert torch.allclose(out_std, expected, atol=1e-5)
    assert torch.allclose(out_cl, expected, atol=1e-5)
    assert torch.allclose(out_cl, cp.to_dense()(x), atol=1e-5)


@pytest.mark.parametrize("k,s,cin,cout,dims", CP_CASES)
def test_channels_last_cp_conv_gradients_equal_reference(k, s, cin, cout, dims):
    """Training path (pivots copied to a batch of images) against the reference: input, both
    kernels and both biases (each bias gets the gradient of the fused one)."""
    cp = CenterPivotConv4d(cin, cout, k, s)
    ref = reference_twin(cp)
    x = to_channels_last_6d(torch.rand(2, cin, *dims)).requires_grad_()
    xr = x.detach().contiguous().requires_grad_()
    g = torch.randn_like(ref(xr))
    ours = torch.autograd.grad((cp(x) * g).sum(), [x, *cp.query_conv.parameters(), *cp.support_conv.parameters()])
    theirs = torch.autograd.grad((ref(xr) * g).sum(), [xr, *ref.conv1.parameters(), *ref.conv2.parameters()])
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()


def test_query_branch_inference_and_training_variants_agree():
    """The dilated-conv query branch (inference) equals the copied-pivots one (training)."""
    cp = CenterPivotConv4d(6, 8, (5, 3, 3, 3), (2, 2))
    xl = to_channels_last_6d(torch.rand(2, 6, 7, 5, 9, 8)).permute(0, 2, 3, 4, 5, 1)
    with torch.no_grad():
        dilated = cp._query_branch(xl)
    copied = cp._query_branch(xl)  # grad enabled and the kernel requires grad
    assert copied.requires_grad
    assert torch.allclose(dilated, copied, atol=1e-5)


def test_support_linear_map_equals_conv():
    """The small-support linear map, for every stride/padding and support size it may meet."""
    for k, s, (hb, wb) in [(3, 1, (2, 2)), (3, 1, (1, 1)), (3, 2, (3, 3)), (3, 1, (3, 2)), (5, 1, (4, 5)), (5, 2, (3, 4))]:
        cp = CenterPivotConv4d(5, 7, k, s)
        x = torch.rand(3, hb, wb, 5)
        matrix, (hb2, wb2) = cp._support_matrix(hb, wb), cp._support_size(hb, wb)
        via_map = F.linear(x.reshape(3, -1), matrix, cp.support_conv.bias.repeat(hb2 * wb2))
        via_conv = cp.support_conv(x.permute(0, 3, 1, 2))
        assert via_conv.shape[-2:] == (hb2, wb2)
        assert torch.allclose(via_map.view(3, hb2, wb2, 7).permute(0, 3, 1, 2), via_conv, atol=1e-5)


def test_groupnorm4d_fused_relu_matches_groupnorm_then_relu():
    gn = GroupNorm4d(4, 8, relu=True)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    plain = torch.nn.GroupNorm(4, 8)
    plain.load_state_dict(gn.state_dict())  # same parameters and keys
    x = torch.randn(2, 8, 5, 4, 3, 2)
    expected = F.relu(plain(x))
    xc = to_channels_last_6d(x).requires_grad_()
    out = gn(xc)
    assert is_channels_last_6d(out)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(gn(x), expected, atol=1e-5)  # standard layout too
    g = torch.randn_like(expected)
    gx, gw = torch.autograd.grad((out * g).sum(), [xc, gn.weight])
    xs = x.clone().requires_grad_()
    ex, ew = torch.autograd.grad((F.relu(plain(xs)) * g).sum(), [xs, plain.weight])
    assert torch.allclose(gx, ex, atol=1e-5) and torch.allclose(gw, ew, atol=1e-5)


@pytest.mark.parametrize("affine", [True, False])
def test_groupnorm4d_split_reduction_used_on_gpus_matches_groupnorm(affine):
    """The GPU path (var_mean + addcmul), run here on the CPU, equals nn.GroupNorm + ReLU."""
    gn = GroupNorm4d(4, 8, affine=affine, relu=True)
    plain = torch.nn.GroupNorm(4, 8, affine=affine)
    if affine:
        with torch.no_grad():
            gn.weight.uniform_(0.5, 1.5)
            gn.bias.uniform_(-0.5, 0.5)
        plain.load_state_dict(gn.state_dict())
    x = torch.randn(2, 8, 5, 4, 3, 2) * 3 + 1
    xc = to_channels_last_6d(x).requires_grad_()
    out = gn._split_forward(xc)
    assert is_channels_last_6d(out) and out.shape == x.shape
    xs = x.clone().requires_grad_()
    expected = F.relu(plain(xs))
    assert torch.allclose(out, expected, atol=1e-5)
    g = torch.randn_like(expected)
    got = torch.autograd.grad((out * g).sum(), [xc] + list(gn.parameters()))
    want = torch.autograd.grad((expected * g).sum(), [xs] + list(plain.parameters()))
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(got, want))


def test_groupnorm4d_split_reduction_only_at_inference_off_the_cpu(monkeypatch):
    """Off the CPU (here the meta device, which stands for a GPU in the dispatch), inference uses
    the split reduction and training PyTorch's group norm (fewer kernels under autograd)."""
    calls = []
    monkeypatch.setattr(GroupNorm4d, "_split_forward", lambda self, x: calls.append(x) or x)
    gn = GroupNorm4d(4, 8, relu=True).to("meta")
    x = to_channels_last_6d(torch.empty(2, 8, 5, 4, 3, 2, device="meta"))
    with torch.no_grad():
        gn(x)
    assert len(calls) == 1
    out = gn(x)  # the weight needs a gradient
    assert len(calls) == 1 and out.requires_grad and out.shape == x.shape
    gn.requires_grad_(False)
    gn(x.requires_grad_())  # only the input does
    assert len(calls) == 1


def test_query_branch_gathered_pivots_match_dilated_conv(monkeypatch):
    """Inference on a GPU gathers the pivots into images; on the CPU a dilated conv reads them in place."""
    from hsnet_lite import conv4d

    torch.manual_seed(0)
    cp = CenterPivotConv4d(3, 5, 3, 2)
    x = to_channels_last_6d(torch.randn(2, 3, 6, 5, 7, 8))
    with torch.no_grad():
        dilated = cp(x)
        monkeypatch.setattr(conv4d, "DILATED_QUERY_DEVICES", set())
        gathered = cp(x)
    assert torch.allclose(dilated, gathered, atol=1e-5)


def test_channels_last_upsample_and_pool_match_standard_layout():
    x = torch.randn(2, 5, 7, 6, 2, 3)
    xc = to_channels_last_6d(x)
    up, up_cl = upsample_query_dims(x, (13, 11)), upsample_query_dims(xc, (13, 11))
    assert is_channels_last_6d(up_cl) and up_cl.shape == up.shape == (2, 5, 13, 11, 2, 3)
    assert torch.allclose(up, up_cl, atol=1e-6)
    # the reference's per-support-slice bilinear resize
    slices = x.permute(0, 4, 5, 1, 2, 3).reshape(-1, 5, 7, 6)
    ref = F.interpolate(slices, (13, 11), mode="bilinear", align_corners=True)
    assert torch.allclose(up_cl, ref.view(2, 2, 3, 5, 13, 11).permute(0, 3, 4, 5, 1, 2), atol=1e-6)
    pooled = pool_support_dims(xc)
    assert pooled.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(pooled, x.mean(dim=(-2, -1)), atol=1e-6)


def test_blocks_channels_last_equal_standard_layout():
    torch.manual_seed(0)
    for block, x in [(squeeze_block(1, 3), torch.rand(2, 3, 6, 5, 25, 25)), (mix_block(), torch.rand(1, 128, 5, 4, 2, 2))]:
        with torch.no_grad():
            a, b = block(x), block(to_channels_last_6d(x))
        assert torch.allclose(a, b, atol=1e-5)


def old_hypercorrelation(query, support, levels):
    """The previous implementation: one correlation per layer, torch.stack along dim 1."""
    per = {}
    for q, s, p in zip(query, support, levels):
        per.setdefault(p, []).append(cosine_correlation(l2_normalize(q), l2_normalize(s)))
    return {p: torch.stack(c, dim=1) for p, c in per.items()}


def blob_masks(n, size, seed=0):
    """0/1 masks with a random rectangle each (some positions empty, some not)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size)
    for i in range(n):
        y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
        masks[i, y0:y0 + h, x0:x0 + w] = 1
    return masks


@pytest.mark.parametrize("b,k", [(1, 1), (2, 3)])
def test_inplace_and_masked_correlation_equal_stacked_dense(b, k):
    levels = [1, 1, 2, 2, 2, 3]
    sizes = {1: 12, 2: 6, 3: 3}
    g = torch.Generator().manual_seed(1)
    query = [torch.randn(b, 8, sizes[p], sizes[p], generator=g) for p in levels]
    support = [torch.randn(b * k, 8, sizes[p], sizes[p], generator=g) for p in levels]
    masks = blob_masks(b * k, 48)
    if b * k > 1:
        masks[-1] = 0  # an empty support mask
        masks[0] = 1  # a full one: dense columns within the sparse path
    masked = mask_features(support, masks)
    expected = old_hypercorrelation(query, masked, levels)
    for cl in (False, True):
        q = [f.contiguous(memory_format=torch.channels_last) for f in query] if cl else query
        s = [f.contiguous(memory_format=torch.channels_last) for f in masked] if cl else masked
        for hint in (None, masks):
            got = hypercorrelation(q, s, levels, support_masks=hint)
            assert set(got) == set(expected)
            for p in got:
                assert is_channels_last_6d(got[p])
                assert torch.allclose(got[p], expected[p], atol=1e-6)
    if b * k > 1:
        assert all(c[-1].abs().sum() == 0 for c in hypercorrelation(query, masked, levels, support_masks=masks).values())


@pytest.mark.parametrize("widths", [(8, 8, 8), (8, 16, 4)])
@pytest.mark.parametrize("masked", [False, True])
def test_raw_queries_are_normalised_into_the_correlation_buffer(widths, masked):
    """Queries handed over raw (normalised once per query, into the image the correlation reads)
    give exactly the correlation of queries normalised beforehand, with same-width layers
    (one grouped conv per support) and layers of different widths (one call per layer)."""
    levels, b, k = [1, 1, 1], 2, 2
    g = torch.Generator().manual_seed(3)
    query = [torch.randn(b, c, 10, 10, generator=g).contiguous(memory_format=torch.channels_last) for c in widths]
    support = [torch.randn(b * k, c, 10, 10, generator=g).contiguous(memory_format=torch.channels_last)
               for c in widths]
    masks = blob_masks(b * k, 40) if masked else None
    with torch.no_grad():
        normalized_support = support if masked else [l2_normalize(f) for f in support]  # (masked: raw, by contract)
        expected = hypercorrelation([l2_normalize(q) for q in query], normalized_support, levels, normalized=True,
                                    support_masks=masks, mask_support=masked)[1]
        for workspace in (None, {}):
            got = hypercorrelation(query, support, levels, support_masks=masks, mask_support=masked,
                                   workspace=workspace)[1]
            assert torch.equal(got, expected)


def test_correlation_keeps_autograd_when_features_require_grad():
    q = torch.randn(1, 4, 5, 5, requires_grad=True)
    s = torch.randn(1, 4, 5, 5)
    c = hypercorrelation([q], [s], [1])[1]
    assert c.requires_grad
    c.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_folded_resnet_backbone_equals_module_forward():
    torch.manual_seed(0)
    bb = build_backbone("resnet50", weights=None)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that folding matters
        for m in bb.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    img = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        folded = bb(img)
        folded_cl = bb(img, channels_last=True)
        n = bb.net
        x = n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(img)))))
        plain = []
        for stage in (n.layer2, n.layer3, n.layer4):
            for block in stage:
                x = bb._module_bottleneck_before_relu(block, x)
                plain.append(x)
                x = F.relu(x)
    assert len(folded) == len(plain) == 13
    for a, b, c in zip(folded, folded_cl, plain):
        assert a.is_contiguous() and b.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a, b)
        assert torch.allclose(a, c, rtol=1e-4, atol=1e-4 * c.abs().max().item())


def test_fold_cache_follows_weight_changes_and_keeps_state_dict():
    torch.manual_seed(0)
    bb = build_backbone("resnet50", weights=None)
    keys = set(bb.state_dict())
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = bb(img)[-1]
        assert set(bb.state_dict()) == keys  # the cache is not a buffer: no new keys
        state = {k: v.clone() for k, v in bb.state_dict().items()}
        state["net.layer4.2.bn3.bias"] += 1.0
        bb.load_state_dict(state)
        after = bb(img)[-1]
        assert torch.allclose(after, before + 1.0, atol=1e-3)  # the last BN's bias reaches the tap
        bb.net.layer4[2].bn3.weight.mul_(0.5)  # an in-place edit invalidates the cache too
        edited = bb(img)[-1]
        fresh = build_backbone("resnet50", weights=None)
        fresh.load_state_dict(bb.state_dict())
        assert not torch.allclose(edited, after)
        assert torch.equal(edited, fresh(img)[-1])


def test_backbone_built_under_inference_mode_runs():
    with torch.inference_mode():  # inference tensors have no version counter: the module path runs
        bb = build_backbone("resnet50", weights=None)
        feats = bb(torch.randn(1, 3, 64, 64))
    assert len(feats) == 13


def test_unfrozen_backbone_keeps_gradients_through_the_module_path():
    bb = build_backbone("resnet50", weights=None)
    bb.net.layer4[2].conv3.weight.requires_grad_(True)
    out = bb(torch.randn(1, 3, 64, 64))[-1].sum()
    out.backward()
    assert bb.net.layer4[2].conv3.weight.grad is not None


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(3)
    ref = ReferenceHSNet("resnet50").eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ours = HSNet("resnet50", weights=None)
    load_official_checkpoint(ours, {"module." + k: v for k, v in ref.state_dict().items()})
    return ours.eval(), ref


def ellipse_masks(b, k, size):
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    out = torch.zeros(b, k, size, size)
    for i in range(b * k):
        cy, cx, ry, rx = size * (0.4 + 0.05 * i), size * 0.5, size * (0.3 - 0.02 * i), size * 0.2
        out.view(-1, size, size)[i] = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).float()
    return out


@pytest.mark.parametrize("full", [False, True])
def test_hsnet_equals_reference_one_shot(pair, full):
    ours, ref = pair
    g = torch.Generator().manual_seed(0)
    q, s = torch.randn(2, 3, 128, 128, generator=g), torch.randn(2, 1, 3, 128, 128, generator=g)
    m = torch.ones(2, 1, 128, 128) if full else ellipse_masks(2, 1, 128)
    with torch.no_grad():
        theirs = ref(q, s[:, 0], m[:, 0])
        mine = ours(q, s, m)
    assert mine.is_contiguous()
    assert (mine - theirs).abs().max() < 1e-4


def test_hsnet_kshot_equals_reference(pair):
    ours, ref = pair
    g = torch.Generator().manual_seed(1)
    q, s = torch.randn(1, 3, 128, 128, generator=g), torch.randn(1, 3, 3, 128, 128, generator=g)
    m = ellipse_masks(1, 3, 128)
    with torch.no_grad():
        per_shot = ours(q, s, m)
        for i in range(3):
            assert (per_shot[:, i] - ref(q, s[:, i], m[:, i])).abs().max() < 1e-4
        assert torch.equal(ours.predict_mask(q, s, m).float(), ref.predict_mask_nshot(q, s, m).float())


def test_training_gradients_equal_reference(pair):
    ours, ref = copy.deepcopy(pair[0]).train(), copy.deepcopy(pair[1]).train()
    ref.backbone.eval()
    g = torch.Generator().manual_seed(2)
    q, s = torch.randn(2, 3, 128, 128, generator=g), torch.randn(2, 1, 3, 128, 128, generator=g)
    m = ellipse_masks(2, 1, 128)
    gt = (torch.rand(2, 128, 128, generator=g) > 0.5).long()
    ours.loss(ours(q, s, m), gt).backward()
    F.cross_entropy(ref(q, s[:, 0], m[:, 0]), gt).backward()
    from hsnet_lite.checkpoints import our_key_to_official
    theirs = dict(ref.named_parameters())
    for k, p in ours.learner.named_parameters():
        other = theirs[our_key_to_official("learner." + k)[len("module."):]].grad
        if other.abs().max() == 0:  # e.g. a level whose correlations are all zero at this size
            assert p.grad.abs().max() < 1e-9, k
            continue
        # a loss averaged over many pixels cancels a lot: compare directions and sizes, not digits
        assert F.cosine_similarity(p.grad.flatten(), other.flatten(), dim=0) > 0.9999, k
        assert (p.grad - other).abs().max() < 2e-2 * other.abs().max(), k


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return HSNet("efficientnet-lite0", weights=None).eval()


def test_two_class_argmax_equals_argmax(small):
    logits = torch.randn(2, 3, 2, 9, 9)
    logits[0, 0, :, 0, 0] = 0.5  # a tie goes to class 0, as with argmax
    assert torch.equal((logits[:, :, 1] > logits[:, :, 0]).long(), logits.argmax(2))
    model = small
    q, s = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 3, 64, 64)
    m = (torch.rand(1, 3, 64, 64) > 0.5).float()
    with torch.no_grad():
        assert torch.equal(model.predict_mask(q, s, m), kshot_vote(model(q, s, m).argmax(2)))
        assert torch.equal(model.predict_mask(q, s[:, :1], m[:, :1]), model(q, s[:, :1], m[:, :1]).argmax(1))


def test_bf16_autocast_runs_and_mostly_agrees(small):
    model = small
    q, s = torch.randn(1, 3, 64, 64), torch.randn(1, 2, 3, 64, 64)
    m = ellipse_masks(1, 2, 64)
    with torch.no_grad():
        logits = model(q, s, m)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(q, s, m)
    assert low.shape == logits.shape and torch.isfinite(low.float()).all()
    assert (low.float() - logits).abs().max() < 0.1 * logits.abs().max()


def test_compile_learner_keeps_state_dict_keys():
    model = HSNet("efficientnet-lite0", weights=None)
    keys = list(model.state_dict())
    assert model.compile_learner() is model  # compiles lazily, on the first call
    assert list(model.state_dict()) == keys


def test_compiled_learner_equals_the_eager_one():
    """The speed paths step aside inside a compiled graph (packed kernels, wide copies, oneDNN's
    fused ops): the learner compiles as one graph (``fullgraph``: a graph break fails) and gives
    the eager logits."""
    torch.manual_seed(0)
    model = HSNet("efficientnet-lite0", weights=None).eval()
    q, s = torch.randn(1, 3, 64, 64), torch.randn(1, 1, 3, 64, 64)
    m = ellipse_masks(1, 1, 64)
    with torch.no_grad():
        eager = model(q, s, m)
        compiled = model.compile_learner(fullgraph=True)(q, s, m)
    assert torch.allclose(compiled, eager, atol=1e-5)


def test_bench_helpers_and_layer_section_smoke(monkeypatch):
    from hsnet_lite import bench

    masks = bench.object_masks(5)
    cover = masks.mean(dim=(2, 3))
    assert masks.shape == (1, 5, 400, 400) and ((cover > 0.15) & (cover < 0.3)).all()
    t = bench.interleaved({"a": lambda: None, "b": lambda: sum(range(100))}, repeats=2)
    assert len(t["a"].wall) == len(t["b"].cpu) == 2
    assert bench.verdict(2.5, 2.0) == "PASS" and bench.verdict(1.5, 2.0) == "MISS"
    monkeypatch.setattr(bench, "HSNET_LAYERS", [("tiny", 3, 4, 3, 2, (5, 5, 7, 7)), ("tiny mix", 8, 8, 3, 1, (5, 5, 2, 2))])
    lines = bench.bench_layers(repeats=1, quick=False)
    rows = [line for line in lines if line.strip().startswith(("tiny", "all layers"))]
    assert len(rows) == 3 and all(r.rstrip().endswith(("PASS", "MISS")) for r in rows)


@torch.no_grad()
def test_bench_bare_inputs_are_the_layers_two_convs_and_given_pivots_match():
    """Section 1's bare inputs are what the layer convolves: the support conv on ``xs`` plus the
    query conv on ``xq``, put back in place, give the layer's output; and the layer's convs on
    pivots gathered beforehand (scripts/first_layer_parts.py) give it bit for bit."""
    from hsnet_lite import bench
    from hsnet_lite.fast.strided_pivot import wide_contiguous

    b, ha, wa, hb, wb, s = 1, 5, 6, 9, 7, 2
    case = bench.LayerCase.build(3, 4, 3, s, (ha, wa, hb, wb))
    cp, xc = case.layer, case.xc
    want = cp(xc).permute(0, 2, 3, 4, 5, 1)  # (B, Ha, Wa, P, Q, O)
    calls = case.bare_calls()
    p, q = -(-hb // s), -(-wb // s)
    sup = calls["s"]().permute(0, 2, 3, 1).reshape(b, ha, wa, p, q, 4)
    qry = calls["q_cl"]().permute(0, 2, 3, 1).reshape(b, p, q, ha, wa, 4).permute(0, 3, 4, 1, 2, 5)
    torch.testing.assert_close(sup + qry, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(calls["s_cl"](), calls["s"](), atol=1e-5, rtol=1e-5)
    assert case.pivot_view().shape == (b, ha, wa, p, q, 3)
    assert torch.equal(case.given_pivots(wide_contiguous(case.pivot_view())), want)


def test_bench_rounds_summarise_every_row(monkeypatch, capsys):
    from hsnet_lite import bench

    rows = [bench.Verdict("speedup", r, 2.0) for r in (2.1, 1.9, 2.0)] + [bench.Verdict("ours/bare", 1.2, 1.15, True)]
    lines = bench.summary(rows)
    assert lines[0].startswith("Summary over 3 rounds")
    assert "2.10  1.90  2.00" in lines[2] and lines[2].endswith("target >= 2   met in 2 of 3")
    assert lines[3].endswith("target <= 1.15   met in 0 of 1")
    monkeypatch.setattr(bench, "HSNET_LAYERS", [("tiny", 3, 4, 3, 2, (5, 5, 7, 7))])
    bench.main(["--sections", "layers", "--rounds", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "===== round 2 of 2" in out and "Summary over 2 rounds" in out
    summary = out.split("Summary over 2 rounds")[1]
    assert "ours/bare, tiny" in summary and "ours/bare, all layers" in summary
    assert len(bench.VERDICTS) == 4  # two rows, two rounds
    with pytest.raises(SystemExit):
        bench.main(["--rounds", "0"])
    assert "--rounds must be at least 1" in capsys.readouterr().err


def test_bench_device_and_backbone_options(monkeypatch, capsys):
    from hsnet_lite import bench

    if not torch.cuda.is_available():  # a clear refusal, not a crash deep inside the first section
        with pytest.raises(SystemExit):
            bench.main(["--device", "cuda", "--sections", "layers"])
        assert "no CUDA GPU" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--backbone", "vgg16"])
    assert "invalid choice" in capsys.readouterr().err
    with bench.tf32(True):
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    assert bench.DEVICE.type == "cpu"  # a refused --device leaves the module's settings alone
    q, s, m = bench.episode(2)
    assert q.device.type == s.device.type == m.device.type == "cpu" and s.shape == (1, 2, 3, 400, 400)


@pytest.mark.parametrize("support", [(2, 2), (3, 4)])
def test_query_branch_grouped_conv_matches_gathered_pivots_with_gradients(support):
    """Training on the CPU with support stride 1 runs one grouped conv over the channels-last
    tensor; outputs and every gradient equal the gathered-pivot path."""
    torch.manual_seed(0)
    cp = CenterPivotConv4d(6, 5, 3, 1)
    x = to_channels_last_6d(torch.randn(2, 6, 7, 5, *support))
    xl = x.permute(0, 2, 3, 4, 5, 1).detach().requires_grad_()
    grouped = cp._query_branch(xl)  # training (grad enabled, weight requires grad), stride 1, CPU
    b, ha, wa, hb, wb, c = xl.shape
    images = xl.permute(0, 3, 4, 1, 2, 5).reshape(b * hb * wb, ha, wa, c).permute(0, 3, 1, 2)
    gathered = cp.query_conv(images).permute(0, 2, 3, 1).reshape(b, hb, wb, ha, wa, -1).permute(0, 3, 4, 1, 2, 5)
    gathered = gathered - cp.query_conv.bias  # the branch leaves the bias to the support conv
    assert torch.allclose(grouped, gathered, atol=1e-5)
    g = torch.randn_like(grouped)
    got = torch.autograd.grad((grouped * g).sum(), [xl, cp.query_conv.weight])
    want = torch.autograd.grad((gathered * g).sum(), [xl, cp.query_conv.weight])
    assert all(torch.allclose(a, w, atol=1e-4) for a, w in zip(got, want))


@pytest.mark.parametrize("case", ["dense", "masked", "full mask", "window"])
def test_correlation_in_chunks_of_support_positions_is_exact(case, monkeypatch):
    """The grouped conv that correlates one support runs on chunks of its positions when its output
    would pass CHUNK_BYTES (fresh pages otherwise): every chunking gives exactly the one-call result,
    at every position (no mask), at the kept ones (a mask), and on a cropped support window."""
    from hsnet_lite import correlation
    from hsnet_lite.fast.support_crop import CroppedCorrelation

    g = torch.Generator().manual_seed(5)
    b, k, levels, n = 1, 2, [1, 1, 1], 20
    query = [torch.randn(b, 8, n, n, generator=g).contiguous(memory_format=torch.channels_last) for _ in levels]
    support = [torch.randn(b * k, 8, n, n, generator=g).contiguous(memory_format=torch.channels_last)
               for _ in levels]
    corner = torch.zeros(b * k, 4 * n, 4 * n)
    corner[:, 8:40, 12:44] = 1  # an object in one part of the support: a cropped window
    masks = {"dense": None, "masked": blob_masks(b * k, 4 * n), "full mask": torch.ones(b * k, 4 * n, 4 * n),
             "window": corner}[case]
    crops = {1: ((5, 5), (4, 4))} if case == "window" else None

    def correlate():
        corr = hypercorrelation(query, support, levels, support_masks=masks, mask_support=masks is not None,
                                crops=crops)[1]
        assert isinstance(corr, CroppedCorrelation) == (case == "window")
        return corr.to_full() if case == "window" else corr

    with torch.no_grad():
        whole = correlate()
        per_position = n * n * len(levels) * whole.element_size()  # the conv output of one support position
        for positions in (1, 7, 90):
            monkeypatch.setattr(correlation, "CHUNK_BYTES", positions * per_position)
            assert torch.equal(correlate(), whole), positions
