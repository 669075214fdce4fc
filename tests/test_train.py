"""Training: exact resume, checkpoint content, atomic files, 2-process DDP (gloo) on CPU."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hsnet_lite.atomic_io import read_csv, write_json_atomic
from hsnet_lite.checkpoints import save_atomic
from hsnet_lite.config import EvalConfig, TrainConfig
from hsnet_lite.evaluation import evaluate
from hsnet_lite.run_checkpoint import learner_digest, load_checkpoint, model_from_checkpoint
from hsnet_lite.trainer import make_optimizer, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(img_size=64, weights="none", batch_size=2, iters_per_epoch=2, val_episodes=2, progress=False)


def tiny_config(out, **kw) -> TrainConfig:
    return TrainConfig(**(TINY | {"output": str(out)} | kw))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, device):
    """Two epochs straight, and one epoch followed by a resumed second epoch (on each device)."""
    base = tmp_path_factory.mktemp(f"runs_{device.type}")
    straight = train(tiny_config(base / "straight", epochs=2, device=device.type))
    first = train(tiny_config(base / "resumed", epochs=1, device=device.type))
    second = train(tiny_config(base / "resumed", epochs=2, device=device.type, resume="auto"))
    return {"dir": base, "straight": straight, "first": first, "second": second, "device": device}


def _has_tensorboard() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


def _logits(checkpoint: str, device: torch.device) -> torch.Tensor:
    """The checkpoint's model on the first embedded test episode (64x64); the seed fixes the
    backbone, which these runs leave random (weights="none") and the checkpoint does not hold."""
    from hsnet_lite.datasets import EmbeddedDataset

    torch.manual_seed(0)
    ep = EmbeddedDataset(split="test", n_episodes=1, img_size=64)[0]
    model = model_from_checkpoint(load_checkpoint(checkpoint)).to(device).eval()
    with torch.no_grad():
        return model(*(ep[k][None].to(device) for k in ("query_img", "support_imgs", "support_masks"))).cpu()


def test_resume_continues_exactly(runs):
    """Bitwise on the CPU. On a GPU, cuDNN and the bilinear upsampling's backward sum in a
    nondeterministic order (atomics), so two straight runs differ in the last bits too, and Adam,
    which divides each gradient by its running size, turns rounding noise in near-zero gradients
    into updates of up to lr: there the losses and the models' outputs must agree. On an H100, two
    straight runs ended with weights up to 3e-3 apart, losses 1e-4 apart (relative) and logits
    4e-4 of the largest apart; a resume that drops Adam's state moves the loss by 0.3 and the
    logits by 0.4 of the largest (measured on the CPU)."""
    straight, first, second = runs["straight"], runs["first"], runs["second"]
    assert list(first["iter_losses"]) == [1] and list(second["iter_losses"]) == [2]
    if runs["device"].type != "cpu":
        for epoch in (1, 2):
            resumed = (first if epoch == 1 else second)["iter_losses"][epoch]
            assert resumed == pytest.approx(straight["iter_losses"][epoch], rel=1e-3), epoch
        la, lb = (_logits(r["last_checkpoint"], runs["device"]) for r in (straight, second))
        assert (la - lb).abs().max() <= 1e-2 * la.abs().max(), (la - lb).abs().max()
        return
    assert first["iter_losses"][1] == straight["iter_losses"][1]
    assert second["iter_losses"][2] == straight["iter_losses"][2]  # bitwise equal floats
    a = load_checkpoint(straight["last_checkpoint"])
    b = load_checkpoint(second["last_checkpoint"])
    for key, value in a["learner"].items():
        assert torch.equal(value, b["learner"][key]), key
    assert second["learner_digest"] == straight["learner_digest"]
    assert [r["val_miou"] for r in a["history"]] == [r["val_miou"] for r in b["history"]]
    assert len(read_csv(str(runs["dir"] / "resumed" / "log.csv"))) == 2


def test_checkpoint_content(runs):
    path = runs["straight"]["last_checkpoint"]
    ckpt = torch.load(path, weights_only=True)  # tensors and plain values only
    assert ckpt["epoch"] == 2 and ckpt["config"]["seed"] == 0 and ckpt["config"]["backbone"] == "efficientnet-lite0"
    assert set(ckpt["rng"]) >= {"torch", "numpy", "python"}
    assert ckpt["optimizer"]["state"] and ckpt["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert all(k.startswith(("squeeze", "mix", "decoder")) for k in ckpt["learner"])
    best = load_checkpoint(runs["straight"]["best_checkpoint"])
    assert best["epoch"] == best["best_epoch"] == runs["straight"]["best_epoch"]
    folder = Path(path).parent
    files = ["best.pt", "config.json", "last.pt", "log.csv", "results.json"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(files + ["tensorboard"] * _has_tensorboard())
    rows = read_csv(str(folder / "log.csv"))
    assert list(rows[0]) == ["epoch", "train_loss", "train_miou", "val_loss", "val_miou", "val_fb_iou", "lr", "seconds"]


def test_our_checkpoint_evaluates(runs):
    ckpt = runs["straight"]["last_checkpoint"]
    model = model_from_checkpoint(load_checkpoint(ckpt))
    assert learner_digest(model) == runs["straight"]["learner_digest"]
    res = evaluate(EvalConfig(checkpoint=ckpt, img_size=64, episodes=3, progress=False, device=runs["device"].type))
    assert res["episodes"] == 3 and 0 <= res["miou"] <= 100 and 0 <= res["fb_iou"] <= 100


def test_resume_refuses_other_settings(runs, tmp_path):
    ckpt = runs["straight"]["last_checkpoint"]
    with pytest.raises(ValueError, match="cannot resume.*batch_size"):
        train(tiny_config(tmp_path, epochs=3, batch_size=1, device=runs["device"].type, resume=ckpt))


def test_atomic_writes_keep_old_file_on_crash(tmp_path, monkeypatch):
    ckpt, results = tmp_path / "last.pt", tmp_path / "results.json"
    save_atomic({"epoch": 1}, str(ckpt))
    write_json_atomic(str(results), {"miou": 1.0})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        save_atomic({"epoch": 2}, str(ckpt))
    with pytest.raises(OSError):
        write_json_atomic(str(results), {"miou": 2.0})
    assert torch.load(ckpt)["epoch"] == 1 and '"miou": 1.0' in results.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "results.json"]  # no temp files left


def test_ddp_two_cpu_ranks_end_with_identical_weights(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hsnet_lite.train", "--device", "cpu", "--img-size", "64", "--weights", "none", "--batch-size", "1",
           "--iters-per-epoch", "2", "--val-episodes", "3", "--epochs", "1", "--no-progress",
           "--write-digests", "--output", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = [(out / f"digest_rank{r}.txt").read_text().strip() for r in (0, 1)]
    assert digests[0] == digests[1]
    ckpt = load_checkpoint(str(out / "last.pt"))
    assert learner_digest(model_from_checkpoint(ckpt)) == digests[0]
    assert ckpt["config"]["batch_size"] == 1 and len(read_csv(str(out / "log.csv"))) == 1
    assert proc.stdout.count("epoch 1:") == 1  # only rank 0 logs


def test_run_log_writes_tensorboard_when_available(tmp_path, monkeypatch):
    from hsnet_lite import run_log

    calls = []

    class FakeWriter:
        def add_scalar(self, tag, value, step):
            calls.append((tag, step))

        def flush(self):
            pass

        def close(self):
            calls.append("closed")

    monkeypatch.setattr(run_log, "_tensorboard_writer", lambda folder: FakeWriter())
    log = run_log.RunLog(str(tmp_path))
    row = dict.fromkeys(run_log.LOG_FIELDS, 0.5) | {"epoch": 1}
    log.add(row)
    log.close()
    assert ("val/miou", 1) in calls and calls[-1] == "closed"
    assert read_csv(str(tmp_path / "log.csv"))[0]["val_miou"] == "0.5"
    assert run_log.RunLog(str(tmp_path / "quiet"), enabled=False).tb is None


def test_make_optimizer_trains_only_learnable_parameters_fused_on_a_gpu(device):
    """Adam over the parameters that train (a frozen part is left out); PyTorch's fused Adam on a
    GPU, its default elsewhere. One step moves exactly the learnable ones."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).to(device)
    model[0].requires_grad_(False)
    opt = make_optimizer(model, lr=1e-3)
    assert [p for g in opt.param_groups for p in g["params"]] == list(model[1].parameters())
    assert bool(opt.param_groups[0]["fused"]) == (device.type == "cuda")
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(5, 3, device=device)).square().sum().backward()
    opt.step()
    moved = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert moved == [False, False, True, True]
