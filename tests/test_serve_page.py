"""The `lrnet serve` page in a real headless Chromium (Selenium): token prompt, upload, verdict card,
one timeline bar per block, the video with its landmark overlay, progress, layout, nothing loaded
from elsewhere.

Skips when Chromium or chromedriver is missing. Screenshots go to the test's temporary folder;
``LRNET_UPDATE_SCREENSHOT=1`` also writes the finished video job, at 900 x 1250, to docs/serve.png
(how the README's picture is made, so it cannot go stale):

    LRNET_UPDATE_SCREENSHOT=1 python -m pytest tests/test_serve_page.py -k video
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("requests")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from test_serve import Server, make_landmark_file, make_weights

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "page-token"
PHONE = (412, 1400)  # CSS pixels: a phone-width window
DOCS_SHOT = (900, 1250)  # CSS pixels of docs/serve.png
PAINTED = """const c = document.getElementById('overlay');
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n;"""  # overlay pixels drawn


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"headless browser test needs {CHROMIUM} and {CHROMEDRIVER} (Debian: apt install chromium "
                    "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", f"--window-size={PHONE[0]},{PHONE[1]}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    # headless windows are at least 500 px wide: emulate the phone screen instead
    screen(driver, *PHONE, mobile=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    from conftest import REFERENCE

    work = tmp_path_factory.mktemp("serve-page")
    weights = REFERENCE / "weights" / "dfo"
    srv = Server(work / "data", weights if weights.is_dir() else make_weights(work / "weights"), token=TOKEN)
    yield srv
    srv.stop()


def screen(driver, width: int, height: int, mobile: bool = False) -> None:
    """Emulate a screen of `width` x `height` CSS pixels (phone: `mobile`, the page's small layout)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def save_screenshot(driver, path: Path) -> None:
    driver.save_screenshot(str(path))


def update_docs_screenshot(driver, reference: Path) -> None:
    """With LRNET_UPDATE_SCREENSHOT=1: a finished job of the forged sample video, paused at 5 s with its
    landmarks drawn, on a 900 px screen, to docs/serve.png (a 256-colour PNG, as small as the old one)."""
    if os.environ.get("LRNET_UPDATE_SCREENSHOT") != "1":
        return
    from PIL import Image

    driver.find_element(By.ID, "again").click()
    upload_and_wait(driver, reference / "videos" / "dfo_fake.mp4")
    screen(driver, *DOCS_SHOT)
    driver.execute_cdp_cmd("Emulation.setScrollbarsHidden", {"hidden": True})
    try:
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return document.getElementById('video').readyState >= 2"))
        driver.execute_script("const v = document.getElementById('video'); v.pause(); v.currentTime = 5.0; "
                              "window.scrollTo(0, 0)")
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(
            "const v = document.getElementById('video'); return !v.seeking && Math.abs(v.currentTime - 5) < 0.1"))
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(PAINTED) > 0)
        target = REPO / "docs" / "serve.png"
        tmp = target.with_name(".serve.png.tmp")
        tmp.write_bytes(driver.get_screenshot_as_png())
        with Image.open(tmp) as shot:
            shot.convert("RGB").quantize(256).save(tmp, format="PNG", optimize=True)
        os.replace(tmp, target)
    finally:
        driver.execute_cdp_cmd("Emulation.setScrollbarsHidden", {"hidden": False})
        screen(driver, *PHONE, mobile=True)


def upload_and_wait(driver, path: Path, timeout: float = 180) -> None:
    driver.find_element(By.ID, "file").send_keys(str(path))
    WebDriverWait(driver, 10).until(ec.element_to_be_clickable((By.ID, "submit"))).click()
    WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.ID, "result").is_displayed()
                                         or d.find_element(By.ID, "upload-error").text)
    assert not driver.find_element(By.ID, "upload-error").text


def open_page(driver, server) -> None:
    driver.get(server.url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    token = WebDriverWait(driver, 20).until(ec.visibility_of_element_located((By.ID, "token")))
    for hidden in ("upload", "recent", "progress", "result"):  # only the prompt: no empty dropdowns under it
        assert not driver.find_element(By.ID, hidden).is_displayed(), hidden
    token.send_keys(TOKEN + "\n")  # the page asks for the token, keeps it in sessionStorage
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#weights option"))
    assert not driver.find_element(By.ID, "auth").is_displayed()
    assert driver.find_element(By.ID, "upload").is_displayed() and driver.find_element(By.ID, "recent").is_displayed()


def check_result(driver, server) -> dict:
    job_id = driver.execute_script("return location.hash.slice(5)")
    result = server.get(f"/api/v1/jobs/{job_id}").json()["result"]
    word = driver.find_element(By.ID, "verdict-word").text.lower()
    assert word == f"looks {result['verdict']}"
    forged = sum(b["p_fake"] >= 0.5 for b in result["block_details"])
    assert driver.find_element(By.ID, "verdict-blocks").text == f"{forged} of {result['blocks']} blocks look forged"
    bars = driver.find_elements(By.CSS_SELECTOR, "#timeline .bar")
    assert len(bars) == result["blocks"]
    assert all(b.get_attribute("aria-label").startswith("block ") for b in bars)
    return result


def test_landmark_file_gives_verdict_card_and_timeline(browser, page_server, tmp_path):
    landmarks = make_landmark_file(tmp_path / "sample.txt", frames=310)
    open_page(browser, page_server)
    drop = browser.find_element(By.ID, "drop")
    assert drop.get_attribute("tabindex") == "0" and drop.get_attribute("role") == "button"
    upload_and_wait(browser, landmarks)
    check_result(browser, page_server)
    assert not browser.find_element(By.ID, "player").is_displayed()  # no video for a landmark file
    recent = browser.find_elements(By.CSS_SELECTOR, "#recent-list li")
    assert recent and "sample.txt" in recent[0].text
    widths = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths == [PHONE[0], PHONE[0]]  # nothing wider than a phone screen
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert set(origins) <= {page_server.url}
    save_screenshot(browser, tmp_path / "landmarks.png")


@pytest.mark.reference
def test_video_shows_overlay_and_bars_seek(browser, page_server, reference, tmp_path):
    open_page(browser, page_server)
    upload_and_wait(browser, reference / "videos" / "dfo_real.mp4")
    result = check_result(browser, page_server)
    assert len(result["faces"]) == 1 and not browser.find_element(By.ID, "faces").is_displayed()  # one face: as before
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "return document.getElementById('video').readyState >= 2"))
    bars = browser.find_elements(By.CSS_SELECTOR, "#timeline .bar")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", bars[3])
    bars[3].click()
    WebDriverWait(browser, 20).until(lambda d: abs(d.execute_script(
        "return document.getElementById('video').currentTime") - 3.6) < 0.1)
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(PAINTED) > 0)
    browser.find_element(By.ID, "show-raw").click()
    browser.find_element(By.ID, "show-cal").click()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(PAINTED) == 0)  # both toggles off: nothing drawn
    browser.find_element(By.ID, "show-raw").click()
    browser.find_element(By.ID, "show-cal").click()
    browser.execute_script("window.scrollTo(0, 0)")
    save_screenshot(browser, tmp_path / "video.png")
    update_docs_screenshot(browser, reference)


PROGRESS_STEPS = [("queued", 0), ("starting", 0), ("landmarks", 0), ("landmarks", 0.5), ("landmarks", 1),
                  ("calibration", 0), ("calibration", 1), ("landmarks", 1), ("scoring", 0), ("scoring", 1),
                  ("video", 0), ("mystery", 0.3), ("video", 1)]


def test_progress_never_goes_back_nor_past_100(browser, page_server):
    """Every stage a job reports, in the page's own code path: the bar only grows, up to 100 %."""
    open_page(browser, page_server)
    shown = browser.execute_script("""
        const seen = [];
        state.job = "job-under-test";
        for (const [stage, fraction] of arguments[0]) {
          onJob({id: state.job, status: "running", filename: "clip.mp4", progress: {stage, fraction}});
          seen.push([document.getElementById("bar").value, document.getElementById("stage").textContent]);
        }
        reset();
        return seen;""", PROGRESS_STEPS)
    values = [v for v, _ in shown]
    assert values == sorted(values) and 0 < values[0] and values[-1] == 1, shown
    texts = dict(zip([s for s, _ in PROGRESS_STEPS], [t for _, t in shown]))
    assert texts["starting"] == "Starting (5 %)" and texts["queued"] == "Waiting for a free worker (5 %)"
    assert texts["video"] == "Preparing the video for the browser (100 %)"
    assert all(int(t.rsplit("(", 1)[1].split()[0]) <= 100 for _, t in shown)
    assert browser.find_element(By.ID, "upload").is_displayed()  # reset() brings the form back


def test_footer_is_centred_like_the_rest_on_a_wide_screen(browser, page_server):
    open_page(browser, page_server)
    screen(browser, 1200, 900)
    try:
        left, main_left, align = browser.execute_script("""
            const box = (sel) => document.querySelector(sel).getBoundingClientRect();
            return [box("footer").left, box("main").left, getComputedStyle(document.querySelector("footer")).textAlign];""")
    finally:
        screen(browser, *PHONE, mobile=True)
    assert main_left > 100 and abs(left - main_left) < 1 and align == "center", (left, main_left, align)
