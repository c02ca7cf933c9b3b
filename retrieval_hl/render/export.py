"""Write a ``Highlight`` out: ``highlights.json`` (readable back), ``.srt`` and ``.mp4``.

Every file is written atomically; the mp4s come from the one renderer (``render.renderer``):
frame-accurate cuts of the original video, joined with hard cuts, a crossfade or a dip to black,
loudness-normalised, and the reframed version cropped frame by frame and scaled to its
publishing size (``publish_size``), with the same transitions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from retrieval_hl.models import Highlight
from retrieval_hl.render.renderer import (
    DEFAULT_LOUDNESS_LUFS,
    Cut,
    ffmpeg_file,
    music_file,
    output_timeline,
    render_cropped,
    render_cuts,
)
from rhl_common.atomic import write_atomic
from rhl_common.errors import RenderError

log = logging.getLogger(__name__)

JSON_NAME = "highlights.json"
SRT_NAME = "highlights.srt"
MP4_NAME = "highlight.mp4"
PREDICTIONS_NAME = "predictions.jsonl"
PUBLISH_SHORT_SIDE_PX = 1080  # 1080x1920 for 9:16, 1920x1080 for 16:9, 1080x1080 for 1:1
DEFAULT_MAX_UPSCALE = 2.0


def publish_size(
    ratio_wh: tuple[int, int],
    crop_wh: tuple[int, int],
    size: tuple[int, int] | None = None,
    max_upscale: float = DEFAULT_MAX_UPSCALE,
) -> tuple[int, int]:
    """The frame size to publish a reframed video at, even in both sides.

    ``size`` if given (the caller asked for it; an upscale past ``max_upscale`` is logged as a
    warning). Otherwise the ratio at ``PUBLISH_SHORT_SIDE_PX`` on its short side (1080x1920 for
    9:16), unless that would enlarge the crop more than ``max_upscale`` times: then the crop
    enlarged ``max_upscale`` times (never below its own size), and a warning says so.
    """
    cw, ch = crop_wh
    if size is not None:
        w, h = size
        if max(w / cw, h / ch) > max_upscale:
            log.warning("the %dx%d crop is enlarged %.1fx to the requested %dx%d: expect a soft "
                        "picture", cw, ch, max(w / cw, h / ch), w, h)
        return w - w % 2, h - h % 2
    rw, rh = ratio_wh
    short = PUBLISH_SHORT_SIDE_PX
    w, h = (short, round(short * rh / rw)) if rw <= rh else (round(short * rw / rh), short)
    factor = max(w / cw, h / ch)
    if factor > max_upscale:
        w2, h2 = round(cw * max(1.0, max_upscale)), round(ch * max(1.0, max_upscale))
        log.warning("publishing at %dx%d, not %dx%d: the %dx%d crop would be enlarged %.1fx, "
                    "more than %.1fx (set a size to force it)", w2 - w2 % 2, h2 - h2 % 2, w, h,
                    cw, ch, factor, max_upscale)
        w, h = w2, h2
    return w - w % 2, h - h % 2


def save_highlight(highlight: Highlight, path: str | Path) -> Path:
    """Write ``highlight`` as JSON, atomically."""
    return write_atomic(path, highlight.model_dump_json(indent=2))


def load_highlight(path: str | Path) -> Highlight:
    """Read a ``highlights.json`` back.

    Raises:
        ConfigError: the file is missing or not a highlights file.

    """
    return Highlight.from_json_file(path, "highlights file")


def srt_timestamp(t: float) -> str:
    """``HH:MM:SS,mmm`` for an SRT cue at ``t`` seconds."""
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def srt_text(highlight: Highlight, crossfade_s: float = 0.0) -> str:
    """Subtitles for the rendered video: the spoken words of each kept stretch, a few at a time
    (:mod:`retrieval_hl.speech.captions`); a segment's description where nobody speaks.
    """
    from retrieval_hl.speech.captions import caption_cues

    durations = [s.duration_s for s in highlight.segments]
    return srt_of(caption_cues(highlight, output_timeline(durations, crossfade_s)))


def srt_of(cues: Sequence[tuple[float, float, str]]) -> str:
    """The text of an SRT file holding ``cues`` ((start_s, end_s, text), output seconds)."""
    return "\n".join(
        f"{n}\n{srt_timestamp(a)} --> {srt_timestamp(b)}\n{text}\n"
        for n, (a, b, text) in enumerate(cues, 1)
    )


def render_highlight(
    highlight: Highlight,
    out_path: str | Path,
    crossfade_s: float = 0.0,
    *,
    transition: str = "crossfade",
    loudness_lufs: float | None = DEFAULT_LOUDNESS_LUFS,
    size: tuple[int, int] | None = None,
    music: str | Path | None = None,
) -> Path:
    """Cut the segments from the original video and join them into ``out_path`` (H.264/AAC).

    The video keeps the source's size (rounded down to even; ``size`` fits it into a frame) and
    frame rate; there is an audio track, normalised to ``loudness_lufs``, when the source has
    one or ``music`` is laid under it. See ``renderer.render_cuts``.

    Raises:
        RenderError: nothing to render, or ffmpeg failed.

    """
    if not highlight.segments:
        raise RenderError("no segments to render")
    info = highlight.video
    cuts = [
        Cut(source_path=info.path, start_s=s.start_s, duration_s=s.duration_s,
            has_audio=info.has_audio)
        for s in highlight.segments
    ]
    return render_cuts(cuts, out_path, fps=info.fps, size=size, audio=info.has_audio,
                       crossfade_s=crossfade_s, transition=transition,
                       loudness_lufs=loudness_lufs, music=music)


def render_reframed(
    highlight: Highlight,
    cut_mp4: str | Path,
    out_path: str | Path,
    out_size: tuple[int, int] | None = None,
) -> Path:
    """Reframe the rendered cut (``render_highlight`` without crossfade) with the crop boxes.

    Output frame k is kept frame k (segments in order), cropped to its box and scaled to
    ``out_size`` (``None``: the crop's size); the audio of the cut is copied. Frames stream
    through PyAV and an ffmpeg pipe, one at a time.

    Raises:
        RenderError: no crop boxes, or ffmpeg failed.
    """
    import av

    if not highlight.crops:
        raise RenderError("no crop boxes to reframe with")
    by_frame = {c.frame: c for c in highlight.crops}
    kept = [f for s in highlight.segments for f in range(s.start_frame, s.end_frame)]
    boxes = [by_frame.get(f) for f in kept]
    first = next(b for b in boxes if b is not None)
    w, h = first.w_px - first.w_px % 2, first.h_px - first.h_px % 2

    def cropped() -> Iterator[np.ndarray]:
        last = first
        with av.open(ffmpeg_file(cut_mp4)) as src:
            for k, frame in enumerate(src.decode(video=0)):
                box = boxes[min(k, len(boxes) - 1)] or last
                last = box
                rgb = frame.to_ndarray(format="rgb24")
                yield rgb[box.y_px : box.y_px + h, box.x_px : box.x_px + w]

    return render_cropped(cropped(), (w, h), highlight.video.fps, cut_mp4, out_path, out_size)


def export_highlight(
    highlight: Highlight,
    out_dir: str | Path,
    *,
    render: bool = True,
    crossfade_s: float = 0.0,
    transition: str = "crossfade",
    loudness_lufs: float | None = DEFAULT_LOUDNESS_LUFS,
    size: tuple[int, int] | None = None,
    max_upscale: float = DEFAULT_MAX_UPSCALE,
    music: str | Path | None = None,
    captions: str = "srt",
) -> dict[str, Path]:
    """Write JSON, SRT and (if ``render`` and there is anything to show) the mp4 into ``out_dir``.

    With crop boxes, also ``predictions.jsonl`` (the competition line for this video) and the
    reframed ``highlight_<w>x<h>.mp4`` (named by the ratio) at ``publish_size(...)``, with the
    same transitions as ``highlight.mp4``; ``size`` is that publishing size (without crop boxes:
    the frame ``highlight.mp4`` is fitted into). ``music`` (a file, or a folder to pick one
    from) goes under both mp4s, ducked under their own sound. Returns the written paths by kind
    (``json``, ``srt``, ``mp4``, ``predictions``, ``reframed``). Those of this function's files
    an earlier run left and this one does not write are removed.
    ``captions="burn"`` also draws the spoken words into the rendered videos
    (:mod:`retrieval_hl.speech.burn`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": save_highlight(highlight, out / JSON_NAME)}
    written["srt"] = write_atomic(out / SRT_NAME, srt_text(highlight, crossfade_s))
    if highlight.ratio_wh is not None:
        from retrieval_hl.competition.format import VideoPrediction

        line = VideoPrediction.from_crop_boxes(
            highlight.video.video_id, highlight.ratio_wh, highlight.crops
        ).to_json_line()
        written["predictions"] = write_atomic(out / PREDICTIONS_NAME, line + "\n")
    if music is not None:
        music = music_file(music, highlight.video.video_id)
    joins = {"transition": transition, "loudness_lufs": loudness_lufs, "music": music}
    if render and highlight.segments and highlight.crops:
        # The crops follow the kept frames in order: crop a hard-cut render, then join the
        # reframed segments again with the transitions.
        tw, th = highlight.ratio_wh or (0, 0)
        target = out / f"highlight_{tw}x{th}.mp4"
        box = highlight.crops[0]
        wh = publish_size((tw, th), (box.w_px, box.h_px), size, max_upscale)
        fading = crossfade_s > 0 and len(highlight.segments) > 1
        # With a transition the hard cut is only a source: its sound is finished in the rejoin.
        hard = render_highlight(highlight, out / f".hard-{MP4_NAME}",
                                **(joins | {"music": None, "loudness_lufs": None} if fading
                                   else joins))
        try:
            if fading:
                written["mp4"] = render_highlight(highlight, out / MP4_NAME, crossfade_s, **joins)
                flat = render_reframed(highlight, hard, out / f".hard-{target.name}", wh)
                try:
                    written["reframed"] = _rejoin(highlight, flat, target, crossfade_s, **joins)
                finally:
                    flat.unlink(missing_ok=True)
            else:
                written["reframed"] = render_reframed(highlight, hard, target, wh)
                written["mp4"] = hard.replace(out / MP4_NAME)
        finally:
            hard.unlink(missing_ok=True)
    elif render and highlight.segments:
        written["mp4"] = render_highlight(highlight, out / MP4_NAME, crossfade_s, size=size,
                                          **joins)
    if render and highlight.segments and captions == "burn":
        from retrieval_hl.speech.burn import BURN_WORDS, burn_captions
        from retrieval_hl.speech.captions import caption_cues

        timeline = output_timeline([s.duration_s for s in highlight.segments], crossfade_s)
        cues = caption_cues(highlight, timeline, max_words=BURN_WORDS, describe_silence=False)
        for kind in ("mp4", "reframed"):
            if kind in written:
                burn_captions(written[kind], cues)
    elif render and not highlight.segments:
        log.warning("no highlight found in %s: nothing to render", highlight.video.path)
    # A reused run directory must not keep an earlier run's outputs beside this run's.
    own = [out / n for n in (SRT_NAME, PREDICTIONS_NAME, MP4_NAME)]
    for stale in [*own, *out.glob("highlight_*x*.mp4")]:
        if stale not in written.values() and stale.is_file():
            log.info("removing %s, left by an earlier run in %s", stale.name, out)
            stale.unlink()
    return written


def _rejoin(highlight: Highlight, flat: Path, out_path: Path, crossfade_s: float, *,
            transition: str, loudness_lufs: float | None, music: Path | None) -> Path:
    """Join the segments of a hard-cut render ``flat`` (segment k where ``output_timeline``
    puts it without transitions) again, with the transition.
    """
    durations = [s.duration_s for s in highlight.segments]
    cuts = [Cut(source_path=str(flat), start_s=a, duration_s=b - a,
                has_audio=highlight.video.has_audio)
            for a, b in output_timeline(durations)]
    return render_cuts(cuts, out_path, fps=highlight.video.fps, audio=highlight.video.has_audio,
                       crossfade_s=crossfade_s, transition=transition, loudness_lufs=loudness_lufs,
                       music=music)
