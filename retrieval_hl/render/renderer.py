"""The one ffmpeg renderer: cuts of source videos joined into one H.264/AAC mp4.

Used by the highlight export (``render.export``) and by library assembly
(``library.assemble``). ``render_cuts`` cuts every source frame-accurately (input seeking with
re-encode), normalises each cut to one output format (frame size, frame rate, 48 kHz stereo
audio or none), makes it last exactly its duration (the last frame is held if the source ends
early) and joins the cuts, with hard cuts, crossfades or dips to black, and normalises the
loudness of the result (EBU R128, ffmpeg's ``loudnorm``) so every export sits at one level.
``render_cropped`` encodes a stream of cropped frames, scaled to the publishing size, over the
audio of an earlier render.

The filter graphs are built with ffmpeg-python and run as an argument list, never through a
shell. File names are passed absolute, so a relative name with a colon (``take:2.mp4``) is
never taken for a protocol.
"""

from __future__ import annotations

import logging
import subprocess
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np
from pydantic import Field

from rhl_common.atomic import atomic_path
from rhl_common.errors import ConfigError, RenderError
from rhl_common.ffmpeg import DIE_WITH_PARENT, ffmpeg_binary, run_ffmpeg
from rhl_common.models import Frozen

log = logging.getLogger(__name__)

AUDIO_RATE_HZ = 48000
READ_MARGIN_S = 0.5
VIDEO_CODEC = {"c:v": "libx264", "preset": "veryfast", "crf": 20, "pix_fmt": "yuv420p"}
AUDIO_CODEC = {"c:a": "aac", "b:a": "160k", "ar": AUDIO_RATE_HZ, "ac": 2}
MP4 = {"movflags": "+faststart", "f": "mp4"}
# Integrated loudness of every export, LUFS (EBU R128 measure; -14 is what the big video
# platforms play at), with a true-peak ceiling and loudness range as loudnorm takes them.
DEFAULT_LOUDNESS_LUFS = -14.0
TRUE_PEAK_DBTP = -1.5
LOUDNESS_RANGE_LU = 11.0
# Transition name -> ffmpeg xfade transition.
TRANSITIONS = {"crossfade": "fade", "dip": "fadeblack"}
# Background music: its level under the programme, how hard it ducks when the programme is
# loud (speech, a loud moment) and how it fades in and out.
MUSIC_GAIN_DB = -12.0
DUCK = {"threshold": 0.015, "ratio": 20, "attack": 20, "release": 400}
MUSIC_FADE_IN_S, MUSIC_FADE_OUT_S = 1.0, 2.0
MUSIC_TYPES = (".mp3", ".m4a", ".aac", ".wav", ".flac", ".ogg", ".opus")


def music_file(path: str | Path, key: str = "") -> Path:
    """The music to put under a render: ``path`` itself, or from a folder one of its audio files,
    chosen by ``key`` (the same key always gets the same file; different videos spread out).

    Raises:
        ConfigError: no such file or folder, or a folder without audio files.
    """
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in MUSIC_TYPES)
        if files:
            return files[zlib.crc32(key.encode()) % len(files)]
        raise ConfigError(f"no music in {str(p)!r}: put {', '.join(MUSIC_TYPES)} files there")
    raise ConfigError(f"no music file or folder {str(p)!r}")


class Cut(Frozen):
    """A stretch of a source video to render: ``duration_s`` seconds from ``start_s``."""

    source_path: str
    start_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    has_audio: bool


def output_timeline(
    durations_s: Sequence[float], crossfade_s: float = 0.0
) -> list[tuple[float, float]]:
    """Where each cut lands in the rendered video, as (start, end) seconds.

    With a crossfade each cut after the first starts the fade the render joins them with
    (``join_fade_s``: at most half the shortest cut) before the previous ends, so captions and
    timelines placed with it match the rendered video.
    """
    fade = join_fade_s(crossfade_s, durations_s)
    out, t = [], 0.0
    for k, d in enumerate(durations_s):
        start = max(0.0, t - (fade if k else 0.0))
        out.append((start, start + d))
        t = start + d
    return out


def check_transition(transition: str) -> None:
    """Raise ``ConfigError`` unless ``transition`` is one of :data:`TRANSITIONS`."""
    if transition not in TRANSITIONS:
        raise ConfigError(f"unknown transition {transition!r}; choose from "
                          f"{', '.join(TRANSITIONS)}")


def join_fade_s(crossfade_s: float, durations_s: Sequence[float]) -> float:
    """The transition the cuts are joined with: ``crossfade_s`` shortened to half the shortest
    cut; 0 (hard cuts) for fewer than two cuts.
    """
    if crossfade_s <= 0 or len(durations_s) < 2:
        return 0.0
    return min(crossfade_s, *(d / 2 for d in durations_s))


def ffmpeg_file(path: str | Path) -> str:
    """``path`` as ffmpeg (and PyAV) should be given it: absolute, so never read as a protocol."""
    return str(Path(path).absolute())


def render_cuts(
    cuts: Sequence[Cut],
    out_path: str | Path,
    *,
    fps: float,
    size: tuple[int, int] | None = None,
    audio: bool = True,
    crossfade_s: float = 0.0,
    transition: str = "crossfade",
    loudness_lufs: float | None = None,
    music: str | Path | None = None,
) -> Path:
    """Cut every source, normalise the cuts to one format and join them into ``out_path``.

    Args:
        cuts: The cuts, in output order.
        out_path: The mp4 to write (atomically).
        fps: Output frame rate.
        size: Output (width, height), even: every cut is scaled to fit and padded with black;
            ``None`` keeps each cut's own size, rounded down to even (cuts of one source).
        audio: Give the output a 48 kHz stereo AAC track; cuts without audio are silent in it.
            ``False`` renders video only.
        crossfade_s: Transition between cuts, shortened to half the shortest cut; 0 = hard cuts.
        transition: ``crossfade`` (one picture fades into the next) or ``dip`` (through black);
            the sound crossfades in both.
        loudness_lufs: Normalise the output's integrated loudness to this (EBU R128), with a
            true peak at most ``TRUE_PEAK_DBTP``; ``None`` leaves the level as it is.
        music: An audio file laid under the whole render (looped if short) at
            ``MUSIC_GAIN_DB``, ducked whenever the cuts' own sound is loud (speech, a loud
            moment), faded in and out; the output gets sound even if the cuts have none.

    Returns:
        ``out_path``.

    Raises:
        RenderError: No cuts, or ffmpeg failed.
        ConfigError: An unknown transition.
    """
    if not cuts:
        raise RenderError("no cuts to render")
    check_transition(transition)
    fade = join_fade_s(crossfade_s, [c.duration_s for c in cuts])
    if music is not None and not audio:  # the music needs a track; the cuts' part is silence
        audio, cuts = True, [c.model_copy(update={"has_audio": False}) for c in cuts]
    videos, audios = [], []
    for cut in cuts:
        src = ffmpeg.input(
            ffmpeg_file(cut.source_path),
            ss=f"{cut.start_s:.6f}",
            t=f"{cut.duration_s + READ_MARGIN_S:.6f}",
        )
        d = f"{cut.duration_s:.6f}"
        v = src["v:0"]
        if size is None:
            v = v.filter("scale", "trunc(iw/2)*2", "trunc(ih/2)*2")
        else:
            w, h = size
            v = v.filter("scale", w, h, force_original_aspect_ratio="decrease").filter(
                "pad", w, h, "(ow-iw)/2", "(oh-ih)/2", color="black"
            )
        videos.append(
            v.filter("setsar", 1)
            .filter("fps", f"{fps:.6f}")
            .filter("format", "yuv420p")
            .filter("tpad", stop_mode="clone", stop_duration=1)
            .filter("trim", duration=d)
            .filter("setpts", "PTS-STARTPTS")
        )
        if audio:
            audios.append(_audio(src if cut.has_audio else None, cut.duration_s))
    videos, audios = _split_repeats(videos, "split"), _split_repeats(audios, "asplit")
    if fade > 0:
        vout, aout = videos[0], audios[0] if audio else None
        for k, (start, _) in enumerate(output_timeline([c.duration_s for c in cuts], fade)[1:], 1):
            vout = ffmpeg.filter(
                [vout, videos[k]], "xfade", transition=TRANSITIONS[transition],
                duration=f"{fade:.6f}",
                offset=f"{start:.6f}",
            )
            if audio:
                aout = ffmpeg.filter([aout, audios[k]], "acrossfade", d=f"{fade:.6f}")
        streams = [vout, aout] if audio else [vout]
    else:
        parts = [s for k, v in enumerate(videos) for s in ([v, audios[k]] if audio else [v])]
        joined = ffmpeg.concat(*parts, v=1, a=1 if audio else 0).node
        streams = [joined[0], joined[1]] if audio else [joined[0]]
    if music is not None:
        total_s = output_timeline([c.duration_s for c in cuts], fade)[-1][1]
        streams[1] = _under_music(streams[1], music, total_s)
    if audio and loudness_lufs is not None:
        streams[1] = streams[1].filter(
            "loudnorm", I=loudness_lufs, TP=TRUE_PEAK_DBTP, LRA=LOUDNESS_RANGE_LU
        ).filter("aresample", AUDIO_RATE_HZ)
    codecs: dict[str, Any] = {**VIDEO_CODEC, **(AUDIO_CODEC if audio else {})}
    with atomic_path(out_path) as tmp:
        args = ffmpeg.output(*streams, ffmpeg_file(tmp), **codecs, **MP4).get_args()
        run_ffmpeg(args, what=f"rendering {Path(out_path).name}")
    log.debug("rendered %d cuts -> %s", len(cuts), out_path)
    return Path(out_path)


def _audio(src: Any, duration_s: float) -> Any:
    """A cut's audio, 48 kHz stereo float, exactly ``duration_s`` long; silence without ``src``."""
    d = f"{duration_s:.6f}"
    if src is None:
        # The source's length makes silences of different lengths different graph nodes.
        a = ffmpeg.input(
            f"anullsrc=channel_layout=stereo:sample_rate={AUDIO_RATE_HZ}"
            f":duration={duration_s + READ_MARGIN_S:.6f}",
            f="lavfi",
        )["a:0"]
    else:
        a = src["a:0"].filter("aresample", AUDIO_RATE_HZ)
    a = a.filter(
        "aformat", sample_fmts="fltp", sample_rates=AUDIO_RATE_HZ, channel_layouts="stereo"
    )
    if src is not None:
        a = a.filter("apad")
    return a.filter("atrim", duration=d).filter("asetpts", "PTS-STARTPTS")


def _under_music(programme: Any, music: str | Path, total_s: float) -> Any:
    """``programme`` with ``music`` under it: looped to ``total_s``, ducked by the programme
    (sidechain compression), faded in and out, mixed without changing the programme's level.
    """
    bed = (
        ffmpeg.input(ffmpeg_file(music), stream_loop=-1)["a:0"]
        .filter("aresample", AUDIO_RATE_HZ)
        .filter("aformat", sample_fmts="fltp", sample_rates=AUDIO_RATE_HZ,
                channel_layouts="stereo")
        .filter("atrim", duration=f"{total_s:.6f}")
        .filter("asetpts", "PTS-STARTPTS")
        .filter("volume", f"{MUSIC_GAIN_DB}dB")
        .filter("afade", t="in", d=f"{min(MUSIC_FADE_IN_S, total_s / 4):.3f}")
        .filter("afade", t="out", st=f"{total_s - min(MUSIC_FADE_OUT_S, total_s / 4):.3f}",
                d=f"{min(MUSIC_FADE_OUT_S, total_s / 4):.3f}")
    )
    split = programme.filter_multi_output("asplit", 2)
    ducked = ffmpeg.filter([bed, split.stream(0)], "sidechaincompress", **DUCK)
    return ffmpeg.filter([split.stream(1), ducked], "amix", inputs=2, duration="first",
                         normalize=0)


def _split_repeats(streams: list[Any], split: str) -> list[Any]:
    """Route a stream used more than once (the same cut twice) through ``split``/``asplit``.

    ffmpeg-python merges identical sub-graphs into one node, and a filter output can feed only
    one input.
    """
    uses = Counter(streams)
    splits: dict[Any, Any] = {}
    taken: Counter = Counter()
    out = []
    for s in streams:
        if uses[s] == 1:
            out.append(s)
            continue
        if s not in splits:
            splits[s] = s.filter_multi_output(split, uses[s])
        out.append(splits[s].stream(taken[s]))
        taken[s] += 1
    return out


def render_cropped(
    frames: Iterable[np.ndarray],
    size: tuple[int, int],
    fps: float,
    audio_from: str | Path,
    out_path: str | Path,
    out_size: tuple[int, int] | None = None,
) -> Path:
    """Encode RGB frames of one ``size`` (w, h) into ``out_path``, over ``audio_from``'s audio.

    Frames stream to ffmpeg through a pipe, one at a time, and are scaled to ``out_size`` (even
    w, h; ``None`` keeps ``size``); the audio of ``audio_from`` (if it has any) is copied, and
    the output ends with the shorter of the two.

    Raises:
        RenderError: ffmpeg failed.
    """
    w, h = size
    pipe = ffmpeg.input(
        "pipe:0", f="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=f"{fps:.6f}"
    )
    sound = ffmpeg.input(ffmpeg_file(audio_from))["a?"]
    picture = pipe["v"]
    if out_size is not None and tuple(out_size) != (w, h):
        picture = picture.filter("scale", out_size[0], out_size[1], flags="lanczos")
    with atomic_path(out_path) as tmp:
        args = ffmpeg.output(
            picture, sound, ffmpeg_file(tmp), **VIDEO_CODEC, **{"c:a": "copy"}, shortest=None,
            **MP4,
        ).get_args()
        cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
        log.debug("ffmpeg: %s", cmd)
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=DIE_WITH_PARENT  # noqa: PLW1509
        )
        try:
            for rgb in frames:
                proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
            err = proc.stderr.read().decode(errors="replace").strip()
            proc.wait()
        if proc.returncode != 0:
            last = (err.splitlines() or ["no message"])[-1]
            raise RenderError(f"ffmpeg failed while rendering {Path(out_path).name}: {last}")
    return Path(out_path)
