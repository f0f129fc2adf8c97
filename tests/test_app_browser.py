"""The web app in a real browser: Debian's chromium driven by Playwright against `python app.py` on localhost."""

import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_cli import model_argument  # noqa: F401  (the shared model fixture: embedded, or untrained until trained)

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parent.parent
# Without the networking flags, chromium's background connections fail on this machine's closed network.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S = 120
GENERATION_S = 180
SMALL_SETTINGS = {"steps": "2", "frames": "4", "height": "16", "width": "16"}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)")


@pytest.fixture(scope="module")
def app_url():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO_ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_S
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"app.py did not serve {url} (exit status {server.poll()})")
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def page(app_url, model_argument):  # noqa: F811
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.goto(app_url)
        page.wait_for_selector("#generate")
        if model_argument:
            page.locator("#model textarea").fill(model_argument[1])
        for element_id, value in SMALL_SETTINGS.items():
            page.locator(f"#{element_id} input").fill(value)
        yield page
        browser.close()


def test_generate_shows_both_videos_and_the_timings(page):
    page.locator("#steps input").fill("6")  # long enough for the progress bar to be seen
    page.locator("#generate").click()
    page.wait_for_selector(".progress-text", timeout=GENERATION_S * 1000)  # progress while it runs
    page.wait_for_selector("#efficient-video video[src]", timeout=GENERATION_S * 1000)
    for video in ("#dense-video video", "#efficient-video video"):
        assert page.locator(video).get_attribute("src")
    metrics = page.locator("#metrics").inner_text()
    assert re.search(r"dense: \d+\.\d+ s", metrics)
    assert re.search(r"speedup: \d+\.\d+x", metrics)
    assert re.search(r"PSNR vs dense: (\d+\.\d+|inf) dB, SSIM: \d\.\d+", metrics)
    assert page.locator("#pattern img").count() == 1
    assert page.locator("#status").inner_text().strip() == "Done."


def test_a_bad_option_is_reported_in_the_page(page):
    page.locator("#option-radial-block_size input").fill("100")
    page.locator("#generate").click()
    status = page.locator("#status")
    status.filter(has_text="Error").wait_for(timeout=GENERATION_S * 1000)
    message = status.inner_text()
    assert "block_size" in message and "must be one of [64, 128]" in message and "Traceback" not in message
    assert page.locator("#efficient-video video").count() == 0


STREAM_SETTINGS = {"stream-frames": "128", "stream-steps": "2", "stream-height": "16", "stream-width": "16"}
NEW_PROMPT = "a cyan square moving left on a black background"


def frame_count(page) -> int:
    """The frame counter of the Stream tab: the N of "Frame N / total"."""
    return int(re.match(r"Frame (\d+) /", page.locator("#stream-progress").inner_text()).group(1))


def open_stream_tab(page, settings: dict[str, str]) -> None:
    page.get_by_role("tab", name="Stream").click()
    for element_id, value in settings.items():
        page.locator(f"#{element_id} input, #{element_id} textarea").fill(value)


def test_stream_shows_frames_as_they_are_made_and_switches_prompt_live(page):
    open_stream_tab(page, STREAM_SETTINGS)
    page.locator("#switch-prompt textarea").fill(NEW_PROMPT)
    page.locator("#stream-start").click()
    page.wait_for_selector("#stream-frame img[src]", timeout=GENERATION_S * 1000)
    frames_before_switch = frame_count(page)
    page.locator("#switch").click()  # at once, so that the stream is far from its end on a fast machine too
    assert "Switching to" in page.locator("#switch-status").filter(has_text=NEW_PROMPT).inner_text()
    status = page.locator("#stream-status")
    status.filter(has_text=NEW_PROMPT).wait_for(timeout=GENERATION_S * 1000)
    switch_frame = int(re.search(rf"from frame (\d+): {NEW_PROMPT}", status.inner_text()).group(1))
    # The switch waits for the next chunk to enter, which is after the frames already shown, and it came
    # while the stream ran: a switch queued behind the stream would find no stream left to switch.
    assert frames_before_switch <= switch_frame < int(STREAM_SETTINGS["stream-frames"])

    page.wait_for_function(f"/Frame (\\d+) /.exec(document.querySelector('#stream-progress').innerText)[1] > "
                           f"{frames_before_switch}", timeout=GENERATION_S * 1000)
    assert re.search(r"\d+\.\d frames/s", page.locator("#stream-progress").inner_text())
    status.filter(has_text="Done.").wait_for(timeout=GENERATION_S * 1000)
    assert frame_count(page) == int(STREAM_SETTINGS["stream-frames"])
    assert "from frame 0: " in status.inner_text()


def test_a_bad_stream_option_is_reported_in_the_page(page):
    open_stream_tab(page, {"stream-window-frames": "3"})
    page.locator("#stream-start").click()
    status = page.locator("#stream-status")
    status.filter(has_text="Error").wait_for(timeout=GENERATION_S * 1000)
    message = status.inner_text()
    assert "window_frames" in message and "multiple of 'chunk_frames'" in message and "Traceback" not in message
    assert page.locator("#stream-frame img").count() == 0
