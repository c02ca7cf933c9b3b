"""Write a ``Highlight`` out: ``highlights.json`` (readable back), ``.srt`` and ``.mp4``.

Every file is written atomically; the mp4 is rendered by ffmpeg from the original video with
frame-accurate cuts (input seeking with re-encode), concatenated, with an optional crossfade.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from retrieval_hl.models import Highlight, Segment
from rhl_common.atomic import atomic_path, write_atomic
from rhl_common.errors import ConfigError, RenderError
from rhl_common.ffmpeg import run_ffmpeg

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


def output_timeline(
    segments: Sequence[Segment], crossfade_s: float = 0.0
) -> list[tuple[float, float]]:
    """Where each segment lands in the rendered video, as (start, end) seconds."""
    out, t = [], 0.0
    for k, seg in enumerate(segments):
        start = max(0.0, t - (crossfade_s if k else 0.0))
        out.append((start, start + seg.duration_s))
        t = start + seg.duration_s
    return out


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
    for n, (seg, (a, b)) in enumerate(
        zip(highlight.segments, output_timeline(highlight.segments, crossfade_s), strict=True), 1
    ):
        text = highlight.descriptions[seg.description_index].text
        blocks.append(f"{n}\n{srt_timestamp(a)} --> {srt_timestamp(b)}\n{text}\n")
    return "\n".join(blocks)


def render_highlight(highlight: Highlight, out_path: str | Path, crossfade_s: float = 0.0) -> Path:
    """Cut the segments from the original video and join them into ``out_path`` (H.264/AAC).

    Raises:
        RenderError: nothing to render, or ffmpeg failed.

    """
    segs = list(highlight.segments)
    if not segs:
        raise RenderError("no segments to render")
    info = highlight.video
    fade = min(crossfade_s, *(s.duration_s / 2 for s in segs)) if crossfade_s > 0 else 0.0
    args: list[str] = []
    for seg in segs:
        args += ["-ss", f"{seg.start_s:.6f}", "-t", f"{seg.duration_s:.6f}", "-i", info.path]
    even = "scale=trunc(iw/2)*2:trunc(ih/2)*2,setsar=1"
    parts = [
        f"[{k}:v:0]{even},fps={info.fps:.6f},settb=AVTB,setpts=PTS-STARTPTS[v{k}]"
        for k in range(len(segs))
    ]
    if info.has_audio:
        parts += [
            f"[{k}:a:0]aresample=48000,aformat=channel_layouts=stereo,asetpts=PTS-STARTPTS[a{k}]"
            for k in range(len(segs))
        ]
    if fade > 0 and len(segs) > 1:
        vlast, alast = "v0", "a0"
        for k, (start, _) in enumerate(output_timeline(segs, fade)[1:], 1):
            parts.append(
                f"[{vlast}][v{k}]xfade=transition=fade:duration={fade:.3f}:"
                f"offset={start:.6f}[vx{k}]"
            )
            vlast = f"vx{k}"
            if info.has_audio:
                parts.append(f"[{alast}][a{k}]acrossfade=d={fade:.3f}[ax{k}]")
                alast = f"ax{k}"
        vout, aout = vlast, alast
    else:
        streams = "".join(
            f"[v{k}]" + (f"[a{k}]" if info.has_audio else "") for k in range(len(segs))
        )
        n_a = 1 if info.has_audio else 0
        parts.append(f"{streams}concat=n={len(segs)}:v=1:a={n_a}[vout]" + ("[aout]" if n_a else ""))
        vout, aout = "vout", "aout"
    args += ["-filter_complex", ";".join(parts), "-map", f"[{vout}]"]
    if info.has_audio:
        args += ["-map", f"[{aout}]", "-c:a", "aac", "-b:a", "160k"]
    args += [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "20",
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "+faststart",
    ]
    with atomic_path(out_path) as tmp:
        run_ffmpeg([*args, "-f", "mp4", str(tmp)], what=f"rendering {Path(out_path).name}")
    return Path(out_path)


def render_reframed(highlight: Highlight, cut_mp4: str | Path, out_path: str | Path) -> Path:
    """Reframe the rendered cut (``render_highlight`` without crossfade) with the crop boxes.

    Output frame k is kept frame k (segments in order), cropped to its box; the audio of the
    cut is copied. Frames stream through PyAV and an ffmpeg pipe, one at a time.

    Raises:
        RenderError: no crop boxes, or ffmpeg failed.
    """
    import subprocess

    import av

    from rhl_common.ffmpeg import ffmpeg_binary

    if not highlight.crops:
        raise RenderError("no crop boxes to reframe with")
    by_frame = {c.frame: c for c in highlight.crops}
    kept = [f for s in highlight.segments for f in range(s.start_frame, s.end_frame)]
    boxes = [by_frame.get(f) for f in kept]
    first = next(b for b in boxes if b is not None)
    w, h = first.w_px - first.w_px % 2, first.h_px - first.h_px % 2
    with atomic_path(out_path) as tmp:
        cmd = [
            ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
            "-framerate", f"{highlight.video.fps:.6f}", "-i", "pipe:0", "-i", str(cut_mp4),
            "-map", "0:v", "-map", "1:a?", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
            "-pix_fmt", "yuv420p", "-c:a", "copy", "-shortest", "-movflags", "+faststart",
            "-f", "mp4", str(tmp),
        ]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        last = first
        try:
            with av.open(str(cut_mp4)) as src:
                for k, frame in enumerate(src.decode(video=0)):
                    box = boxes[min(k, len(boxes) - 1)] or last
                    last = box
                    rgb = frame.to_ndarray(format="rgb24")
                    crop = rgb[box.y_px : box.y_px + h, box.x_px : box.x_px + w]
                    proc.stdin.write(crop.tobytes())
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
            err = proc.stderr.read().decode(errors="replace").strip()
            proc.wait()
        if proc.returncode != 0:
            raise RenderError(f"ffmpeg failed while reframing: {(err.splitlines() or ['?'])[-1]}")
    return Path(out_path)


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
