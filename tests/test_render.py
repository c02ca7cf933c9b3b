"""The one renderer (``retrieval_hl.render.renderer``): cuts joined at one format, real ffmpeg."""

from __future__ import annotations

import logging
import tempfile

import av
import numpy as np
import pytest

from retrieval_hl.render.renderer import Cut, output_timeline, render_cropped, render_cuts
from rhl_common.errors import RenderError
from tests.conftest import ffmpeg, make_video


def probe(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        size = (v.width, v.height)
        n_frames = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        audio = None
        if c.streams.audio:
            a = c.streams.audio[0]
            audio = (a.rate, a.channels, sum(f.samples for f in c.decode(audio=0)))
    return size, n_frames, audio


def test_output_timeline_overlaps_by_the_crossfade():
    assert output_timeline([2.0, 3.0, 1.0]) == [(0.0, 2.0), (2.0, 5.0), (5.0, 6.0)]
    assert output_timeline([2.0, 3.0, 1.0], 0.5) == [(0.0, 2.0), (1.5, 4.5), (4.0, 5.0)]
    # the render shortens a fade to half the shortest cut; captions placed with it must follow
    assert output_timeline([1.0, 4.0], 0.8) == [(0.0, 1.0), (0.5, 4.5)]


def test_same_cut_twice_and_two_equal_silences(tmp_path):
    # Identical cuts (and silences of one length) are one sub-graph to ffmpeg-python; each use
    # must still get its own copy.
    sound = make_video(tmp_path / "sound.mp4", seconds=3, size="96x64", fps=10)
    mute = make_video(tmp_path / "mute.mp4", seconds=3, size="96x64", fps=10, audio=False)
    cut = Cut(source_path=str(sound), start_s=0.5, duration_s=1.0, has_audio=True)
    quiet = Cut(source_path=str(mute), start_s=0.0, duration_s=1.0, has_audio=False)
    out = render_cuts(
        [cut, quiet, cut, quiet], tmp_path / "out.mp4", fps=10, size=(64, 48), audio=True
    )
    size, n_frames, audio = probe(out)
    assert size == (64, 48)
    assert n_frames == 40
    assert audio[:2] == (48000, 2)
    assert abs(audio[2] - 4 * 48000) < 2048  # one AAC frame of slack


def test_crossfade_shortens_by_the_fades_and_keeps_source_size(tmp_path):
    src = make_video(tmp_path / "a.mp4", seconds=4, size="97x65", fps=10, audio=False)
    cuts = [Cut(source_path=str(src), start_s=s, duration_s=1.5, has_audio=False) for s in (0, 2)]
    out = render_cuts(cuts, tmp_path / "xf.mp4", fps=10, audio=False, crossfade_s=0.5)
    size, n_frames, audio = probe(out)
    assert size == (96, 64)  # rounded down to even
    assert n_frames == 25  # 1.5 + 1.5 - 0.5 s at 10 fps
    assert audio is None


def test_names_with_a_colon_are_files_not_protocols(tmp_path, monkeypatch):
    make_video(tmp_path / "take:2.mp4", seconds=2, size="64x48", fps=10)
    monkeypatch.chdir(tmp_path)
    cut = Cut(source_path="take:2.mp4", start_s=0.0, duration_s=1.0, has_audio=True)
    out = render_cuts([cut], "out:1.mp4", fps=10)
    assert probe(tmp_path / "out:1.mp4")[1] == 10
    frames = (np.full((48, 32, 3), k * 20, np.uint8) for k in range(10))
    render_cropped(frames, (32, 48), 10.0, out, "crop:1.mp4")
    size, n_frames, audio = probe(tmp_path / "crop:1.mp4")
    assert (size, n_frames) == ((32, 48), 10)
    assert audio is not None


def test_bad_input_raises(tmp_path):
    with pytest.raises(RenderError, match="no cuts"):
        render_cuts([], tmp_path / "x.mp4", fps=10)
    missing = Cut(source_path=str(tmp_path / "nope.mp4"), start_s=0, duration_s=1, has_audio=False)
    with pytest.raises(RenderError, match="ffmpeg failed while rendering y.mp4"):
        render_cuts([missing], tmp_path / "y.mp4", fps=10, audio=False)
    assert not (tmp_path / "y.mp4").exists()


@pytest.mark.parametrize("crossfade_s", [0.0, 0.5])
def test_a_failed_piece_stops_the_render_and_leaves_nothing(tmp_path, monkeypatch, crossfade_s):
    # Pieces render side by side: one cut of a missing source among good ones raises its own
    # one-line error, writes no output and leaves no temporary folder behind.
    src = make_video(tmp_path / "src.mp4", seconds=4, size="64x48", fps=10)
    good = [Cut(source_path=str(src), start_s=s, duration_s=1, has_audio=True) for s in (0, 2)]
    missing = Cut(source_path=str(tmp_path / "nope.mp4"), start_s=0, duration_s=1,
                  has_audio=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(RenderError, match=r"^ffmpeg failed while rendering y.mp4 \(the cut of "
                       r"nope.mp4 at 0.00 s\): [^\n]*No such file[^\n]*$"):
        render_cuts([good[0], missing, good[1]], tmp_path / "y.mp4", fps=10, size=(64, 48),
                    crossfade_s=crossfade_s)
    assert not (tmp_path / "y.mp4").exists()
    assert list(scratch.iterdir()) == []


def counter_video(path, seconds: int, fps: int = 10):
    """A flat grey picture whose level counts the frames (16 + 3 * (frame mod 70)), with a tone."""
    ffmpeg("-f", "lavfi", "-i",
           f"nullsrc=size=160x120:rate={fps}:duration={seconds},"
           "geq=lum='16+3*mod(N,70)':cb=128:cr=128",
           "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", str(fps), "-c:a", "aac", "-shortest",
           str(path))
    return path


def ffmpeg_inputs(records) -> list[int]:
    """How many inputs each logged ffmpeg run read."""
    runs = [r.args[0] for r in records if r.name == "rhl_common.ffmpeg" and r.msg == "ffmpeg: %s"]
    return [cmd.count("-i") for cmd in runs]


@pytest.mark.parametrize("crossfade_s", [0.0, 0.5])
def test_many_cuts_of_a_long_source(tmp_path, caplog, crossfade_s):
    # The design guard for the render hang: 9 cuts of one 3-minute source (6 cuts of a 1-hour
    # 720p file stalled ffmpeg in one graph; this small source never did). Every cut lands
    # frame-exact, the sound lasts as long as the picture, and no ffmpeg run reads more than
    # two inputs, whatever the number of cuts.
    fps = 10
    src = counter_video(tmp_path / "long.mp4", seconds=180, fps=fps)
    starts = [2.0, 21.0, 37.0, 58.0, 75.0, 96.0, 113.0, 134.0, 151.0]  # frame mod 70 <= 50
    cuts = [Cut(source_path=str(src), start_s=s, duration_s=1.5, has_audio=True) for s in starts]
    with caplog.at_level(logging.DEBUG, logger="rhl_common.ffmpeg"):
        out = render_cuts(cuts, tmp_path / "many.mp4", fps=fps, crossfade_s=crossfade_s,
                          loudness_lufs=-14.0)
    fade = int(crossfade_s * fps)
    size, n_frames, audio = probe(out)
    assert n_frames == 9 * 15 - 8 * fade
    assert audio[:2] == (48000, 2)
    assert abs(audio[2] - n_frames / fps * 48000) < 2048  # one AAC frame of slack
    inputs = ffmpeg_inputs(caplog.records)
    assert len(inputs) == 9 + (8 if fade else 0) + 1 and max(inputs) <= 2, inputs
    levels = frame_levels(out)
    t = 0
    for s in starts:  # the frames no transition touches are the source's, in order
        want = [16 + 3 * ((round(s * fps) + j) % 70) for j in range(fade, 15 - fade)]
        got = levels[t + fade : t + 15 - fade]
        assert np.allclose(got, want, atol=1.2), (s, got, want)
        t += 15 - fade


def mixed_range_video(folder, parts: int = 10, seconds: int = 10):
    """A file joined by stream copy from parts alternately yuv420p and yuvj420p (limited and
    full range), as a long recording assembled from clips is: its decoded picture format
    changes every ``seconds``, and ffmpeg rebuilds a filter graph at every change.
    """
    listing = folder / "parts.txt"
    for fmt in ("yuv420p", "yuvj420p"):
        ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=10:duration={seconds}",
               "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
               "-c:v", "libx264", "-pix_fmt", fmt, "-g", "10", "-c:a", "aac", "-shortest",
               str(folder / f"{fmt}.mp4"))
    listing.write_text("".join(f"file '{('yuv420p', 'yuvj420p')[k % 2]}.mp4'\n"
                               for k in range(parts)))
    ffmpeg("-f", "concat", "-i", str(listing), "-c", "copy", str(folder / "mixed.mp4"))
    return folder / "mixed.mp4"


def test_cuts_across_picture_format_changes(tmp_path, caplog):
    # The render hang, reproduced small: these cuts, each across a yuv420p <-> yuvj420p change,
    # in one graph of one input per cut stalled ffmpeg 9 for good from 5 cuts on (the graph
    # rebuilt at a change restarts concat on inputs that have ended); 2 cuts rendered 61
    # frames and 7.5 s of sound for 6 s. Each cut now keeps its own filters through the change.
    src = mixed_range_video(tmp_path)
    cuts = [Cut(source_path=str(src), start_s=10 * j - 1.5, duration_s=3, has_audio=True)
            for j in range(1, 10)]
    with caplog.at_level(logging.DEBUG, logger="rhl_common.ffmpeg"):
        out = render_cuts(cuts, tmp_path / "out.mp4", fps=10)
    size, n_frames, audio = probe(out)
    assert n_frames == 9 * 30
    assert abs(audio[2] - 9 * 3 * 48000) < 2048
    assert max(ffmpeg_inputs(caplog.records)) <= 2
    # Cuts 1 and 2 end on the first 1.5 s of a full-range and of a limited-range part: the
    # same pictures, once the range is converted.
    luma = frame_lumas(out)
    assert np.abs(luma[45:60] - luma[75:90]).mean() < 3


def frame_lumas(path) -> np.ndarray:
    """The luma (Y) plane of every frame."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="yuv420p")[: f.height].astype(float)
                         for f in c.decode(video=0)])


def frame_levels(path) -> list[float]:
    """The mean luma (Y) of every frame."""
    return [float(y.mean()) for y in frame_lumas(path)]


def test_a_cut_past_the_source_end_holds_its_last_frame(tmp_path):
    src = counter_video(tmp_path / "short.mp4", seconds=3, fps=10)
    cut = Cut(source_path=str(src), start_s=2.0, duration_s=2.5, has_audio=True)
    out = render_cuts([cut, cut], tmp_path / "held.mp4", fps=10)
    size, n_frames, audio = probe(out)
    assert n_frames == 50
    assert abs(audio[2] - 5 * 48000) < 2048
    levels = frame_levels(out)
    assert np.allclose(levels[9:25], 16 + 3 * 29, atol=1.2)  # frame 29, the last, held


def test_cuts_of_two_sources_need_a_size(tmp_path):
    a = Cut(source_path=str(tmp_path / "a.mp4"), start_s=0, duration_s=1, has_audio=False)
    b = a.model_copy(update={"source_path": str(tmp_path / "b.mp4")})
    with pytest.raises(RenderError, match="need an output size"):
        render_cuts([a, b], tmp_path / "x.mp4", fps=10)
