"""Burn word-timed captions into rendered videos, short-form style.

A few words at a time (:data:`BURN_WORDS`), bold white with a thick black outline, centred low
but inside the safe area (above the bottom ``SAFE_BOTTOM`` of the frame, where short-form apps
put their own buttons and text). Drawn by ffmpeg's libass from an ASS file whose play size is
the video's, so 16:9 and 9:16 renders get the same look. The font is ``CAPTION_FONT`` (Debian's
``fonts-wqy-microhei``, Apache-2.0, which has Latin and CJK glyphs; ``setup.sh`` notes it);
fontconfig falls back to another font with the glyphs where it is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from retrieval_hl.speech.captions import Cue
from rhl_common.atomic import atomic_path, write_atomic
from rhl_common.ffmpeg import run_ffmpeg

log = logging.getLogger(__name__)

BURN_WORDS = 3
CAPTION_FONT = "WenQuanYi Micro Hei"
SAFE_BOTTOM = 0.18
FONT_FRACTION = 0.075  # of the frame's shorter side


def ass_time(t: float) -> str:
    """``H:MM:SS.cc`` for an ASS event at ``t`` seconds."""
    cs = int(round(max(0.0, t) * 100))
    h, cs = divmod(cs, 360_000)
    m, cs = divmod(cs, 6000)
    s, cs = divmod(cs, 100)
    return f"{h}:{m:02d}:{s:02d}.{cs:02d}"


def ass_text(cues: Sequence[Cue], width_px: int, height_px: int) -> str:
    """An ASS subtitle file drawing ``cues`` on a ``width_px`` x ``height_px`` video."""
    size = max(12, round(FONT_FRACTION * min(width_px, height_px)))
    outline = max(2, size // 10)
    margin_v = round(SAFE_BOTTOM * height_px)
    margin_h = round(0.08 * width_px)
    lines = [
        "[Script Info]",
        "ScriptType: v4.00+",
        f"PlayResX: {width_px}",
        f"PlayResY: {height_px}",
        "WrapStyle: 0",
        "ScaledBorderAndShadow: yes",
        "",
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
        "BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
        "BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding",
        f"Style: Caption,{CAPTION_FONT},{size},&H00FFFFFF,&H00FFFFFF,&H00000000,&H80000000,"
        f"-1,0,0,0,100,100,0,0,1,{outline},1,2,{margin_h},{margin_h},{margin_v},1",
        "",
        "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    ]
    for c in cues:
        text = c.text.replace("\\", "/").replace("{", "(").replace("}", ")").replace("\n", " ")
        lines.append(f"Dialogue: 0,{ass_time(c.start_s)},{ass_time(c.end_s)},Caption,,0,0,0,,"
                     f"{text}")
    return "\n".join(lines) + "\n"


def burn_captions(video: str | Path, cues: Sequence[Cue]) -> Path:
    """Draw ``cues`` into ``video`` in place (re-encoded H.264, audio copied), atomically.

    Raises:
        RenderError: ffmpeg failed.
    """
    import av

    video = Path(video)
    if not cues:
        return video
    with av.open(str(video)) as c:
        width_px, height_px = c.streams.video[0].width, c.streams.video[0].height
    ass = write_atomic(video.with_suffix(".captions.ass"), ass_text(cues, width_px, height_px))
    # libass reads the file name inside a filter argument: escape what the filter syntax uses.
    name = str(ass).replace("\\", "\\\\").replace(":", "\\:").replace("'", "\\'")
    try:
        with atomic_path(video) as tmp:
            run_ffmpeg(["-i", str(video), "-vf", f"ass='{name}'", "-c:v", "libx264",
                        "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
                        "-c:a", "copy", str(tmp)], what=f"burning captions into {video.name}")
    finally:
        ass.unlink(missing_ok=True)
    log.info("burnt %d captions into %s", len(cues), video)
    return video
