"""The fused center-pivot kernel (hsnet_lite/fast/csrc/center_pivot.c) equals PyTorch's convolutions."""
import pytest
import torch

from hsnet_lite import CenterPivotConv4d
from hsnet_lite.conv4d import to_channels_last_6d
from hsnet_lite.fast import native
from hsnet_lite.fast.support_crop import CroppedCorrelation, window

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C compiler on this machine")


def assert_close(got, want, rel=2e-6):
    """Equal up to fp32 rounding of sums of many products: within ``rel`` of the largest value."""
    assert got.shape == want.shape
    err, scale = (got - want).abs().max().item(), want.abs().max().item()
    assert err <= rel * scale, f"max |diff| {err:.2e} for values up to {scale:.2e}"


def fused_inputs(b, c, o, kq, ks, dims, seed=0, bias=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, *dims, c, generator=gen) - 0.3  # (B, Ha, Wa, Hb, Wb, C), some values negative
    wq = torch.randn(o, c, *kq, generator=gen)
    ws = torch.randn(o, c, *ks, generator=gen)
    return x, wq, ws, (torch.randn(o, generator=gen) if bias else None)


@needs_compiler
def test_kernel_builds_and_loads_here():
    assert native.available(), native.status()
    assert "compiled" in native.status()


KERNEL_CASES = [
    # B, C, O, query kernel, support kernel, stride, padding, (Ha, Wa, Hb, Wb)
    (1, 3, 16, (3, 3), (3, 3), (2, 2), (1, 1), (13, 13, 13, 13)),   # f3 layer 1 (ResNet50)
    (1, 4, 16, (5, 5), (5, 5), (4, 4), (2, 2), (12, 50, 50, 50)),   # f1 layer 1, on 12 query rows: several bands
    (2, 6, 32, (5, 5), (5, 5), (4, 4), (2, 2), (7, 9, 25, 25)),     # two batch elements, two output blocks
    (1, 1, 16, (3, 5), (5, 3), (2, 3), (2, 1), (5, 7, 9, 11)),      # rectangular kernels and strides
    (1, 23, 16, (5, 5), (5, 5), (4, 4), (2, 2), (6, 6, 25, 25)),    # ResNet101 f2 layer 1's 23 channels
    (1, 5, 16, (5, 5), (5, 5), (4, 4), (0, 0), (4, 5, 13, 9)),      # no padding: a cropped support window
    (1, 2, 16, (3, 3), (5, 5), (4, 4), (2, 2), (3, 2, 2, 3)),       # support smaller than the kernel
    (1, 3, 16, (1, 1), (3, 3), (1, 1), (1, 1), (1, 1, 4, 4)),       # one query position, stride 1
    (1, 8, 16, (11, 11), (7, 7), (3, 2), (3, 3), (12, 13, 10, 9)),  # the largest query kernel
]


@needs_compiler
@pytest.mark.parametrize("b,c,o,kq,ks,stride,padding,dims", KERNEL_CASES)
def test_fused_kernel_equals_two_convs(b, c, o, kq, ks, stride, padding, dims):
    x, wq, ws, bias = fused_inputs(b, c, o, kq, ks, dims)
    got = native.center_pivot(x, wq, ws, bias, stride, padding)
    want = native.reference_center_pivot(x, wq, ws, bias, stride, padding)
    assert_close(got, want)


@needs_compiler
def test_fused_kernel_equals_two_convs_on_random_geometries():
    """Sizes from 1 up, odd kernels 1-5, strides 1-4, padding k//2 or none, 16 or 32 outputs."""
    gen = torch.Generator().manual_seed(1)
    compared = 0
    while compared < 40:
        b, ha, wa, hb, wb, c = (int(v) for v in torch.randint(1, 13, (6,), generator=gen))
        b, c = 1 + b % 2, 1 + c % 7
        kq = tuple(1 + 2 * int(v) for v in torch.randint(0, 3, (2,), generator=gen))
        ks = tuple(1 + 2 * int(v) for v in torch.randint(0, 3, (2,), generator=gen))
        stride = tuple(int(v) for v in torch.randint(1, 5, (2,), generator=gen))
        padding = tuple(k // 2 if int(v) else 0 for k, v in zip(ks, torch.randint(0, 2, (2,), generator=gen)))
        if hb + 2 * padding[0] < ks[0] or wb + 2 * padding[1] < ks[1]:
            continue  # no output
        o = 16 * int(torch.randint(1, 3, (1,), generator=gen))
        x, wq, ws, bias = fused_inputs(b, c, o, kq, ks, (ha, wa, hb, wb), seed=compared)
        assert_close(native.center_pivot(x, wq, ws, bias, stride, padding),
                     native.reference_center_pivot(x, wq, ws, bias, stride, padding))
        compared += 1


@needs_compiler
def test_fused_kernel_without_bias_and_with_packed_kernels():
    x, wq, ws, _ = fused_inputs(1, 4, 16, (5, 5), (5, 5), (7, 7, 13, 13), bias=False)
    packed = (native.pack_kernel(wq), native.pack_kernel(ws))
    got = native.center_pivot(x, wq, ws, None, (4, 4), (2, 2), packed)
    want = native.reference_center_pivot(x, wq, ws, None, (4, 4), (2, 2))
    assert_close(got, want)


@needs_compiler
def test_fused_kernel_gives_the_same_bits_on_any_number_of_threads():
    """Each output is summed by one thread in a fixed order, so the thread count changes nothing."""
    x, wq, ws, bias = fused_inputs(1, 4, 16, (5, 5), (5, 5), (9, 40, 25, 25))
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(native.center_pivot(x, wq, ws, bias, (4, 4), (2, 2)))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@needs_compiler
def test_fused_kernel_large_output_is_streamed_and_correct():
    """An output over 8 MB is written with non-temporal stores; the values must not change."""
    x, wq, ws, bias = fused_inputs(1, 4, 16, (5, 5), (5, 5), (30, 30, 50, 50))  # 11 MB of output
    got = native.center_pivot(x, wq, ws, bias, (4, 4), (2, 2))
    want = native.reference_center_pivot(x, wq, ws, bias, (4, 4), (2, 2))
    assert got.numel() * 4 > 8 << 20
    assert_close(got, want)


@needs_compiler
def test_fused_kernel_rejects_what_it_cannot_compute():
    x, wq, ws, bias = fused_inputs(1, 3, 16, (3, 3), (3, 3), (5, 5, 5, 5))
    with pytest.raises(ValueError, match="fp32"):
        native.center_pivot(x.double(), wq, ws, bias, (2, 2), (1, 1))
    with pytest.raises(ValueError, match="fp32"):
        native.center_pivot(x, wq.double(), ws, bias, (2, 2), (1, 1))
    with pytest.raises(ValueError, match="multiple of 16"):
        native.center_pivot(x, wq[:8], ws[:8], bias[:8], (2, 2), (1, 1))
    with pytest.raises(ValueError, match="contiguous"):
        native.center_pivot(x.transpose(1, 2), wq, ws, bias, (2, 2), (1, 1))
    with pytest.raises(ValueError, match=r"\(B, Ha, Wa, Hb, Wb, 3\)"):
        native.center_pivot(x[..., :2], wq, ws, bias, (2, 2), (1, 1))
    with pytest.raises(ValueError, match="odd"):
        native.center_pivot(x, torch.randn(16, 3, 2, 2), ws, bias, (2, 2), (1, 1))


SQUEEZE_LAYERS = [  # in, out, kernel, stride, (Ha, Wa, Hb, Wb): HSNet's squeezing layers, fewer query positions
    (3, 16, 3, 2, (13, 13, 13, 13)),   # f3 layer 1: tiles along each map's rows
    (6, 16, 5, 4, (10, 12, 25, 25)),   # f2 layer 1
    (4, 16, 5, 4, (4, 6, 50, 50)),     # f1 layer 1
    (16, 64, 5, 4, (6, 9, 13, 13)),    # f1 layer 2: few outputs per map, tiles across maps
    (64, 128, 3, 2, (5, 7, 4, 4)),     # layer 3
]


@needs_compiler
@pytest.mark.parametrize("cin,cout,k,s,dims", SQUEEZE_LAYERS)
def test_squeezing_layer_runs_fused_and_equals_the_dense_conv(cin, cout, k, s, dims):
    cp = CenterPivotConv4d(cin, cout, k, s).eval()
    x = to_channels_last_6d(torch.rand(1, cin, *dims))
    with torch.no_grad():
        assert cp.runs_fused(x.permute(0, 2, 3, 4, 5, 1))
        out = cp(x)
        ref = cp.to_dense()(x)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()


@needs_compiler
def test_fused_layer_equals_its_pytorch_path():
    cp = CenterPivotConv4d(4, 16, 5, 4).eval()
    x = to_channels_last_6d(torch.rand(2, 4, 9, 11, 25, 25))
    with torch.no_grad():
        fused = cp(x)
        with native.disabled():
            assert not cp.runs_fused(x.permute(0, 2, 3, 4, 5, 1))
            plain = cp(x)
        assert cp.runs_fused(x.permute(0, 2, 3, 4, 5, 1))  # on again after the block
    assert torch.allclose(fused, plain, atol=1e-5), (fused - plain).abs().max()


@needs_compiler
def test_fused_layer_on_a_cropped_window_equals_the_full_tensor():
    """The first layer on the support window it reads (hsnet_lite.fast.support_crop) runs the
    kernel without padding; it must equal the layer on the full, zero-padded tensor."""
    cp = CenterPivotConv4d(4, 16, 5, 4).eval()
    rows, cols = window(9, 30, 50, 5, 4), window(3, 21, 50, 5, 4)  # support positions 9..30 x 3..21 kept
    crop = torch.zeros(1, 4, 6, 7, rows.length, cols.length)
    r0, c0 = 9 - rows.start, 3 - cols.start
    crop[..., r0 : r0 + 22, c0 : c0 + 19] = torch.rand(1, 4, 6, 7, 22, 19)  # zero outside them
    corr = CroppedCorrelation(to_channels_last_6d(crop), rows, cols)
    with torch.no_grad():
        got = cp.forward_cropped(corr)
        want = cp(corr.to_full())
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_layers_outside_the_fused_kernel_keep_their_paths():
    x = to_channels_last_6d(torch.rand(1, 16, 5, 5, 7, 7)).permute(0, 2, 3, 4, 5, 1)
    assert not CenterPivotConv4d(16, 24, 3, 2).runs_fused(x)  # outputs not a multiple of 16
    assert not CenterPivotConv4d(16, 64, 3, 1).runs_fused(x)  # a mixing layer (no stride): oneDNN
    assert not CenterPivotConv4d(16, 16, 3, 1).runs_fused(x)  # no support stride
    cp = CenterPivotConv4d(16, 16, 3, 2)
    assert not cp.runs_fused(x)  # autograd records: training runs the hand-written backward
    with torch.no_grad():
        assert not cp.runs_fused(x.double())
        assert cp.runs_fused(x) == native.available()


@needs_compiler
def test_fused_layer_follows_weight_updates():
    """The packed kernels are rebuilt when a weight changes in place (an optimiser step)."""
    cp = CenterPivotConv4d(3, 16, 3, 2).eval()
    x = to_channels_last_6d(torch.rand(1, 3, 7, 7, 7, 7))
    with torch.no_grad():
        before = cp(x)
        cp.support_conv.weight.mul_(2)
        after = cp(x)
        cp.support_conv.weight.div_(2)
        again = cp(x)
    assert not torch.allclose(before, after)
    assert torch.equal(before, again)


@needs_compiler
def test_fused_layer_training_gradients_are_unchanged():
    """With autograd recording, the layer runs its differentiable path and still equals the dense conv."""
    cp = CenterPivotConv4d(3, 16, 3, 2)
    x = torch.rand(1, 3, 7, 7, 7, 7, requires_grad=True)
    out = cp(x)
    ref = cp.to_dense()(x)
    assert torch.allclose(out, ref, atol=1e-5)
    out.sum().backward()
    assert x.grad is not None and cp.query_conv.weight.grad is not None


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("HSNET_LITE_NATIVE", "0")
    monkeypatch.setattr(native, "_state", {})
    assert not native.available()
    assert "HSNET_LITE_NATIVE" in native.status()
    with pytest.raises(RuntimeError, match="not available"):
        native.center_pivot(*fused_inputs(1, 3, 16, (3, 3), (3, 3), (5, 5, 5, 5)), (2, 2), (1, 1))


def test_a_failed_build_falls_back_with_its_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("HSNET_LITE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    monkeypatch.setattr(native, "_state", {})
    assert not native.available()
    assert "false failed" in native.status()
    assert not list(tmp_path.iterdir())  # no partial library left behind
    cp = CenterPivotConv4d(3, 16, 3, 2).eval()
    x = to_channels_last_6d(torch.rand(1, 3, 5, 5, 5, 5))
    with torch.no_grad():
        assert torch.allclose(cp(x), cp.to_dense()(x), atol=1e-5)  # the PyTorch path runs instead


@needs_compiler
def test_the_build_is_cached_per_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("HSNET_LITE_CACHE", str(tmp_path))
    first = native._build(native.compiler())
    stamp = first.stat().st_mtime_ns
    second = native._build(native.compiler())
    assert first == second and second.stat().st_mtime_ns == stamp  # found, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


@needs_compiler
def test_kernel_on_random_geometries_under_sanitizers():
    """scripts/center_pivot_fuzz.sh: the C kernel alone, built with AddressSanitizer and UBSan, on
    hundreds of random geometries against a float64 loop (no out-of-bounds access, no disagreement)."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "center_pivot_fuzz.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "all trials agree (0 bad" in done.stdout
