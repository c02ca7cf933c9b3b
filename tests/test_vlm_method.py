"""The chunked VLM method end to end against a local server that answers from annotations:
chunking, parallel requests, time mapping, merging, the cache, failures, and the CLI methods.
"""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from indexer.probe import probe_video
from retrieval_hl.cli.main import cli
from retrieval_hl.config import Settings, load_settings
from retrieval_hl.describe.vlm import VLMDescriber
from retrieval_hl.describe.vlm_cache import ResponseCache
from retrieval_hl.pipeline import highlight_video
from retrieval_hl.render.export import load_highlight, srt_text
from rhl_common.errors import ConfigError, VLMResponseError
from tests.conftest import TINY, make_video
from tests.vlm_server import AnnotatedVLM

EVENTS = [(12.0, 16.0, "a dog jumps over a fence"), (27.0, 31.0, "a ball hits the goal post"),
          (50.0, 54.0, "a child laughs")]  # fmt: skip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """65 s, small and silent: three 30 s chunks sharing 2 s (0-23, 21-44, 42-65, about)."""
    return make_video(tmp_path_factory.mktemp("vlmm") / "clip.mp4", seconds=65, size="64x48",
                      fps=5, audio=False)  # fmt: skip


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("vlms") / "short.mp4", seconds=8, size="64x48",
                      fps=5, audio=False)  # fmt: skip


@pytest.fixture
def vlm_server(clip):
    srv = AnnotatedVLM({"clip": EVENTS})
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RHL_VLM_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def asker(srv, **kw) -> VLMDescriber:
    args = {"frames_per_chunk": 8, "chunk_s": 30.0, "overlap_s": 2.0, "concurrency": 2,
            "retries": 0, **kw}  # fmt: skip
    return VLMDescriber(srv.url, "clip", **args)


def test_chunks_in_parallel_mapped_and_merged(clip, vlm_server):
    vlm_server.delay_s = 0.3
    answer = asker(vlm_server, frames_per_chunk=16).ask(probe_video(clip))
    assert answer.n_chunks == answer.n_requests == vlm_server.requests == 3
    assert answer.n_frames_sent == vlm_server.images == 48
    assert vlm_server.max_in_flight == 2  # bounded concurrency, and really parallel
    got = sorted((e.start_hint_s, e.end_hint_s, e.text) for e in answer.descriptions)
    # chunks 0-23, 21-44, 42-65 s (about): every event comes back once, at its true time
    assert [(round(a, 1), round(b, 1), t) for a, b, t in got] == [
        (12.0, 16.0, EVENTS[0][2]), (27.0, 31.0, EVENTS[1][2]), (50.0, 54.0, EVENTS[2][2])]
    # each chunk's prompt states its own span and true duration, and times within it
    assert any("the part from 0.0 s to" in " ".join(p.split()) for p in vlm_server.prompts)
    assert all("of a video of 65.0 s" in " ".join(p.split()) for p in vlm_server.prompts)


def test_event_on_a_chunk_border_is_one_event(clip, vlm_server):
    vlm_server.events = {"clip": [(20.0, 26.0, "a long rally")]}  # crosses 21-23 s overlap
    answer = asker(vlm_server, frames_per_chunk=16).ask(probe_video(clip))
    (event,) = answer.descriptions
    assert (round(event.start_hint_s, 1), round(event.end_hint_s, 1)) == (20.0, 26.0)
    assert answer.support == (2,)


def test_user_request_reaches_the_prompt(clip, vlm_server):
    asker(vlm_server, user_request="只要小狗").ask(probe_video(clip))
    assert all("User request: 只要小狗" in p for p in vlm_server.prompts)


def test_rerun_is_served_from_the_cache(clip, vlm_server, tmp_path):
    cache = ResponseCache(tmp_path / "c")
    first = asker(vlm_server, cache=cache).ask(probe_video(clip))
    assert vlm_server.requests == 3
    again = asker(vlm_server, cache=cache).ask(probe_video(clip))
    assert vlm_server.requests == 3 and again.n_requests == 0 and again.n_cached == 3
    assert again.descriptions == first.descriptions
    asker(vlm_server, cache=cache, frames_per_chunk=4).ask(probe_video(clip))  # other frames
    asker(vlm_server, cache=cache, user_request="dogs").ask(probe_video(clip))  # other prompt
    assert vlm_server.requests == 9
    asker(vlm_server, cache=None).ask(probe_video(clip))
    assert vlm_server.requests == 12


def test_junk_chunks_warn_and_the_rest_is_used(clip, vlm_server, caplog, tmp_path):
    vlm_server.junk = 1.0  # every reply junk: prose, HTML, 500, times outside the chunk
    with pytest.raises(VLMResponseError, match="3 of 3 VLM chunk answers failed"):
        asker(vlm_server).ask(probe_video(clip))
    vlm_server.junk, vlm_server.seed = 0.5, 3
    cache = ResponseCache(tmp_path / "c")
    with caplog.at_level(logging.WARNING):
        answer = asker(vlm_server, cache=cache).ask(probe_video(clip))
    assert answer.failures and len(answer.failures) < 3
    assert "VLM chunk answers failed" in caplog.text
    with pytest.raises(VLMResponseError, match="failed"):
        asker(vlm_server, strict=True).ask(probe_video(clip))
    # junk is never cached: the failed chunks are asked again
    before = vlm_server.requests
    asker(vlm_server, cache=cache).ask(probe_video(clip))
    assert vlm_server.requests - before == len(answer.failures)


def run(*args: str, code: int = 0):
    res = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    assert res.exit_code == code, res.output + res.stderr
    return res


def test_cli_vlm_without_weights(clip, vlm_server, tmp_path):
    out = tmp_path / "run"
    res = run("highlight", str(clip), "--vlm-url", vlm_server.url, "--vlm-model", "clip",
              "--semantic", "off", "--out", str(out), "--no-render", "--budget", "none",
              "--prompt", "the dog, 2 clips")  # fmt: skip
    hl = load_highlight(out / "highlights.json")
    assert hl.encoder == "none" and vlm_server.requests == 3
    assert all("the dog, 2 clips" in p for p in vlm_server.prompts)
    spans = [(round(s.start_s), round(s.end_s)) for s in hl.segments]
    assert len(spans) == 2 and set(spans) <= {(12, 16), (27, 31), (50, 54)}
    for s in hl.segments:  # each segment names the description that chose it
        d = hl.descriptions[s.description_index]
        assert (d.start_hint_s, d.end_hint_s) == pytest.approx((s.start_s, s.end_s), abs=0.2)
        assert s.priority == d.priority == 1
    assert "p1" in res.stdout
    # a rerun asks nothing (cache); --no-cache asks again
    run("highlight", str(clip), "--vlm-url", vlm_server.url, "--vlm-model", "clip",
        "--semantic", "off", "--out", str(out), "--no-render", "--prompt", "the dog, 2 clips")
    assert vlm_server.requests == 3
    run("highlight", str(clip), "--vlm-url", vlm_server.url, "--vlm-model", "clip",
        "--semantic", "off", "--out", str(out), "--no-render", "--no-cache")
    assert vlm_server.requests == 6


@pytest.mark.parametrize("junk", ["empty", "prose", "html", "500", "timeout"])
def test_cli_never_crashes_on_an_answer(short, tmp_path, junk):
    from tests.test_vlm import FakeOpenAI

    srv = FakeOpenAI()
    try:
        for _ in range(6):
            if junk == "empty":
                srv.reply('{"highlights": []}')
            elif junk == "prose":
                srv.reply("Sorry, I can't help with that.")
            elif junk == "html":
                srv.replies.append((200, "<html><body>Bad Gateway</body></html>", 0.0))
            elif junk == "500":
                srv.reply("overloaded", status=500)
            else:
                srv.reply("[]", delay_s=1.5)
        env = {"RHL_VLM_TIMEOUT_S": "0.3", "RHL_VLM_RETRIES": "0", "RHL_VLM_CHUNK_S": "600"}
        args = ("-q", "highlight", str(short), "--vlm-url", srv.url, "--semantic", "off", "--out",
                str(tmp_path / "o"), "--no-render")  # fmt: skip
        res = CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)
        assert res.exit_code == 0, res.output + res.stderr
        assert "VLM" in res.stderr and "continues with signals only" in res.stderr
        hl = load_highlight(tmp_path / "o" / "highlights.json")
        assert hl.segments and srt_text(hl).count(" --> ") == len(hl.segments)
        res = CliRunner(env=env).invoke(cli, [*args, "--vlm-strict"], catch_exceptions=False)
        assert res.exit_code == 1 and res.stderr.startswith("error: ")
        assert len(res.stderr.strip().splitlines()) == 1
    finally:
        srv.close()


def test_cli_bad_vlm_url_is_one_line(clip, tmp_path):
    res = run("highlight", str(clip), "--vlm-url", "ftp://x", "--semantic", "off", "--out",
              str(tmp_path / "o"), code=1)  # fmt: skip
    assert "ftp://x" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run("highlight", str(clip), "--method", "vlm", "--semantic", "off", code=1)
    assert "--vlm-url" in res.stderr


def test_hybrid_priors_steer_and_fill(clip, vlm_server, tmp_path):
    s = Settings(encoder=TINY, store=str(tmp_path / "s"), vlm_url=vlm_server.url,
                 vlm_model="clip", budget="none", render=False, sample_fps=1.0)  # fmt: skip
    hl = highlight_video(clip, settings=s)
    assert vlm_server.requests == 3
    assert hl.settings["method"] == "auto"
    texts = [hl.descriptions[x.description_index].text for x in hl.segments]
    # with a random encoder retrieval is noise: the VLM's ranges lead, and every event is kept
    for start, end, text in EVENTS:
        assert text in texts
        mine = [x for x in hl.segments if hl.descriptions[x.description_index].text == text]
        assert any(x.start_s < end and x.end_s > start for x in mine)
    assert all(x.priority == hl.descriptions[x.description_index].priority for x in hl.segments)


def test_vague_request_without_weights_or_vlm_falls_back_to_signals(clip, tmp_path):
    s = Settings(semantic="off", render=False, store=str(tmp_path / "s"))
    hl = highlight_video(clip, prompt="把精彩的部分剪出来，30秒以内，剪两段", settings=s)
    assert hl.encoder == "none" and 1 <= len(hl.segments) <= 2
    assert hl.duration_s <= 30.0 + 1e-6
    assert hl.settings["max_clips"] == 2 and hl.settings["budget"] == "30s"
    with pytest.raises(ConfigError, match="vlm_overlap_s"):
        load_settings(vlm_chunk_s=10, vlm_overlap_s=5)


def test_srt_survives_a_highlight_without_descriptions():
    from indexer.models import VideoInfo
    from retrieval_hl.models import Highlight, Segment

    info = VideoInfo(path="x.mp4", video_id="x", width_px=64, height_px=48, fps=10.0,
                     n_frames=100, duration_s=10.0)  # fmt: skip
    seg = Segment(video_id="x", start_frame=10, end_frame=40, start_s=1.0, end_s=4.0,
                  description_index=0, priority=1, score_raw=0.0, score_norm=0.0)  # fmt: skip
    hl = Highlight(video=info, encoder="none", descriptions=(), segments=(seg,))
    assert srt_text(hl) == "1\n00:00:00,000 --> 00:00:03,000\nhighlight\n"
