"""The training-free prototype baseline: shapes, input checks, empty-mask error, K-shot averaging."""
import pytest
import torch

from hsnet_lite.backbones import build_backbone
from hsnet_lite.baseline import PrototypeBaseline


@pytest.fixture(scope="module")
def baseline():
    torch.manual_seed(0)
    return PrototypeBaseline(build_backbone("efficientnet-lite0", weights="imagenet"))


def episode(b=2, k=1, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, s = torch.randn(b, 3, size, size, generator=g), torch.randn(b, k, 3, size, size, generator=g)
    m = torch.zeros(b, k, size, size)
    m[..., 10:40, 16:50] = 1
    return q, s, m


def test_prediction_shape_and_values(baseline):
    q, s, m = episode()
    scores = baseline(q, s, m)
    assert scores.shape == (2, 2, 64, 64) and scores.abs().max() <= 1 + 1e-5
    pred = baseline.predict_mask(q, s, m)
    assert pred.shape == (2, 64, 64) and set(pred.unique().tolist()) <= {0, 1}


def test_support_as_query_recovers_the_object(baseline):
    q, s, m = episode(b=1)
    s = 0.3 * s + m.unsqueeze(2) * torch.tensor([2.0, -1.5, 1.0]).view(1, 1, 3, 1, 1)  # a coloured box
    pred = baseline.predict_mask(s[:, 0], s, m)
    inter, union = (pred.bool() & m[:, 0].bool()).sum(), (pred.bool() | m[:, 0].bool()).sum()
    assert inter / union > 0.5


def test_kshot_averages_prototypes(baseline):
    q, s, m = episode(k=1)
    one = baseline(q, s, m)
    three = baseline(q, s.repeat(1, 3, 1, 1, 1), m.repeat(1, 3, 1, 1))
    assert torch.allclose(one, three, atol=1e-5)


def test_empty_support_mask_is_a_clear_error(baseline):
    q, s, m = episode(k=2)
    m[1, 1] = 0
    with pytest.raises(ValueError, match="support mask 1 of episode 1 is empty.*foreground prototype"):
        baseline(q, s, m)


def test_full_support_mask_has_no_background_prototype(baseline):
    q, s, m = episode(b=1)
    pred = baseline.predict_mask(q, s, torch.ones_like(m))
    assert pred.shape == (1, 64, 64)


def test_inputs_are_validated_like_the_model(baseline):
    q, s, m = episode()
    with pytest.raises(ValueError, match="binary"):
        baseline(q, s, m * 255)
    with pytest.raises(ValueError, match="batch sizes differ"):
        baseline(q[:1], s, m)
    with pytest.raises(ValueError, match="levels must be"):
        PrototypeBaseline(baseline.backbone, levels=(4,))
