"""The explorer works for a learner: JupyterLab (headless) + Chromium, driven by Playwright.

Starts JupyterLab on 127.0.0.1 (free port, random token) in a temporary folder holding the
cells of ``notebooks/03_hypercorrelation.ipynb`` tagged ``explorer`` (set-up, backbone,
explorer), runs them in the browser, moves the "query x" slider and checks that the picture
changes, then clicks on the query image and checks that both sliders move to the pixel clicked
(through ipyevents). The widget's screenshot is saved as ``figures/explorer_browser.png``.

Skipped, with the reason, where Chromium or the Playwright package is missing
(``make setup`` installs both when it can).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hsnet_lite.teaching import figures_dir
from hsnet_lite.widgets import ExplorerSource, point_at, render_picture

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_hypercorrelation.ipynb"
SCREENSHOT_NAME = "explorer_browser.png"  # saved in figures_dir(): figures/ unless $HSNET_LITE_FIGURES is set
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def explorer_notebook(target: Path) -> None:
    """Write the notebook's ``explorer``-tagged cells, outputs cleared, to ``target``."""
    nb = json.loads(NOTEBOOK.read_text())
    cells = [c for c in nb["cells"] if "explorer" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) >= 3, "notebook 03 lost its explorer-tagged cells"
    for c in cells:
        c["outputs"], c["execution_count"] = [], None
    nb["cells"] = cells
    nb["metadata"].pop("widgets", None)
    target.write_text(json.dumps(nb))


def wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("JupyterLab did not answer in time")


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free local port, serving ``tmp_path``; yields (base url, token)."""
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed")
    explorer_notebook(tmp_path / "explorer.ipynb")
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, HSNET_LITE_FIGURES=str(tmp_path / "figures"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               PYTHONUNBUFFERED="1")
    log_path = tmp_path / "lab.log"
    log = open(log_path, "w")
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", "--ServerApp.port_retries=0",
           "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--ServerApp.allow_root=True",
           "--LabApp.extension_manager=readonly"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(f"{base}/api/status?token={token}", proc, log_path)
        yield base, token
    finally:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=5)
            proc.wait(timeout=20)
        except Exception:  # noqa: BLE001 - fall back to stopping the process we started
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def test_explorer_slider_changes_picture_in_browser(lab):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium not found (Debian: apt-get install -y chromium; `make setup` does it as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright not installed (pip install playwright)")
    base, token = lab
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/explorer.ipynb?token={token}", timeout=60_000)
            page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=60_000)
            # wait for the kernel, then run every cell
            page.wait_for_function(
                "(() => { const w = window.jupyterapp.shell.currentWidget;"
                " return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
                " && w.sessionContext.session.kernel.status === 'idle'; })()", timeout=60_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            image = page.locator(".widget-image").first
            image.wait_for(state="visible", timeout=120_000)
            page.wait_for_function("document.querySelector('.widget-image').src.length > 0", timeout=30_000)
            src_before = image.get_attribute("src")
            area = page.locator(".jp-OutputArea-output:has(.widget-image)").first
            area.scroll_into_view_if_needed()
            shot_before = area.screenshot()
            html = page.locator(".jp-OutputArea-output .widget-html").first
            text_before = html.inner_text()

            slider = page.locator(".widget-slider:has-text('query x')").first
            readout = slider.locator(".widget-readout")
            value_before = readout.inner_text()
            readout.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("150")
            page.keyboard.press("Enter")
            page.wait_for_function(
                "before => document.querySelector('.widget-image').src !== before", arg=src_before, timeout=30_000)
            page.wait_for_timeout(500)
            shot_after = area.screenshot()
            area.screenshot(path=str(figures_dir() / SCREENSHOT_NAME))
            text_after = html.inner_text()

            # a click on the query image, a quarter of the way across the picture and halfway down
            src_slid = image.get_attribute("src")
            box = image.bounding_box()
            image.click(position={"x": box["width"] / 4, "y": box["height"] / 2})
            page.wait_for_function(
                "before => document.querySelector('.widget-image').src !== before", arg=src_slid, timeout=30_000)
            page.wait_for_timeout(500)
            clicked = tuple(int(page.locator(f".widget-slider:has-text('{name}') .widget-readout").first.inner_text())
                            for name in ("query y", "query x"))
            png_width = page.evaluate("document.querySelector('.widget-image').naturalWidth")
        finally:
            browser.close()
    assert value_before != "150"
    assert shot_before != shot_after
    assert text_before != text_after and text_after.startswith("stereo pair")
    scale = png_width / box["width"]  # ipyevents reports the click in the PNG's own pixels
    expected = point_at(stereo_like_picture(), STEREO_SIZE, box["width"] / 4 * scale, box["height"] / 2 * scale)
    assert expected is not None and clicked != (100, 150)
    assert abs(clicked[0] - expected[0]) <= 2 and abs(clicked[1] - expected[1]) <= 2, (clicked, expected)


STEREO_SIZE = (192, 288)  # the stereo pair's size in notebook 03 (stereo_source's default)


def stereo_like_picture():
    """A picture laid out as the notebook's stereo view: same image size, so the same query box."""
    import numpy as np
    import torch

    from hsnet_lite.explore import CorrelationExplorer

    corr = torch.rand(12, 18, 12, 18, generator=torch.Generator().manual_seed(0))
    img = np.zeros((*STEREO_SIZE, 3), np.uint8)
    source = ExplorerSource("stereo pair", CorrelationExplorer([corr], [1], STEREO_SIZE), img, img)
    return render_picture(source, ("layer", 0), 100, 150)
