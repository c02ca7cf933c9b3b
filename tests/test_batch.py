"""Query-free main job with reframing, and the competition batch: isolation, order, resume."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import av
import pytest
from click.testing import CliRunner

from retrieval_hl.cli.main import cli
from retrieval_hl.competition.batch import run_batch
from retrieval_hl.competition.format import VideoPrediction, load_predictions
from retrieval_hl.render.export import load_highlight
from tests.conftest import ffmpeg


@pytest.fixture(scope="module")
def event_video(tmp_path_factory) -> Path:
    """12 s, 10 fps, 320x180: still and silent, except 5-8 s where a box moves and noise plays."""
    path = tmp_path_factory.mktemp("event") / "event.mp4"
    ffmpeg(
        "-f", "lavfi", "-i",
        "color=c=0x202020:s=320x180:r=10:d=12[bg];color=c=white:s=30x30:r=10:d=12[box];"
        "[bg][box]overlay=x='40+(t-5)*70':y=75:enable='between(t,5,8)'",
        "-f", "lavfi", "-i",
        "anoisesrc=d=12:c=white:a=0.5:r=44100,volume=volume=0:enable='not(between(t,5,8))'",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
    )  # fmt: skip
    return path


def run(*args: str, code: int = 0):
    res = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    assert res.exit_code == code, res.output + res.stderr
    return res


def test_offline_main_job_finds_event_and_follows_subject(event_video, tmp_path):
    out = tmp_path / "run"
    run("highlight", str(event_video), "--semantic", "off", "--ratio", "9:16", "--out", str(out),
        "--budget", "none")
    hl = load_highlight(out / "highlights.json")
    assert hl.encoder == "none" and len(hl.segments) == 1
    seg = hl.segments[0]
    inter = min(seg.end_s, 8.0) - max(seg.start_s, 5.0)
    assert inter / (max(seg.end_s, 8.0) - min(seg.start_s, 5.0)) > 0.5
    assert len(hl.crops) == seg.end_frame - seg.start_frame
    for c in hl.crops:
        assert (c.w_px, c.h_px) == (101, 179) and 0 <= c.x_px <= 320 - 101 and c.y_px <= 1
    # While the box is on screen (frames 52-78), the crop keeps most of it in view.
    inside = [c for c in hl.crops if 52 <= c.frame <= 78]
    box_x = {c.frame: 40 + (c.frame / 10 - 5) * 70 for c in inside}
    covered = [c.x_px - 10 <= box_x[c.frame] + 15 <= c.x_px + c.w_px + 10 for c in inside]
    assert sum(covered) / len(covered) > 0.8
    line = VideoPrediction.from_json_line((out / "predictions.jsonl").read_text())
    assert [p.frame for p in line.predictions] == [c.frame for c in hl.crops]
    with av.open(str(out / "highlight_9x16.mp4")) as c:
        v = c.streams.video[0]
        # The 101x179 crop at its publishing size: 1080x1920 would enlarge it past 2x.
        assert (v.width, v.height) == (202, 358) and c.streams.audio


def test_still_video_has_no_highlight_in_batch(tmp_path):
    vids = tmp_path / "v"
    vids.mkdir()
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=160x120:r=10:d=6", "-pix_fmt", "yuv420p",
           str(vids / "still.mp4"))
    (tmp_path / "index.json").write_text(json.dumps([{"video_id": "still",
                                                      "targetRatioWH": [9, 16]}]))
    run("batch", str(tmp_path / "index.json"), "--videos", str(vids), "--out",
        str(tmp_path / "p.jsonl"), "--semantic", "off")
    assert json.loads((tmp_path / "p.jsonl").read_text())["predictions"] == []


def test_busy_everywhere_video_is_empty_in_batch_but_not_in_the_main_job(tmp_path):
    """A box moves the whole time and nothing stands out: an empty list in the batch (motion
    that never stops is this video's ordinary level), a watchable stretch in the main job."""
    vids = tmp_path / "v"
    vids.mkdir()
    ffmpeg("-f", "lavfi", "-i",
           "color=c=0x202020:s=160x120:r=10:d=10[bg];color=c=white:s=24x24:r=10:d=10[box];"
           "[bg][box]overlay=x='68+50*sin(t*5)':y='48+30*cos(t*3)'",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(vids / "busy.mp4"))  # fmt: skip
    (tmp_path / "index.json").write_text(json.dumps([{"video_id": "busy",
                                                      "targetRatioWH": [9, 16]}]))
    run("batch", str(tmp_path / "index.json"), "--videos", str(vids), "--out",
        str(tmp_path / "p.jsonl"), "--semantic", "off")
    assert json.loads((tmp_path / "p.jsonl").read_text())["predictions"] == []
    res = CliRunner().invoke(cli, ["highlight", str(vids / "busy.mp4"), "--semantic", "off",
                                   "--no-render", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "nothing stands out; kept the best" in res.stderr
    hl = load_highlight(tmp_path / "run" / "highlights.json")
    assert hl.segments and 3.0 <= hl.duration_s <= 5.0  # "auto": at most half of 10 s


def test_batch_settles_missing_weights_once(event_video, tmp_path):
    """Semantic auto: one warning, then every video on signals; semantic on: stop at once."""
    vids = tmp_path / "v"
    vids.mkdir()
    for name in ("a", "b"):
        (vids / f"{name}.mp4").write_bytes(event_video.read_bytes())
    index = tmp_path / "index.json"
    index.write_text(json.dumps([{"video_id": i, "targetRatioWH": [9, 16]} for i in "ab"]))
    weights = ["--encoder", f"open_clip:ViT-B-32:{tmp_path / 'absent.bin'}"]
    out = tmp_path / "p.jsonl"
    run("batch", str(index), "--videos", str(vids), "--out", str(out), *weights)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [len(x["predictions"]) > 0 for x in lines] == [True, True]
    assert Path(f"{out}.log").read_text().count("semantic matching is off") == 1
    res = run("batch", str(index), "--videos", str(vids), "--out", str(tmp_path / "q.jsonl"),
              "--semantic", "on", *weights, code=1)
    assert "weights file not found" in res.stderr and "supply the weights" in res.stderr
    assert not (tmp_path / "q.jsonl").exists()


@pytest.mark.logs_errors  # corrupt and missing videos are logged as errors
def test_batch_isolates_corrupt_and_missing_videos(event_video, tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    (vids / "good.mp4").write_bytes(event_video.read_bytes())
    (vids / "bad.mp4").write_bytes(b"\x00\x01garbage" * 100)
    index = [{"video_id": i, "targetRatioWH": [9, 16]} for i in ("bad", "good", "gone")]
    (tmp_path / "index.jsonl").write_text("\n".join(json.dumps(x) for x in index))
    out = tmp_path / "pred.jsonl"
    res = run("batch", str(tmp_path / "index.jsonl"), "--videos", str(vids), "--out", str(out),
              "--semantic", "off")
    assert "2 failed" in res.stdout
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["video_id"] for x in lines] == ["bad", "good", "gone"]
    assert lines[0]["predictions"] == [] and lines[2]["predictions"] == []
    frames = [p["frame"] for p in lines[1]["predictions"]]
    assert frames == sorted(frames) and 60 in frames
    log = Path(f"{out}.log").read_text()
    assert "bad: empty prediction" in log and "no video file for id 'gone'" in log
    res = run("validate", str(out), "--index", str(tmp_path / "index.jsonl"), "--videos",
              str(vids))
    assert "0 errors" in res.stdout


def _fake_predict(path, video_id, ratio_wh):
    # "slow" hangs only where the batch can stop it: in the process it isolates a video in.
    if video_id == "slow" and multiprocessing.parent_process() is not None:
        time.sleep(120)
    return VideoPrediction.from_json_line(
        json.dumps({"video_id": video_id, "targetRatioWH": list(ratio_wh),
                    "predictions": [{"frame": 0, "bboxes": [0, 0, 9]}]})
    )


@pytest.mark.logs_errors  # a video over its time limit is logged as an error
def test_batch_resume_after_kill_and_time_limit(tmp_path):
    vids = tmp_path / "v"
    vids.mkdir()
    for name in ("a", "b", "slow"):
        (vids / f"{name}.mp4").write_bytes(b"x")
    (tmp_path / "i.json").write_text(json.dumps(
        [{"video_id": v, "targetRatioWH": [9, 16]} for v in ("a", "b", "slow")]))
    out = tmp_path / "p.jsonl"
    # What a kill leaves: a finished line, then nothing (writes are whole-file atomic renames);
    # a torn line from some other writer is dropped too.
    first = _fake_predict(None, "a", (9, 16)).to_json_line()
    out.write_text(first + "\n" + '{"video_id": "b", "targetRa')
    calls = []

    def predict(path, video_id, ratio_wh):
        calls.append(video_id)
        return _fake_predict(path, video_id, ratio_wh)

    res = run_batch(tmp_path / "i.json", vids, out, predict, resume=True, isolate=False,
                    time_limit_s=5)
    assert calls == ["b", "slow"] and res.skipped == 1
    assert list(load_predictions(out)) == ["a", "b", "slow"]
    t0 = time.monotonic()
    out.unlink()
    # The limit includes starting the isolated process: room for a loaded machine.
    res = run_batch(tmp_path / "i.json", vids, out, _fake_predict, time_limit_s=8.0)
    assert time.monotonic() - t0 < 60  # stopped at its limit, not waited for
    assert [f[0] for f in res.failed] == ["slow"] and "time limit" in res.failed[0][1]
    assert load_predictions(out)["slow"].rows == ()


def test_batch_bad_index(tmp_path):
    (tmp_path / "i.json").write_text("")
    res = run("batch", str(tmp_path / "i.json"), "--videos", str(tmp_path), "--out",
              str(tmp_path / "p.jsonl"), code=1)
    assert res.stderr.startswith("error: ")


@pytest.mark.logs_errors  # a missing video is logged as an error
def test_batch_json_summary(tmp_path):
    (tmp_path / "i.json").write_text(json.dumps([{"video_id": "gone", "targetRatioWH": [9, 16]}]))
    out = tmp_path / "p.jsonl"
    res = run("batch", str(tmp_path / "i.json"), "--videos", str(tmp_path), "--out", str(out),
              "--semantic", "off", "--store", str(tmp_path / "s"), "--json")
    summary = json.loads(res.stdout)
    assert summary["written"] == 1 and summary["skipped"] == 0 and summary["out"] == str(out)
    assert [f["video_id"] for f in summary["failed"]] == ["gone"]
    assert "no video file" in summary["failed"][0]["reason"]
