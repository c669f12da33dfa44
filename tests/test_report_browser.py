"""A tb-fast run's report.html opens in headless Chromium with every section and image."""

from __future__ import annotations

import pytest

from cxrkit.config import build_config
from cxrkit.evaluation.report import SECTIONS

EXPECTED_FIGURES = ("Images per class", "Confusion matrix", "ROC curve", "Precision-recall curve",
                    "Reliability diagram", "Sample predictions", "Training curves")

pytestmark = pytest.mark.browser


@pytest.fixture
def browser_page(browser):
    return browser.new_page()


def test_tb_fast_report_shows_every_section_and_image(tiny_folder, tiny_overrides, browser_page):
    import cxrkit

    run = cxrkit.train(build_config("tb-fast", tiny_overrides(tiny_folder, name="report")))
    report = run / "report.html"
    assert report.is_file()
    outside = []
    browser_page.on("request", lambda request: outside.append(request.url)
                    if not request.url.startswith(("file:", "data:")) else None)
    browser_page.goto(report.as_uri())

    assert browser_page.locator("#notice").inner_text().startswith("Not for clinical use")
    for key, title in SECTIONS:
        heading = browser_page.locator(f"section#{key} > h2")
        assert heading.is_visible() and heading.inner_text() == title
    images = browser_page.evaluate(
        "Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
    assert all(loaded for _, loaded in images), images
    alts = [alt for alt, _ in images]
    for caption in EXPECTED_FIGURES:
        assert any(alt.startswith(caption) for alt in alts), (caption, alts)
    gallery = browser_page.locator("section#gradcam img")
    assert gallery.count() == len(list((run / "gallery").glob("*.png"))) > 0
    summary = browser_page.locator("section#summary").inner_text()
    assert "ROC-AUC" in summary and "95% CI" in summary
    assert browser_page.locator("section#operating-points tbody tr").count() == 4
    assert outside == []  # self-contained: nothing fetched from the network
