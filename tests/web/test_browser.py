"""The web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against the
real stack: the built page (``web/dist``, served by the edge at ``/``), the bus, an enhancer and S3.

The screenshots it takes (desktop, phone, and one photo's card while it is enhanced) are the ones the README shows:
``make screenshots`` writes them to docs/screenshots (``SCREENSHOT_DIR``); otherwise they go to a temporary
folder, so that a test run leaves the checkout as it found it.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ..support import ROOT, Stack, encode, photo

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: Three real photographs (scikit-image), small so that the CPU enhancer is quick.
PHOTOS = {"cat.jpg": ("chelsea", (64, 48)), "coffee.jpg": ("coffee", (60, 40)), "rocket.jpg": ("rocket", (48, 64))}
#: Every text an image card's progress line showed, recorded in the page as it changed.
RECORD_PROGRESS = """
window.__progress = [];
new MutationObserver(() => {
  for (const el of document.querySelectorAll('[data-testid=item-progress]')) {
    const text = el.textContent.trim();
    if (text && window.__progress[window.__progress.length - 1] !== text) window.__progress.push(text);
  }
}).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
"""


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``SCREENSHOT_DIR`` (``make screenshots``: docs/screenshots), else a temporary folder."""
    folder = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (ROOT / "web" / "dist" / "index.html").is_file():
        pytest.fail("the web page is not built: `make test` builds it (or run `make web`)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 900},
                                  accept_downloads=True, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
        assert not errors, f"the page threw: {errors}"
    finally:
        context.close()


def photo_files(tmp_path: Path) -> list[Path]:
    paths = []
    for name, (source, size) in PHOTOS.items():
        path = tmp_path / name
        path.write_bytes(encode(photo(source, size=size), quality=90))
        paths.append(path)
    return paths


def test_a_batch_goes_through_with_progress_compare_and_one_zip(page: Page, tmp_path: Path,
                                                                 screenshots: Path) -> None:
    page.goto("/")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    page.get_by_test_id("mode-batch").click()
    page.get_by_test_id("scale-2").click()
    page.get_by_test_id("quality-fast").click()
    page.get_by_test_id("file-input").set_input_files(photo_files(tmp_path))
    items = page.get_by_test_id("item")
    expect(items).to_have_count(3)
    page.evaluate(RECORD_PROGRESS)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.get_by_test_id("start").click()

    for i in range(3):
        expect(items.nth(i)).to_have_attribute("data-status", "completed", timeout=180_000)
    # The enhancer's own stages reached the page, pushed over server-sent events (no polling needed).
    seen = page.evaluate("window.__progress")
    assert any("放大中" in text for text in seen), seen
    assert sum("/api/v1/events/" in url for url in requests) >= 3, requests
    assert not any("/api/v1/status/" in url for url in requests), "the page fell back to polling"
    downloads = [url for url in requests if "/api/v1/download/" in url]
    assert len(downloads) == 3, f"each result is fetched once: {downloads}"
    page.screenshot(path=screenshots / "desktop.png", full_page=True)

    # The compare slider follows the keyboard (and so a screen reader's user).
    slider = page.get_by_test_id("compare-slider").first
    before = float(slider.get_attribute("aria-valuenow"))
    slider.focus()
    for _ in range(5):
        page.keyboard.press("ArrowLeft")
    after = float(slider.get_attribute("aria-valuenow"))
    assert after < before, (before, after)
    # ... and the mouse: dragging across the picture moves the divider with the pointer.
    box = slider.locator("xpath=..").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.9, y, steps=5)
    page.mouse.up()
    assert 85 <= float(slider.get_attribute("aria-valuenow")) <= 95

    # The full-screen viewer shows the result at 100 %: one image pixel per CSS pixel; Esc closes it.
    items.first.get_by_test_id("open-viewer").click()
    viewer = page.get_by_test_id("viewer")
    expect(viewer).to_be_visible()
    viewer.get_by_test_id("viewer-zoom").click()
    shown = viewer.locator("img").evaluate("img => [img.naturalWidth, img.getBoundingClientRect().width]")
    assert shown == [128, 128], shown
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()

    page.get_by_test_id("lang-toggle").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_test_id("download-zip")).to_contain_text("ZIP")

    with page.expect_download() as info:
        page.get_by_test_id("download-zip").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(info.value.path()).read_bytes()))
    assert sum("/api/v1/download/" in url for url in requests) == 3, "the ZIP fetched the results again"
    names = archive.namelist()
    assert sorted(names) == sorted(f"{Path(n).stem}_enhanced.jpg" for n in PHOTOS), names
    for name, (_, (w, h)) in PHOTOS.items():
        with Image.open(io.BytesIO(archive.read(f"{Path(name).stem}_enhanced.jpg"))) as img:
            assert img.size == (w * 2, h * 2), (name, img.size)


def test_a_photo_being_enhanced_says_about_how_long_is_left(page: Page, tmp_path: Path, screenshots: Path) -> None:
    """While the enhancer works on a photo, its card says about how long is left (the server's ``eta_seconds``).

    The page sends no tile size, so the enhancer cuts at its default 400 pixels: this 800×533 photo is four tiles
    (two 400², two 400×133), about 0.4 MP at fast on the stack's CPU enhancer. The worker's estimate is there
    from its first tile on (its pace; earlier jobs' pace from the start), so the text shows for the last three
    tiles: seconds, not a blink. It is waited for, never slept for; the card is then photographed, and the text
    seen again after, so the picture has it."""
    path = tmp_path / "coffee.jpg"
    path.write_bytes(encode(photo("coffee", size=(800, 533)), quality=90))
    page.goto("/")
    page.get_by_test_id("scale-2").click()
    page.get_by_test_id("quality-fast").click()
    page.get_by_test_id("file-input").set_input_files(path)
    page.get_by_test_id("start").click()
    item = page.get_by_test_id("item")
    expect(item).to_have_count(1)
    # Its estimate while it is being enhanced (a waiting photo's, from the edge, is not what this is about).
    eta = page.locator("[data-testid=item][data-status=processing] [data-testid=item-eta]")
    eta.wait_for(state="visible", timeout=120_000)
    expect(eta).to_have_text(re.compile(r"还需约 \d+ (秒|分钟)"))
    item.screenshot(path=screenshots / "eta.png")
    assert eta.is_visible(), "the photo was done while its card was photographed: the picture may lack the estimate"
    with Image.open(screenshots / "eta.png") as shot:
        assert shot.width >= 200 and shot.height >= 200, shot.size

    expect(item).to_have_attribute("data-status", "completed", timeout=120_000)
    expect(item.get_by_test_id("item-eta")).to_have_count(0)  # done: nothing left to estimate


def test_a_file_that_is_not_an_image_gets_the_servers_message(page: Page, tmp_path: Path) -> None:
    """The server's own sentence, in the page's language: Chinese by default, English after the switch."""
    fake = tmp_path / "holiday.jpg"
    fake.write_bytes(b"these are not the pixels you are looking for\n" * 20)
    page.goto("/")
    for expected in ("这个文件不是我们能读取的图片", "not an image we can read"):
        page.get_by_test_id("file-input").set_input_files(fake)
        page.get_by_test_id("start").click()
        item = page.get_by_test_id("item").first
        expect(item).to_have_attribute("data-status", "failed", timeout=30_000)
        expect(item.get_by_test_id("item-error")).to_contain_text(expected)
        page.reload()
        page.get_by_test_id("lang-toggle").click()


def test_a_phone_screen_has_no_horizontal_scrolling(browser: Browser, stack: Stack, tmp_path: Path,
                                                    screenshots: Path) -> None:
    context = browser.new_context(base_url=stack.url, viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True, device_scale_factor=2, locale="zh-CN")
    try:
        page = context.new_page()
        page.goto("/")
        page.get_by_test_id("mode-batch").click()
        page.get_by_test_id("file-input").set_input_files(photo_files(tmp_path))
        expect(page.get_by_test_id("item")).to_have_count(3)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
        page.screenshot(path=screenshots / "phone.png", full_page=True)
    finally:
        context.close()
