"""Deduplicate and budget segments: overlap suppression, a length budget, ordering. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from retrieval_hl.models import Segment

Order = Literal["chronological", "score"]


def rank_key(seg: Segment) -> tuple[int, float]:
    """Sort key: higher priority (lower number) first, then higher normalised score."""
    return (seg.priority, -seg.score_norm)


def suppress_overlaps(segments: Sequence[Segment], min_len_s: float = 0.0) -> list[Segment]:
    """Resolve overlaps in rank order: a lower-ranked segment loses the overlapping part.

    What is left of it keeps its longest free piece if that is at least ``min_len_s``.
    """
    kept: list[Segment] = []
    for seg in sorted(segments, key=rank_key):
        pieces = [seg]
        for k in kept:
            nxt = []
            for p in pieces:
                if p.end_frame <= k.start_frame or p.start_frame >= k.end_frame:
                    nxt.append(p)
                    continue
                if p.start_frame < k.start_frame:
                    nxt.append(
                        p.model_copy(update={"end_frame": k.start_frame, "end_s": k.start_s})
                    )
                if p.end_frame > k.end_frame:
                    nxt.append(
                        p.model_copy(update={"start_frame": k.end_frame, "start_s": k.end_s})
                    )
            pieces = nxt
        pieces = [p for p in pieces if p.duration_s >= max(min_len_s, 1e-9)]
        if pieces:
            kept.append(max(pieces, key=lambda p: p.duration_s))
    return sorted(kept, key=lambda s: s.start_frame)


def apply_budget(segments: Sequence[Segment], budget_s: float | None, fps: float) -> list[Segment]:
    """Keep segments in rank order while their total length fits ``budget_s`` seconds.

    A segment that does not fit is skipped in favour of shorter lower-ranked ones; if not even the
    best one fits, it is cut down to the budget around its middle. ``None`` means no budget.
    """
    if budget_s is None:
        return list(segments)
    ranked = sorted(segments, key=rank_key)
    kept, used = [], 0.0
    for seg in ranked:
        if used + seg.duration_s <= budget_s + 1e-6:
            kept.append(seg)
            used += seg.duration_s
    if not kept and ranked and budget_s > 0:
        best = ranked[0]
        n = max(1, int(budget_s * fps))
        start = best.start_frame + (best.end_frame - best.start_frame - n) // 2
        kept.append(
            best.model_copy(
                update={
                    "start_frame": start,
                    "end_frame": start + n,
                    "start_s": start / fps,
                    "end_s": (start + n) / fps,
                }
            )
        )
    return kept


def order_segments(segments: Sequence[Segment], order: Order = "chronological") -> list[Segment]:
    """Segments in time order or in rank order."""
    if order == "score":
        return sorted(segments, key=rank_key)
    return sorted(segments, key=lambda s: s.start_frame)


def extend_to_min_len(
    segments: Sequence[Segment], min_len_s: float, fps: float, n_frames: int
) -> list[Segment]:
    """Widen segments shorter than ``min_len_s`` evenly around their middle, within the video
    and without running into a neighbour. For watchable output; scoring by frames wants none.
    """
    ordered = sorted(segments, key=lambda s: s.start_frame)
    out: list[Segment] = []
    for k, seg in enumerate(ordered):
        need = int(round(min_len_s * fps)) - (seg.end_frame - seg.start_frame)
        if need <= 0:
            out.append(seg)
            continue
        lo = out[-1].end_frame if out else 0
        hi = ordered[k + 1].start_frame if k + 1 < len(ordered) else n_frames
        start = max(lo, seg.start_frame - need // 2)
        end = min(hi, start + (seg.end_frame - seg.start_frame) + need)
        start = max(lo, end - (seg.end_frame - seg.start_frame) - need)
        out.append(seg.model_copy(update={
            "start_frame": start, "end_frame": end, "start_s": start / fps, "end_s": end / fps,
        }))
    return out
