"""A VLM's time ranges: chunk plans, validation, merging across chunk borders, priority dedup,
and their use as segments (the ``vlm`` method) or as priors and gap-fillers for retrieval (the
``hybrid`` method). Pure.

Chunked asking gives many near-duplicate candidates: the same event seen by two overlapping
chunks, cut in two by a chunk border, or listed twice in one reply. ``merge_candidates`` groups
them into events; a group's extent is the median of its members' starts and ends, leaving out a
side that a chunk border cut off (so jitter averages out and a border does not shorten an event),
and its text and priority are those of its most important member.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from indexer.models import Slice, VideoInfo
from retrieval_hl.models import Description, Hit, Segment
from rhl_common.models import Frozen

BORDER_TOL_S = 0.5  # a range ending this close to its chunk's edge is taken as cut by it
SAME_EVENT_OVERLAP = 0.5  # overlap / shorter length at which two ranges are one event
MIN_RANGE_S = 0.3  # shorter ranges are taken as a point in time
POINT_RANGE_S = 3.0  # the extent given to a point in time (a range without an end)


class Chunk(Frozen):
    """One stretch of the video shown to the VLM in one request."""

    index: int = Field(ge=0)
    start_s: float = Field(ge=0)
    end_s: float
    is_last: bool = True

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.end_s - self.start_s


class Candidate(Frozen):
    """One highlight as one chunk's reply gave it, in absolute seconds."""

    description: Description
    start_s: float = Field(ge=0)
    end_s: float
    chunk: Chunk


def plan_chunks(duration_s: float, chunk_s: float, overlap_s: float) -> list[Chunk]:
    """Equal chunks of at most ``chunk_s`` seconds covering the video, neighbours sharing
    ``overlap_s`` seconds (so an event on a border is seen whole by one of them). A video no
    longer than ``chunk_s`` is one chunk.
    """
    if duration_s <= chunk_s:
        return [Chunk(index=0, start_s=0.0, end_s=duration_s)]
    n = math.ceil((duration_s - overlap_s) / (chunk_s - overlap_s) - 1e-9)
    length = (duration_s + (n - 1) * overlap_s) / n
    step = length - overlap_s
    return [
        Chunk(
            index=i,
            start_s=i * step,
            end_s=duration_s if i == n - 1 else i * step + length,
            is_last=i == n - 1,
        )
        for i in range(n)
    ]


def to_candidates(
    descriptions: Sequence[Description], chunk: Chunk, video_duration_s: float
) -> tuple[list[Candidate], int]:
    """Map one chunk's descriptions (times relative to the chunk) to absolute candidates.

    A range must lie inside the chunk (a little slack at its end is clamped) and have start <
    end; a start alone, or a range shorter than ``MIN_RANGE_S``, becomes ``POINT_RANGE_S``
    seconds around it. When every time in the reply lies in the chunk's *absolute* span and
    some lie past its duration, the model answered in video time: the reply is read that way.

    Returns:
        The candidates, and how many timed items were dropped as invalid.

    """
    timed = [d for d in descriptions if d.start_hint_s is not None or d.end_hint_s is not None]
    times = [t for d in timed for t in (d.start_hint_s, d.end_hint_s) if t is not None]
    offset = chunk.start_s
    if (
        chunk.start_s > 0
        and times
        and max(times) > chunk.duration_s + BORDER_TOL_S
        and min(times) >= chunk.start_s - BORDER_TOL_S
        and max(times) <= chunk.end_s + BORDER_TOL_S
    ):
        offset = 0.0
    out, dropped = [], 0
    for d in timed:
        start = d.start_hint_s if d.start_hint_s is not None else d.end_hint_s - POINT_RANGE_S
        end = d.end_hint_s if d.end_hint_s is not None else start + POINT_RANGE_S
        start, end = start + offset, end + offset
        if start >= chunk.end_s or end <= chunk.start_s or end <= start:
            dropped += 1
            continue
        if end - start < MIN_RANGE_S:
            mid = (start + end) / 2
            start, end = mid - POINT_RANGE_S / 2, mid + POINT_RANGE_S / 2
        start = max(start, chunk.start_s, 0.0)
        end = min(end, chunk.end_s, video_duration_s)
        clean = d.model_copy(update={"start_hint_s": start, "end_hint_s": end})
        out.append(Candidate(description=clean, start_s=start, end_s=end, chunk=chunk))
    return out, dropped


def _same_event(a: Candidate, b: Candidate, join_gap_s: float) -> bool:
    inter = min(a.end_s, b.end_s) - max(a.start_s, b.start_s)
    shorter = min(a.end_s - a.start_s, b.end_s - b.start_s)
    if inter >= SAME_EVENT_OVERLAP * shorter:
        return True
    if inter < -join_gap_s or a.chunk.index == b.chunk.index:
        return False
    first, second = (a, b) if a.start_s <= b.start_s else (b, a)
    return _cut_at_end(first) or _cut_at_start(second)


def _cut_at_end(c: Candidate) -> bool:
    return not c.chunk.is_last and c.end_s >= c.chunk.end_s - BORDER_TOL_S


def _cut_at_start(c: Candidate) -> bool:
    return c.chunk.start_s > 0 and c.start_s <= c.chunk.start_s + BORDER_TOL_S


def merge_candidates(
    candidates: Sequence[Candidate],
    *,
    join_gap_s: float = 1.0,
    max_len_s: float = 20.0,
) -> list[tuple[Description, int]]:
    """Group candidates that are one event and give each event one description.

    Two candidates are one event when they overlap by at least half the shorter one, or when
    they come from different chunks, overlap or nearly touch (``join_gap_s``), and a chunk
    border cut one of them on the side where they meet. Groups are the connected components of
    that relation. An event longer than ``max_len_s`` is trimmed around its middle.

    Returns:
        (description with the event's time hint, number of candidates behind it), most
        important first (priority, then support, then time).

    """
    n = len(candidates)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if _same_event(candidates[i], candidates[j], join_gap_s):
                parent[root(i)] = root(j)
    groups: dict[int, list[Candidate]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(candidates[i])
    events = []
    for members in groups.values():
        starts = [c.start_s for c in members if not _cut_at_start(c)]
        ends = [c.end_s for c in members if not _cut_at_end(c)]
        start = float(np.median(starts)) if starts else min(c.start_s for c in members)
        end = float(np.median(ends)) if ends else max(c.end_s for c in members)
        if end <= start:  # medians crossed (wildly different members): take their union
            start, end = min(c.start_s for c in members), max(c.end_s for c in members)
        if end - start > max_len_s:
            mid = (start + end) / 2
            start, end = mid - max_len_s / 2, mid + max_len_s / 2
        best = min(members, key=lambda c: (c.description.priority, c.start_s))
        desc = best.description.model_copy(update={"start_hint_s": start, "end_hint_s": end})
        events.append((desc, len(members)))
    events.sort(key=lambda e: (e[0].priority, -e[1], e[0].start_hint_s))
    return events


def range_segments(
    descriptions: Sequence[Description],
    info: VideoInfo,
    support: Sequence[float] | None = None,
) -> list[Segment]:
    """One segment per description with a time hint, over exactly that range.

    ``support`` (e.g. how many chunk answers agree) becomes the segment's ``score_norm``, which
    orders segments of equal priority; without it every score is 0.
    """
    out = []
    for k, d in enumerate(descriptions):
        if d.start_hint_s is None or d.end_hint_s is None:
            continue
        a = min(max(int(round(d.start_hint_s * info.fps)), 0), info.n_frames - 1)
        b = min(max(int(round(d.end_hint_s * info.fps)), a + 1), info.n_frames)
        out.append(
            Segment(
                video_id=info.video_id,
                start_frame=a,
                end_frame=b,
                start_s=a / info.fps,
                end_s=b / info.fps,
                description_index=k,
                priority=d.priority,
                score_raw=0.0,
                score_norm=float(support[k]) if support is not None else 0.0,
            )
        )
    return out


def steer_hits(
    hits: Sequence[Hit],
    slices: Sequence[Slice],
    descriptions: Sequence[Description],
    inside_z: float,
    outside_z: float,
) -> list[Hit]:
    """The VLM's ranges as priors: a slice's score for a description with a time range rises by
    ``inside_z`` where the range covers the slice and drops by ``outside_z`` where it does not.

    Inside, a slice is kept unless retrieval clearly disagrees; outside, only a strong match
    passes (what the VLM mistimed or missed). Descriptions without a range are left alone.
    """
    by_index = {s.index: s for s in slices}
    out = []
    for h in hits:
        d = descriptions[h.description_index]
        if d.start_hint_s is not None and d.end_hint_s is not None:
            s = by_index[h.slice_index]
            inside = s.end_s > d.start_hint_s and s.start_s < d.end_hint_s
            h = h.model_copy(
                update={"score_norm": h.score_norm + (inside_z if inside else -outside_z)}
            )
        out.append(h)
    return out


def clip_to_ranges(
    segments: Sequence[Segment],
    descriptions: Sequence[Description],
    info: VideoInfo,
    pad_s: float = 0.5,
) -> list[Segment]:
    """Trim each segment that overlaps its own description's time range to that range widened
    by ``pad_s``: slices are coarse (1-3 s), and a slice overhanging the range is not the event.
    Segments away from their range (strong matches elsewhere) are left as they are.
    """
    out = []
    for seg in segments:
        d = descriptions[seg.description_index]
        if d.start_hint_s is not None and d.end_hint_s is not None:
            lo = max(0, int(round((d.start_hint_s - pad_s) * info.fps)))
            hi = min(info.n_frames, int(round((d.end_hint_s + pad_s) * info.fps)))
            a, b = max(seg.start_frame, lo), min(seg.end_frame, hi)
            if b > a and (a, b) != (seg.start_frame, seg.end_frame):
                seg = seg.model_copy(update={"start_frame": a, "end_frame": b,
                                             "start_s": a / info.fps, "end_s": b / info.fps})
        out.append(seg)
    return out


def fill_missed(
    segments: Sequence[Segment],
    descriptions: Sequence[Description],
    info: VideoInfo,
    min_cover: float = 0.5,
    score_norm: float = 0.0,
) -> list[Segment]:
    """Add a segment over each VLM range that no segment covers for at least ``min_cover`` of
    its length: what retrieval missed, the VLM still found. The added segments rank with
    ``score_norm`` (e.g. what a retrieval hit just passing the threshold inside the range has).
    """
    added = []
    for seg in range_segments(descriptions, info, [score_norm] * len(descriptions)):
        covered = sum(
            max(0, min(seg.end_frame, s.end_frame) - max(seg.start_frame, s.start_frame))
            for s in segments
        )
        if covered < min_cover * (seg.end_frame - seg.start_frame):
            added.append(seg)
    return [*segments, *added]


def limit_count(segments: Sequence[Segment], max_clips: int | None) -> list[Segment]:
    """The ``max_clips`` best segments by priority then score (all when ``None``), in the
    order given.
    """
    if max_clips is None or len(segments) <= max_clips:
        return list(segments)
    keep = set(map(id, sorted(segments, key=lambda s: (s.priority, -s.score_norm))[:max_clips]))
    return [s for s in segments if id(s) in keep]
