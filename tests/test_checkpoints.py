"""The authors' checkpoint format: key mapping round trip and identical logits."""
import pytest
import torch

from hsnet_lite import HSNet, load_official_checkpoint, save_atomic, to_official_state_dict
from hsnet_lite.reference import ReferenceHSNet


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(1)
    ref = ReferenceHSNet("resnet50").eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.02 * torch.randn_like(p))  # not the default init: every weight must travel
    return ref


def official_file(ref, tmp_path):
    """A best_model.pt as the authors saved it from nn.DataParallel."""
    path = tmp_path / "best_model.pt"
    torch.save(torch.nn.DataParallel(ref).state_dict(), path)
    return path


def test_official_checkpoint_gives_same_logits(reference, tmp_path):
    path = official_file(reference, tmp_path)
    keys = torch.load(path).keys()
    assert all(k.startswith("module.") for k in keys)
    assert any(k.startswith("module.hpn_learner.encoder_layer4.0.conv1") for k in keys)
    model = load_official_checkpoint(HSNet("resnet50", weights=None), str(path)).eval()
    g = torch.Generator().manual_seed(0)
    q, s = torch.randn(2, 3, 160, 160, generator=g), torch.randn(2, 3, 3, 160, 160, generator=g)
    m = (torch.rand(2, 3, 160, 160, generator=g) > 0.4).float()
    with torch.no_grad():
        theirs = reference(q, s[:, 0], m[:, 0])
        ours = model(q, s[:, :1], m[:, :1])
        assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
        assert torch.equal(model.predict_mask(q, s, m).float(), reference.predict_mask_nshot(q, s, m).float())


def test_round_trip_of_key_mapping(reference):
    model = HSNet("resnet50", weights=None)
    load_official_checkpoint(model, {"module." + k: v for k, v in reference.state_dict().items()})
    back = to_official_state_dict(model)
    theirs = {"module." + k: v for k, v in reference.state_dict().items() if ".fc." not in k}
    assert set(back) == set(theirs)
    assert all(torch.equal(back[k], theirs[k]) for k in theirs)


def test_wrong_backbone_or_file_is_reported(reference, tmp_path):
    state = {"module." + k: v for k, v in reference.state_dict().items()}
    with pytest.raises(ValueError, match="does not fit"):
        load_official_checkpoint(HSNet("resnet101", weights=None), state)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_official_checkpoint(HSNet("resnet50", weights=None), str(tmp_path / "missing.pt"))
    with pytest.raises(KeyError, match="unexpected"):
        load_official_checkpoint(HSNet("resnet50", weights=None), {"module.head.weight": torch.zeros(1)})


def test_save_atomic_keeps_old_file_when_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_atomic({"step": 1}, str(path))
    assert torch.load(path) == {"step": 1}

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_atomic({"step": 2}, str(path))
    monkeypatch.undo()
    assert torch.load(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
