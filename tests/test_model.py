"""HSNet assembly: parameter counts (FACTS.md), shapes, K-shot, variants, bad input."""
import pytest
import torch

from hsnet_lite import HSNet, kshot_vote, select_layers
from hsnet_lite.summary import architecture_table

PARAMS = {  # squeeze f3, f2, f1, mix, decoder, total (FACTS.md)
    "vgg16": (167_008, 169_120, 201_888, 886_272, 259_458, 2_570_018),
    "resnet50": (167_584, 171_520, 202_688, 886_272, 259_458, 2_573_794),
    "resnet101": (167_584, 185_120, 202_688, 886_272, 259_458, 2_587_394),
}


def count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_counts_exact(name):
    model = HSNet(name, weights=None)
    f3, f2, f1, mix, dec, total = PARAMS[name]
    sq = model.learner.squeeze
    assert (count(sq["3"]), count(sq["2"]), count(sq["1"])) == (f3, f2, f1)
    assert count(model.learner.mix["32"]) == count(model.learner.mix["21"]) == mix
    assert count(model.learner.decoder) == dec
    assert model.learnable_parameters() == total


def test_resnet50_shapes_through_every_stage():
    rows = {r.layer: r for r in architecture_table(HSNet("resnet50", weights=None), 400)}
    assert rows["correlation layer (cosine, ReLU)"].output == (
        "C3 (3, 13, 13, 13, 13), C2 (6, 25, 25, 25, 25), C1 (4, 50, 50, 50, 50)")
    assert rows["squeezing block f3"].output == "(128, 13, 13, 2, 2)"
    assert rows["squeezing block f2"].output == "(128, 25, 25, 2, 2)"
    assert rows["squeezing block f1"].output == "(128, 50, 50, 2, 2)"
    assert rows["mixing block 3->2"].output == "(128, 25, 25, 2, 2)"
    assert rows["mixing block 2->1"].output == "(128, 50, 50, 2, 2)"
    assert rows["pooling layer (mean over support dims)"].output == "(128, 50, 50)"
    assert rows["all learnable"].params == 2_573_794


def test_vgg_correlation_shapes():
    rows = {r.layer: r for r in architecture_table(HSNet("vgg16", weights=None), 400)}
    assert rows["correlation layer (cosine, ReLU)"].output == (
        "C3 (1, 12, 12, 12, 12), C2 (3, 25, 25, 25, 25), C1 (3, 50, 50, 50, 50)")
    assert rows["squeezing block f3"].output == "(128, 12, 12, 2, 2)"


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return HSNet("efficientnet-lite0", weights=None).eval()


def episode(b=2, k=1, s=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, 3, s, s, generator=g)
    sup = torch.randn(b, k, 3, s, s, generator=g)
    m = (torch.rand(b, k, s, s, generator=g) > 0.5).float()
    return q, sup, m


def test_one_shot_logits_at_query_size(small):
    q, s, m = episode(s=96)
    out = small(q, s, m)
    assert out.shape == (2, 2, 96, 96)
    # 4D support with 3D mask is the 1-shot shorthand
    assert torch.allclose(small(q, s[:, 0], m[:, 0]), out)


def test_kshot_equals_separate_one_shot_runs(small):
    q, s, m = episode(k=3)
    per_shot = small(q, s, m)
    assert per_shot.shape == (2, 3, 2, 64, 64)
    for i in range(3):
        assert torch.allclose(per_shot[:, i], small(q, s[:, i : i + 1], m[:, i : i + 1]), atol=1e-5)
    votes = per_shot.argmax(2)
    assert torch.equal(small.predict_mask(q, s, m), kshot_vote(votes))


def test_query_features_computed_once_per_episode(small):
    calls = []
    hook = small.backbone.register_forward_hook(lambda mod, inp, out: calls.append(inp[0]))
    q, s, m = episode(b=2, k=5)
    small(q, s, m)
    hook.remove()
    # one backbone pass over B queries then B*K supports: each query once, not once per shot
    assert [x.shape[0] for x in calls] == [2 + 10]
    assert torch.equal(calls[0][:2], q) and torch.equal(calls[0][2:], s.flatten(0, 1))


def test_kshot_vote_rule():
    votes = torch.zeros(1, 5, 2, 3, dtype=torch.long)
    votes[0, :, 0, 0] = 1          # 5 votes
    votes[0, :3, 0, 1] = 1         # 3 votes >= 5/2
    votes[0, :2, 0, 2] = 1         # 2 votes < 2.5
    out = kshot_vote(votes)
    assert out.tolist() == [[[1, 1, 0], [0, 0, 0]]]
    # a single vote anywhere still counts when it is the maximum
    one = torch.zeros(1, 5, 2, 2, dtype=torch.long)
    one[0, 3, 1, 1] = 1
    assert kshot_vote(one)[0, 1, 1] == 1
    assert kshot_vote(torch.zeros(2, 4, 3, 3)).sum() == 0


def test_empty_support_mask_is_legal(small):
    q, s, m = episode()
    out = small(q, s, torch.zeros_like(m))
    assert torch.isfinite(out).all()
    hc = small.hypercorrelation(q, s, torch.zeros_like(m))
    assert all(c.abs().sum() == 0 for c in hc.values())


def test_masking_changes_the_answer_and_can_be_switched_off(small):
    q, s, m = episode()
    assert not torch.allclose(small(q, s, m), small(q, s, 1 - m))
    nomask = HSNet(small.backbone, levels=(1, 2, 3), use_support_mask=False).eval()
    nomask.learner.load_state_dict(small.learner.state_dict())
    assert torch.allclose(nomask(q, s, m), nomask(q, s, 1 - m))


@pytest.mark.parametrize("levels,layers,expected", [
    ((1, 2, 3), "all", {1: 4, 2: 6, 3: 3}),
    ((1, 2, 3), "deep", {1: 1, 2: 1, 3: 1}),
    ((1, 2, 3), "shallow", {1: 1, 2: 1, 3: 1}),
    ((2, 3), "all", {2: 6, 3: 3}),
    ((3,), "all", {3: 3}),
])
def test_ablation_variants(levels, layers, expected):
    model = HSNet("resnet50", weights=None, levels=levels, layers=layers)
    got = {p: model.feature_levels.count(p) for p in set(model.feature_levels)}
    assert got == expected
    assert set(model.learner.squeeze) == {str(p) for p in expected}
    assert len(model.learner.mix) == len(expected) - 1
    q, s, m = episode(b=1, s=128)
    assert model.eval()(q, s, m).shape == (1, 2, 128, 128)


def test_deep_and_shallow_pick_last_and_first_layer_of_each_level():
    levels = [1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3]
    assert select_layers(levels, (1, 2, 3), "deep") == [3, 9, 12]
    assert select_layers(levels, (1, 2, 3), "shallow") == [0, 4, 10]
    with pytest.raises(ValueError, match="layers"):
        select_layers(levels, (1, 2, 3), "middle")
    with pytest.raises(ValueError, match="levels"):
        select_layers(levels, (0, 1), "all")


def test_gradients_flow_to_learner_only(small):
    small.train()
    q, s, m = episode()
    gt = (torch.rand(2, 64, 64) > 0.5).long()
    gt[0, :2] = 255
    loss = small.loss(small(q, s, m), gt)
    loss.backward()
    assert all(p.grad is not None for p in small.learner.parameters())
    small.eval()
    small.zero_grad()


BAD = [
    (lambda q, s, m: (q[0], s, m), ValueError, "query_img must have shape"),
    (lambda q, s, m: (q[:, :1], s, m), ValueError, "3 colour channels"),
    (lambda q, s, m: (q.long(), s, m), TypeError, "floating-point"),
    (lambda q, s, m: (q, s[:, :, :2], m), ValueError, "3 colour channels"),
    (lambda q, s, m: (q, s, m[:, :, :32]), ValueError, "support mask size"),
    (lambda q, s, m: (q, s, m[:, :1]), ValueError, "does not match support_imgs"),
    (lambda q, s, m: (q[:1], s, m), ValueError, "batch sizes differ"),
    (lambda q, s, m: (q, s, m * 255), ValueError, "binary"),
    (lambda q, s, m: (q[..., :32, :32], s, m), ValueError, "differs from query size"),
    (lambda q, s, m: (q, s.numpy(), m), TypeError, "support_imgs must be a torch.Tensor"),
    (lambda q, s, m: (q, s, m[:, 0, 0]), ValueError, "support_masks must have shape"),
]


@pytest.mark.parametrize("make,err,msg", BAD)
def test_bad_input_gets_clear_error(small, make, err, msg):
    q, s, m = episode(k=2)
    with pytest.raises(err, match=msg):
        small(*make(q, s, m))


def test_loss_rejects_bad_query_mask(small):
    q, s, m = episode()
    logits = small(q, s, m)
    with pytest.raises(ValueError, match="query_mask"):
        small.loss(logits, torch.full((2, 64, 64), 7))
    with pytest.raises(ValueError, match="query_mask must have shape"):
        small.loss(logits, torch.zeros(2, 32, 32))
