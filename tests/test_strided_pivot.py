"""The hand-written backward of strided center-pivot layers (hsnet_lite.strided_pivot) equals
autograd through the plain two-conv path."""
import copy

import pytest
import torch

from hsnet_lite import conv4d
from hsnet_lite.conv4d import CenterPivotConv4d, to_channels_last_6d
from hsnet_lite.strided_pivot import StridedCenterPivot


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
