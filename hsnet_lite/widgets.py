"""The interactive hypercorrelation explorer of notebook 03 (ipywidgets).

Pick a query position -- click it on the query image, or move two sliders -- and a layer (one
C_l, main paper Eq. 2) or a pyramid level (the mean of its stacked layers, Eq. 3), and see that
query position's correlation over the whole support image. For the stereo pair the ground-truth
disparity marks the true match, so the distance from the correlation peak to it measures what
each layer "finds".

All computation lives in plain functions (:func:`view_options`, :func:`correlation_at`,
:func:`render_view`, :func:`point_at`), so tests call them without a browser; the widget only
wires the controls to them. The picture is an ``ipywidgets.Image`` (PNG bytes): it updates in
place in JupyterLab and its value can be compared in tests. Clicks on it arrive through
``ipyevents``, which reports them in the PNG's own pixels (whatever size the browser shows it
at); without ``ipyevents`` the sliders alone remain.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .backbones import FrozenBackbone
from .datasets import denormalize
from .explore import CorrelationExplorer, load_stereo_pair

View = tuple[str, int]  # ("level", p) or ("layer", index)


@dataclass
class ExplorerSource:
    """One query/support pair the explorer can show.

    ``query`` and ``support`` are uint8 (H, W, 3) images at ``explorer.image_size``;
    ``disparity`` (stereo only) gives the true match (y, x - d) of query pixel (y, x);
    ``support_mask`` (episodes only) is outlined on the support image.
    """

    name: str
    explorer: CorrelationExplorer
    query: np.ndarray
    support: np.ndarray
    disparity: np.ndarray | None = None
    support_mask: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.explorer.image_size


def view_options(explorer: CorrelationExplorer) -> list[tuple[str, View]]:
    """Dropdown entries: every pyramid level (coarse first), then every single layer."""
    opts: list[tuple[str, View]] = []
    for p in sorted(set(explorer.levels), reverse=True):
        ids = explorer.layers_of(p)
        h, w = explorer.corrs[ids[0]].shape[2:]
        opts.append((f"level {p}: mean of {len(ids)} layers ({h}x{w})", ("level", p)))
    for i, p in enumerate(explorer.levels):
        h, w = explorer.corrs[i].shape[2:]
        opts.append((f"layer {i + 1} (level {p}, {h}x{w})", ("layer", i)))
    return opts


def correlation_at(explorer: CorrelationExplorer, view: View, y: float, x: float) -> torch.Tensor:
    """The (Hb, Wb) correlation of query pixel (y, x) for a layer or a level."""
    kind, idx = view
    if kind == "level":
        return explorer.level_map(idx, y, x)
    if kind == "layer":
        return explorer.layer_map(idx, y, x)
    raise ValueError(f"view must be ('level', p) or ('layer', i), got {view}")


def true_match(source: ExplorerSource, y: int, x: int) -> tuple[float, float] | None:
    """Where query pixel (y, x) lies in the support image, when a disparity map is known."""
    if source.disparity is None:
        return None
    d = float(source.disparity[int(y), int(x)])
    return (float(y), float(x) - d) if np.isfinite(d) else None


def view_name(view: View) -> str:
    return f"level {view[1]}" if view[0] == "level" else f"layer {view[1] + 1}"


def describe(source: ExplorerSource, view: View, y: int, x: int) -> dict[str, Any]:
    """Everything the explorer shows for one setting: map, peak, true match and peak error."""
    ex = source.explorer
    cmap = correlation_at(ex, view, y, x)
    peak = ex.peak(cmap)
    match = true_match(source, y, x)
    error = None if match is None else float(np.hypot(peak[0] - match[0], peak[1] - match[1]))
    return {"map": cmap, "peak": peak, "match": match, "error": error, "max": float(cmap.max())}


@dataclass(frozen=True)
class Picture:
    """A rendered view: the PNG, and where the query image's pixels lie in it.

    ``query_box`` = (left, top, right, bottom): the outer edges of the query image's pixels,
    in PNG pixels from the picture's top-left corner (what :func:`point_at` maps back).
    """

    png: bytes
    query_box: tuple[float, float, float, float]


def render_picture(source: ExplorerSource, view: View, y: int, x: int, dpi: int = 80) -> Picture:
    """The query with its point and the correlation over the support image, as a :class:`Picture`."""
    info = describe(source, view, y, x)
    fig = Figure(figsize=(9.0, 3.4), dpi=dpi)
    FigureCanvasAgg(fig)
    ax_q, ax_s = fig.subplots(1, 2)
    ax_q.imshow(source.query)
    ax_q.plot(x, y, "o", ms=11, mfc="none", mec="yellow", mew=2.5)
    ax_q.set_title(f"query, point (y={y}, x={x})", fontsize=10)
    ax_s.imshow(source.support)
    ax_s.imshow(source.explorer.upsampled(info["map"]), cmap="magma", alpha=0.65, vmin=0, vmax=max(info["max"], 1e-6))
    if source.support_mask is not None and source.support_mask.max() > 0:
        ax_s.contour(source.support_mask, levels=[0.5], colors="cyan", linewidths=1.0)
    ax_s.plot(info["peak"][1], info["peak"][0], "o", color="red", ms=7)
    if info["match"] is not None:
        ax_s.plot(info["match"][1], info["match"][0], "x", color="white", ms=11, mew=2.5)
    ax_s.set_title(f"support: correlation of {view_name(view)} (max {info['max']:.2f})", fontsize=10)
    for ax in (ax_q, ax_s):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return Picture(buf.getvalue(), _image_box(ax_q, source.query.shape[:2]))


def _image_box(ax, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The outer pixel edges of an ``imshow`` of ``size`` (H, W) in ``ax``, as (left, top, right,
    bottom) PNG pixels; valid once the figure is drawn (savefig draws it: aspect applied)."""
    h, w = size
    (left, bottom), (right, top) = ax.transData.transform([(-0.5, h - 0.5), (w - 0.5, -0.5)])
    height = ax.figure.bbox.height  # display y grows upwards, PNG rows downwards
    return float(left), float(height - top), float(right), float(height - bottom)


def render_view(source: ExplorerSource, view: View, y: int, x: int, dpi: int = 80) -> bytes:
    """PNG bytes: the query with its point, and the correlation over the support image."""
    return render_picture(source, view, y, x, dpi).png


def point_at(picture: Picture, size: tuple[int, int], px: float, py: float) -> tuple[int, int] | None:
    """The query pixel (y, x) under PNG pixel (px, py) of ``picture`` (query image of ``size``
    (H, W)), or None when (px, py) lies outside the query image (on the support, a title, ...)."""
    left, top, right, bottom = picture.query_box
    if not (left <= px < right and top <= py < bottom):
        return None
    h, w = size
    y = min(int((py - top) / (bottom - top) * h), h - 1)
    x = min(int((px - left) / (right - left) * w), w - 1)
    return y, x


def readout(source: ExplorerSource, view: View, y: int, x: int) -> str:
    """One line of text under the picture."""
    info = describe(source, view, y, x)
    text = (f"{source.name} | {view_name(view)} | red dot: peak at (y={info['peak'][0]:.0f}, "
            f"x={info['peak'][1]:.0f}), correlation {info['max']:.2f}")
    if info["match"] is not None:
        text += (f" | white cross: true match (y={info['match'][0]:.0f}, x={info['match'][1]:.0f}),"
                 f" peak error {info['error']:.1f} px")
    return text


@dataclass
class CorrelationExplorerWidget:
    """Sliders (query y, x), a source and a view dropdown, the picture and a readout.

    Setting any control's ``value`` from code runs :meth:`update`, exactly as a learner's
    drag in the browser does. A click on the query image moves the point there
    (:meth:`click`, called by ``ipyevents`` in the browser or directly by code); ``clicks`` is
    None where ``ipyevents`` is not installed. ``updates`` counts the redraws.
    """

    sources: list[ExplorerSource]
    view: View | None = None
    point: tuple[int, int] | None = None
    updates: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        import ipywidgets as w

        if not self.sources:
            raise ValueError("the explorer needs at least one source")
        self._hold = True
        src = self.sources[0]
        h, wd = src.size
        y, x = self.point if self.point is not None else (h // 2, wd // 2)
        layout = w.Layout(width="440px")
        style = {"description_width": "70px"}
        self.source_dd = w.Dropdown(options=[(s.name, i) for i, s in enumerate(self.sources)], value=0,
                                    description="pair", layout=layout, style=style)
        opts = view_options(src.explorer)
        self.view_dd = w.Dropdown(options=opts, value=self.view or opts[0][1], description="layer(s)",
                                  layout=layout, style=style)
        self.y_slider = w.IntSlider(value=y, min=0, max=h - 1, description="query y", continuous_update=False,
                                    layout=layout, style=style)
        self.x_slider = w.IntSlider(value=x, min=0, max=wd - 1, description="query x", continuous_update=False,
                                    layout=layout, style=style)
        self.image = w.Image(format="png", layout=w.Layout(width="720px"))
        self.picture: Picture | None = None
        self.clicks = _click_events(self.image, self._on_click)
        self.text = w.HTML()
        for control in (self.view_dd, self.y_slider, self.x_slider):
            control.observe(self.update, names="value")
        self.source_dd.observe(self._source_changed, names="value")
        self.ui = w.VBox([w.HBox([self.source_dd, self.view_dd]), w.HBox([self.y_slider, self.x_slider]),
                          self.image, self.text])
        self._hold = False
        self.update()

    @property
    def source(self) -> ExplorerSource:
        return self.sources[self.source_dd.value]

    def state(self) -> dict[str, Any]:
        """The current setting and what it shows (see :func:`describe`)."""
        y, x = self.y_slider.value, self.x_slider.value
        return {"source": self.source.name, "view": self.view_dd.value, "y": y, "x": x,
                **describe(self.source, self.view_dd.value, y, x)}

    def _source_changed(self, change=None) -> None:
        """New pair: keep the point at the same relative place and the same kind of view."""
        old = self.sources[change["old"]] if change is not None else self.source
        new = self.source
        self._hold = True
        (h0, w0), (h1, w1) = old.size, new.size
        y = min(int(self.y_slider.value * h1 / h0), h1 - 1)
        x = min(int(self.x_slider.value * w1 / w0), w1 - 1)
        self.y_slider.max, self.x_slider.max = h1 - 1, w1 - 1
        self.y_slider.value, self.x_slider.value = y, x
        opts = view_options(new.explorer)
        keep = self.view_dd.value if self.view_dd.value in [o[1] for o in opts] else opts[0][1]
        self.view_dd.options = opts
        self.view_dd.value = keep
        self._hold = False
        self.update()

    def update(self, change=None) -> None:
        """Redraw the picture and the readout for the current controls."""
        if self._hold:
            return
        y, x, view = self.y_slider.value, self.x_slider.value, self.view_dd.value
        self.picture = render_picture(self.source, view, y, x)
        self.image.value = self.picture.png
        self.text.value = f"<code>{readout(self.source, view, y, x)}</code>"
        self.updates += 1

    def click(self, px: float, py: float) -> tuple[int, int] | None:
        """A click at PNG pixel (px, py) of the picture: on the query image, the point moves
        there (one redraw) and is returned; elsewhere nothing changes and None is returned."""
        point = point_at(self.picture, self.source.size, px, py)
        if point is None or point == (self.y_slider.value, self.x_slider.value):
            return point
        self._hold = True  # move both sliders, then redraw once
        try:
            self.y_slider.value, self.x_slider.value = point
        finally:
            self._hold = False
        self.update()
        return point

    def _on_click(self, event: dict) -> None:
        """ipyevents' handler: ``dataX``/``dataY`` are the click in the PNG's own pixels."""
        if "dataX" in event and "dataY" in event:
            self.click(event["dataX"], event["dataY"])

    def _repr_mimebundle_(self, **kwargs):
        return self.ui._repr_mimebundle_(**kwargs)


def _click_events(image, handler):
    """Send clicks on ``image`` to ``handler`` with ipyevents; None where it is not installed."""
    try:
        from ipyevents import Event
    except ImportError:
        return None
    events = Event(source=image, watched_events=["click"])
    events.on_dom_event(handler)
    return events


def stereo_source(backbone: FrozenBackbone, size: tuple[int, int] = (192, 288)) -> ExplorerSource:
    """The real stereo pair (left = query, right = support) with its ground-truth disparity."""
    pair = load_stereo_pair(size)
    explorer = CorrelationExplorer.build(backbone, pair["left_t"], pair["right_t"])
    return ExplorerSource("stereo pair (left -> right)", explorer, pair["left"], pair["right"],
                          disparity=pair["disparity"])


def episode_source(backbone: FrozenBackbone, episode: dict, name: str, shot: int = 0) -> ExplorerSource:
    """A few-shot episode: the query against support ``shot``, masked as in Eq. 1."""
    q = episode["query_img"][None]
    s = episode["support_imgs"][shot][None]
    m = episode["support_masks"][shot]
    explorer = CorrelationExplorer.build(backbone, q, s, m[None])
    return ExplorerSource(name, explorer, denormalize(episode["query_img"]),
                          denormalize(episode["support_imgs"][shot]), support_mask=m.numpy())
