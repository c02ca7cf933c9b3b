"""The one ffmpeg renderer: cuts of source videos joined into one H.264/AAC mp4.

Used by the highlight export (``render.export``) and by library assembly
(``library.assemble``). ``render_cuts`` cuts every source frame-accurately (input seeking with
re-encode), normalises each cut to one output format (frame size, frame rate, 48 kHz stereo
audio or none), makes it last exactly its duration (the last frame is held if the source ends
early) and joins the cuts, with hard cuts, crossfades or dips to black, and normalises the
loudness of the result (EBU R128, ffmpeg's ``loudnorm``) so every export sits at one level.
Each ffmpeg run reads at most two inputs: cuts and transitions are rendered into pieces in a
temporary folder, side by side (one ffmpeg per CPU), then joined by stream copy.
``render_cropped`` encodes a stream of cropped frames, scaled to the publishing size, over the
audio of an earlier render.

The filter graphs are built with ffmpeg-python and run as an argument list, never through a
shell. File names are passed absolute, so a relative name with a colon (``take:2.mp4``) is
never taken for a protocol.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, NamedTuple

import ffmpeg
import numpy as np
from pydantic import Field

from rhl_common.atomic import atomic_path
from rhl_common.errors import ConfigError, RenderError
from rhl_common.ffmpeg import STALL_TIMEOUT_S, ffmpeg_process, run_ffmpeg
from rhl_common.models import Frozen

log = logging.getLogger(__name__)

AUDIO_RATE_HZ = 48000
READ_MARGIN_S = 0.5
# ``stitchable``: headers that do not depend on the content, the same in every piece, so pieces
# encoded apart join by stream copy.
VIDEO_CODEC = {"c:v": "libx264", "preset": "veryfast", "crf": 20, "pix_fmt": "yuv420p",
               "x264-params": "stitchable=1"}
AUDIO_CODEC = {"c:a": "aac", "b:a": "160k", "ar": AUDIO_RATE_HZ, "ac": 2}
MP4 = {"movflags": "+faststart", "f": "mp4"}
# The pieces a render is joined from: H.264 as in the output and lossless float sound (encoded
# once, after the join), in QuickTime files (exact timestamps; read by the concat demuxer).
PIECE_TYPE = ".mov"
PIECE_AUDIO = {"c:a": "pcm_f32le", "ar": AUDIO_RATE_HZ, "ac": 2}
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

    Work is bounded per ffmpeg process, whatever the number of cuts and the length of the
    sources: each distinct cut is rendered alone from its source into a normalised piece (one
    input), each transition alone from the two pieces it joins (two inputs), up to one ffmpeg
    per CPU at a time (a transition as soon as its two pieces exist), and the pieces are joined
    by the concat demuxer, the picture stream-copied and the sound encoded once (where loudness
    and music apply). (One graph with every cut as its own input stalled ffmpeg 9 at
    0 % CPU for good when a source's picture format changed inside a cut: ffmpeg rebuilt the
    whole graph there, and the new concat filter waited on inputs that had ended.)

    Args:
        cuts: The cuts, in output order; a cut used twice is rendered once.
        out_path: The mp4 to write (atomically).
        fps: Output frame rate.
        size: Output (width, height), even: every cut is scaled to fit and padded with black;
            ``None`` keeps the cuts' own size, rounded down to even (cuts of one source).
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
        RenderError: No cuts, cuts of several sources without a ``size``, or ffmpeg failed
            (or stalled).
        ConfigError: An unknown transition.
    """
    if not cuts:
        raise RenderError("no cuts to render")
    check_transition(transition)
    if size is None and len({c.source_path for c in cuts}) > 1:
        raise RenderError("cuts of several sources need an output size to be joined")
    fade = join_fade_s(crossfade_s, [c.duration_s for c in cuts])
    if music is not None and not audio:  # the music needs a track; the cuts' part is silence
        audio, cuts = True, [c.model_copy(update={"has_audio": False}) for c in cuts]
    frames = [frame_count(c.duration_s, fps) for c in cuts]
    fade_frames = min(round(fade * fps), min(frames) // 2)
    with tempfile.TemporaryDirectory(prefix="rhl-render-") as tmp:
        pieces = _Pieces(Path(tmp), Path(out_path).name, fps=fps, size=size, audio=audio)
        if fade_frames:
            order = pieces.faded(cuts, frames, fade_frames, TRANSITIONS[transition])
        else:
            order = [pieces.cut(c, [(0, n)])[0] for c, n in zip(cuts, frames, strict=True)]
        pieces.render()
        total_s = (sum(frames) - (len(cuts) - 1) * fade_frames) / fps
        with atomic_path(out_path) as tmp_out:
            _join(order, Path(tmp) / "pieces.txt", tmp_out, audio=audio, music=music,
                  total_s=total_s, loudness_lufs=loudness_lufs,
                  what=f"rendering {Path(out_path).name}")
    log.debug("rendered %d cuts from %d pieces -> %s", len(cuts), len(order), out_path)
    return Path(out_path)


def frame_count(duration_s: float, fps: float) -> int:
    """How many frames a cut of ``duration_s`` renders to at ``fps``: those that start in it."""
    return max(1, math.ceil(duration_s * fps - 1e-6))


class _Job(NamedTuple):
    """One ffmpeg run making pieces: its arguments, what it does (for errors) and the jobs whose
    pieces it reads (indices).
    """

    args: list[str]
    what: str
    after: tuple[int, ...]


class _Pieces:
    """Normalised pieces of the output ``name``, each made once into ``folder`` by its own
    ffmpeg: spans of cuts (one input each) and transitions (two inputs each). ``cut`` and
    ``transition`` plan the pieces and name their files; ``render`` makes them.

    A piece of ``k`` frames carries exactly ``samples(k)`` of sound, so pieces joined end to end
    keep picture and sound together.
    """

    def __init__(
        self, folder: Path, name: str, *, fps: float, size: tuple[int, int] | None, audio: bool
    ) -> None:
        self.folder, self.name = folder, name
        self.fps, self.size, self.audio = fps, size, audio
        self.made: dict[tuple, Path] = {}
        self.jobs: list[_Job] = []
        self.job_of: dict[Path, int] = {}  # piece -> the job that makes it
        self.codecs: dict[str, Any] = {**VIDEO_CODEC, **(PIECE_AUDIO if audio else {})}

    def samples(self, n_frames: int) -> int:
        """The sound samples that go with ``n_frames`` frames."""
        return round(n_frames * AUDIO_RATE_HZ / self.fps)

    def cut(self, cut: Cut, spans: Sequence[tuple[int, int]]) -> list[Path]:
        """Pieces of frames ``[a, b)`` of ``cut``, one per span; the new ones by one job."""
        todo = [sp for sp in spans if (cut, sp) not in self.made]
        if todo:
            paths = [self.folder / f"piece_{len(self.made) + k:04d}{PIECE_TYPE}"
                     for k in range(len(todo))]
            self._render_cut(cut, todo, paths)
            self.made.update({(cut, sp): p for sp, p in zip(todo, paths, strict=True)})
        return [self.made[(cut, sp)] for sp in spans]

    def faded(
        self, cuts: Sequence[Cut], frames: Sequence[int], fade: int, kind: str
    ) -> list[Path]:
        """The pieces of ``cuts`` (``frames`` long) joined by ``fade``-frame ``kind``
        transitions: the first cut's head, then per cut its body (if it is longer than two
        fades) and the transition into the next cut's head, then the last cut's tail.
        """
        order: list[Path] = []
        tail = None
        for cut, n in zip(cuts, frames, strict=True):
            spans = [(0, fade), (n - fade, n)] + ([(fade, n - fade)] if n > 2 * fade else [])
            head, new_tail, *body = self.cut(cut, spans)
            order.append(head if tail is None else self.transition(tail, head, fade, kind))
            order += body
            tail = new_tail
        return [*order, tail]

    def _render_cut(self, cut: Cut, spans: list[tuple[int, int]], paths: list[Path]) -> None:
        """One ffmpeg reading one source: ``cut`` normalised, one file per span of frames."""
        end_s = max(b for _, b in spans) / self.fps
        # reinit_filter 0: a file joined from parts by stream copy can change its picture format
        # mid-cut (yuv420p <-> yuvj420p); rebuilding the graph then would restart trim and
        # tpad (too many frames, too little sound). The scale filter takes the change instead.
        src = ffmpeg.input(ffmpeg_file(cut.source_path), ss=f"{cut.start_s:.6f}",
                           t=f"{end_s + READ_MARGIN_S:.6f}", reinit_filter=0)
        v = src["v:0"]
        if self.size is None:
            v = v.filter("scale", "trunc(iw/2)*2", "trunc(ih/2)*2")
        else:
            w, h = self.size
            v = v.filter("scale", w, h, force_original_aspect_ratio="decrease").filter(
                "pad", w, h, "(ow-iw)/2", "(oh-ih)/2", color="black"
            )
        v = (v.filter("setsar", 1).filter("fps", f"{self.fps:.6f}").filter("format", "yuv420p")
             .filter("tpad", stop_mode="clone", stop_duration=f"{end_s:.6f}"))  # hold the last
        videos = _split(v, "split", len(spans))
        sounds = (_split(_audio(src if cut.has_audio else None, end_s), "asplit", len(spans))
                  if self.audio else [None] * len(spans))
        outs = []
        for (a, b), video, sound, path in zip(spans, videos, sounds, paths, strict=True):
            streams = [video.filter("trim", start_frame=a, end_frame=b)
                       .filter("setpts", "PTS-STARTPTS")]
            if sound is not None:
                first = self.samples(a)
                streams.append(sound.filter("atrim", start_sample=first,
                                            end_sample=first + self.samples(b - a))
                               .filter("asetpts", "PTS-STARTPTS"))
            outs.append(ffmpeg.output(*streams, ffmpeg_file(path), **self.codecs))
        self._plan(ffmpeg.merge_outputs(*outs).get_args(), paths,
                   what=f"rendering {self.name} (the cut of {Path(cut.source_path).name} at "
                   f"{cut.start_s:.2f} s)")

    def transition(self, tail: Path, head: Path, frames: int, kind: str) -> Path:
        """The piece in which ``tail`` turns into ``head`` (both ``frames`` long) by ``kind``."""
        if (tail, head) not in self.made:
            path = self.folder / f"piece_{len(self.made):04d}{PIECE_TYPE}"
            a, b = ffmpeg.input(ffmpeg_file(tail)), ffmpeg.input(ffmpeg_file(head))
            streams = [ffmpeg.filter([a["v:0"], b["v:0"]], "xfade", transition=kind,
                                     duration=f"{frames / self.fps:.6f}", offset=0)]
            if self.audio:
                streams.append(ffmpeg.filter([a["a:0"], b["a:0"]], "acrossfade",
                                             ns=self.samples(frames)))
            self._plan(ffmpeg.output(*streams, ffmpeg_file(path), **self.codecs).get_args(),
                       [path], what=f"rendering {self.name} (a transition)",
                       after=(self.job_of[tail], self.job_of[head]))
            self.made[(tail, head)] = path
        return self.made[(tail, head)]

    def _plan(
        self, args: list[str], paths: Sequence[Path], *, what: str, after: tuple[int, ...] = ()
    ) -> None:
        """Add the job making ``paths`` with ffmpeg ``args``, after the jobs ``after``."""
        self.job_of.update({p: len(self.jobs) for p in paths})
        self.jobs.append(_Job(args, what, after))

    def render(self) -> None:
        """Run the planned jobs, at most one per CPU at a time, each as soon as the jobs it
        reads from are done. The first failure kills the runs still going and is raised.

        Raises:
            RenderError: an ffmpeg run failed or stalled.
        """
        waiting = dict(enumerate(self.jobs))
        running: dict[Future, int] = {}
        done: set[int] = set()
        cancel = threading.Event()
        pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                  thread_name_prefix="rhl-render")
        try:
            while waiting or running:
                for k in [k for k, job in waiting.items() if done.issuperset(job.after)]:
                    job = waiting.pop(k)
                    running[pool.submit(run_ffmpeg, job.args, what=job.what,
                                        cancel=cancel)] = k
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    done.add(running.pop(future))
                    future.result()  # the first failure
        finally:
            cancel.set()  # nothing is left running on success
            pool.shutdown(wait=True, cancel_futures=True)


def _join(
    pieces: Sequence[Path],
    listing: Path,
    out_path: Path,
    *,
    audio: bool,
    music: str | Path | None,
    total_s: float,
    loudness_lufs: float | None,
    what: str,
) -> None:
    """Join ``pieces`` end to end into ``out_path`` (mp4) with the concat demuxer, listed in
    ``listing`` (their folder): the picture stream-copied, the sound (under ``music``,
    normalised to ``loudness_lufs``) encoded once.
    """
    listing.write_text("".join(f"file '{p.name}'\n" for p in pieces), encoding="utf-8")
    src = ffmpeg.input(ffmpeg_file(listing), f="concat")
    streams: list[Any] = [src["v:0"]]
    codecs: dict[str, Any] = {"c:v": "copy"}
    if audio:
        sound = src["a:0"]
        if music is not None:
            sound = _under_music(sound, music, total_s)
        if loudness_lufs is not None:
            sound = sound.filter(
                "loudnorm", I=loudness_lufs, TP=TRUE_PEAK_DBTP, LRA=LOUDNESS_RANGE_LU
            ).filter("aresample", AUDIO_RATE_HZ)
        streams.append(sound)
        codecs.update(AUDIO_CODEC)
    run_ffmpeg(ffmpeg.output(*streams, ffmpeg_file(out_path), **codecs, **MP4).get_args(),
               what=what)


def _audio(src: Any, duration_s: float) -> Any:
    """A cut's sound, 48 kHz stereo float, at least ``duration_s`` long (silence after the
    source's end); all silence without ``src``.
    """
    if src is None:
        a = ffmpeg.input(
            f"anullsrc=channel_layout=stereo:sample_rate={AUDIO_RATE_HZ}"
            f":duration={duration_s + READ_MARGIN_S:.6f}",
            f="lavfi",
        )["a:0"]
    else:
        # first_pts: the sound starts with the picture (silence where it starts late), so its
        # spans are counted in samples from there
        a = src["a:0"].filter("aresample", AUDIO_RATE_HZ, first_pts=0)
    a = a.filter(
        "aformat", sample_fmts="fltp", sample_rates=AUDIO_RATE_HZ, channel_layouts="stereo"
    )
    return a if src is None else a.filter("apad")


def _split(stream: Any, split: str, n: int) -> list[Any]:
    """``n`` uses of ``stream``: itself, or the outputs of a ``split``/``asplit`` of it."""
    if n == 1:
        return [stream]
    node = stream.filter_multi_output(split, n)
    return [node.stream(k) for k in range(n)]


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


def render_cropped(
    frames: Iterable[np.ndarray],
    size: tuple[int, int],
    fps: float,
    audio_from: str | Path,
    out_path: str | Path,
    out_size: tuple[int, int] | None = None,
    *,
    stall_timeout_s: float = STALL_TIMEOUT_S,
) -> Path:
    """Encode RGB frames of one ``size`` (w, h) into ``out_path``, over ``audio_from``'s audio.

    Frames stream to ffmpeg through a pipe, one at a time, and are scaled to ``out_size`` (even
    w, h; ``None`` keeps ``size``); the audio of ``audio_from`` (if it has any) is copied, and
    the output ends with the shorter of the two.

    Raises:
        RenderError: ffmpeg failed, or made no progress for ``stall_timeout_s`` (killed).
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
        with ffmpeg_process(args, what=f"rendering {Path(out_path).name}",
                            stall_timeout_s=stall_timeout_s, stdin=True) as proc:
            for rgb in frames:
                proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
    return Path(out_path)
