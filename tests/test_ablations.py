"""Ablation reproduction: the GPU launch plan (dry run) and one real iteration through it on the CPU."""
import json
import os
import shlex

import pytest
import torch

from hsnet_lite import ablations
from hsnet_lite.ablations import (Scale, TABLE_VARIANTS, format_plan, load_results, paper_value, plan, results_path,
                                  run_table, summarize)


def test_gpu_plan_is_the_paper_protocol():
    steps = plan("S2", "gpu", n_gpus=4, datapath="/data/fss")
    assert len(steps) == 3 * 4  # three variants x four folds
    cmd = steps[0].command
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=4" in cmd
    args = steps[0].train_args
    value = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
    assert value["--benchmark"] == "pascal" and value["--backbone"] == "resnet101"
    assert value["--img-size"] == "400" and value["--batch-size"] == "5"  # 20 in total over 4 GPUs
    assert {s.variant.key for s in steps} == {"shallow", "deep", "all"}
    assert {s.fold for s in steps} == {0, 1, 2, 3}
    layers = {s.variant.key: s.train_args[s.train_args.index("--layers") + 1] for s in steps}
    assert layers == {"shallow": "shallow", "deep": "deep", "all": "all"}
    text = format_plan(steps)
    assert len(text.splitlines()) == 12 and all(shlex.split(line)[-1] == "--no-progress" for line in text.splitlines())


def test_variants_are_configuration():
    s3 = plan("S3", "gpu", n_gpus=1, datapath="/d")
    levels = {s.variant.key: s.train_args[s.train_args.index("--levels") + 1:s.train_args.index("--layers")] for s in s3}
    assert levels == {"C3": ["3"], "C23": ["2", "3"], "all": ["1", "2", "3"]}
    nomask = [s for s in plan("S14", "gpu", n_gpus=1, datapath="/d") if s.variant.key == "nomask"]
    assert all("--no-support-mask" in s.train_args for s in nomask)
    assert plan("S1", "gpu", n_gpus=2, datapath="/d")[0].train_args[plan("S1", "gpu", n_gpus=2, datapath="/d")[0].train_args.index("--backbone") + 1] == "resnet50"


def test_bad_settings_named():
    with pytest.raises(ValueError, match="run mode"):
        plan("S2", "tpu")
    with pytest.raises(ValueError, match="unknown table"):
        plan("S9")
    with pytest.raises(ValueError, match="datapath"):
        plan("S2", "gpu", n_gpus=1)


def test_paper_values():
    assert paper_value("S2", "deep", 1) == 61.7
    assert paper_value("S3", "C23", 5) == 68.2
    assert paper_value("S4", "all", 1, "miou_no_ignore") == 59.1
    assert paper_value("S4", "all", 5, "fb_iou") == 80.6
    assert paper_value("S1", "all", 10) == 70.6


def test_one_real_iteration_through_the_gpu_launch_path(tmp_path):
    """The GPU mode's code path (torchrun -> hsnet_lite.train -> evaluation -> results file) on the CPU."""
    tiny = Scale("embedded", 64, (0,), 2, 1, 1, 2, 4, "efficientnet-lite0", boundary=1)
    records = run_table("S14", "gpu-embedded", runs_root=str(tmp_path / "runs"),
                        results_root=str(tmp_path / "results"), n_gpus=1, scale=tiny)
    assert {(r["variant"], r["shot"]) for r in records} == {("all", 1), ("all", 5), ("nomask", 1), ("nomask", 5)}
    for r in records:
        assert 0 <= r["miou"] <= 100 and r["episodes"] == 4 and r["miou_no_ignore"] >= 0
    saved = json.load(open(tmp_path / "results" / "gpu-embedded" / "table_S14.json"))
    assert saved["records"] == records
    run_dir = tmp_path / "runs" / "gpu-embedded" / "embedded_efficientnet-lite0_nomask_fold0"
    cfg = json.load(open(run_dir / "results.json"))["config"]
    assert cfg["use_support_mask"] is False and cfg["iters_per_epoch"] == 1
    # a second call finds everything in the results file and trains nothing
    mtime = os.path.getmtime(run_dir / "last.pt")
    assert run_table("S14", "gpu-embedded", runs_root=str(tmp_path / "runs"),
                     results_root=str(tmp_path / "results"), n_gpus=1, scale=tiny) == records
    assert os.path.getmtime(run_dir / "last.pt") == mtime
    assert set(summarize(records)) == {("all", 1), ("all", 5), ("nomask", 1), ("nomask", 5)}


def test_score_predictions_with_and_without_ignore():
    from hsnet_lite.datasets import EmbeddedDataset

    class Oracle(torch.nn.Module):
        """Predicts the true mask (with the 255 band as foreground): perfect only when the band is ignored."""

        def __init__(self, ds):
            super().__init__()
            self.ds = ds

        def predict_mask(self, q, s, m):
            masks = [self.ds[i]["query_mask"] for i in range(len(self.ds))]
            batch = torch.stack(masks[: q.shape[0]])
            return (batch != 0).long()

    ds = EmbeddedDataset(split="test", n_episodes=5, boundary=1, img_size=64)  # one per class
    scores = ablations.score_predictions(Oracle(ds), ds, batch_size=5)
    assert scores["with"]["miou"] == pytest.approx(100.0)
    assert scores["without"]["miou"] < 100.0


def test_results_files_follow_the_environment(tmp_path, monkeypatch):
    """``make test`` sets $HSNET_LITE_RESULTS so that a test run leaves results/ alone; an explicit
    root wins over it, and without either the repository's results/ is used."""
    monkeypatch.delenv(ablations.RESULTS_ENV, raising=False)
    assert results_path("S1", "cpu-mini") == str(ablations.REPO_ROOT / "results" / "cpu-mini" / "table_S1.json")
    monkeypatch.setenv(ablations.RESULTS_ENV, str(tmp_path))
    assert results_path("S1", "cpu-mini") == str(tmp_path / "cpu-mini" / "table_S1.json")
    assert results_path("S1", "gpu", str(tmp_path / "other")) == str(tmp_path / "other" / "gpu" / "table_S1.json")
    assert load_results("S2", "gpu") == []
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "table_S2.json").write_text(json.dumps({"records": [{"variant": "all"}]}))
    assert load_results("S2", "gpu") == [{"variant": "all"}]
