"""Check a predictions file against the competition index and the videos' sizes.

Pure: takes what ``format`` loaded, returns :class:`Issue`s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from indexer.models import VideoInfo
from retrieval_hl.competition.format import (
    FrameSize,
    IndexEntry,
    RatioWH,
    VideoRows,
    as_frame_size,
    boxes_inside,
    parsed_arrays,
)
from retrieval_hl.reframe.window import fixed_window_size
from rhl_common.errors import ConfigError
from rhl_common.models import Frozen


class Issue(Frozen):
    """One finding of :func:`validate_predictions`; rows with the same problem are grouped."""

    video_id: str
    frame: int | None = None
    message: str
    level: Literal["error", "warning"] = "error"
    n_rows: int = Field(default=0, ge=0)

    def __str__(self) -> str:
        where = f"video {self.video_id!r}" + (
            f" frame {self.frame}" if self.frame is not None else ""
        )
        return f"{self.level}: {where}: {self.message}"


def validate_predictions(
    preds: Mapping[str, VideoRows],
    index: Iterable[IndexEntry] | Mapping[str, IndexEntry],
    frame_sizes: Mapping[str, FrameSize | VideoInfo] | None = None,
) -> list[Issue]:
    """Check predictions against the index (and the videos' sizes, when known).

    Errors: a video of the index with no line, a line for a video not in the index, a
    ``targetRatioWH`` missing or different from the index's, a video on several lines, unusable
    rows (missing fields, not a number, NaN, negative), repeated frames, and with
    ``frame_sizes``: frames past the end and boxes that leave the frame (``h = w * th / tw``,
    under one pixel of overhang from the fractional height tolerated). Warning: with
    ``frame_sizes``, ``w`` differing from ``fixed_window_size`` (when the exact width is
    fractional, the floored and the rounded-up width are both accepted).

    Rows sharing a problem are reported once per video, with the first frame and the count.

    Args:
        preds: as returned by :func:`load_predictions`.
        index: the entries of :func:`load_index`, or a mapping ``video_id`` -> entry.
        frame_sizes: ``video_id`` -> ``(width_px, height_px, n_frames)`` (``n_frames`` may be
            ``None``) or a ``VideoInfo``.

    Returns:
        The issues, index order first, then videos not in the index; empty when all is well.

    """
    entries = _index_map(index)
    sizes = {k: as_frame_size(v) for k, v in (frame_sizes or {}).items()}
    issues: list[Issue] = []
    for vid, entry in entries.items():
        v = preds.get(vid)
        if v is None:
            issues.append(Issue(video_id=vid, message="no prediction line (scores 0)"))
            continue
        issues.extend(_video_issues(v, entry.ratio_wh, sizes.get(vid)))
    for vid, v in preds.items():
        if vid not in entries:
            at = f" (line {v.line_nos[0]})" if v.line_nos else ""
            issues.append(Issue(video_id=vid, message=f"not in the index{at}"))
            issues.extend(_video_issues(v, None, sizes.get(vid)))
    return issues


def _video_issues(v: VideoRows, index_ratio: RatioWH | None, size: FrameSize | None) -> list[Issue]:
    vid = v.video_id
    out: list[Issue] = []
    if len(v.line_nos) > 1:
        out.append(Issue(video_id=vid, message=f"appears on several lines {list(v.line_nos)}"))
    if v.ratio_wh is None:
        out.append(Issue(video_id=vid, message=v.ratio_problem or "no targetRatioWH"))
    elif index_ratio is not None and v.ratio_wh != index_ratio:
        out.append(
            Issue(
                video_id=vid,
                message=f"targetRatioWH {list(v.ratio_wh)} differs from the index's "
                f"{list(index_ratio)}",
            )
        )
    ratio = index_ratio or v.ratio_wh

    bad: dict[str, list[int | None]] = {}
    for row in v.rows:
        if row.problem is not None:
            bad.setdefault(row.problem, []).append(row.frame)
    for problem, frames in bad.items():
        out.append(_group_issue(vid, problem, frames))

    frames, boxes = parsed_arrays(v.rows)
    if len(frames):
        _, first = np.unique(frames, return_index=True)
        dup = np.ones(len(frames), dtype=bool)
        dup[first] = False
        if dup.any():
            out.append(
                _group_issue(vid, "frame repeated (only the first valid box scores)", frames[dup])
            )
    if size is None or ratio is None or not len(frames):
        return out
    width, height, n_frames = size
    if n_frames is not None:
        late = frames >= n_frames
        if late.any():
            out.append(
                _group_issue(vid, f"frame past the end (video has {n_frames})", frames[late])
            )
    outside = ~boxes_inside(boxes, ratio, width, height)
    if outside.any():
        out.append(_group_issue(vid, f"box leaves the {width}x{height} frame", frames[outside]))
    try:
        fixed_w, _ = fixed_window_size(width, height, ratio)
    except ConfigError:
        return out
    # A fractional exact width may be rounded up too (``round`` conventions, unlike the floor
    # of fixed_window_size): still the task's size; the inside check catches misfits.
    tw, th = ratio
    round_up_w = fixed_w + 1 if fixed_w < width and (height * tw) % th else fixed_w
    wrong = (boxes[:, 2] != fixed_w) & (boxes[:, 2] != round_up_w)
    if wrong.any():
        seen = ", ".join(f"{w:g}" for w in np.unique(boxes[wrong, 2])[:5])
        allowed = f"{fixed_w}" + (f" or {round_up_w}" if round_up_w != fixed_w else "")
        out.append(
            _group_issue(
                vid,
                f"w is not the fixed crop width {allowed} for {width}x{height} (seen: {seen})",
                frames[wrong],
                level="warning",
            )
        )
    return out


def _group_issue(
    vid: str,
    message: str,
    frames: Sequence[int | None] | np.ndarray,
    level: Literal["error", "warning"] = "error",
) -> Issue:
    known = [int(f) for f in frames if f is not None]
    n = len(frames)
    sample = ", ".join(map(str, known[:5])) + (", ..." if len(known) > 5 else "")
    detail = f"{n} row{'s' if n != 1 else ''}" + (f"; frames {sample}" if known else "")
    return Issue(
        video_id=vid,
        frame=known[0] if known else None,
        message=f"{message} ({detail})",
        level=level,
        n_rows=n,
    )


def _index_map(index: Iterable[IndexEntry] | Mapping[str, IndexEntry]) -> dict[str, IndexEntry]:
    if isinstance(index, Mapping):
        return dict(index)
    return {e.video_id: e for e in index}
