"""Pictures of a run: ``timeline.png`` (why these stretches) and ``contact_sheet.png`` (what
they show).

``plot_timeline`` draws the score the selection compared with its threshold, the fused signal
score, the semantic match per description when an encoder ran, and each measured signal in its
own unit, with the chosen segments shaded and labelled. ``plot_contact_sheet`` shows one frame
per segment (its middle frame) with the crop box drawn and the segment's description.

matplotlib is used through ``Figure`` objects only (no pyplot state), so pictures can be drawn
from several threads, e.g. by the web page. Files are written atomically.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Iterator, Sequence
from functools import lru_cache, wraps
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexer.models import VideoInfo
from retrieval_hl.models import Highlight, ScoreTrack
from rhl_common.atomic import atomic_path

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

TIMELINE_NAME = "timeline.png"
CONTACT_SHEET_NAME = "contact_sheet.png"

# Signal name -> (label, unit) as measured by retrieval_hl.signals.meter.
SIGNAL_LABELS: dict[str, tuple[str, str]] = {
    "motion": ("motion", "grey levels"),
    "audio_loudness": ("loudness", "dBFS"),
    "audio_onset": ("audio onsets", "flux"),
    "shot_density": ("shot cuts", "per s"),
    "faces": ("faces", "fraction"),
    "people": ("people", "fraction"),
    "sharpness": ("sharpness", "Laplacian var"),
    "exposure": ("exposure penalty", "0-1"),
    "speech_rate": ("speech", "words per s"),
    "voice_loudness_db": ("voice loudness", "dBFS"),
    "speech_emphasis_db": ("speech emphasis", "dB over the speaker's level"),
    "animals": ("animals", "fraction"),
    "vehicles": ("vehicles", "fraction"),
    "subject_size": ("subject size", "of frame"),
    "camera_motion": ("camera motion", "grey levels"),
}
SEGMENT_COLOURS = ("#f28e2b", "#4e79a7", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948")
THUMB_WIDTH_PX = 360
MAX_TEXT_LABELS = 8  # beyond this many segments the timeline labels them by number only
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
             "Source Han Sans SC", "Microsoft YaHei", "PingFang SC", "SimHei")


@lru_cache(maxsize=1)
def _font_family() -> tuple[str, ...]:
    """DejaVu Sans, then the first CJK font installed, so Chinese descriptions render."""
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    cjk = next((name for name in CJK_FONTS if name in have), None)
    if cjk is None:
        log.info("no CJK font installed: Chinese text in the pictures shows as boxes "
                 "(install fonts-noto-cjk or fonts-wqy-microhei)")
    return ("DejaVu Sans", cjk) if cjk else ("DejaVu Sans",)


def _figure(width_in: float, height_in: float):  # noqa: ANN202
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    fig.get_layout_engine().set(h_pad=0.02, hspace=0.01)
    return fig


def _save(fig, out_path: str | Path) -> Path:  # noqa: ANN001
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, facecolor="white")
    return Path(out_path)


def _styled(draw):  # noqa: ANN001, ANN202
    """Run a drawing function with the house font (CJK fallback) in force."""

    @wraps(draw)
    def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        import matplotlib as mpl

        with mpl.rc_context({"font.family": list(_font_family())}):
            return draw(*args, **kwargs)

    return run


def _short(text: str, width: int) -> str:
    return textwrap.shorten(text, width=width, placeholder="…") if len(text) > width else text


def _steps(track: ScoreTrack, values: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """Step-plot coordinates: each slice's value held from its start to its end."""
    x = np.column_stack([track.start_s, track.end_s]).ravel()
    y = np.array([np.nan if v is None else v for v in values], dtype=np.float64).repeat(2)
    return x, y


def axis_label(signal: str) -> str:
    """The y-axis label of a signal's panel: its name over its unit in parentheses (no
    parentheses for a signal without a known unit).
    """
    label, unit = SIGNAL_LABELS.get(signal, (signal, ""))
    return f"{label}\n({unit})" if unit else label


def _shade(ax, highlight: Highlight, label: bool) -> None:  # noqa: ANN001
    """Shade every chosen segment; with ``label`` also write its number and description at the
    top of the panel, on two alternating rows so that neighbours do not overprint. With many
    segments only the numbers are written (the contact sheet has the same numbers).
    """
    numbers_only = len(highlight.segments) > MAX_TEXT_LABELS
    for k, seg in enumerate(highlight.segments):
        colour = SEGMENT_COLOURS[k % len(SEGMENT_COLOURS)]
        ax.axvspan(seg.start_s, seg.end_s, color=colour, alpha=0.22, lw=0)
        if label:
            text = highlight.descriptions[seg.description_index].text
            ax.text(
                seg.start_s, 0.98 - 0.09 * (k % 2),
                f"{k + 1}" if numbers_only else f"{k + 1} {_short(text, 30)}",
                transform=ax.get_xaxis_transform(), ha="left", va="top", fontsize=8,
                color="black", clip_on=True,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colour, "alpha": 0.85},
            )


def _varies(name: str, values: Sequence[float | None]) -> bool:
    """Whether a signal varies by at least its noise floor in this video (as the fusion judges
    it): a flatter one is listed, not drawn, so that noise is not blown up into a curve.
    """
    from retrieval_hl.select.events import MIN_SCALE

    arr = np.array([v for v in values if v is not None], dtype=np.float64)
    if name == "sharpness":  # the fusion compares sharpness on a log scale
        arr = np.log1p(np.maximum(arr, 0.0))
    return arr.size > 1 and float(np.ptp(arr)) >= MIN_SCALE.get(name, 1e-9)


@_styled
def plot_timeline(highlight: Highlight, out_path: str | Path) -> Path:
    """Draw ``timeline.png``: scores and signals over time with the chosen segments shaded.

    Panels, top to bottom: the score the selection used with its threshold (segments numbered
    and labelled); the semantic match per description (when present); one panel per signal that
    varies in this video, in its own unit. Flat or unmeasured signals are listed, not drawn.
    A highlight without a score track (an older ``highlights.json``) gets the segments only.

    Returns:
        ``out_path``.
    """
    info, track = highlight.video, highlight.track
    signals = {}
    flat: list[str] = []
    if track is not None:
        for name, values in track.signals.items():
            (signals.__setitem__(name, values) if _varies(name, values) else flat.append(name))
    n_sem = min(len(track.semantic_z), 6) if track is not None else 0
    heights = [3.0] + ([1.6] if n_sem else []) + [0.85] * len(signals)
    fig = _figure(12.0, 0.9 + sum(heights))
    axes = fig.subplots(len(heights), 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
    top = axes[0]
    kept = sum(s.duration_s for s in highlight.segments)
    fig.suptitle(
        f"{info.video_id}: {len(highlight.segments)} segment(s), {kept:.1f} s kept of "
        f"{info.duration_s:.1f} s   (encoder: {highlight.encoder})",
        fontsize=11, x=0.01, ha="left",
    )
    _shade(top, highlight, label=True)
    if track is not None:
        top.plot(*_steps(track, track.decision_score), color="black", lw=1.4,
                 label=track.decision_label)
        if track.fused_z and track.fused_z != track.decision_score:
            top.plot(*_steps(track, track.fused_z), color="#888888", lw=0.9,
                     label="fused signals (signal z)")
        if track.decision_threshold is not None:
            top.axhline(track.decision_threshold, color="#d62728", ls="--", lw=1.1,
                        label=f"threshold {track.decision_threshold:.2f}")
        if track.new_view_threshold is not None:
            top.axhline(track.new_view_threshold, color="#d62728", ls=":", lw=1.0,
                        label=f"a new view: {track.new_view_threshold:.2f}")
        top.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=3, fontsize=8,
                   frameon=False, borderaxespad=0.1)
        top.set_ylabel("score")
        lo, hi = top.get_ylim()
        top.set_ylim(lo, hi + 0.2 * (hi - lo))  # room for the segment labels above the curve
    else:
        top.set_yticks([])
        top.text(0.5, 0.5, "no score track in this run (segments only)",
                 transform=top.transAxes, ha="center", color="#666666")
    row = 1
    if n_sem:
        ax = axes[row]
        _shade(ax, highlight, label=False)
        for d, values in enumerate(track.semantic_z[:n_sem]):
            text = highlight.descriptions[d].text if d < len(highlight.descriptions) else str(d)
            ax.plot(*_steps(track, values), lw=1.0, label=_short(text, 40))
        ax.set_ylabel("match z")
        ax.legend(loc="upper left", fontsize=7, ncol=min(n_sem, 3), framealpha=0.85)
        row += 1
    for name, values in signals.items():
        ax = axes[row]
        _shade(ax, highlight, label=False)
        ax.plot(*_steps(track, values), color="#1f4e79", lw=0.9)
        ax.set_ylabel(axis_label(name), fontsize=8, rotation=0, ha="right", va="center")
        ax.tick_params(axis="y", labelsize=7)
        ax.locator_params(axis="y", nbins=3)
        row += 1
    for ax in axes:
        ax.set_xlim(0, info.duration_s)
        ax.grid(axis="x", color="#dddddd", lw=0.6)
    if flat:
        names = ", ".join(SIGNAL_LABELS.get(n, (n, ""))[0] for n in flat)
        axes[-1].set_xlabel(f"time (s)        flat here (not drawn): {names}")
    else:
        axes[-1].set_xlabel("time (s)")
    return _save(fig, out_path)


def _thumbnails(highlight: Highlight, frames: Sequence[int], reader: str) -> dict[int, np.ndarray]:
    """RGB frames (display orientation) at ``THUMB_WIDTH_PX`` wide, by source frame index.

    With ``reader="auto"``, PyAV seeks to each frame (:func:`_seeked_frames`); otherwise the
    reader asked for decodes them (``indexer.decode``).
    """
    from indexer.decode import open_reader, proxy_chunks

    info = highlight.video
    w = min(THUMB_WIDTH_PX, info.width_px)
    h = max(2, int(round(info.height_px * w / info.width_px / 2)) * 2)
    w -= w % 2
    wanted = sorted(set(frames))
    if reader == "auto":
        key = ((w, h), True)  # exact colour, as the readers give
        chunks = (c[key] for c in proxy_chunks(info, _seeked_frames(info, wanted), {key: None}, 16))
    else:
        chunks = open_reader(info, reader).iter_chunks(info, wanted, (w, h), 16)
    out: dict[int, np.ndarray] = {}
    for chunk in chunks:
        out.update(zip(chunk.indices.tolist(), chunk.frames, strict=True))
    return out


def _seeked_frames(info: VideoInfo, frames: Sequence[int]) -> Iterator[tuple[int, av.VideoFrame]]:
    """``frames`` (sorted) full size as decoded, coded orientation: PyAV reads the packets' times
    (no decoding) to find each frame's, then seeks to the keyframe before it and decodes up to
    it. Frames past a decoding error are left out (the sheet says so).

    A few frames of a long video cost little this way: ``open_reader``'s sparse choice, decord,
    loads libraries that stay resident (about 550 MiB, the export's peak), and PyAV without
    seeking decodes the whole file (``bench/memory_profile.py``, stage "export: plots").
    """
    import av

    try:
        with av.open(info.path) as container:
            stream = container.streams.video[0]
            times = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
            stream.thread_type = "AUTO"
            for i in frames:
                if i >= len(times):
                    break
                container.seek(times[i], stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    if frame.pts is not None and frame.pts >= times[i]:
                        yield i, frame
                        break
    except av.error.FFmpegError as exc:
        log.warning("cannot decode the contact sheet's frames of %s: %s", info.path, exc)


@_styled
def plot_contact_sheet(highlight: Highlight, out_path: str | Path, *, reader: str = "auto") -> Path:
    """Draw ``contact_sheet.png``: per segment its middle frame, crop box and description.

    The crop box (when the run reframed) is drawn in yellow with the rest of the frame dimmed.

    Returns:
        ``out_path``.

    Raises:
        ValueError: the highlight has no segments.
        VideoOpenError: the source video cannot be read.
    """
    from matplotlib.patches import Rectangle

    segs = highlight.segments
    if not segs:
        raise ValueError("no segments to draw a contact sheet of")
    info = highlight.video
    mids = [min((s.start_frame + s.end_frame) // 2, info.n_frames - 1) for s in segs]
    thumbs = _thumbnails(highlight, mids, reader)
    boxes = {c.frame: c for c in highlight.crops}
    cols = min(len(segs), 4)
    rows = math.ceil(len(segs) / cols)
    aspect = info.height_px / info.width_px
    cell_w = 3.4 if cols > 1 else 4.6
    fig = _figure(cell_w * cols, 0.4 + rows * (cell_w * aspect + 0.8))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    ratio = f", crop {highlight.ratio_wh[0]}:{highlight.ratio_wh[1]}" if highlight.ratio_wh else ""
    fig.suptitle(f"{info.video_id}: {len(segs)} segment(s){ratio}", fontsize=11, x=0.01,
                 ha="left")
    for ax in axes[len(segs):]:
        ax.set_axis_off()
    for k, (seg, mid, ax) in enumerate(zip(segs, mids, axes, strict=False)):
        ax.set_xticks([])
        ax.set_yticks([])
        colour = SEGMENT_COLOURS[k % len(SEGMENT_COLOURS)]
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(2.5)
        text = highlight.descriptions[seg.description_index].text
        ax.set_title(f"{k + 1}  {seg.start_s:.1f}–{seg.end_s:.1f} s  score {seg.score_norm:.2f}",
                     fontsize=9, loc="left", color=colour)
        ax.set_xlabel("\n".join(textwrap.wrap(text, 44)[:2]), fontsize=8)
        rgb = thumbs.get(mid)
        if rgb is None:
            ax.text(0.5, 0.5, "frame not decodable", ha="center", transform=ax.transAxes)
            continue
        ax.imshow(rgb, extent=(0, info.width_px, info.height_px, 0), interpolation="bilinear")
        box = boxes.get(mid)
        if box is not None:
            ax.imshow(np.zeros((1, 1, 4)) + [0, 0, 0, 0.45],
                      extent=(0, info.width_px, info.height_px, 0))
            ax.imshow(rgb[int(box.y_px * rgb.shape[0] / info.height_px):
                          int((box.y_px + box.h_px) * rgb.shape[0] / info.height_px),
                          int(box.x_px * rgb.shape[1] / info.width_px):
                          int((box.x_px + box.w_px) * rgb.shape[1] / info.width_px)],
                      extent=(box.x_px, box.x_px + box.w_px, box.y_px + box.h_px, box.y_px))
            ax.add_patch(Rectangle((box.x_px, box.y_px), box.w_px, box.h_px, fill=False,
                                   edgecolor="#ffd400", lw=2))
        ax.set_xlim(0, info.width_px)
        ax.set_ylim(info.height_px, 0)
    return _save(fig, out_path)


def write_plots(highlight: Highlight, out_dir: str | Path, *, reader: str = "auto"
                ) -> dict[str, Path]:
    """Write ``timeline.png`` and (when there are segments) ``contact_sheet.png`` to ``out_dir``.

    Returns:
        The written paths by kind: ``timeline`` and ``contact_sheet``.
    """
    out = Path(out_dir)
    written = {"timeline": plot_timeline(highlight, out / TIMELINE_NAME)}
    if highlight.segments:
        written["contact_sheet"] = plot_contact_sheet(highlight, out / CONTACT_SHEET_NAME,
                                                      reader=reader)
    return written
