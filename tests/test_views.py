"""Attention views render offline in a real browser (Debian's headless Chromium, network features off)."""

import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from interp.errors import InterpError
from interp.views import attention_view, save_view

PROMPT = "When Mary and John went to the store, John gave a drink to"


def chromium_binary() -> str:
    """Debian's Chromium, installed on first use (apt reaches the Debian registry; as root in CI)."""
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    if os.geteuid() != 0:
        pytest.fail("Chromium is not installed and this user cannot install it: apt-get install chromium")
    subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"],
        check=True,
        capture_output=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return "/usr/lib/chromium/chromium"


def render(html_path, tmp_path):
    screenshot = tmp_path / "shot.png"
    result = subprocess.run(
        [
            chromium_binary(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-unsafe-swiftshader",
            "--virtual-time-budget=20000",
            "--window-size=1200,900",
            f"--screenshot={screenshot}",
            "--dump-dom",
            html_path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    return result.stdout, screenshot


def test_attention_view_renders_offline(tiny_model, tmp_path):
    path = save_view(attention_view(tiny_model, PROMPT, [(0, 1), (1, 2)]), tmp_path / "view.html")
    html = path.read_text()
    assert "<script src=" not in html and "unpkg.com" not in html  # nothing fetched: the bundle is inlined
    again = save_view(attention_view(tiny_model, PROMPT, [(0, 1), (1, 2)]), tmp_path / "again.html")
    assert again.read_bytes() == path.read_bytes()  # circuitsvis's random element id is replaced by a content hash
    dom, screenshot = render(path, tmp_path)
    assert "L0H1" in dom and "L1H2" in dom and "<canvas" in dom  # React replaced the script by the component
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    coloured = (pixels.max(-1) - pixels.min(-1) > 40).mean()
    assert coloured > 0.01, f"the screenshot is blank ({coloured:.4f} of pixels coloured)"


@pytest.mark.parametrize(
    "heads, problem", [([(5, 0)], "layer 5 is out of range"), ([(0, 9)], "head 9 is out of range")]
)
def test_attention_view_bad_heads(tiny_model, heads, problem):
    with pytest.raises(InterpError, match=problem):
        attention_view(tiny_model, PROMPT, heads)
