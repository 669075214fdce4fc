"""CapturedHSNet (hsnet_lite.cuda_graphs): an episode replayed as one CUDA graph gives the eager
model's logits and masks, and refuses what it cannot replay. The replay itself needs a CUDA GPU
(these tests run on the lent GPU machine; CI, which has none, runs the CPU-side checks only)."""
import pytest
import torch

from hsnet_lite import HSNet
from hsnet_lite.cuda_graphs import CapturedHSNet, check_same_signature, input_signature, weights_fingerprint
from hsnet_lite.model import mask_from_logits
from hsnet_lite.validation import check_episode

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the lent GPU machine)")
SIZE = 96


def episode(k: int, seed: int, device: torch.device | str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 3, SIZE, SIZE, generator=g)
    s = torch.randn(1, k, 3, SIZE, SIZE, generator=g)
    m = torch.zeros(1, k, SIZE, SIZE)
    for i in range(k):
        top = int(torch.randint(0, SIZE // 2, (1,), generator=g))
        m[0, i, top:top + SIZE // 2, SIZE // 4:SIZE // 4 + SIZE // 3] = 1
    return q.to(device), s.to(device), m.to(device)


@pytest.fixture(scope="module")
def model() -> HSNet:
    torch.manual_seed(0)
    return HSNet("efficientnet-lite0", weights=None).eval()


@pytest.mark.parametrize("k", [1, 2])
def test_checked_forward_and_mask_from_logits_are_the_models_inference(model, k):
    """What a graph records (checked_forward without the CPU's crops and buffers, then
    mask_from_logits) equals forward / predict_mask."""
    q, s, m = episode(k, seed=k)
    with torch.no_grad():
        logits = model(q, s, m)
        recorded = model.checked_forward(q, *check_episode(q, s, m))
        assert recorded.shape == logits.shape == ((1, 2, SIZE, SIZE) if k == 1 else (1, k, 2, SIZE, SIZE))
        assert (recorded - logits).abs().max().item() < 1e-5
        assert torch.equal(mask_from_logits(logits), model.predict_mask(q, s, m))


def test_signature_check_names_the_input_that_differs():
    q, s, m = episode(1, seed=0)
    inputs = (q, *check_episode(q, s, m))
    sig = input_signature(inputs)
    check_same_signature(sig, (q.clone(), *check_episode(*episode(1, seed=5))))  # same shapes: no error
    q2, s2, m2 = episode(2, seed=0)
    with pytest.raises(ValueError, match=r"support_imgs has shape \(1, 2, 3, 96, 96\).*recorded for shape \(1, 1, 3, 96, 96\)"):
        check_same_signature(sig, (q2, s2, m2))
    with pytest.raises(ValueError, match=r"query_img has shape \(1, 3, 96, 96\), torch.float64 on cpu"):
        check_same_signature(sig, (q.double(), *inputs[1:]))
    with pytest.raises(ValueError, match=r"support_masks has shape \(1, 1, 96, 96\), torch.float16"):
        check_same_signature(sig, (*inputs[:2], inputs[2].half()))


def test_weights_fingerprint_sees_in_place_edits_and_loaded_weights(model):
    other = HSNet("efficientnet-lite0", weights=None).eval()
    fresh = weights_fingerprint(other)
    assert weights_fingerprint(other) == fresh  # nothing changed, nothing seen
    with torch.no_grad():
        other.learner.decoder.conv1.weight.add_(0)  # an in-place edit bumps the version counter
    edited = weights_fingerprint(other)
    assert edited != fresh
    other.load_state_dict(model.state_dict())
    assert weights_fingerprint(other) != edited


def test_capture_refuses_a_cpu_episode(model):
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA GPU: query_img is on cpu"):
        CapturedHSNet(model, *episode(1, seed=0))


def test_capture_checks_the_episode_first(model):
    q, s, m = episode(1, seed=0)
    with pytest.raises(ValueError, match="support_masks must be binary"):
        CapturedHSNet(model, q, s, m * 2)


@needs_cuda
@pytest.mark.parametrize("k", [1, 3])
def test_replay_gives_the_eager_logits_and_masks_for_new_episodes(model, k):
    gpu = torch.device("cuda")
    net = HSNet("efficientnet-lite0", weights=None).eval().to(gpu)
    net.load_state_dict(model.state_dict())
    captured = CapturedHSNet(net, *episode(k, seed=10, device=gpu))
    for seed in (11, 12):  # replays with inputs other than the recorded example
        q, s, m = episode(k, seed=seed, device=gpu)
        with torch.no_grad():
            eager, eager_mask = net(q, s, m), net.predict_mask(q, s, m)
        logits = captured(q, s, m)
        assert logits.shape == eager.shape and (logits - eager).abs().max().item() < 1e-5
        agree = (captured.predict_mask(q, s, m) == eager_mask).float().mean().item()
        assert agree > 0.999
        assert logits.data_ptr() != captured.logits.data_ptr()  # a new tensor, not the replay buffer
    q1 = episode(k, seed=11, device=gpu)
    q2 = episode(k, seed=12, device=gpu)
    assert not torch.equal(captured(*q1), captured(*q2))  # the inputs reach the graph


@needs_cuda
def test_replay_refuses_other_shapes_and_changed_weights(model):
    gpu = torch.device("cuda")
    net = HSNet("efficientnet-lite0", weights=None).eval().to(gpu)
    captured = CapturedHSNet(net, *episode(1, seed=0, device=gpu))
    with pytest.raises(ValueError, match="support_imgs has shape"):
        captured(*episode(2, seed=0, device=gpu))
    with pytest.raises(ValueError, match=r"query_img has shape .* on cpu"):
        captured(*episode(1, seed=0))
    with torch.no_grad():
        net.learner.decoder.conv1.weight.mul_(2)
    with pytest.raises(RuntimeError, match="weights changed"):
        captured(*episode(1, seed=0, device=gpu))
