"""The competition's file formats and metric: index in, per-frame crop predictions out, scored F.

Formats (those of the public baseline kit):

- index: a JSON array (or JSONL) of ``{"video_id": "0", "targetRatioWH": [16, 9]}``, optionally
  with a file name field;
- predictions and ground truth: JSONL, one line per video,
  ``{"video_id", "targetRatioWH", "predictions": [{"frame": int, "bboxes": [x, y, w]}]}``.

A box ``[x, y, w]`` has height ``h = w * th / tw`` for the target ratio ``(tw, th)``; its size is
fixed by the task (:func:`fixed_crop_size`), only its position moves.

Metric per video: predictions and ground truth are matched by frame, a matched frame scores the
IoU of the two boxes, ``P = sum IoU / N_pred``, ``R = sum IoU / N_gt``, ``F = 2PR / (P + R)``.
Only the first *valid* prediction of a frame scores, but every prediction row counts in
``N_pred`` (repeats, rows with missing or non-numeric fields, NaN, frames past the end of the
video, boxes outside the frame). ``N_pred = N_gt = 0`` gives ``F = 1``; exactly one side empty
gives 0. The final score is the mean F over the ground-truth videos, times 100; a video with no
prediction line counts as an empty prediction list.

Loading reads files; everything else here is pure.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from indexer.models import VideoInfo
from retrieval_hl.models import CropBox
from rhl_common.errors import ConfigError
from rhl_common.models import Frozen

log = logging.getLogger(__name__)

RatioWH = tuple[int, int]
FrameSize = tuple[int, int, int | None]
"""``(width_px, height_px, n_frames)`` of a source video; ``n_frames`` may be ``None``."""

FILE_KEYS = ("file_name", "video_path", "file", "filename", "video", "video_file", "path")
"""Index keys accepted for a video's file name, in order of preference."""


# --------------------------------------------------------------------------------------------
# Geometry


def fixed_crop_size(width_px: int, height_px: int, ratio_wh: Sequence[int]) -> tuple[int, int]:
    """Return the task's fixed crop size: the largest ``tw:th`` rectangle inside ``W x H``.

    Rounding is *floor* on both sides, so the box as scored (height ``w * th / tw``) never
    leaves the frame and ``y`` can range over ``0 .. H - h``:

    - the limiting side is exact when it divides evenly: a 16:9 target on a 1080x1920
      portrait source gives ``(1080, 607)`` (the true height is 607.5);
    - ``w = min(W, floor(H * tw / th))`` and ``h = floor(w * th / tw)``, e.g. a 9:16 target on
      1920x1080 gives ``(607, 1079)`` (the true box is 607 x 1079.1).

    Only ``w`` travels in the prediction format; ``h`` is for placing the box (clamping ``y``).

    Raises:
        ConfigError: the ratio is not two positive integers, the frame size is not positive,
            or the frame is too small to hold a one-pixel box of that ratio.

    """
    from retrieval_hl.reframe.camera_path import fixed_window_size

    ratio = _check_ratio(ratio_wh)
    try:
        return fixed_window_size(width_px, height_px, ratio)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def iou_xyw(boxes_a: Any, boxes_b: Any, ratio_wh: Sequence[int]) -> np.ndarray:
    """IoU of ``[x, y, w]`` boxes whose height is ``w * th / tw``, element-wise with broadcasting.

    Args:
        boxes_a: array-like of shape ``(..., 3)``.
        boxes_b: array-like broadcastable against ``boxes_a`` (``a[:, None]`` and ``b[None]``
            give the pairwise matrix).
        ratio_wh: the target ratio ``(tw, th)``.

    Returns:
        Float array of the broadcast shape without the last axis; 0 where the union is empty.

    """
    tw, th = _check_ratio(ratio_wh)
    a = np.asarray(boxes_a, dtype=np.float64)
    b = np.asarray(boxes_b, dtype=np.float64)
    if a.shape[-1:] != (3,) or b.shape[-1:] != (3,):
        raise ValueError(f"boxes must have a last axis of 3 ([x, y, w]), got {a.shape}, {b.shape}")
    k = th / tw
    ax, ay, aw = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bw = b[..., 0], b[..., 1], b[..., 2]
    ah, bh = aw * k, bw * k
    ix = np.clip(np.minimum(ax + aw, bx + bw) - np.maximum(ax, bx), 0.0, None)
    iy = np.clip(np.minimum(ay + ah, by + bh) - np.maximum(ay, by), 0.0, None)
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    out = np.zeros(np.broadcast(ax, bx).shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out


# --------------------------------------------------------------------------------------------
# Artefacts


class IndexEntry(Frozen):
    """One video of the competition index."""

    video_id: str = Field(min_length=1)
    ratio_wh: RatioWH
    file_name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> IndexEntry:
        _check_ratio(self.ratio_wh, error=ValueError)
        return self

    @classmethod
    def from_json(cls, obj: Any) -> IndexEntry:
        """Build from a kit index entry (``video_id``, ``targetRatioWH``, optional file key).

        The file name may be under any of :data:`FILE_KEYS`; an integer ``video_id`` is taken as
        its decimal string. Other keys are ignored.

        Raises:
            ConfigError: not an object, or a field is missing or of the wrong type.

        """
        if not isinstance(obj, Mapping):
            raise ConfigError(
                f"expected an object with video_id and targetRatioWH, got {_type_name(obj)}"
            )
        if "video_id" not in obj:
            raise ConfigError(f"missing 'video_id' (keys: {sorted(obj)})")
        video_id = _parse_video_id(obj["video_id"])
        if "targetRatioWH" not in obj:
            raise ConfigError(f"video {video_id!r}: missing 'targetRatioWH' (keys: {sorted(obj)})")
        try:
            ratio = _parse_ratio(obj["targetRatioWH"])
        except ValueError as exc:
            raise ConfigError(f"video {video_id!r}: {exc}") from None
        file_name = None
        for key in FILE_KEYS:
            if key in obj and obj[key] is not None:
                if not isinstance(obj[key], str) or not obj[key]:
                    raise ConfigError(
                        f"video {video_id!r}: {key!r} must be a non-empty string, got {obj[key]!r}"
                    )
                file_name = obj[key]
                break
        return cls(video_id=video_id, ratio_wh=ratio, file_name=file_name)

    def to_json(self) -> dict[str, Any]:
        """Return the kit's index entry for this video (``file_name`` only when known)."""
        out: dict[str, Any] = {"video_id": self.video_id, "targetRatioWH": list(self.ratio_wh)}
        if self.file_name is not None:
            out["file_name"] = self.file_name
        return out


class FramePrediction(Frozen):
    """The crop box of one frame, in source pixels; its height follows from the target ratio."""

    frame: int = Field(ge=0)
    x_px: int = Field(ge=0)
    y_px: int = Field(ge=0)
    w_px: int = Field(gt=0)

    @classmethod
    def from_crop_box(cls, box: CropBox) -> FramePrediction:
        """Drop the height of a pipeline ``CropBox``: the format carries ``[x, y, w]`` only."""
        return cls(frame=box.frame, x_px=box.x_px, y_px=box.y_px, w_px=box.w_px)


class VideoPrediction(Frozen):
    """One line of a predictions file: a video's crop box per frame, at most one per frame."""

    video_id: str = Field(min_length=1)
    ratio_wh: RatioWH
    predictions: tuple[FramePrediction, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> VideoPrediction:
        _check_ratio(self.ratio_wh, error=ValueError)
        frames = [p.frame for p in self.predictions]
        if len(set(frames)) != len(frames):
            dup = sorted({f for f in frames if frames.count(f) > 1})[:5]
            raise ValueError(f"video {self.video_id!r}: more than one box for frames {dup}")
        return self

    @classmethod
    def from_crop_boxes(
        cls, video_id: str, ratio_wh: Sequence[int], boxes: Iterable[CropBox]
    ) -> VideoPrediction:
        """Build from the grounding stage's boxes."""
        return cls(
            video_id=video_id,
            ratio_wh=tuple(ratio_wh),
            predictions=tuple(FramePrediction.from_crop_box(b) for b in boxes),
        )

    @classmethod
    def from_json_line(cls, line: str) -> VideoPrediction:
        """Parse one kit line strictly (the inverse of :meth:`to_json_line`).

        Raises:
            ConfigError: not JSON, or not a well-formed, fully valid line.

        """
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON ({exc})") from None
        raw = _parse_video_line(obj)
        if raw.ratio_wh is None:
            raise ConfigError(f"video {raw.video_id!r}: {raw.ratio_problem}")
        preds = []
        for row in raw.rows:
            if row.problem is not None or row.box is None or row.frame is None:
                raise ConfigError(f"video {raw.video_id!r}: {row.problem}")
            x, y, w = row.box
            if not all(float(v).is_integer() for v in row.box):
                raise ConfigError(f"video {raw.video_id!r} frame {row.frame}: non-integer box")
            preds.append(FramePrediction(frame=row.frame, x_px=int(x), y_px=int(y), w_px=int(w)))
        try:
            return cls(video_id=raw.video_id, ratio_wh=raw.ratio_wh, predictions=tuple(preds))
        except ValueError as exc:
            raise ConfigError(_first_error(exc)) from None

    def to_json_line(self) -> str:
        """Return the kit's line for this video, predictions sorted by frame, no newline."""
        preds = sorted(self.predictions, key=lambda p: p.frame)
        return json.dumps(
            {
                "video_id": self.video_id,
                "targetRatioWH": list(self.ratio_wh),
                "predictions": [
                    {"frame": p.frame, "bboxes": [p.x_px, p.y_px, p.w_px]} for p in preds
                ],
            }
        )


class PredictionRow(Frozen):
    """One ``{"frame", "bboxes"}`` entry as read, valid or not.

    ``problem`` says why the row cannot score whatever the video (missing field, not a number,
    NaN, negative values); ``frame`` is kept when it could be read, for reporting.
    """

    frame: int | None = None
    box: tuple[float, float, float] | None = None
    problem: str | None = None

    @classmethod
    def from_raw(cls, raw: Any) -> PredictionRow:
        """Read one entry of a ``predictions`` list; never raises, problems go to ``problem``."""
        if isinstance(raw, PredictionRow):
            return raw
        if not isinstance(raw, Mapping):
            return cls(problem="row is not an object")
        frame: int | None = None
        if "frame" not in raw:
            problem: str | None = "missing 'frame'"
        else:
            frame, problem = _parse_frame(raw["frame"])
        if "bboxes" not in raw:
            return cls(frame=frame, problem=problem or "missing 'bboxes'")
        box, box_problem = _parse_box(raw["bboxes"])
        return cls(frame=frame, box=box, problem=problem or box_problem)


class VideoRows(Frozen):
    """A video's line of a predictions or ground-truth file, rows kept as read.

    ``ratio_wh`` is ``None`` when the line's ``targetRatioWH`` is missing or malformed
    (``ratio_problem`` says how). A video on several lines has its rows concatenated in file
    order and every line number in ``line_nos``.
    """

    video_id: str
    ratio_wh: RatioWH | None
    rows: tuple[PredictionRow, ...] = ()
    line_nos: tuple[int, ...] = ()
    ratio_problem: str | None = None


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


class VideoScore(Frozen):
    """The metric for one video. ``n_matched`` is the number of frames that scored an IoU."""

    video_id: str
    precision: float = Field(ge=0, le=1)
    recall: float = Field(ge=0, le=1)
    f: float = Field(ge=0, le=1)
    n_pred: int = Field(ge=0)
    n_gt: int = Field(ge=0)
    n_matched: int = Field(default=0, ge=0)


class EvalReport(Frozen):
    """Scores of a predictions file against ground truth.

    ``mean_f_x100`` is the competition score. ``extra_video_ids`` are predicted videos that the
    ground truth does not have (not scored).
    """

    mean_f_x100: float
    videos: tuple[VideoScore, ...]
    extra_video_ids: tuple[str, ...] = ()

    @property
    def mean_precision_x100(self) -> float:
        """Mean precision over the ground-truth videos, times 100."""
        return _mean_x100([v.precision for v in self.videos])

    @property
    def mean_recall_x100(self) -> float:
        """Mean recall over the ground-truth videos, times 100."""
        return _mean_x100([v.recall for v in self.videos])

    def to_table(self) -> str:
        """Render a plain-text table: one row per video, then the means."""
        header = ("video_id", "n_gt", "n_pred", "matched", "precision", "recall", "f")
        rows = [
            (
                v.video_id,
                str(v.n_gt),
                str(v.n_pred),
                str(v.n_matched),
                f"{v.precision:.4f}",
                f"{v.recall:.4f}",
                f"{v.f:.4f}",
            )
            for v in self.videos
        ]
        rows.append(
            (
                f"MEAN ({len(self.videos)} videos)",
                "",
                "",
                "",
                f"{self.mean_precision_x100 / 100:.4f}",
                f"{self.mean_recall_x100 / 100:.4f}",
                f"{self.mean_f_x100 / 100:.4f}",
            )
        )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def fmt(r: Sequence[str]) -> str:
            cells = [r[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
            ]
            return "  ".join(cells).rstrip()

        lines = [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)]
        lines.append(f"score (mean F x 100): {self.mean_f_x100:.2f}")
        if self.extra_video_ids:
            shown = ", ".join(self.extra_video_ids[:10])
            more = "" if len(self.extra_video_ids) <= 10 else ", ..."
            lines.append(
                f"not in ground truth, not scored ({len(self.extra_video_ids)}): {shown}{more}"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Loading


def load_index(path: str | os.PathLike[str]) -> tuple[IndexEntry, ...]:
    """Read a competition index: a JSON array of entries, or JSONL (one entry per line).

    Raises:
        ConfigError: missing, empty, binary or malformed file, an entry of the wrong shape, or
            a ``video_id`` listed twice.

    """
    name = str(path)
    items = _read_records(path, what="index")
    if not items:
        raise ConfigError(f"index {name!r} has no entries")
    entries: list[IndexEntry] = []
    seen: dict[str, str] = {}
    for where, obj in items:
        try:
            entry = IndexEntry.from_json(obj)
        except ConfigError as exc:
            raise ConfigError(f"index {name!r} {where}: {exc}") from None
        if entry.video_id in seen:
            raise ConfigError(
                f"index {name!r}: duplicate video_id {entry.video_id!r} "
                f"({seen[entry.video_id]} and {where})"
            )
        seen[entry.video_id] = where
        entries.append(entry)
    return tuple(entries)


def load_predictions(path: str | os.PathLike[str]) -> dict[str, VideoRows]:
    """Read a predictions file tolerantly, keeping every row so invalid ones can be counted.

    JSONL is the format; a JSON array of the same objects is accepted too. Rows inside a line
    are never rejected here (see :class:`PredictionRow`); a malformed ``targetRatioWH`` leaves
    ``ratio_wh`` at ``None``. A whitespace-only file gives an empty dict.

    Returns:
        ``video_id`` -> :class:`VideoRows`, in file order.

    Raises:
        ConfigError: missing or binary file, or a malformed line (not JSON, not an object,
            no usable ``video_id``, ``predictions`` missing or not a list), naming the line.

    """
    name = str(path)
    out: dict[str, VideoRows] = {}
    for where, obj in _read_records(path, what="predictions"):
        try:
            line = _parse_video_line(obj)
        except ConfigError as exc:
            raise ConfigError(f"predictions {name!r} {where}: {exc}") from None
        line_no = int(where.split()[-1])
        prev = out.get(line.video_id)
        if prev is None:
            out[line.video_id] = line.model_copy(update={"line_nos": (line_no,)})
        else:
            out[line.video_id] = prev.model_copy(
                update={
                    "rows": prev.rows + line.rows,
                    "line_nos": (*prev.line_nos, line_no),
                    "ratio_wh": prev.ratio_wh or line.ratio_wh,
                }
            )
    return out


def load_ground_truth(path: str | os.PathLike[str]) -> dict[str, VideoRows]:
    """Read a ground-truth file: the predictions format, but every line and row must be valid.

    Raises:
        ConfigError: anything :func:`load_predictions` rejects, an empty file, a video on two
            lines, a bad ``targetRatioWH``, an unusable row or a frame annotated twice.

    """
    name = str(path)
    gt = load_predictions(path)
    if not gt:
        raise ConfigError(f"ground truth {name!r} has no videos")
    for vid, v in gt.items():
        at = f"ground truth {name!r} line {v.line_nos[0]} (video {vid!r})"
        if len(v.line_nos) > 1:
            raise ConfigError(f"ground truth {name!r}: video {vid!r} on lines {list(v.line_nos)}")
        if v.ratio_wh is None:
            raise ConfigError(f"{at}: {v.ratio_problem}")
        seen: set[int] = set()
        for row in v.rows:
            if row.problem is not None:
                frame = f" frame {row.frame}" if row.frame is not None else ""
                raise ConfigError(f"{at}{frame}: {row.problem}")
            assert row.frame is not None
            if row.frame in seen:
                raise ConfigError(f"{at}: frame {row.frame} annotated twice")
            seen.add(row.frame)
    return gt


# --------------------------------------------------------------------------------------------
# Validation


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
    ``frame_sizes``, ``w`` differing from :func:`fixed_crop_size` (when the exact width is
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
    sizes = {k: _as_frame_size(v) for k, v in (frame_sizes or {}).items()}
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

    frames, boxes = _parsed_arrays(v.rows)
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
    outside = ~_inside(boxes, ratio, width, height)
    if outside.any():
        out.append(_group_issue(vid, f"box leaves the {width}x{height} frame", frames[outside]))
    try:
        fixed_w, _ = fixed_crop_size(width, height, ratio)
    except ConfigError:
        return out
    # A fractional exact width may be rounded up too (``round`` conventions, as in
    # grounding.fixed_window_size): still the task's size; the inside check catches misfits.
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


# --------------------------------------------------------------------------------------------
# Scoring


def score_video(
    gt_rows: Iterable[PredictionRow | Mapping[str, Any]],
    pred_rows: Iterable[PredictionRow | Mapping[str, Any]],
    ratio_wh: Sequence[int],
    frame_size: FrameSize | VideoInfo | None = None,
    *,
    video_id: str = "",
) -> VideoScore:
    """Score one video's predictions against its ground truth.

    Args:
        gt_rows: ground-truth rows (``PredictionRow`` or raw ``{"frame", "bboxes"}`` dicts).
            The first usable row of each frame is the truth; ``N_gt`` is the number of distinct
            frames with a usable row (unusable ground-truth rows are dropped with a warning).
        pred_rows: prediction rows, same types. Every row counts in ``N_pred``; the first valid
            row of a frame is the one that scores.
        ratio_wh: the target ratio ``(tw, th)`` (the ground truth's).
        frame_size: ``(width_px, height_px, n_frames)`` or a ``VideoInfo``; when given,
            predictions past the end or leaving the frame are invalid. Never applied to the
            ground truth.
        video_id: carried into the result.

    """
    ratio = _check_ratio(ratio_wh)
    gt = [PredictionRow.from_raw(r) for r in gt_rows]
    pred = [PredictionRow.from_raw(r) for r in pred_rows]
    n_pred = len(pred)

    gt_frames, gt_boxes = _parsed_arrays(gt)
    if len(gt_frames) < len(gt):
        log.warning(
            "video %r: %d unusable ground-truth rows dropped", video_id, len(gt) - len(gt_frames)
        )
    gt_frames, gt_boxes = _first_per_frame(gt_frames, gt_boxes)
    n_gt = len(gt_frames)

    frames, boxes = _parsed_arrays(pred)
    if frame_size is not None and len(frames):
        width, height, n_frames = _as_frame_size(frame_size)
        ok = _inside(boxes, ratio, width, height)
        if n_frames is not None:
            ok &= frames < n_frames
        frames, boxes = frames[ok], boxes[ok]
    frames, boxes = _first_per_frame(frames, boxes)

    _, gi, pi = np.intersect1d(gt_frames, frames, assume_unique=True, return_indices=True)
    iou_sum = float(iou_xyw(gt_boxes[gi], boxes[pi], ratio).sum()) if len(gi) else 0.0

    if n_pred == 0 and n_gt == 0:
        p = r = f = 1.0
    elif n_pred == 0 or n_gt == 0:
        p = r = f = 0.0
    else:
        p, r = iou_sum / n_pred, iou_sum / n_gt
        f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return VideoScore(
        video_id=video_id,
        precision=min(p, 1.0),
        recall=min(r, 1.0),
        f=min(f, 1.0),
        n_pred=n_pred,
        n_gt=n_gt,
        n_matched=len(gi),
    )


def score(
    gt: Mapping[str, VideoRows],
    pred: Mapping[str, VideoRows],
    frame_sizes: Mapping[str, FrameSize | VideoInfo] | None = None,
) -> EvalReport:
    """Score predictions against ground truth: mean F over the ground-truth videos, times 100.

    Each video uses the ground truth's ``targetRatioWH``; a video with no prediction line scores
    as an empty list; predicted videos absent from the ground truth are listed, not scored.

    Args:
        gt: from :func:`load_ground_truth` (or :func:`load_predictions`).
        pred: from :func:`load_predictions`.
        frame_sizes: optional ``video_id`` -> ``(width_px, height_px, n_frames)`` or
            ``VideoInfo``, to invalidate frames past the end and boxes outside the frame.

    Raises:
        ConfigError: the ground truth is empty or a ground-truth video has no usable ratio.

    """
    if not gt:
        raise ConfigError("ground truth has no videos: nothing to score")
    sizes = frame_sizes or {}
    videos = []
    for vid, g in gt.items():
        if g.ratio_wh is None:
            raise ConfigError(f"ground truth video {vid!r}: {g.ratio_problem}")
        p = pred.get(vid)
        videos.append(
            score_video(g.rows, p.rows if p else (), g.ratio_wh, sizes.get(vid), video_id=vid)
        )
    return EvalReport(
        mean_f_x100=_mean_x100([v.f for v in videos]),
        videos=tuple(videos),
        extra_video_ids=tuple(v for v in pred if v not in gt),
    )


def evaluate_files(
    gt_path: str | os.PathLike[str],
    pred_path: str | os.PathLike[str],
    frame_sizes: Mapping[str, FrameSize | VideoInfo] | None = None,
) -> EvalReport:
    """Load a ground-truth and a predictions file and :func:`score` them."""
    return score(load_ground_truth(gt_path), load_predictions(pred_path), frame_sizes)


def frame_sizes_from_infos(infos: Iterable[VideoInfo]) -> dict[str, FrameSize]:
    """``video_id`` -> ``(width_px, height_px, n_frames)`` from probed videos."""
    return {i.video_id: (i.width_px, i.height_px, i.n_frames) for i in infos}


# --------------------------------------------------------------------------------------------
# Helpers


def _check_ratio(ratio_wh: Any, error: type[Exception] = ConfigError) -> RatioWH:
    try:
        tw, th = ratio_wh
    except (TypeError, ValueError):
        raise error(f"target ratio must be [tw, th], got {ratio_wh!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (tw, th)):
        raise error(f"target ratio must be two positive integers, got {ratio_wh!r}")
    return tw, th


def _parse_ratio(value: Any) -> RatioWH:
    """Kit ``targetRatioWH`` -> ``(tw, th)``; integral floats accepted. Raises ValueError."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"targetRatioWH must be [tw, th], got {value!r}")
    out = []
    for v in value:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"targetRatioWH must be two positive integers, got {value!r}")
        out.append(v)
    return out[0], out[1]


def _parse_video_id(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"video_id must be a non-empty string, got {value!r}")
    return value


def _parse_frame(value: Any) -> tuple[int | None, str | None]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, "frame is not a number"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None, "frame is NaN or infinite"
        if not value.is_integer():
            return None, "frame is not an integer"
        value = int(value)
    if value < 0:
        return value, "frame is negative"
    return value, None


def _parse_box(value: Any) -> tuple[tuple[float, float, float] | None, str | None]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None, "bboxes is not [x, y, w]"
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        return None, "bboxes has a non-number"
    x, y, w = (float(v) for v in value)
    if not all(math.isfinite(v) for v in (x, y, w)):
        return None, "bboxes has NaN or infinity"
    if w <= 0:
        return None, "box width is not positive"
    if x < 0 or y < 0:
        return None, "box starts outside the frame (negative x or y)"
    return (x, y, w), None


def _parse_video_line(obj: Any) -> VideoRows:
    """One JSON object of a predictions file -> ``VideoRows``; ConfigError if malformed."""
    if not isinstance(obj, Mapping):
        raise ConfigError(
            f"expected an object with video_id and predictions, got {_type_name(obj)}"
        )
    if "video_id" not in obj:
        raise ConfigError(f"missing 'video_id' (keys: {sorted(obj)})")
    vid = _parse_video_id(obj["video_id"])
    rows = obj.get("predictions")
    if not isinstance(rows, list):
        got = "missing" if "predictions" not in obj else _type_name(rows)
        raise ConfigError(f"video {vid!r}: 'predictions' must be a list, got {got}")
    ratio, problem = None, None
    if "targetRatioWH" not in obj:
        problem = "missing 'targetRatioWH'"
    else:
        try:
            ratio = _parse_ratio(obj["targetRatioWH"])
        except ValueError as exc:
            problem = str(exc)
    return VideoRows(
        video_id=vid,
        ratio_wh=ratio,
        rows=tuple(PredictionRow.from_raw(r) for r in rows),
        ratio_problem=problem,
    )


def _read_records(path: str | os.PathLike[str], what: str) -> list[tuple[str, Any]]:
    """JSON array or JSONL -> ``[(where, object)]`` with ``where`` = "entry N" / "line N"."""
    p = Path(path)
    name = str(path)
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {name!r}")
    data = p.read_bytes()
    if b"\x00" in data:
        raise ConfigError(f"{what} file {name!r} is binary, expected JSON or JSONL text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} file {name!r} is not UTF-8 text") from None
    if not text.strip():
        if what == "index":
            raise ConfigError(f"index file {name!r} is empty")
        return []
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{what} file {name!r} line {exc.lineno}: not valid JSON ({exc.msg})"
            ) from None
        return [(f"entry {i}", obj) for i, obj in enumerate(items, start=1)]
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"line {i}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{what} file {name!r} line {i}: not valid JSON ({exc.msg}); "
                "expected a JSON array or one JSON object per line"
            ) from None
    return out


def _parsed_arrays(rows: Sequence[PredictionRow]) -> tuple[np.ndarray, np.ndarray]:
    """Frames (int64) and boxes ``(N, 3)`` of the rows without a ``problem``, in order."""
    ok = [r for r in rows if r.problem is None and r.frame is not None and r.box is not None]
    frames = np.fromiter((r.frame for r in ok), dtype=np.int64, count=len(ok))
    boxes = np.array([r.box for r in ok], dtype=np.float64).reshape(-1, 3)
    return frames, boxes


def _first_per_frame(frames: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first row of each frame; result sorted by frame."""
    uniq, first = np.unique(frames, return_index=True)
    return uniq, boxes[first]


def _inside(boxes: np.ndarray, ratio: RatioWH, width: int, height: int) -> np.ndarray:
    """Boxes inside a ``width x height`` frame.

    The height ``w * th / tw`` is usually fractional; the box counts as inside when its whole
    pixel rows are (``y + floor(h) <= H``), the same rounding as :func:`fixed_crop_size`.
    """
    tw, th = ratio
    x, y, w = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    h = np.floor(w * th / tw + 1e-9)
    eps = 1e-9
    return (x >= 0) & (y >= 0) & (x + w <= width + eps) & (y + h <= height + eps)


def _as_frame_size(size: FrameSize | VideoInfo) -> FrameSize:
    if isinstance(size, VideoInfo):
        return size.width_px, size.height_px, size.n_frames
    try:
        width, height, n_frames = size
    except (TypeError, ValueError):
        raise ConfigError(
            f"frame size must be (width_px, height_px, n_frames), got {size!r}"
        ) from None
    return int(width), int(height), None if n_frames is None else int(n_frames)


def _index_map(index: Iterable[IndexEntry] | Mapping[str, IndexEntry]) -> dict[str, IndexEntry]:
    if isinstance(index, Mapping):
        return dict(index)
    return {e.video_id: e for e in index}


def _mean_x100(values: Sequence[float]) -> float:
    return float(np.mean(values)) * 100 if len(values) else 0.0


def _type_name(value: Any) -> str:
    return {list: "an array", dict: "an object", str: "a string"}.get(
        type(value), type(value).__name__
    )


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", exc))
    return str(exc)
