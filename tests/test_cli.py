"""The ``rhl`` command end to end on generated videos with the tiny random encoder."""

from __future__ import annotations

import json
import time

import av
import pytest
from click.testing import CliRunner

from retrieval_hl.cli.main import cli
from retrieval_hl.render.export import load_highlight
from tests.conftest import TINY, ffmpeg, make_video


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("long") / "long clip.mp4", seconds=20)


def run(*args: str, code: int = 0):
    res = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    assert res.exit_code == code, res.output + res.stderr
    return res


def duration_s(path) -> float:
    with av.open(str(path)) as c:
        return c.duration / 1e6


def test_highlight_writes_json_srt_mp4(long_video, tmp_path):
    out = tmp_path / "run"
    res = run(
        "highlight",
        str(long_video),
        "--encoder",
        TINY,
        "--store",
        str(tmp_path / "s"),
        "--out",
        str(out),
        "--prompt",
        "a colourful test pattern",
        "--budget",
        "0.5",
        "--json",
    )
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    hl = load_highlight(out / "highlights.json")
    assert summary["segments"] == len(hl.segments) >= 1
    assert hl.duration_s <= 10.0 + 1e-6
    assert hl.descriptions[0].text == "a colourful test pattern"
    srt = (out / "highlights.srt").read_text()
    assert srt.count(" --> ") == len(hl.segments)
    assert duration_s(out / "highlight.mp4") == pytest.approx(hl.duration_s, abs=0.25)
    with av.open(str(out / "highlight.mp4")) as c:
        assert c.streams.audio and c.streams.video


def test_index_twice_then_search(long_video, tmp_path):
    store = str(tmp_path / "s")
    first = json.loads(
        run("index", str(long_video), "--encoder", TINY, "--store", store, "--json").stdout
    )
    run("index", str(long_video), "--encoder", TINY, "--store", store, "--reindex")
    res = run("search", "a test pattern", "--store", store, "--top", "3", "--json")
    rows = [json.loads(x) for x in res.stdout.strip().splitlines()]
    assert len(rows) == 3 and all(r["video_id"] == first["video_id"] for r in rows)
    assert rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]
    from indexer.stores import open_store

    assert open_store(store).count() == first["slices"]


def test_missing_video_is_one_line_error(tmp_path):
    res = run(
        "highlight",
        str(tmp_path / "nope.mp4"),
        "--encoder",
        TINY,
        "--store",
        str(tmp_path / "s"),
        "--out",
        str(tmp_path / "o"),
        code=1,
    )
    assert res.stderr.startswith("error: no such video file")
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_bad_budget_and_window(long_video, tmp_path):
    res = run("highlight", str(long_video), "--budget", "lots", "--store", str(tmp_path), code=1)
    assert "bad budget" in res.stderr
    res = run("index", str(long_video), "--window", "9", "--store", str(tmp_path), code=1)
    assert "window_s" in res.stderr


def test_missing_weights_fail_fast(long_video, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    t0 = time.monotonic()
    res = run(
        "index",
        str(long_video),
        "--encoder",
        "open_clip:ViT-B-32:laion2b_s34b_b79k",
        "--store",
        str(tmp_path / "s"),
        code=1,
    )
    assert time.monotonic() - t0 < 60
    assert "supply the weights" in res.stderr and "/path/to/" in res.stderr


def test_store_refuses_other_encoder(long_video, tmp_path):
    store = str(tmp_path / "s")
    run("index", str(long_video), "--encoder", TINY, "--store", store)
    res = run(
        "index", str(long_video), "--encoder", "open_clip:ViT-B-32:random", "--store", store, code=1
    )
    assert "rhl-tiny-vit" in res.stderr


def make_bursts_video(path):
    """Silent, 20 s: still grey with two 3 s bursts of a moving pattern, at 5 s and 13 s."""
    parts = [("color=c=gray:", 5), ("testsrc2=", 3), ("color=c=gray:", 5), ("testsrc2=", 3),
             ("color=c=gray:", 4)]
    args = [a for src, d in parts
            for a in ("-f", "lavfi", "-i", f"{src}size=160x120:rate=10:duration={d}")]
    concat = "".join(f"[{k}:v]" for k in range(len(parts))) + f"concat=n={len(parts)}:v=1:a=0"
    ffmpeg(*args, "-filter_complex", concat, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


def test_silent_video_with_crossfade(tmp_path):
    silent = make_bursts_video(tmp_path / "bursts.mp4")
    out = tmp_path / "run"
    run("highlight", str(silent), "--semantic", "off", "--store", str(tmp_path / "s"),
        "--out", str(out), "--budget", "none", "--crossfade", "0.3")
    hl = load_highlight(out / "highlights.json")
    assert not hl.video.has_audio
    assert [(round(s.start_s), round(s.end_s)) for s in hl.segments] == [(5, 8), (13, 16)]
    fades = 0.3 * (len(hl.segments) - 1)
    assert duration_s(out / "highlight.mp4") == pytest.approx(hl.duration_s - fades, abs=0.2)
    with av.open(str(out / "highlight.mp4")) as c:
        assert not c.streams.audio


def test_semantic_and_signals_without_prompt(long_video, tmp_path):
    """No prompt: vocabulary descriptions fused with signals; segments carry evidence labels."""
    out = tmp_path / "run"
    run("highlight", str(long_video), "--encoder", TINY, "--store", str(tmp_path / "s"),
        "--out", str(out), "--semantic", "on", "--no-render")
    hl = load_highlight(out / "highlights.json")
    assert hl.encoder == TINY and {d.source for d in hl.descriptions} == {"vocab", "signals"}
    assert len(hl.segments) >= 1  # the main job keeps its best moment even when nothing stands out
    assert {hl.descriptions[s.description_index].source for s in hl.segments} == {"signals"}


def test_category_script_adds_template_queries(long_video, tmp_path):
    out = tmp_path / "run"
    run("highlight", str(long_video), "--encoder", TINY, "--store", str(tmp_path / "s"),
        "--out", str(out), "--category", "soccer", "--no-render")
    hl = load_highlight(out / "highlights.json")
    assert any(d.source == "template" and d.domain == "soccer" for d in hl.descriptions)
    res = run("highlight", str(long_video), "--encoder", TINY, "--store", str(tmp_path / "s"),
              "--out", str(out), "--category", "no-such-sport", code=1)
    assert "no script template" in res.stderr


def test_category_uses_library_clips_as_image_queries(long_video, videos, tmp_path):
    lib = str(tmp_path / "lib")
    run("library", "add", str(videos["plain"]), "--category", "soccer", "--library", lib,
        "--encoder", TINY)
    out = tmp_path / "run"
    run("highlight", str(long_video), "--encoder", TINY, "--store", str(tmp_path / "s"),
        "--out", str(out), "--category", "soccer", "--library", lib, "--no-render")
    hl = load_highlight(out / "highlights.json")
    assert any(d.text.startswith("like library clip") for d in hl.descriptions)


def test_quiet_and_verbose_after_the_subcommand(videos, tmp_path):
    base = ["index", str(videos["silent"]), "--encoder", TINY, "--store", str(tmp_path / "s")]
    loud = CliRunner().invoke(cli, [*base, "-v"], catch_exceptions=False)
    assert loud.exit_code == 0 and "DEBUG retrieval_hl.cli.main: effective settings" in loud.stderr
    quiet = CliRunner().invoke(cli, [*base, "--json", "-q"], catch_exceptions=False)
    assert quiet.exit_code == 0 and "INFO" not in quiet.stderr and "DEBUG" not in quiet.stderr
    assert json.loads(quiet.stdout)["slices"] >= 1
    # A read of a library that does not exist is one error line, and creates nothing.
    res = CliRunner().invoke(cli, ["library", "list", "-q", "--library", str(tmp_path / "lib"),
                                   "--json"], catch_exceptions=False)
    assert res.exit_code == 1 and res.stdout == "" and "INFO" not in res.stderr
    assert res.stderr.startswith("error: no library at") and not (tmp_path / "lib").exists()


def test_library_rm_json(videos, tmp_path):
    lib = ["--library", str(tmp_path / "lib"), "--encoder", TINY]
    added = run("library", "add", str(videos["plain"]), "--mode", "clip", *lib, "--json")
    clip_id = json.loads(added.stdout.splitlines()[0])["clip_id"]
    res = run("library", "rm", clip_id, *lib, "--json")
    assert json.loads(res.stdout) == {"removed": 1, "left": 0}


def test_help_names_defaults():
    text = run("highlight", "--help").stdout
    for needle in ("[default: auto]", "[default: chronological]", "best first"):
        assert needle in text
    assert "[default: 2.0]" in run("index", "--help").stdout
    assert "[default: 10" in run("search", "--help").stdout
    batch_help = run("batch", "--help").stdout
    assert "Folder holding the videos" in batch_help and "signals only" in batch_help
