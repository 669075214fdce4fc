"""The hand-written backward of strided center-pivot layers (hsnet_lite.fast.strided_pivot) equals
autograd through the plain two-conv path."""
import copy

import pytest
import torch

from hsnet_lite import conv4d
from hsnet_lite.conv4d import CenterPivotConv4d, to_channels_last_6d
from hsnet_lite.fast import native
from hsnet_lite.fast.strided_pivot import ConstantOutside, StridedCenterPivot


def run(layer, x, target, custom: bool, monkeypatch):
    """Forward and backward of ``layer`` on a fresh leaf copy of ``x``: (output, x.grad, param grads)."""
    with monkeypatch.context() as m:
        if not custom:
            m.setattr(conv4d.CenterPivotConv4d, "_trains_strided", lambda self, xl: False)
        x = x.detach().clone().requires_grad_(x.requires_grad)
        out = layer(x)
        (out * target).sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad(set_to_none=True)
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("cin,cout,k,s,hb,wb", [(16, 64, 5, 4, 13, 13), (64, 32, 3, 2, 4, 4), (3, 8, (3, 3, 5, 3), (2, 3), 9, 7),
                                             (1, 4, 3, 2, 6, 5)])
@pytest.mark.parametrize("input_grad", [True, False])
def test_strided_layer_backward_equals_autograd(cin, cout, k, s, hb, wb, input_grad, monkeypatch):
    torch.manual_seed(0)
    layer = CenterPivotConv4d(cin, cout, k, s)
    x = to_channels_last_6d(torch.randn(2, cin, 7, 6, hb, wb)).requires_grad_(input_grad)
    with torch.no_grad():
        target = torch.randn_like(layer(x))
    out, gx, grads = run(layer, x, target, True, monkeypatch)
    ref_out, ref_gx, ref_grads = run(layer, x, target, False, monkeypatch)
    assert torch.allclose(out, ref_out, atol=1e-6)
    if input_grad:
        assert torch.allclose(gx, ref_gx, atol=1e-5)
    else:
        assert gx is None and ref_gx is None
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-5 * b.abs().max().item())


def test_training_a_strided_layer_on_the_cpu_uses_it():
    layer = CenterPivotConv4d(4, 8, 5, 4)
    x = to_channels_last_6d(torch.randn(1, 4, 5, 5, 13, 13))
    out = layer(x)
    assert "StridedCenterPivot" in type(out.grad_fn.next_functions[0][0]).__name__
    with torch.no_grad():  # inference keeps the fused path, with the same values
        assert torch.allclose(layer(x), out, atol=1e-6)
    mixing = CenterPivotConv4d(8, 8, 3, 1)  # stride 1: the grouped query conv, not this function
    assert "StridedCenterPivot" not in str(mixing(to_channels_last_6d(torch.randn(1, 8, 5, 5, 2, 2))).grad_fn.next_functions)


def test_gradcheck_in_float64():
    torch.manual_seed(1)
    layer = CenterPivotConv4d(2, 3, 3, 2).double()
    x = to_channels_last_6d(torch.randn(1, 2, 4, 3, 5, 5, dtype=torch.float64)).permute(0, 2, 3, 4, 5, 1)
    x.requires_grad_()
    padding = ((1, 1), (1, 1))
    fn = lambda xl, qw, sw, bias: StridedCenterPivot.apply(xl, qw, sw, bias, (2, 2), padding)  # noqa: E731
    weights = (layer.query_conv.weight, layer.support_conv.weight, layer.query_conv.bias + layer.support_conv.bias)
    assert torch.autograd.gradcheck(fn, (x, *(copy.deepcopy(w.detach()).requires_grad_() for w in weights)))


def with_constant(inner, const, size, rows, cols):
    """The channels-last (B, C, Ha, Wa, H, W) tensor equal to ``const`` (B, C) outside rows x cols
    and to ``inner`` inside, built with autograd so that gradients reach both."""
    b, c, ha, wa = inner.shape[:4]
    x = const.view(b, c, 1, 1, 1, 1).expand(b, c, ha, wa, *size).clone()
    x[:, :, :, :, rows, cols] = inner
    return to_channels_last_6d(x)


# (layer, support size, box of non-constant positions): pivots in and out of the box, the box
# holding no pivot, every pivot inside it, non-square strides
CONSTANT_CASES = [
    ((16, 64, 5, 4), (13, 13), (slice(2, 11), slice(3, 9))),
    ((16, 64, 5, 4), (13, 13), (slice(5, 7), slice(1, 3))),
    ((16, 64, 5, 4), (13, 13), (slice(0, 13), slice(0, 13))),
    ((3, 8, (3, 3, 5, 3), (2, 3)), (9, 7), (slice(1, 6), slice(2, 7))),
    ((1, 4, 3, 2), (6, 5), (slice(2, 3), slice(0, 5))),
]


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("conf,size,box", CONSTANT_CASES)
def test_constant_pivots_give_the_layer_and_its_gradients(conf, size, box, frozen):
    """Told where its input is constant, a trained strided layer runs the query conv once for
    those pivots: same output and same gradients (input block, constant, weights) as the plain
    layer; with frozen weights, the input's gradients alone."""
    cin, cout, k, s = conf
    torch.manual_seed(0)
    layer = CenterPivotConv4d(cin, cout, k, s).requires_grad_(not frozen)
    rows, cols = box
    g = torch.Generator().manual_seed(1)
    inner0 = torch.randn(2, cin, 6, 5, rows.stop - rows.start, cols.stop - cols.start, generator=g)
    const0 = torch.randn(2, cin, generator=g)
    results = []
    for told in (False, True):
        inner, const = inner0.clone().requires_grad_(), const0.clone().requires_grad_()
        x = with_constant(inner, const, size, rows, cols)
        out = layer(x, ConstantOutside(const, rows, cols) if told else None)
        if told:
            assert "StridedCenterPivot" in type(out.grad_fn.next_functions[0][0]).__name__
        target = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        (out * target).sum().backward()
        results.append([out.detach(), inner.grad, const.grad, *(p.grad.clone() for p in layer.parameters() if not frozen)])
        layer.zero_grad(set_to_none=True)
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-5 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("conf,size,box", CONSTANT_CASES)
def test_constant_pivots_at_inference(conf, size, box, monkeypatch):
    """At inference (oneDNN's packed convs on the CPU), a layer told where its input is constant
    gives the plain layer's output, and its query conv reads only the pivots inside the box."""
    cin, cout, k, s = conf
    torch.manual_seed(0)
    layer = CenterPivotConv4d(cin, cout, k, s).eval()
    rows, cols = box
    g = torch.Generator().manual_seed(1)
    inner = torch.randn(2, cin, 6, 5, rows.stop - rows.start, cols.stop - cols.start, generator=g)
    const = torch.randn(2, cin, generator=g)
    x = with_constant(inner, const, size, rows, cols)
    read = []
    pivot_conv = CenterPivotConv4d._pivot_conv

    def recorded(self, pivots):
        read.append(pivots.shape[3:5])
        return pivot_conv(self, pivots)
    monkeypatch.setattr(CenterPivotConv4d, "_pivot_conv", recorded)
    with torch.no_grad():
        with native.disabled():  # the plain layer's query conv on every pivot (not the fused kernel)
            plain = layer(x)
        told = layer(x, ConstantOutside(const, rows, cols))
        told_again = layer(x, ConstantOutside(const, rows, cols))  # with the packed kernels kept
    assert torch.allclose(told, plain, atol=1e-5 * plain.abs().max().item())
    assert torch.equal(told_again, told)
    r0, r1, c0, c1 = ConstantOutside(const, rows, cols).pivot_box(layer.support_stride, size)
    box_read = [(r1 - r0, c1 - c0)] if r1 > r0 and c1 > c0 else []
    assert read == [plain.shape[4:6]] + box_read * 2


def test_gradcheck_with_constant_pivots_in_float64():
    torch.manual_seed(1)
    layer = CenterPivotConv4d(2, 3, 3, 2).double()
    x = to_channels_last_6d(torch.randn(1, 2, 4, 3, 7, 5, dtype=torch.float64)).permute(0, 2, 3, 4, 5, 1)
    padding = ((1, 1), (1, 1))
    box = ConstantOutside(None, slice(2, 5), slice(1, 3)).pivot_box((2, 2), (7, 5))
    assert box == (1, 3, 1, 2)  # pivots (1..2, 1) read x, the other ten the constant

    def fn(xl, const, qw, sw, bias):
        return StridedCenterPivot.apply(xl, qw, sw, bias, (2, 2), padding, const, box)
    weights = (layer.query_conv.weight, layer.support_conv.weight, layer.query_conv.bias + layer.support_conv.bias)
    inputs = (x, torch.randn(1, 2, dtype=torch.float64), *(w.detach().clone() for w in weights))
    assert torch.autograd.gradcheck(fn, tuple(t.detach().clone().requires_grad_() for t in inputs))


@pytest.mark.parametrize("size", [(4, 4), (3, 5), (1, 1)])
def test_outside_box_covers_every_pivot_outside_the_box_once(size):
    from itertools import product

    from hsnet_lite.fast.strided_pivot import outside_box
    n, m = size
    for r0, r1, c0, c1 in product(range(n + 1), range(n + 1), range(m + 1), range(m + 1)):
        if r1 < r0 or c1 < c0:
            continue
        cover = torch.zeros(n, m, dtype=torch.int)
        for rows, cols in outside_box((r0, r1, c0, c1), size):
            cover[rows, cols] += 1
        expected = torch.ones(n, m, dtype=torch.int)
        expected[r0:r1, c0:c1] = 0
        assert torch.equal(cover, expected), (r0, r1, c0, c1)
