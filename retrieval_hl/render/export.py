"""Write a ``Highlight`` out: ``highlights.json`` (readable back), ``.srt`` and ``.mp4``.

Every file is written atomically; the mp4s come from the one renderer (``render.renderer``):
frame-accurate cuts of the original video, joined with hard cuts or a crossfade, and the
reframed version cropped frame by frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from retrieval_hl.models import Highlight
from retrieval_hl.render.renderer import (
    Cut,
    ffmpeg_file,
    output_timeline,
    render_cropped,
    render_cuts,
)
from rhl_common.atomic import write_atomic
from rhl_common.errors import ConfigError, RenderError

log = logging.getLogger(__name__)

JSON_NAME = "highlights.json"
SRT_NAME = "highlights.srt"
MP4_NAME = "highlight.mp4"
PREDICTIONS_NAME = "predictions.jsonl"


def save_highlight(highlight: Highlight, path: str | Path) -> Path:
    """Write ``highlight`` as JSON, atomically."""
    return write_atomic(path, highlight.model_dump_json(indent=2))


def load_highlight(path: str | Path) -> Highlight:
    """Read a ``highlights.json`` back.

    Raises:
        ConfigError: the file is missing or not a highlights file.

    """
    try:
        return Highlight.model_validate_json(Path(path).read_bytes())
    except (OSError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"not a readable highlights file {str(path)!r}: {first}") from None


def srt_timestamp(t: float) -> str:
    """``HH:MM:SS,mmm`` for an SRT cue at ``t`` seconds."""
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def srt_text(highlight: Highlight, crossfade_s: float = 0.0) -> str:
    """Subtitles for the rendered video: each segment's description over its stretch."""
    blocks = []
    durations = [s.duration_s for s in highlight.segments]
    for n, (seg, (a, b)) in enumerate(
        zip(highlight.segments, output_timeline(durations, crossfade_s), strict=True), 1
    ):
        descs = highlight.descriptions  # may be empty (e.g. a VLM that found nothing)
        text = descs[seg.description_index].text if seg.description_index < len(descs) else (
            "highlight")
        blocks.append(f"{n}\n{srt_timestamp(a)} --> {srt_timestamp(b)}\n{text}\n")
    return "\n".join(blocks)


def render_highlight(highlight: Highlight, out_path: str | Path, crossfade_s: float = 0.0) -> Path:
    """Cut the segments from the original video and join them into ``out_path`` (H.264/AAC).

    The video keeps the source's size (rounded down to even) and frame rate; there is an audio
    track when the source has one. See ``renderer.render_cuts``.

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
    return render_cuts(cuts, out_path, fps=info.fps, audio=info.has_audio, crossfade_s=crossfade_s)


def render_reframed(highlight: Highlight, cut_mp4: str | Path, out_path: str | Path) -> Path:
    """Reframe the rendered cut (``render_highlight`` without crossfade) with the crop boxes.

    Output frame k is kept frame k (segments in order), cropped to its box; the audio of the
    cut is copied. Frames stream through PyAV and an ffmpeg pipe, one at a time.

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

    return render_cropped(cropped(), (w, h), highlight.video.fps, cut_mp4, out_path)


def export_highlight(
    highlight: Highlight, out_dir: str | Path, *, render: bool = True, crossfade_s: float = 0.0
) -> dict[str, Path]:
    """Write JSON, SRT and (if ``render`` and there is anything to show) the mp4 into ``out_dir``.

    With crop boxes, also ``predictions.jsonl`` (the competition line for this video) and the
    reframed ``highlight_<w>x<h>.mp4``; reframing needs hard cuts, so it ignores ``crossfade_s``.
    Returns the written paths by kind (``json``, ``srt``, ``mp4``, ``predictions``, ``reframed``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if highlight.crops:
        crossfade_s = 0.0
    written = {"json": save_highlight(highlight, out / JSON_NAME)}
    written["srt"] = write_atomic(out / SRT_NAME, srt_text(highlight, crossfade_s))
    if highlight.ratio_wh is not None:
        from retrieval_hl.competition.format import VideoPrediction

        line = VideoPrediction.from_crop_boxes(
            highlight.video.video_id, highlight.ratio_wh, highlight.crops
        ).to_json_line()
        written["predictions"] = write_atomic(out / PREDICTIONS_NAME, line + "\n")
    if render and highlight.segments:
        written["mp4"] = render_highlight(highlight, out / MP4_NAME, crossfade_s)
        if highlight.crops:
            tw, th = highlight.ratio_wh or (0, 0)
            written["reframed"] = render_reframed(
                highlight, written["mp4"], out / f"highlight_{tw}x{th}.mp4"
            )
    elif render:
        log.warning("no highlight found in %s: nothing to render", highlight.video.path)
    return written
