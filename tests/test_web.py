"""The web page: its jobs without a browser, then the real page in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from retrieval_hl.config import Settings
from retrieval_hl.models import CropBox
from retrieval_hl.web.jobs import JobRequest, JobResult, adjust_job, run_job, stage_upload
from rhl_common.errors import ConfigError, VideoOpenError
from tests.conftest import make_video
from tests.test_timeline import make_highlight

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("web") / "match day.mp4", seconds=8, fps=25,
                      size="320x180")


def quick(tmp_path) -> Settings:
    return Settings(semantic="off", store=str(tmp_path / "store"), render=False, plots=False)


def test_run_job_writes_a_fresh_run(clip, tmp_path):
    staged = stage_upload(clip, tmp_path)
    assert staged.read_bytes() == clip.read_bytes() and staged.parent.parent == tmp_path
    req = JobRequest(video_path=str(staged), ratio="9:16", budget="none")
    seen = []
    first = run_job(req, tmp_path, quick(tmp_path), lambda f, s: seen.append((f, s)))
    again = run_job(req, tmp_path, quick(tmp_path))
    assert first.run_dir != again.run_dir  # every version in a directory of its own
    assert len(first.highlight.segments) >= 1 and first.highlight.ratio_wh == (9, 16)
    assert {"json", "srt", "otio", "predictions"} <= set(first.files)
    assert json.loads(Path(first.files["json"]).read_text())["segments"]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_adjust_drops_segments_with_their_crops(clip, tmp_path):
    hl = make_highlight(clip, [(10, 40), (100, 150)])
    hl = hl.model_copy(update={"ratio_wh": (9, 16), "crops": tuple(
        CropBox(frame=f, x_px=10, y_px=0, w_px=100, h_px=180)
        for s in hl.segments for f in range(s.start_frame, s.end_frame))})
    prev = JobResult(request=JobRequest(video_path=str(clip), budget="0.2"), run_dir="x",
                     highlight=hl)
    out = adjust_job(prev, [1], "0.2", tmp_path, quick(tmp_path))
    assert [(s.start_frame, s.end_frame) for s in out.highlight.segments] == [(100, 150)]
    assert [c.frame for c in out.highlight.crops] == list(range(100, 150))
    with pytest.raises(ConfigError, match="keep at least one"):
        adjust_job(prev, [], "0.2", tmp_path, quick(tmp_path))
    # A new budget picks again from the video itself.
    picked = adjust_job(prev, [1], "2s", tmp_path, quick(tmp_path))
    assert picked.request.budget == "2s" and picked.highlight.track is not None


def test_bad_requests_are_one_line_errors(clip, tmp_path):
    with pytest.raises(ConfigError, match="no video uploaded"):
        stage_upload(None, tmp_path)
    with pytest.raises(ConfigError, match="bad ratio '3:7'; choose from original, 9:16"):
        run_job(JobRequest(video_path=str(clip), ratio="3:7"), tmp_path, quick(tmp_path))
    with pytest.raises(ConfigError, match="bad budget"):
        run_job(JobRequest(video_path=str(clip), budget="lots"), tmp_path, quick(tmp_path))
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(VideoOpenError):
        run_job(JobRequest(video_path=str(junk)), tmp_path, quick(tmp_path))


def test_upload_limit_parsing():
    from retrieval_hl.web.app import upload_limit_bytes

    assert upload_limit_bytes("500mb") == 500 << 20
    assert upload_limit_bytes(" 2 GB ") == 2 << 30
    with pytest.raises(ConfigError, match="bad upload limit"):
        upload_limit_bytes("huge")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    """The page served from this process on a free loopback port."""
    pytest.importorskip("gradio", reason="the web extra (gradio) is not installed")
    from retrieval_hl.web.app import serve

    work = tmp_path_factory.mktemp("serve")
    port = _free_port()
    s = Settings(semantic="off", store=str(work / "store"))
    app = serve(s, work / "runs", port=port, max_upload="20mb", block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright for Python is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM)
                              else shutil.which("chromium"), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def test_page_in_a_real_browser(browser, page_url, clip, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
    page.set_default_timeout(120_000)  # a busy machine: generous, the run itself has its own
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
        (page_url.rstrip("/"), "data:", "blob:")) else None)
    page.goto(page_url)
    page.set_input_files("#upload input[type=file]", str(clip))
    page.wait_for_selector("#upload a[download='match day.mp4']")
    # The ratio stays at its default, 9:16.
    page.click("#go")
    page.wait_for_selector("#highlight video[src]", timeout=240_000)
    status = page.inner_text("#status")
    assert "segment(s)" in status and "error" not in status.lower()
    assert page.locator("#reframed video[src]").count() == 1
    assert page.locator("#timeline img").count() == 1 and page.locator("#sheet img").count() == 1

    played = page.evaluate("""async () => {
        const v = document.querySelector('#highlight video');
        v.muted = true;
        await v.play();
        for (let i = 0; i < 200 && v.currentTime <= 0.3 && !v.error; i++) {
            await new Promise(r => setTimeout(r, 100));
        }
        return {t: v.currentTime, paused: v.paused, w: v.videoWidth, err: v.error && v.error.code};
    }""")
    assert played["err"] is None and played["t"] > 0.3 and played["w"] == 320, played

    with page.expect_download() as dl:
        page.click("#downloads a[download='highlights.json']")
    saved = tmp_path / "downloaded.json"
    dl.value.save_as(saved)
    data = json.loads(saved.read_text())
    assert data["segments"] and data["ratio_wh"] == [9, 16]
    assert page.locator("#keep input[type=checkbox]").count() == len(data["segments"])
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000

    # A file that is not a video: one line on the page, never a traceback.
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video at all")
    page.goto(page_url)
    page.set_input_files("#upload input[type=file]", str(junk))
    page.wait_for_selector("#upload a[download='junk.mp4']")
    page.click("#go")
    page.wait_for_selector("#status :text('error:')", timeout=60_000)
    text = page.inner_text("#status")
    assert "junk.mp4" in text and "Traceback" not in text
    assert outside == []  # no outside fonts, analytics or CDNs
    page.close()
