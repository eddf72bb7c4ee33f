"""The browser harness can fail: each defect a report page could have is caught in Chromium."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from browser import Browser, BrowserError, is_blank, require_browser


def png_data_uri(size=(24, 12), colour=(200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def page(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'></head><body>{body}</body></html>"
    )
    return str(path)


@pytest.fixture(scope="module")
def browser():
    with Browser(binary=require_browser(), width=640, height=400) as b:
        yield b


def test_good_page_passes(browser, tmp_path):
    report = browser.open(
        page(tmp_path, "good.html", f"<h1>Report</h1><img src='{png_data_uri()}'>")
    )
    assert [(i["naturalWidth"], i["naturalHeight"]) for i in report.images] == [(24, 12)]
    assert report.images_loaded and not report.console_errors and not report.failed_requests
    assert not report.blank and report.problems() == []
    shot = Image.open(io.BytesIO(report.screenshot))
    assert shot.format == "PNG" and shot.size[0] == 640
    # The red image is in the screenshot.
    assert (200, 30, 30) in {c for _, c in shot.convert("RGB").getcolors(1 << 16)}


def test_broken_image_is_not_loaded(browser, tmp_path):
    not_an_image = "data:image/png;base64," + base64.b64encode(b"hello world").decode()
    body = f"<p>text</p><img src='{png_data_uri()}'><img src='{not_an_image}'>"
    report = browser.open(page(tmp_path, "broken.html", body))
    assert [i["naturalWidth"] > 0 for i in report.images] == [True, False]
    assert not report.images_loaded
    assert report.broken_images == [not_an_image]
    assert any("image not loaded" in p for p in report.problems())


def test_console_errors_are_reported(browser, tmp_path):
    body = "<p>text</p><script>console.error('x'); console.log('fine')</script>"
    assert browser.open(page(tmp_path, "console.html", body)).console_errors == ["x"]
    thrown = browser.open(
        page(tmp_path, "throw.html", "<p>t</p><script>throw new Error('boom')</script>")
    )
    assert len(thrown.console_errors) == 1 and "boom" in thrown.console_errors[0]


def test_blank_page_is_blank(browser, tmp_path):
    report = browser.open(page(tmp_path, "blank.html", ""))
    assert report.blank and report.images == [] and report.console_errors == []
    assert "blank" in report.problems()[0]
    white_text = "<p style='color:white'>invisible</p>"
    assert browser.open(page(tmp_path, "white.html", white_text)).blank


def test_network_resources_fail_offline(browser, tmp_path):
    report = browser.open(
        page(tmp_path, "net.html", "<p>t</p><img src='https://example.com/a.png'>")
    )
    assert not report.images_loaded
    assert report.failed_requests and "example.com" in report.failed_requests[0]
    assert report.console_errors  # "Failed to load resource"


def test_lazy_images_below_the_fold_load(browser, tmp_path):
    body = f"<div style='height:3000px'>tall</div><img loading='lazy' src='{png_data_uri()}'>"
    report = browser.open(page(tmp_path, "lazy.html", body))
    assert report.images_loaded
    assert Image.open(io.BytesIO(report.screenshot)).size[1] >= 3000  # the whole page


def test_missing_file_and_is_blank(browser):
    with pytest.raises(FileNotFoundError):
        browser.open("/nonexistent/report.html")
    buf = io.BytesIO()
    Image.new("RGB", (5, 5), "white").save(buf, "PNG")
    assert is_blank(buf.getvalue())
    img = Image.new("RGB", (5, 5), "white")
    img.putpixel((2, 2), (0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    assert not is_blank(buf.getvalue())


def test_a_browser_that_does_not_start_fails_clearly(tmp_path):
    fake = tmp_path / "fake-browser"
    fake.write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BrowserError, match="cannot start"):
        Browser(binary=str(fake), timeout=10).start()
