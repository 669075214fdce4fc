"""The hypercorrelation explorer (hsnet_lite.widgets): callbacks give the right maps and
setting a control's value from code redraws the picture, as a drag in the browser does."""
import numpy as np
import pytest
import torch

from hsnet_lite.explore import CorrelationExplorer
from hsnet_lite.widgets import (CorrelationExplorerWidget, ExplorerSource, correlation_at, describe, episode_source,
                                point_at, readout, render_picture, render_view, true_match, view_options)

pytest.importorskip("ipywidgets")


def fake_source(name="fake", size=(32, 48), disparity=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    grids = [(8, 12), (8, 12), (4, 6), (2, 3)]
    corrs = [torch.rand(h, w, h, w, generator=g) for h, w in grids]
    explorer = CorrelationExplorer(corrs, [1, 1, 2, 3], size)
    img = np.zeros((*size, 3), np.uint8)
    disp = np.full(size, 4.0) if disparity else None
    return ExplorerSource(name, explorer, img, img, disparity=disp)


def test_view_options_list_levels_then_layers():
    opts = view_options(fake_source().explorer)
    assert [v for _, v in opts] == [("level", 3), ("level", 2), ("level", 1),
                                    ("layer", 0), ("layer", 1), ("layer", 2), ("layer", 3)]
    assert opts[2][0].startswith("level 1: mean of 2 layers")


def test_callback_returns_the_maps_of_the_position():
    src = fake_source()
    ex = src.explorer
    # image pixel (20, 30) of a 32x48 image is cell (5, 7) of an 8x12 grid
    assert torch.equal(correlation_at(ex, ("layer", 0), 20, 30), ex.corrs[0][5, 7])
    assert torch.equal(correlation_at(ex, ("level", 1), 20, 30), (ex.corrs[0][5, 7] + ex.corrs[1][5, 7]) / 2)
    assert torch.equal(correlation_at(ex, ("level", 3), 31, 47), ex.corrs[3][1, 2])
    with pytest.raises(ValueError):
        correlation_at(ex, ("pixel", 0), 0, 0)


def test_describe_peak_and_true_match():
    src = fake_source()
    info = describe(src, ("layer", 2), 10, 20)
    cmap = src.explorer.corrs[2][1, 2]  # pixel (10, 20) of 32x48 is cell (1, 2) of a 4x6 grid
    assert torch.equal(info["map"], cmap)
    assert info["peak"] == src.explorer.peak(cmap)
    assert info["match"] == true_match(src, 10, 20) == (10.0, 16.0)
    assert info["error"] == pytest.approx(np.hypot(info["peak"][0] - 10, info["peak"][1] - 16))
    assert "peak error" in readout(src, ("layer", 2), 10, 20)
    assert "peak error" not in readout(fake_source(disparity=False), ("layer", 2), 10, 20)


def test_render_view_is_png_and_depends_on_the_position():
    src = fake_source()
    a, b = render_view(src, ("layer", 0), 5, 5), render_view(src, ("layer", 0), 25, 40)
    assert a[:8] == b"\x89PNG\r\n\x1a\n"
    assert a != b
    assert render_view(src, ("layer", 0), 5, 5) == a  # deterministic


def test_setting_slider_values_from_code_fires_the_callback():
    widget = CorrelationExplorerWidget([fake_source()], view=("layer", 0), point=(5, 5))
    assert widget.updates == 1
    first_png, first_text = widget.image.value, widget.text.value
    widget.x_slider.value = 40
    assert widget.updates == 2
    assert widget.image.value != first_png and widget.text.value != first_text
    assert widget.state()["x"] == 40
    assert torch.equal(widget.state()["map"], widget.source.explorer.layer_map(0, 5, 40))
    widget.y_slider.value = 30
    widget.view_dd.value = ("level", 2)
    assert widget.updates == 4
    assert torch.equal(widget.state()["map"], widget.source.explorer.level_map(2, 30, 40))


def test_switching_source_rescales_point_and_redraws_once():
    small = fake_source("small", size=(32, 48))
    big = fake_source("big", size=(64, 96), seed=1)
    widget = CorrelationExplorerWidget([small, big], view=("level", 2), point=(16, 24))
    before = widget.updates
    widget.source_dd.value = 1
    assert widget.updates == before + 1
    assert (widget.y_slider.max, widget.x_slider.max) == (63, 95)
    assert (widget.y_slider.value, widget.x_slider.value) == (32, 48)
    assert widget.view_dd.value == ("level", 2)
    assert widget.state()["source"] == "big"


def block_source(size=(32, 48), block=8):
    """A fake source whose query is a grid of 8x8-pixel blocks, each of its own colour."""
    src = fake_source(size=size)
    rows, cols = size[0] // block, size[1] // block
    colours = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), -1) * [60, 40] + [20, 20]
    query = np.zeros((*size, 3), np.uint8)
    query[..., :2] = colours.repeat(block, 0).repeat(block, 1)
    query[..., 2] = 200
    return ExplorerSource(src.name, src.explorer, query, src.support, disparity=src.disparity)


def test_point_at_maps_the_picture_back_to_the_query_pixel_drawn_there():
    from PIL import Image
    import io

    src, block = block_source(), 8
    pic = render_picture(src, ("layer", 0), 31, 47)  # the point's marker in the bottom-right block
    png = np.asarray(Image.open(io.BytesIO(pic.png)).convert("RGB")).astype(int)
    left, top, right, bottom = pic.query_box
    assert 0 < left < right < png.shape[1] / 2 and 0 < top < bottom < png.shape[0]
    checked = 0
    for y in range(block // 2, 32, block):
        for x in range(block // 2, 48, block):
            if y > 20 and x > 36:
                continue  # under the marker
            px = left + (x + 0.5) / 48 * (right - left)
            py = top + (y + 0.5) / 32 * (bottom - top)
            assert point_at(pic, (32, 48), px, py) == (y, x)
            assert np.abs(png[int(py), int(px)] - src.query[y, x]).max() <= 2  # that pixel shows query[y, x]
            checked += 1
    assert checked == 23
    # the box's edges are the image's edges (drawn over by the axes' 1-pixel frame), to 2 pixels
    (l, t, r, b), ym, xm = (round(v) for v in pic.query_box), round((top + bottom) / 2), round((left + right) / 4)
    for outside in (png[ym, l - 2], png[ym, r + 2], png[t - 2, xm], png[b + 2, xm]):
        assert outside.tolist() == [255, 255, 255]
    for inside, (y, x) in [(png[ym, l + 2], (16, 0)), (png[ym, r - 2], (16, 47)),
                           (png[t + 2, xm], (0, 12)), (png[b - 2, xm], (31, 12))]:
        assert np.abs(inside - src.query[y, x]).max() <= 2
    assert point_at(pic, (32, 48), left + 0.01, top + 0.01) == (0, 0)
    assert point_at(pic, (32, 48), right - 0.01, bottom - 0.01) == (31, 47)
    for px, py in [(left - 1, top + 5), (right + 1, top + 5), (left + 5, top - 1), (left + 5, bottom),
                   (png.shape[1] * 0.75, png.shape[0] / 2)]:  # beside the query, and on the support image
        assert point_at(pic, (32, 48), px, py) is None


def test_a_click_on_the_query_image_moves_the_point_and_redraws_once():
    widget = CorrelationExplorerWidget([block_source()], view=("layer", 0), point=(5, 5))
    left, top, right, bottom = widget.picture.query_box
    first, before = widget.image.value, widget.updates
    px, py = left + (40 + 0.5) / 48 * (right - left), top + (20 + 0.5) / 32 * (bottom - top)
    assert widget.click(px, py) == (20, 40)
    assert (widget.y_slider.value, widget.x_slider.value) == (20, 40) and widget.updates == before + 1
    assert widget.image.value != first and widget.image.value == render_view(widget.source, ("layer", 0), 20, 40)
    assert torch.equal(widget.state()["map"], widget.source.explorer.layer_map(0, 20, 40))
    assert widget.click(px, py) == (20, 40) and widget.updates == before + 1  # same point: no redraw
    assert widget.click(right + 50, (top + bottom) / 2) is None  # on the support image: nothing moves
    assert (widget.y_slider.value, widget.x_slider.value) == (20, 40) and widget.updates == before + 1


def test_ipyevents_clicks_reach_the_widget():
    pytest.importorskip("ipyevents")
    widget = CorrelationExplorerWidget([block_source()], view=("layer", 0), point=(5, 5))
    assert widget.clicks is not None and widget.clicks.source is widget.image
    assert "click" in widget.clicks.watched_events
    left, top, right, bottom = widget.picture.query_box
    event = {"type": "click", "dataX": left + (10 + 0.5) / 48 * (right - left), "dataY": top + (30 + 0.5) / 32 * (bottom - top)}
    widget.clicks._handle_mouse_msg(None, event, [])  # what a click in the browser delivers
    assert (widget.y_slider.value, widget.x_slider.value) == (30, 10)
    widget.clicks._handle_mouse_msg(None, {"type": "click", "relativeX": 3}, [])  # no image coordinates
    assert (widget.y_slider.value, widget.x_slider.value) == (30, 10)


def test_without_ipyevents_the_sliders_remain(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ipyevents", None)  # import ipyevents now raises ImportError
    widget = CorrelationExplorerWidget([block_source()], view=("layer", 0), point=(5, 5))
    assert widget.clicks is None
    widget.x_slider.value = 40
    assert widget.state()["x"] == 40 and widget.updates == 2


def test_episode_source_masks_the_support():
    from hsnet_lite.datasets import load_fixed_episodes

    class TinyBackbone(torch.nn.Module):
        feature_levels = [1, 3]

        def forward(self, img):
            return [torch.nn.functional.avg_pool2d(img, 8) + 3, torch.nn.functional.avg_pool2d(img, 32) + 3]

    ep = load_fixed_episodes(fold=0, shot=1, img_size=64)[0]
    src = episode_source(TinyBackbone(), ep, "ep0")
    mask = ep["support_masks"][0]
    assert src.support_mask.shape == (64, 64) and src.query.dtype == np.uint8
    cmap = src.explorer.layer_map(0, 10, 10)  # (8, 8) support cells
    outside = torch.nn.functional.interpolate(mask[None, None], size=(8, 8), mode="bilinear",
                                              align_corners=True)[0, 0] == 0
    assert float(cmap[outside].abs().max()) == 0.0  # Eq. 1: nothing correlates outside the mask
