"""Render for publishing: publishing sizes, transitions with and without reframing, loudness."""

from __future__ import annotations

import logging
import re
import subprocess

import av
import numpy as np
import pytest

from retrieval_hl.models import CropBox
from retrieval_hl.render.export import export_highlight, publish_size
from retrieval_hl.render.renderer import Cut, render_cuts
from rhl_common.errors import ConfigError
from rhl_common.ffmpeg import ffmpeg_binary
from tests.conftest import ffmpeg, make_video
from tests.test_timeline import make_highlight


def integrated_lufs(path) -> float:
    res = subprocess.run([ffmpeg_binary(), "-hide_banner", "-nostats", "-i", str(path), "-af",
                          "ebur128", "-f", "null", "-"], capture_output=True, text=True)
    return float(re.findall(r"I:\s+(-?[\d.]+) LUFS", res.stderr)[-1])


def tone(path, volume: float, seconds: float = 4.0):
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4", "-f", "lavfi",
           "-i", f"sine=frequency=440:duration={seconds},volume={volume}", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    return path


def test_publish_sizes(caplog):
    assert publish_size((9, 16), (608, 1080)) == (1080, 1920)
    assert publish_size((16, 9), (1280, 720)) == (1920, 1080)
    assert publish_size((1, 1), (720, 720)) == (1080, 1080)
    with caplog.at_level(logging.WARNING):
        assert publish_size((9, 16), (202, 359)) == (404, 718)  # capped at 2x, said so
    assert "not 1080x1920" in caplog.text and "5.3x" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert publish_size((9, 16), (202, 359), size=(1080, 1920)) == (1080, 1920)
    assert "enlarged 5.3x to the requested 1080x1920" in caplog.text
    assert publish_size((9, 16), (202, 359), max_upscale=1.0) == (202, 358)


def test_loudness_lands_on_the_target(tmp_path):
    quiet, loud = tone(tmp_path / "quiet.mp4", 0.02), tone(tmp_path / "loud.mp4", 0.9)
    levels = {}
    for src in (quiet, loud):
        cut = Cut(source_path=str(src), start_s=0.5, duration_s=3.0, has_audio=True)
        out = render_cuts([cut], tmp_path / f"n-{src.name}", fps=25, loudness_lufs=-14.0)
        levels[src.name] = integrated_lufs(out)
    raw = render_cuts([Cut(source_path=str(quiet), start_s=0.5, duration_s=3.0, has_audio=True)],
                      tmp_path / "raw.mp4", fps=25)
    assert integrated_lufs(raw) < -30  # left as it is without a target
    assert all(abs(v + 14.0) < 1.5 for v in levels.values()), levels


def frame_means(path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.to_ndarray(format="gray").mean()) for f in c.decode(video=0)]


@pytest.mark.parametrize("transition", ["crossfade", "dip"])
def test_transitions_with_reframing(tmp_path, transition):
    video = make_video(tmp_path / "src.mp4", seconds=8, size="320x180", fps=25)
    hl = make_highlight(video, [(0, 50), (100, 150)])
    boxes = tuple(CropBox(frame=f, x_px=100, y_px=0, w_px=101, h_px=180)
                  for s in hl.segments for f in range(s.start_frame, s.end_frame))
    hl = hl.model_copy(update={"crops": boxes, "ratio_wh": (9, 16)})
    written = export_highlight(hl, tmp_path / "run", crossfade_s=0.8, transition=transition)
    assert not list((tmp_path / "run").glob(".*"))  # no temporary render left behind
    for kind in ("mp4", "reframed"):
        with av.open(str(written[kind])) as c:
            v = c.streams.video[0]
            assert c.duration / 1e6 == pytest.approx(4.0 - 0.8, abs=0.1)  # overlapped by the fade
            assert c.streams.audio
            size = (v.width, v.height)
        means = frame_means(written[kind])
        darkest = min(means[int((2.0 - 0.8) * 25):int(2.0 * 25)])  # during the transition
        if transition == "dip":
            assert darkest < 0.15 * np.median(means), (kind, darkest)
        else:
            assert darkest > 0.5 * np.median(means), (kind, darkest)
    assert size == (202, 360)  # the 101x180 crop, enlarged at most 2x


def test_rendered_run_does_not_say_nothing_to_render(tmp_path, caplog):
    video = make_video(tmp_path / "src.mp4", seconds=4, size="160x120", fps=25)
    hl = make_highlight(video, [(10, 60)])
    with caplog.at_level(logging.WARNING, logger="retrieval_hl.render.export"):
        written = export_highlight(hl, tmp_path / "run")
    assert written["mp4"].exists()
    assert "nothing to render" not in caplog.text


def test_hard_cuts_with_reframing_keep_every_frame(tmp_path):
    video = make_video(tmp_path / "src.mp4", seconds=6, size="320x180", fps=25)
    hl = make_highlight(video, [(10, 40), (60, 85)])
    boxes = tuple(CropBox(frame=f, x_px=0, y_px=0, w_px=101, h_px=180)
                  for s in hl.segments for f in range(s.start_frame, s.end_frame))
    hl = hl.model_copy(update={"crops": boxes, "ratio_wh": (9, 16)})
    written = export_highlight(hl, tmp_path / "run", size=(270, 480))
    with av.open(str(written["reframed"])) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (270, 480)
        assert sum(1 for _ in c.decode(video=0)) == 55


def test_unknown_transition(tmp_path):
    video = make_video(tmp_path / "src.mp4", seconds=2, fps=25)
    cut = Cut(source_path=str(video), start_s=0, duration_s=1, has_audio=True)
    with pytest.raises(ConfigError, match="choose from crossfade, dip"):
        render_cuts([cut, cut], tmp_path / "x.mp4", fps=25, crossfade_s=0.2, transition="wipe")


def test_assemble_reframes_instead_of_letterboxing(tmp_path):
    from click.testing import CliRunner

    from retrieval_hl.cli.main import cli
    from tests.conftest import TINY

    red = tmp_path / "red.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:size=160x120:rate=25:duration=2", "-f", "lavfi",
           "-i", "sine=frequency=330:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-shortest", str(red))
    lib = tmp_path / "lib"
    runner = CliRunner()

    def run(*args):
        res = runner.invoke(cli, ["-q", *map(str, args)], catch_exceptions=False)
        assert res.exit_code == 0, res.output + res.stderr

    run("library", "add", red, "--library", lib, "--encoder", TINY)
    script = tmp_path / "story.txt"
    script.write_text("a red screen\n", encoding="utf-8")
    top_rows = {}
    for name, extra in (("reframed", ()), ("letterboxed", ("--letterbox",))):
        out = tmp_path / f"{name}.mp4"
        run("assemble", script, "--library", lib, "--out", out, "--min-z", "-100",
            "--size", "90x160", *extra)
        with av.open(str(out)) as c:
            frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
        assert frame.shape[:2] == (160, 90)
        top_rows[name] = frame[:4].mean(axis=(0, 1))
    assert top_rows["reframed"][0] > 150  # red to the edge: cropped, not padded
    assert top_rows["letterboxed"].max() < 40  # a black bar
    # A saved plan renders again at another size.
    run("assemble", tmp_path / "letterboxed.plan.json", "--out", tmp_path / "again.mp4",
        "--size", "160x160")
    with av.open(str(tmp_path / "again.mp4")) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (160, 160)


def band_db(samples: np.ndarray, rate: int, hz: float) -> float:
    spec = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    band = (freqs > hz - 30) & (freqs < hz + 30)
    return 20 * np.log10(spec[band].max() + 1e-9)


def test_music_ducks_under_loud_sound_and_fades(tmp_path):
    # 0-3 s a loud 300 Hz tone (the programme's own sound), 3-6 s silence.
    src = tmp_path / "talk.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=6", "-f", "lavfi",
           "-i", "sine=frequency=300:duration=3,volume=0.8,apad=whole_dur=6", "-c:v",
           "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-t", "6", str(src))
    music = tmp_path / "music"
    music.mkdir()
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=1000:duration=2", str(music / "bed.wav"))
    hl = make_highlight(src, [(0, 150)])
    written = export_highlight(hl, tmp_path / "run", music=music, loudness_lufs=None)
    with av.open(str(written["mp4"])) as c:
        rate = c.streams.audio[0].rate
        pcm = np.concatenate([f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)])
    w = rate // 2
    loud = band_db(pcm[int(1.5 * rate):int(1.5 * rate) + w], rate, 1000)  # under the tone
    quiet = band_db(pcm[int(4.0 * rate):int(4.0 * rate) + w], rate, 1000)  # alone
    start = band_db(pcm[:int(0.1 * rate)], rate, 1000)
    assert quiet - loud > 10, (loud, quiet)  # ducked under the programme's own sound
    assert quiet - start > 6, (start, quiet)  # faded in (a 2 s file, looped to 6 s)
    assert band_db(pcm[int(1.5 * rate):int(1.5 * rate) + w], rate, 300) > loud  # tone on top
    with pytest.raises(ConfigError, match="no music in"):
        export_highlight(hl, tmp_path / "run2", music=tmp_path / "run")
