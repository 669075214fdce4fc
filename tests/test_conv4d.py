"""Center-pivot 4D conv == dense 4D conv with a kernel zero off the center-pivot cross."""
import itertools

import pytest
import torch

from hsnet_lite import CenterPivotConv4d, Conv4d, center_pivot_mask


def brute_force_conv4d(x, weight, bias, stride, padding):
    """Supplementary Eq. 1 evaluated literally, one output position at a time."""
    b, c, *dims = x.shape
    o, _, *k = weight.shape
    xp = torch.nn.functional.pad(x, sum(([p, p] for p in reversed(padding)), []))
    out_dims = [(d + 2 * p - kk) // s + 1 for d, p, kk, s in zip(dims, padding, k, stride)]
    out = torch.zeros(b, o, *out_dims, dtype=torch.float64)
    for pos in itertools.product(*[range(n) for n in out_dims]):
        sl = tuple(slice(i * s, i * s + kk) for i, s, kk in zip(pos, stride, k))
        window = xp[(slice(None), slice(None)) + sl].double()
        out[(slice(None), slice(None)) + pos] = torch.einsum("bcijkl,ocijkl->bo", window, weight.double())
    return out + bias.double().view(1, -1, 1, 1, 1, 1)


@pytest.mark.parametrize("k,stride", [((3, 3, 3, 3), (1, 1, 1, 1)), ((3, 1, 3, 5), (2, 1, 1, 2)), ((1, 3, 3, 1), (1, 1, 2, 1))])
def test_dense_conv4d_matches_equation_1(k, stride):
    layer = Conv4d(2, 3, k, stride)
    x = torch.randn(2, 2, 5, 4, 6, 5)
    ref = brute_force_conv4d(x, layer.weight.detach(), layer.bias.detach(), layer.stride, layer.padding)
    out = layer(x)
    assert out.shape == ref.shape
    assert torch.allclose(out.double(), ref, atol=1e-5)


CASES = [
    # kernel, support stride, in, out, (Ha, Wa, Hb, Wb)
    (3, 1, 1, 4, (6, 5, 7, 4)),
    (3, 2, 3, 5, (7, 7, 9, 9)),
    (5, 4, 2, 3, (9, 8, 13, 13)),
    ((5, 3, 3, 5), 2, 4, 2, (6, 9, 8, 7)),
    ((5, 5, 3, 3), (4, 2), 3, 4, (5, 5, 25, 11)),
]


@pytest.mark.parametrize("k,s,cin,cout,dims", CASES)
def test_center_pivot_equals_masked_dense(k, s, cin, cout, dims):
    cp = CenterPivotConv4d(cin, cout, k, s)
    dense = cp.to_dense()
    # the dense kernel is zero everywhere off the centre-pivot cross
    off = ~center_pivot_mask(cp.kernel_size)
    assert dense.weight[:, :, off].abs().max() == 0
    assert dense.weight[:, :, ~off].abs().min() > 0
    x = torch.randn(2, cin, *dims)
    out, ref = cp(x), dense(x)
    assert out.shape == ref.shape
    assert out.shape[2:4] == x.shape[2:4]  # query dims keep their size
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()


def test_center_pivot_gradients_match_dense():
    cp = CenterPivotConv4d(2, 3, 3, 2)
    x = torch.randn(1, 2, 5, 5, 6, 6, requires_grad=True)
    cp(x).square().sum().backward()
    g_cp = x.grad.clone()
    x.grad = None
    cp.to_dense()(x).square().sum().backward()
    assert torch.allclose(g_cp, x.grad, atol=1e-4)


def test_center_pivot_mask_counts():
    # 2k^2 - 1 taps for a k^4 kernel: the cost grows with 2k^2 instead of k^4
    for k in (3, 5):
        assert int(center_pivot_mask(k).sum()) == 2 * k * k - 1


@pytest.mark.parametrize("bad,err", [
    (torch.randn(2, 3, 4, 4, 4), ValueError),
    (torch.randn(1, 2, 4, 4, 4, 4), ValueError),
    (torch.ones(1, 3, 4, 4, 4, 4, dtype=torch.long), TypeError),
])
def test_bad_input_named(bad, err):
    with pytest.raises(err, match="CenterPivotConv4d"):
        CenterPivotConv4d(3, 4, 3)(bad)


def test_even_kernel_rejected():
    with pytest.raises(ValueError, match="odd"):
        CenterPivotConv4d(1, 1, 4)
