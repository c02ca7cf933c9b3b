"""The ffmpeg runner (``rhl_common.ffmpeg``): errors in one line, and a watchdog that kills an
ffmpeg that stalls (real ffmpeg, an input that never delivers a byte)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from retrieval_hl.render.renderer import render_cropped
from rhl_common.errors import RenderError
from rhl_common.ffmpeg import run_ffmpeg
from tests.conftest import make_video


def silent_fifo(tmp_path):
    """A named pipe nobody writes to: ffmpeg opening it waits forever, at 0 % CPU."""
    fifo = tmp_path / "never.mp4"
    os.mkfifo(fifo)
    return fifo


def test_a_stalled_ffmpeg_is_killed(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(RenderError, match=r"stalled while reading a fifo: no progress for 1 s"):
        run_ffmpeg(["-i", str(silent_fifo(tmp_path)), str(out)], what="reading a fifo",
                   stall_timeout_s=1.0)
    assert not out.exists()


def test_a_cancelled_ffmpeg_is_killed(tmp_path):
    # Stalled for good, but far from its stall timeout: only the cancel can end it.
    out, cancel = tmp_path / "out.mp4", threading.Event()
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(RenderError, match=r"^ffmpeg cancelled while reading a fifo$"):
        run_ffmpeg(["-i", str(silent_fifo(tmp_path)), str(out)], what="reading a fifo",
                   stall_timeout_s=600.0, cancel=cancel)
    assert not out.exists()


def test_a_slow_ffmpeg_that_progresses_is_not_killed(tmp_path):
    # Read at the native rate (-re): 3 s of video take 3 s, three times the stall timeout.
    # (Null output: an encoder's lookahead would hold the first frames back for seconds.)
    run_ffmpeg(["-re", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=3",
                "-f", "null", "-"], what="reading slowly", stall_timeout_s=1.0)


def test_a_failed_ffmpeg_says_why_in_one_line(tmp_path):
    with pytest.raises(RenderError, match=r"^ffmpeg failed while probing: .*No such file[^\n]*$"):
        run_ffmpeg(["-i", str(tmp_path / "nope.mp4"), "-f", "null", "-"], what="probing")


def test_a_stalled_render_cropped_is_killed(tmp_path):
    # ffmpeg waits on the sound's input forever while the frames fill the pipe: the writer
    # must not block for good either.
    frames = (np.zeros((48, 64, 3), np.uint8) for _ in range(10_000))
    with pytest.raises(RenderError, match="stalled while rendering crop.mp4"):
        render_cropped(frames, (64, 48), 10.0, silent_fifo(tmp_path), tmp_path / "crop.mp4",
                       stall_timeout_s=1.0)
    assert not (tmp_path / "crop.mp4").exists()


def test_render_cropped_still_renders(tmp_path):
    sound = make_video(tmp_path / "sound.mp4", seconds=2, size="64x48", fps=10)
    frames = (np.full((48, 64, 3), k * 10, np.uint8) for k in range(20))
    out = render_cropped(frames, (64, 48), 10.0, sound, tmp_path / "crop.mp4",
                         stall_timeout_s=5.0)
    assert out.stat().st_size > 0
