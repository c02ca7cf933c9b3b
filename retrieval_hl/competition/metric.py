"""The competition metric: continuous-IoU-weighted F per video, mean F x 100 overall.

Per video, predictions and ground truth are matched by frame, a matched frame scores the IoU of
the two boxes, ``P = sum IoU / N_pred``, ``R = sum IoU / N_gt``, ``F = 2PR / (P + R)``.
Only the first *valid* prediction of a frame scores, but every prediction row counts in
``N_pred`` (repeats, rows with missing or non-numeric fields, NaN, frames past the end of the
video, boxes outside the frame). ``N_pred = N_gt = 0`` gives ``F = 1``; exactly one side empty
gives 0. The final score is the mean F over the ground-truth videos, times 100; a video with no
prediction line counts as an empty prediction list.

Pure except :func:`evaluate_files`, which loads the two files first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from indexer.models import VideoInfo
from retrieval_hl.competition.format import (
    FrameSize,
    PredictionRow,
    VideoRows,
    as_frame_size,
    boxes_inside,
    check_ratio,
    load_ground_truth,
    load_predictions,
    parsed_arrays,
)
from retrieval_hl.reframe.window import box_iou
from rhl_common.errors import ConfigError
from rhl_common.models import Frozen

log = logging.getLogger(__name__)


def iou_xyw(boxes_a: Any, boxes_b: Any, ratio_wh: Sequence[int]) -> np.ndarray:
    """IoU of ``[x, y, w]`` boxes whose height is ``w * th / tw``, element-wise with broadcasting.

    The competition's box format over ``retrieval_hl.reframe.window.box_iou``.

    Args:
        boxes_a: array-like of shape ``(..., 3)``.
        boxes_b: array-like broadcastable against ``boxes_a`` (``a[:, None]`` and ``b[None]``
            give the pairwise matrix).
        ratio_wh: the target ratio ``(tw, th)``.

    Returns:
        Float array of the broadcast shape without the last axis; 0 where the union is empty.

    """
    tw, th = check_ratio(ratio_wh)
    a = np.asarray(boxes_a, dtype=np.float64)
    b = np.asarray(boxes_b, dtype=np.float64)
    if a.shape[-1:] != (3,) or b.shape[-1:] != (3,):
        raise ValueError(f"boxes must have a last axis of 3 ([x, y, w]), got {a.shape}, {b.shape}")
    k = th / tw
    return box_iou(
        np.concatenate([a, a[..., 2:3] * k], axis=-1), np.concatenate([b, b[..., 2:3] * k], axis=-1)
    )


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
    ratio = check_ratio(ratio_wh)
    gt = [PredictionRow.from_raw(r) for r in gt_rows]
    pred = [PredictionRow.from_raw(r) for r in pred_rows]
    n_pred = len(pred)

    gt_frames, gt_boxes = parsed_arrays(gt)
    if len(gt_frames) < len(gt):
        log.warning(
            "video %r: %d unusable ground-truth rows dropped", video_id, len(gt) - len(gt_frames)
        )
    gt_frames, gt_boxes = _first_per_frame(gt_frames, gt_boxes)
    n_gt = len(gt_frames)

    frames, boxes = parsed_arrays(pred)
    if frame_size is not None and len(frames):
        width, height, n_frames = as_frame_size(frame_size)
        ok = boxes_inside(boxes, ratio, width, height)
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


def _first_per_frame(frames: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first row of each frame; result sorted by frame."""
    uniq, first = np.unique(frames, return_index=True)
    return uniq, boxes[first]


def _mean_x100(values: Sequence[float]) -> float:
    return float(np.mean(values)) * 100 if len(values) else 0.0
