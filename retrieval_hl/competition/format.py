"""The competition's file formats: the index in, per-frame crop predictions and ground truth.

Formats (those of the public baseline kit):

- index: a JSON array (or JSONL) of ``{"video_id": "0", "targetRatioWH": [16, 9]}``, optionally
  with a file name field;
- predictions and ground truth: JSONL, one line per video,
  ``{"video_id", "targetRatioWH", "predictions": [{"frame": int, "bboxes": [x, y, w]}]}``.

A box ``[x, y, w]`` has height ``h = w * th / tw`` for the target ratio ``(tw, th)``; its size is
fixed by the task (``retrieval_hl.reframe.window.fixed_window_size``), only its position moves.

Predictions are read tolerantly (every row is kept, valid or not, so ``validate`` and ``metric``
can count the invalid ones); ground truth strictly. Loading reads files; the rest is pure.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from indexer.models import VideoInfo
from retrieval_hl.models import CropBox
from rhl_common.errors import ConfigError
from rhl_common.models import Frozen

RatioWH = tuple[int, int]
FrameSize = tuple[int, int, int | None]
"""``(width_px, height_px, n_frames)`` of a source video; ``n_frames`` may be ``None``."""

FILE_KEYS = ("file_name", "video_path", "file", "filename", "video", "video_file", "path")
"""Index keys accepted for a video's file name, in order of preference."""


# --------------------------------------------------------------------------------------------
# Artefacts


class IndexEntry(Frozen):
    """One video of the competition index."""

    video_id: str = Field(min_length=1)
    ratio_wh: RatioWH
    file_name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> IndexEntry:
        check_ratio(self.ratio_wh, error=ValueError)
        return self

    @classmethod
    def from_json(cls, obj: Any) -> IndexEntry:
        """Build from a kit index entry (``video_id``, ``targetRatioWH``, optional file key).

        The file name may be under any of :data:`FILE_KEYS`; an integer ``video_id`` is taken as
        its decimal string. Other keys are ignored.

        Raises:
            ConfigError: not an object, or a field is missing or of the wrong type.

        """
        video_id = _video_id_of(obj, "targetRatioWH")
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
        check_ratio(self.ratio_wh, error=ValueError)
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
            obj = _json_loads(line, "prediction line")
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


def frame_sizes_from_infos(infos: Iterable[VideoInfo]) -> dict[str, FrameSize]:
    """``video_id`` -> ``(width_px, height_px, n_frames)`` from probed videos."""
    return {i.video_id: (i.width_px, i.height_px, i.n_frames) for i in infos}


# --------------------------------------------------------------------------------------------
# Helpers (shared with validate and metric)


def check_ratio(ratio_wh: Any, error: type[Exception] = ConfigError) -> RatioWH:
    """``(tw, th)`` from a target ratio of two positive integers; else raise ``error``."""
    try:
        tw, th = ratio_wh
    except (TypeError, ValueError):
        raise error(f"target ratio must be [tw, th], got {ratio_wh!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (tw, th)):
        raise error(f"target ratio must be two positive integers, got {ratio_wh!r}")
    return tw, th


def parsed_arrays(rows: Sequence[PredictionRow]) -> tuple[np.ndarray, np.ndarray]:
    """Frames (int64) and boxes ``(N, 3)`` of the rows without a ``problem``, in order."""
    ok = [r for r in rows if r.problem is None and r.frame is not None and r.box is not None]
    frames = np.fromiter((r.frame for r in ok), dtype=np.int64, count=len(ok))
    boxes = np.array([r.box for r in ok], dtype=np.float64).reshape(-1, 3)
    return frames, boxes


def boxes_inside(boxes: np.ndarray, ratio: RatioWH, width: int, height: int) -> np.ndarray:
    """Boxes inside a ``width x height`` frame.

    The height ``w * th / tw`` is usually fractional; the box counts as inside when its whole
    pixel rows are (``y + floor(h) <= H``), the same rounding as ``fixed_window_size``.
    """
    tw, th = ratio
    x, y, w = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    h = np.floor(w * th / tw + 1e-9)
    eps = 1e-9
    return (x >= 0) & (y >= 0) & (x + w <= width + eps) & (y + h <= height + eps)


def as_frame_size(size: FrameSize | VideoInfo) -> FrameSize:
    """``(width_px, height_px, n_frames)`` from a ``FrameSize`` or a ``VideoInfo``.

    Raises:
        ConfigError: ``size`` is not a triple.
    """
    if isinstance(size, VideoInfo):
        return size.width_px, size.height_px, size.n_frames
    try:
        width, height, n_frames = size
    except (TypeError, ValueError):
        raise ConfigError(
            f"frame size must be (width_px, height_px, n_frames), got {size!r}"
        ) from None
    return int(width), int(height), None if n_frames is None else int(n_frames)


# --------------------------------------------------------------------------------------------
# Parsing


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


def _video_id_of(obj: Any, wants: str) -> str:
    """The ``video_id`` of a JSON object that should also hold ``wants``.

    Raises:
        ConfigError: not an object, or its ``video_id`` is missing or not a non-empty string
            (an integer is taken as its decimal string).
    """
    if not isinstance(obj, Mapping):
        raise ConfigError(f"expected an object with video_id and {wants}, got {_type_name(obj)}")
    if "video_id" not in obj:
        raise ConfigError(f"missing 'video_id' (keys: {sorted(obj)})")
    value = obj["video_id"]
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
    vid = _video_id_of(obj, "predictions")
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
            items = _json_loads(text, f"{what} file {name!r}")
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
            out.append((f"line {i}", _json_loads(line, f"{what} file {name!r} line {i}")))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{what} file {name!r} line {i}: not valid JSON ({exc.msg}); "
                "expected a JSON array or one JSON object per line"
            ) from None
    return out


def _json_int(text: str) -> int | float:
    """A JSON integer; one beyond float precision becomes +-inf, which every check rejects."""
    digits = text.lstrip("-")
    if len(digits) > 15:
        return -math.inf if text.startswith("-") else math.inf
    return int(text)


def _json_loads(text: str, where: str) -> Any:
    """``json.loads`` that turns huge integers into infinities and deep nesting into an error."""
    try:
        return json.loads(text, parse_int=_json_int)
    except RecursionError:
        raise ConfigError(f"{where}: JSON nested too deeply to be a kit file") from None


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
