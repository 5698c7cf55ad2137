"""Every face on the `lrnet serve` page, in a real headless Chromium (Selenium): the Faces section of a
finished video job (a thumbnail cut from the page's own video, the face's verdict, score, span and its own
timeline; the face the verdict is about marked), nothing of it for one face, and the Live tab's
rolling verdict per face.

Reuses test_serve_page's browser, server and helpers. The two-face clip is built at test time from the
reference videos (skips with a reason without them). Screenshots go to the test's temporary folder.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("requests")
pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from test_serve_page import PHONE, browser, check_result, open_page, page_server, screen, upload_and_wait  # noqa: F401
from test_video import clip_frames, write_clip

FPS = 30.0
FRAMES = 150
THUMB_AT = 0.2  # s after a face's first frame: app.js's THUMB_AFTER
THUMB_MARGIN = 0.3  # app.js's THUMB_MARGIN

# The page's thumbnail of a face, as a PNG data URL (the canvas is same-origin: readable)
THUMB_PNG = "return document.querySelector(`#faces-list li[data-face='${arguments[0]}'] canvas`).toDataURL('image/png')"


def two_face_clip(reference: Path, folder: Path) -> Path:
    """150 frames of ff_real.mp4 (left) and ff_fake.mp4 (right) side by side, 1280 x 720 at 30 fps,
    lossless, then H.264 so that Chromium plays it."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("the two-face clip needs ffmpeg (Debian: apt install ffmpeg)")
    real = clip_frames(reference / "videos" / "ff_real.mp4", 0, FRAMES)
    fake = clip_frames(reference / "videos" / "ff_fake.mp4", 0, FRAMES)
    frames = [np.concatenate([r[:, 260:900], f[:, 283:923]], axis=1) for r, f in zip(real, fake)]
    assert frames[0].shape == (720, 1280, 3)
    lossless = write_clip(folder / "two_faces.avi", frames, FPS, lossless=True)
    out = folder / "two_faces.mp4"
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(lossless), "-c:v", "libx264", "-crf", "16",
                    "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(out)], check=True, timeout=120)
    return out


def expected_thumb(frame: np.ndarray, box, size: int) -> np.ndarray:
    """app.js's crop of one face (a square `THUMB_MARGIN` wider than the landmark box on each side, kept
    inside the picture) from an RGB frame, resized to `size` px."""
    from PIL import Image

    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box
    side = min(max(x1 - x0, y1 - y0) * (1 + 2 * THUMB_MARGIN), w, h)
    left = min(max(0.0, (x0 + x1) / 2 - side / 2), w - side)
    top = min(max(0.0, (y0 + y1) / 2 - side / 2), h - side)
    crop = Image.fromarray(frame).crop((round(left), round(top), round(left + side), round(top + side)))
    return np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.float32)


def page_thumb(driver, face: int) -> np.ndarray:
    """The page's thumbnail canvas of `face` as RGBA (H, W, 4) uint8."""
    from PIL import Image

    url = driver.execute_script(THUMB_PNG, face)
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return np.asarray(image.convert("RGBA"))


@pytest.mark.slow
@pytest.mark.reference
def test_two_faces_each_get_a_row_with_thumbnail_verdict_and_timeline(browser, page_server, reference, tmp_path):  # noqa: F811
    import cv2

    clip = two_face_clip(reference, tmp_path)
    open_page(browser, page_server)
    upload_and_wait(browser, clip, timeout=300)
    result = check_result(browser, page_server)  # the main card and timeline: the verdict's face
    faces = {f["face"]: f for f in result["faces"]}
    assert len(faces) == 2, result["faces"]
    right = max(faces.values(), key=lambda f: f["box"][0])
    assert right["box"][0] >= 640 and right["face"] == result["face"]  # the forged half is the verdict's face

    section = browser.find_element(By.ID, "faces")
    assert section.is_displayed()
    rows = browser.find_elements(By.CSS_SELECTOR, "#faces-list li.face-row")
    assert sorted(int(r.get_attribute("data-face")) for r in rows) == sorted(faces)
    for row in rows:
        face = faces[int(row.get_attribute("data-face"))]
        title = row.find_element(By.CSS_SELECTOR, ".face-title").text
        main = face["face"] == result["face"]
        assert ("the verdict is this face's" in title) == main, title
        assert ("Looks fake" if main else "Looks real") in title, title
        meta = row.find_element(By.CSS_SELECTOR, ".face-meta").text
        assert f"score {face['score']:.3f}" in meta and f"{face['first_s']:.1f}–{face['last_s']:.1f} s" in meta, meta
        bars = row.find_elements(By.CSS_SELECTOR, ".face-timeline .bar")
        assert len(bars) == len(face["blocks_detail"]) > 0
        assert all(b.get_attribute("aria-label").startswith(f"face {face['face']}, block ") for b in bars)
    assert "face " + str(result["face"]) in browser.find_element(By.ID, "timeline-title").text

    # thumbnails: drawn (opaque, not one flat colour) and each is its own face's crop, not the other's
    WebDriverWait(browser, 60).until(lambda d: all(
        "picture loading" not in c.get_attribute("aria-label")
        for c in d.find_elements(By.CSS_SELECTOR, "#faces-list canvas")))
    # cut from a second, unseen <video>: the player has not moved
    assert browser.execute_script("const v = document.getElementById('video'); return [v.currentTime, v.paused]") == [0, True]
    capture = cv2.VideoCapture(str(clip))
    capture.set(cv2.CAP_PROP_POS_FRAMES, round(THUMB_AT * FPS))
    ok, frame = capture.read()
    capture.release()
    assert ok
    frame = frame[:, :, ::-1]
    for face in faces.values():
        thumb = page_thumb(browser, face["face"])
        assert (thumb[:, :, 3] == 255).all(), f"face {face['face']}: thumbnail not drawn"
        assert thumb[:, :, :3].std() > 20, f"face {face['face']}: thumbnail is one flat colour"
        errors = {other["face"]: float(np.abs(thumb[:, :, :3] - expected_thumb(frame, other["box"], thumb.shape[0])).mean())
                  for other in faces.values()}
        own = errors.pop(face["face"])
        assert own < 20 and own < 0.6 * min(errors.values()), (face["face"], own, errors)

    widths = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths == [PHONE[0], PHONE[0]]  # nothing wider than a phone screen
    origins = browser.execute_script("return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert set(origins) <= {page_server.url}
    browser.execute_script("document.getElementById('faces').scrollIntoView()")
    browser.save_screenshot(str(tmp_path / "faces-phone.png"))
    screen(browser, 900, 1250)
    try:
        browser.execute_script("document.getElementById('result').scrollIntoView()")
        browser.save_screenshot(str(tmp_path / "faces-wide.png"))
    finally:
        screen(browser, *PHONE, mobile=True)


ONE_FACE = {"face": 0, "first_s": 0.0, "last_s": 4.0, "box": [10, 10, 60, 70], "frames": 100, "blocks": 3, "score": 0.1,
            "verdict": "real", "call": "real", "interval": [0.0, 0.3],
            "blocks_detail": [{"start_s": 0.0, "end_s": 1.2, "p_fake": 0.1}, {"start_s": 1.2, "end_s": 2.4, "p_fake": 0.2},
                              {"start_s": 2.4, "end_s": 3.6, "p_fake": 0.05}]}
SHOW = """const [faces, face] = arguments;
          const details = faces.find((f) => f.face === face).blocks_detail.map((b, index) => ({...b, index}));
          showResult({id: "x", filename: "clip.mp4", kind: "video", urls: {}, result: {
            kind: "video", verdict: "fake", call: "fake", score: 0.9, threshold: 0.5, aggregation: "vote",
            weights: "w", duration_s: 4.0, blocks: details.length, block_details: details, face, faces}});"""


def test_faces_section_only_for_more_than_one_face(browser, page_server):  # noqa: F811
    open_page(browser, page_server)
    browser.execute_script(SHOW, [ONE_FACE], 0)
    assert not browser.find_element(By.ID, "faces").is_displayed()
    assert browser.find_element(By.ID, "timeline-title").text == "Fake probability per block"

    second = dict(ONE_FACE, face=3, box=[100, 10, 150, 70], score=0.9, verdict="fake", call="uncertain", blocks=1,
                  blocks_detail=[{"start_s": 1.0, "end_s": 2.2, "p_fake": 0.9}])
    browser.execute_script(SHOW, [ONE_FACE, second], 3)
    assert browser.find_element(By.ID, "faces").is_displayed()
    rows = browser.find_elements(By.CSS_SELECTOR, "#faces-list li.face-row")
    assert [r.get_attribute("data-face") for r in rows] == ["0", "3"]
    assert "Looks real" in rows[0].text and "the verdict is this face's" not in rows[0].text
    assert "Uncertain" in rows[1].text and "the verdict is this face's" in rows[1].text  # the call, as the main card
    assert [len(r.find_elements(By.CSS_SELECTOR, ".bar")) for r in rows] == [3, 1]
    # no video to cut thumbnails from: said so, not left "loading"
    labels = [c.get_attribute("aria-label") for c in browser.find_elements(By.CSS_SELECTOR, "#faces-list canvas")]
    assert all("no picture" in label for label in labels), labels

    browser.execute_script(SHOW, [ONE_FACE], 0)  # the next job has one face: the section goes again
    assert not browser.find_element(By.ID, "faces").is_displayed()
    browser.execute_script("reset()")


def block(face: int, index: int, p: float, rolling_score: float) -> dict:
    verdict = "fake" if rolling_score >= 0.5 else "real"
    return {"type": "block", "face": face, "index": index, "segment": 0, "start_s": index * 1.2, "end_s": index * 1.2 + 1.2,
            "p_fake": p, "rolling": {"blocks": index + 1, "score": rolling_score, "verdict": verdict, "call": verdict,
                                     "interval": [max(0, rolling_score - 0.2), min(1, rolling_score + 0.2)]}}


def test_live_rolling_verdict_per_face(browser, page_server, tmp_path):  # noqa: F811
    """The Live tab's own event handler, fed a session's events: one face as before, then a second face
    gives a list with each face's rolling verdict and face-marked bars; the verdict is the suspicious one."""
    open_page(browser, page_server)
    run = """liveReset({source: "camera", window: 10, alert: "3/5", weights: null});
             for (const e of arguments[0]) liveEvent(e);"""
    browser.execute_script(run, [{"type": "face_found", "face": 0, "time_s": 0.0}, block(0, 0, 0.1, 0.1)])
    assert browser.find_element(By.ID, "live-faces").get_attribute("hidden") is not None  # one face: no list
    assert browser.find_element(By.ID, "live-word").get_attribute("textContent") == "Looks real"

    events = [{"type": "face_found", "face": 0, "time_s": 0.0}, block(0, 0, 0.1, 0.1),
              {"type": "face_found", "face": 1, "time_s": 0.5}, block(1, 0, 0.9, 0.9), block(0, 1, 0.2, 0.15),
              block(1, 1, 0.8, 0.85), {"type": "face_lost", "face": 0, "time_s": 2.6}]
    browser.execute_script(run, events)
    assert browser.find_element(By.ID, "live-faces").get_attribute("hidden") is None
    rows = browser.find_elements(By.CSS_SELECTOR, "#live-faces-list li.face-row")
    texts = [r.get_attribute("textContent") for r in rows]
    assert [r.get_attribute("data-face") for r in rows] == ["0", "1"]
    assert "Looks real" in texts[0] and "1 of" not in texts[0] and "not in the picture now" in texts[0], texts[0]
    assert "Looks fake" in texts[1] and "the verdict above" in texts[1] and "2 of 2 blocks look forged" in texts[1], texts[1]
    assert browser.find_element(By.ID, "live-word").get_attribute("textContent") == "Looks fake"
    assert "face 1" in browser.find_element(By.CSS_SELECTOR, "#live-verdict .file").get_attribute("textContent")
    bars = browser.find_elements(By.CSS_SELECTOR, "#live-timeline .bar")
    assert len(bars) == 4 and all("by-face" in b.get_attribute("class") for b in bars)  # the first bar too
    assert [b.get_attribute("title").split(",")[0] for b in bars] == ["face 0", "face 1", "face 0", "face 1"]
    log = browser.find_element(By.ID, "live-log").get_attribute("textContent")
    assert "face 1 found" in log and "face 0 lost" in log
    browser.execute_script("document.getElementById('view-file').hidden = true; document.getElementById('view-live').hidden = false;"
                           "document.getElementById('live-faces').scrollIntoView()")
    browser.save_screenshot(str(tmp_path / "live-faces.png"))
    browser.execute_script("document.getElementById('view-file').hidden = false; document.getElementById('view-live').hidden = true;"
                           "liveReset({source: 'camera', window: 10, alert: null, weights: null})")
    assert browser.find_element(By.ID, "live-faces").get_attribute("hidden") is not None
