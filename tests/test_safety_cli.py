"""Bad outputs and inputs are one-line errors before any work; no silent wrong results; a killed
render leaves neither its temp file nor its ffmpeg running.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from retrieval_hl.cli.main import cli
from retrieval_hl.competition.batch import run_batch
from retrieval_hl.competition.format import VideoPrediction
from rhl_common import faults
from rhl_common.atomic import atomic_path, write_atomic
from tests.conftest import REPO, make_video

READ_ONLY = "/proc/rhl-no-such-dir"  # not writable even by root


def run(*args, code: int = 0):
    res = CliRunner().invoke(cli, ["-q", *map(str, args)], catch_exceptions=False)
    assert res.exit_code == code, res.output + res.stderr
    if code:
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
    return res


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("v") / "v1.mp4", seconds=3.0, size="96x64")


@pytest.fixture
def kit(tmp_path, video):
    index = tmp_path / "index.json"
    index.write_text(json.dumps([{"video_id": "v1", "targetRatioWH": [9, 16]}]))
    return index, video.parent


@pytest.fixture
def restore_hook():
    yield
    faults.hook = None


def line_for(video_id: str, ratio=(9, 16)) -> str:
    return VideoPrediction(video_id=video_id, ratio_wh=ratio).to_json_line()


@pytest.mark.parametrize("option", ["--out", "--log"])
def test_batch_refuses_to_write_over_the_index(kit, option):
    index, videos = kit
    before = index.read_bytes()
    res = run("batch", index, "--videos", videos, option, index, code=1)
    assert "is the index file" in res.stderr and index.read_bytes() == before


def test_batch_refuses_log_on_out_and_unwritable_outputs(kit, tmp_path):
    index, videos = kit
    out = tmp_path / "p.jsonl"
    res = run("batch", index, "--videos", videos, "--out", out, "--log", out, code=1)
    assert "is the --out file" in res.stderr
    res = run("batch", index, "--videos", videos, "--out", f"{READ_ONLY}/p.jsonl", code=1)
    assert "cannot be written" in res.stderr
    res = run("batch", index, "--videos", videos, "--out", out, "--log", f"{READ_ONLY}/l", code=1)
    assert "--log" in res.stderr and "cannot be written" in res.stderr and not out.exists()
    res = run("batch", index, "--videos", videos, "--out", tmp_path, code=1)
    assert "is a directory" in res.stderr


@pytest.mark.parametrize("limit", ["inf", "nan", "0", "-1"])
def test_batch_time_limit_validated(kit, tmp_path, limit):
    index, videos = kit
    res = run("batch", index, "--videos", videos, "--out", tmp_path / "p.jsonl",
              "--time-limit", limit, code=1)
    assert "--time-limit must be a positive number" in res.stderr
    assert not (tmp_path / "p.jsonl").exists()


def test_batch_disk_full_is_one_line(kit, tmp_path, restore_hook):
    index, videos = kit
    out = tmp_path / "p.jsonl"
    out.write_text(line_for("v1") + "\n")

    def disk_full(point):
        if point == "atomic.before-rename":
            raise OSError(errno.ENOSPC, "No space left on device", str(out))

    faults.hook = disk_full
    res = run("batch", index, "--videos", videos, "--out", out, "--semantic", "off", code=1)
    assert "No space left on device" in res.stderr
    assert out.read_text() == line_for("v1") + "\n"  # the earlier file is intact


def test_resume_redoes_a_line_whose_ratio_changed(kit, tmp_path):
    index, videos = kit
    out = tmp_path / "p.jsonl"
    out.write_text(line_for("v1", (16, 9)) + "\n")
    calls = []

    def predict(path, video_id, ratio):
        calls.append(ratio)
        return VideoPrediction(video_id=video_id, ratio_wh=ratio)

    res = run_batch(index, videos, out, predict, resume=True, isolate=False)
    assert calls == [(9, 16)] and res.skipped == 0
    assert VideoPrediction.from_json_line(out.read_text()).ratio_wh == (9, 16)
    res = run_batch(index, videos, out, predict, resume=True, isolate=False)
    assert res.skipped == 1 and len(calls) == 1


def test_highlight_out_checked_before_any_work(video, tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    res = run("highlight", video, "--out", a_file, "--semantic", "off", code=1)
    assert "is a file" in res.stderr
    res = run("highlight", tmp_path / "missing.mp4", "--out", READ_ONLY, code=1)
    assert "cannot be written" in res.stderr  # before the missing video is even looked at
    res = run("highlight", video, "--store", "bogus://x", "--semantic", "off", "--out",
              tmp_path / "r", code=1)
    assert "unknown store URI 'bogus://x'" in res.stderr and not (tmp_path / "r").exists()


def test_reused_out_keeps_no_files_of_the_earlier_run(video, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("highlight.mp4", "highlight_9x16.mp4", "predictions.jsonl", "notes.txt"):
        (out / name).write_text("from an earlier run")
    victim = tmp_path / "victim.txt"
    victim.write_text("not ours")
    (out / "highlights.srt").symlink_to(victim)  # an output that is a link: replaced, not followed
    run("highlight", video, "--out", out, "--semantic", "off", "--no-render", "--budget", "none")
    assert victim.read_text() == "not ours" and not (out / "highlights.srt").is_symlink()
    names = {p.name for p in out.iterdir()}
    assert {"highlights.json", "highlights.srt", "notes.txt"} <= names  # the user's file stays
    assert not names & {"highlight.mp4", "highlight_9x16.mp4", "predictions.jsonl"}


def test_reads_never_create_a_mistyped_path(tmp_path):
    res = run("search", "a goal", "--store", tmp_path / "typo", code=1)
    assert "no FAISS store" in res.stderr
    res = run("library", "list", "--library", tmp_path / "typo-lib", code=1)
    assert "no library at" in res.stderr
    assert not (tmp_path / "typo").exists() and not (tmp_path / "typo-lib").exists()


def test_library_export_and_assemble_to_unwritable_out(tmp_path):
    res = run("library", "export", "--library", tmp_path, "--out", f"{READ_ONLY}/c.json", code=1)
    assert "cannot be written" in res.stderr
    script = tmp_path / "s.txt"
    script.write_text("a red screen\n")
    res = run("assemble", script, "--library", tmp_path / "none", "--out", f"{READ_ONLY}/e.mp4",
              code=1)
    assert "cannot be written" in res.stderr  # before the (missing) library is opened


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"video_id": "v1", "targetRatioWH": [9, 16], "predictions": [{"frame": 0, '
         '"bboxes": [1' + "0" * 400 + ", 0, 10]}]}\n", None),
        ('{"video_id": "v1", "targetRatioWH": [9, 16], "predictions": [{"frame": 1'
         + "0" * 5000 + ', "bboxes": [1, 0, 10]}]}\n', None),
        ("[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
    ],
)
def test_eval_and_validate_survive_hostile_numbers_and_nesting(kit, tmp_path, text, message):
    index, _ = kit
    pred = tmp_path / "p.jsonl"
    pred.write_text(text)
    res = CliRunner().invoke(cli, ["-q", "validate", str(pred), "--index", str(index)])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    if message:
        assert message in res.stderr
    else:
        assert "1 errors" in res.stdout
    res = CliRunner().invoke(cli, ["-q", "eval", str(pred), str(pred)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1


KILLED_RENDER = """
import os, sys
from rhl_common.atomic import atomic_path
from rhl_common.ffmpeg import run_ffmpeg
target = sys.argv[1]
with atomic_path(target) as tmp:
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=600",
                "-c:v", "libx264", "-preset", "ultrafast", "-f", "mp4", str(tmp)],
               what="a long render")
"""


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _wait(cond, timeout_s: float = 60.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killed_render_leaves_no_temp_and_no_ffmpeg(tmp_path):
    target = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_RENDER), str(target)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    temps = lambda: [p for p in tmp_path.glob(".out.mp4.*.mp4") if p.stat().st_size > 0]  # noqa: E731
    try:
        assert _wait(lambda: temps() and _children(proc.pid)), "the render never started"
        (ff,) = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _wait(lambda: not Path(f"/proc/{ff}").exists() or "Z" in
                     (Path(f"/proc/{ff}/stat").read_text().rsplit(")", 1)[1].split()[0])), (
            "ffmpeg outlived its parent"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
    assert temps()  # the killed run's temp file is still there...
    write_atomic(target, b"next run")  # ...until the next write of the same output
    assert not list(tmp_path.glob(".out.mp4.*")) and target.read_bytes() == b"next run"
    with atomic_path(tmp_path / "other.mp4") as tmp:  # a live writer's temp is never taken
        with atomic_path(tmp_path / "other.mp4"):
            assert tmp.exists()
