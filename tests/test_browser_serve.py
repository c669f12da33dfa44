"""The Gradio page in a real browser: upload an X-ray, read the probabilities, see the heatmap.

Drives Debian's /usr/bin/chromium through Playwright (never `playwright install`); skips
when chromium or playwright is missing. Uses a real X-ray from ../shared/data when present.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import cxrkit
from conftest import SHARED_DATA, write_image
from cxrkit.serve.app import build_app
from test_export import make_run
from test_serve_load import serving

TIMEOUT_MS = 30_000

pytestmark = pytest.mark.browser


def xray(tmp_path: Path) -> Path:
    """A real TB X-ray when the shared data is here; else a generated grey image."""
    real = sorted((SHARED_DATA / "tb" / "Tuberculosis").glob("*.png"))[:1]
    if real:
        return shutil.copy(real[0], tmp_path / "upload.png")
    return write_image(tmp_path / "upload.png", 120, size=256)


def test_upload_shows_probabilities_decision_and_gradcam(browser, tmp_path: Path):
    run = make_run(tmp_path / "run", threshold=0.25)
    image = xray(tmp_path)
    expected = cxrkit.load(run).predict_proba([image])[0]
    with serving(build_app(run)) as url:
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url + "/")
        assert "Not for clinical use" in page.inner_text("#clinical-notice")
        page.set_input_files("#upload input[type=file]", str(image))
        page.wait_for_selector("#gradcam img")

        text = page.inner_text("#probabilities")
        shown = dict(re.findall(r"(Normal|Tuberculosis)\s+(\d+)%", text))
        assert set(shown) == {"Normal", "Tuberculosis"}
        for index, name in enumerate(("Normal", "Tuberculosis")):
            assert abs(int(shown[name]) - 100 * expected[index]) <= 1
        decided = "Tuberculosis" if expected[1] >= 0.25 else "Normal"
        assert f"Decision: {decided}" in page.inner_text("#decision")
        assert "frozen operating point 'youden'" in page.inner_text("#decision")

        size = page.eval_on_selector("#gradcam img", "img => [img.naturalWidth, img.naturalHeight]")
        assert min(size) > 0, "the Grad-CAM overlay did not load"
        assert page.inner_text("#explain-note").strip() == ""

        slider_box = page.locator("#threshold input[type=number]")
        slider_box.fill("0.999")
        slider_box.press("Enter")
        page.wait_for_function(
            "() => document.querySelector('#decision').innerText.includes('adjusted here')")
        assert "Decision: Normal" in page.inner_text("#decision")
