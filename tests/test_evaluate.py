"""Evaluation protocol: perfect predictor, ignore handling, official checkpoints, the shipped model."""
import pytest
import torch
from torch import nn

from hsnet_lite import HSNet, to_official_state_dict
from hsnet_lite.baseline import PrototypeBaseline
from hsnet_lite.config import EvalConfig
from hsnet_lite.datasets import EmbeddedDataset, load_fixed_episodes
from hsnet_lite.evaluation import evaluate, evaluate_model
from hsnet_lite.metrics import FewShotMeter
from hsnet_lite.pretrained import TRAINED_DIR, load_embedded_model


class QueryAsSupport(torch.utils.data.Dataset):
    """Wraps episodes so that every support is the query itself (mask = its foreground)."""

    def __init__(self, base, shot=1):
        self.base, self.shot, self.class_ids = base, shot, base.class_ids

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        ep = dict(self.base[i])
        ep["support_imgs"] = ep["query_img"].expand(self.shot, -1, -1, -1).clone()
        ep["support_masks"] = (ep["query_mask"] == 1).float().expand(self.shot, -1, -1).clone()
        return ep


class CopySupportMask(nn.Module):
    """A 'perfect' predictor on QueryAsSupport episodes: it returns the first support mask."""

    def predict_mask(self, query_img, support_imgs, support_masks):
        return support_masks[:, 0].long()


@pytest.fixture(scope="module")
def small_test_split():
    return EmbeddedDataset(fold=1, split="test", shot=1, img_size=64, n_episodes=6)


@pytest.mark.parametrize("shot", [1, 3])
def test_perfect_predictor_scores_100(small_test_split, shot):
    res = evaluate_model(CopySupportMask(), QueryAsSupport(small_test_split, shot), batch_size=4, progress=False)
    assert res["miou"] == pytest.approx(100.0) and res["fb_iou"] == pytest.approx(100.0)
    assert res["episodes"] == 6 and set(res["class_iou"]) == set(range(5, 10))


def test_no_ignore_scores_boundary_as_background(small_test_split):
    class WithBoundary(QueryAsSupport):
        def __getitem__(self, i):
            ep = super().__getitem__(i)
            ep["query_mask"] = ep["query_mask"].clone()
            ep["query_mask"][:4] = 255  # a band the predictor calls foreground
            ep["support_masks"][:, :4] = 1
            return ep

    data = WithBoundary(small_test_split)
    ignored = evaluate_model(CopySupportMask(), data, progress=False)
    scored = evaluate_model(CopySupportMask(), data, use_ignore=False, progress=False)
    assert ignored["miou"] == pytest.approx(100.0) and scored["miou"] < 100.0


def test_official_checkpoint_evaluation_path(tmp_path):
    torch.manual_seed(3)
    model = HSNet("resnet50", weights=None).eval()
    with torch.no_grad():
        for p in model.learner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "best_model.pt"
    state = to_official_state_dict(model)
    assert all(k.startswith("module.") for k in state)
    torch.save(state, path)
    res = evaluate(EvalConfig(backbone="resnet50", official_checkpoint=str(path), img_size=64, episodes=3,
                              shot=2, progress=False))
    ds = EmbeddedDataset(fold=0, split="test", shot=2, img_size=64, n_episodes=3)
    direct = evaluate_model(model, ds, progress=False)
    assert res["episodes"] == 3 and res["miou"] == pytest.approx(direct["miou"])
    assert res["fb_iou"] == pytest.approx(direct["fb_iou"])


def test_baseline_through_the_api_writes_json(tmp_path):
    out = tmp_path / "res.json"
    res = evaluate(EvalConfig(method="baseline", img_size=64, episodes=4, progress=False, output=str(out)))
    assert res["method"] == "baseline" and res["episodes"] == 4 and out.is_file()


shipped_only = pytest.mark.skipif(not (TRAINED_DIR / "learner_fp16.pt").is_file(),
                                  reason="shipped model not exported yet")


@pytest.fixture(scope="module")
def shipped():
    return load_embedded_model()


@shipped_only
def test_shipped_model_beats_baseline_on_fixed_episodes(shipped):
    model = shipped
    baseline = PrototypeBaseline(model.backbone)
    eps = load_fixed_episodes(0, shot=1)
    batch = {k: torch.stack([e[k] for e in eps]) for k in ("query_img", "query_mask", "support_imgs",
                                                          "support_masks", "class_id")}
    scores = {}
    for name, m in (("hsnet", model), ("baseline", baseline)):
        meter = FewShotMeter(range(5))
        meter.update(m.predict_mask(batch["query_img"], batch["support_imgs"], batch["support_masks"]),
                     batch["query_mask"], batch["class_id"])
        scores[name] = meter.miou()
    assert scores["hsnet"] > scores["baseline"] + 10, scores  # 42.5 vs 28.8 when exported


def test_one_pass_shot_predictions_match_predict_mask():
    from hsnet_lite.engine import shot_predictions

    torch.manual_seed(0)
    hsnet = HSNet("efficientnet-lite0", weights=None).eval()
    baseline = PrototypeBaseline(hsnet.backbone)
    ds = EmbeddedDataset(fold=0, split="test", shot=3, img_size=64, n_episodes=2)
    eps = [ds[i] for i in range(2)]
    q, s, m = (torch.stack([e[k] for e in eps]) for k in ("query_img", "support_imgs", "support_masks"))
    for model in (hsnet, baseline):
        preds = shot_predictions(model, q, s, m, (1, 3))
        for k in (1, 3):
            direct = model.predict_mask(q, s[:, :k], m[:, :k])
            assert (preds[k] == direct).float().mean() > 0.999, (type(model).__name__, k)


@shipped_only
def test_demo_comparison_and_figure(tmp_path, shipped):
    from hsnet_lite.embedded_results import compare_on_embedded, format_comparison, prediction_figure

    model = shipped
    res = compare_on_embedded(episodes=2, shots=(1, 2), batch_size=2, workers=0, progress=False, model=model)
    assert set(res) == {"hsnet", "baseline"} and set(res["hsnet"]) == {1, 2}
    assert res["baseline"][2]["episodes"] == 2
    assert "2-shot mIoU" in format_comparison(res)
    path = prediction_figure(str(tmp_path / "pred.png"), model=model, n_rows=2)
    assert (tmp_path / "pred.png").stat().st_size > 10_000 and path.endswith("pred.png")
