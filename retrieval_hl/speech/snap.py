"""Cuts that respect speech: segment boundaries moved off words. Pure.

A boundary inside a sentence goes out to the sentence's edge when the segment already holds
at least half of that sentence and the move is at most ``max_extend_s``, and in to leave the
sentence out when the segment holds less than half of it and keeps ``MIN_KEEP_S`` (or the
caller's shortest clip) without it;
otherwise a boundary inside a word goes out to the word's edge. A cut at a word's edge gets
``pad_s`` of air (never into the next word); every cut lands on a frame outside every word.
Segments that then overlap are joined (the earlier one's description and the better score
kept). A segment chosen for what is said is tightened to its first and last words, so it holds
no silence at either end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from indexer.models import VideoInfo
from indexer.speech.models import Sentence, Word
from retrieval_hl.models import Segment

MAX_EXTEND_S = 4.0
PAD_S = 0.12
MIN_KEEP_S = 1.0


def snap_span(
    start_s: float,
    end_s: float,
    words: Sequence[Word],
    sentences: Sequence[Sentence],
    *,
    max_extend_s: float = MAX_EXTEND_S,
    pad_s: float = PAD_S,
    tighten: bool = False,
    min_keep_s: float = MIN_KEEP_S,
) -> tuple[float, float]:
    """``(start_s, end_s)`` moved so neither end falls inside a word (see the module doc);
    with ``tighten`` (a span chosen for what is said) silence at either end is trimmed too.
    A sentence's tail or head is left out only if at least ``min_keep_s`` remains.
    """
    for s in sentences:
        held = min(end_s, s.end_s) - max(start_s, s.start_s)
        if held >= 0.5 * s.duration_s:  # mostly kept: keep it whole
            if s.start_s < start_s < s.end_s and start_s - s.start_s <= max_extend_s:
                start_s = s.start_s
            if s.start_s < end_s < s.end_s and s.end_s - end_s <= max_extend_s:
                end_s = s.end_s
        elif s.start_s < start_s < s.end_s and end_s - s.end_s >= min_keep_s:
            start_s = s.end_s  # a sentence's tail: leave it out
        elif s.start_s < end_s < s.end_s and s.start_s - start_s >= min_keep_s:
            end_s = s.start_s  # a sentence's first words: leave them out
    w0 = np.array([w.start_s for w in words])
    w1 = np.array([w.end_s for w in words])
    inside = np.flatnonzero((w0 < start_s) & (start_s < w1))
    if inside.size:
        start_s = float(w0[inside[0]])
    inside = np.flatnonzero((w0 < end_s) & (end_s < w1))
    if inside.size:
        end_s = float(w1[inside[-1]])
    held = np.flatnonzero((w0 >= start_s) & (w1 <= end_s))
    if tighten and held.size:
        start_s, end_s = float(w0[held[0]]), float(w1[held[-1]])
    # A cut right at a word gets air, up to half the gap to the word on the other side.
    if np.any(np.isclose(w0, start_s)):
        before = w1[w1 <= start_s]
        gap = start_s - before.max() if before.size else math.inf
        start_s = max(0.0, start_s - min(pad_s, gap / 2))
    if np.any(np.isclose(w1, end_s)):
        after = w0[w0 >= end_s]
        end_s = end_s + min(pad_s, (after.min() - end_s if after.size else math.inf) / 2)
    return float(start_s), float(end_s)


def snap_segments(
    segments: Sequence[Segment],
    words: Sequence[Word],
    sentences: Sequence[Sentence],
    info: VideoInfo,
    *,
    max_extend_s: float = MAX_EXTEND_S,
    tighten: Sequence[bool] | None = None,
    min_keep_s: float = MIN_KEEP_S,
) -> list[Segment]:
    """``segments`` with their ends off words (and sentences kept whole where nearly whole),
    in frames of ``info``; overlapping results are joined. The given order is kept.
    ``tighten[k]`` trims silence at the ends of segment k (one chosen for what is said);
    leaving a sentence's tail or head out must keep ``min_keep_s`` (the shortest clip).
    """
    if not words or not segments:
        return list(segments)
    fps, n = info.fps, info.n_frames
    w0 = np.array([w.start_s for w in words])
    w1 = np.array([w.end_s for w in words])

    def in_word(frame: int) -> bool:
        t = frame / fps
        return bool(np.any((w0 < t) & (t < w1)))

    snapped = []
    for k, seg in enumerate(segments):
        a, b = snap_span(seg.start_s, seg.end_s, words, sentences, max_extend_s=max_extend_s,
                         tighten=bool(tighten[k]) if tighten is not None else False,
                         min_keep_s=min_keep_s)
        f0 = max(0, math.floor(a * fps + 1e-6))
        if in_word(f0):  # rounding down crossed into the word before
            f0 = min(n - 1, math.ceil(a * fps - 1e-6))
        f1 = min(n, max(f0 + 1, math.ceil(b * fps - 1e-6)))
        if in_word(f1) and f1 - 1 > f0:
            f1 = max(f0 + 1, math.floor(b * fps + 1e-6))
        snapped.append(seg.model_copy(update={
            "start_frame": f0, "end_frame": f1, "start_s": f0 / fps, "end_s": f1 / fps,
        }))
    by_time = sorted(range(len(snapped)), key=lambda k: snapped[k].start_frame)
    keep: dict[int, Segment] = {}
    last = None
    for k in by_time:
        seg = snapped[k]
        if last is not None and seg.start_frame < keep[last].end_frame:
            prev = keep[last]
            keep[last] = prev.model_copy(update={
                "end_frame": max(prev.end_frame, seg.end_frame),
                "end_s": max(prev.end_s, seg.end_s),
                "score_norm": max(prev.score_norm, seg.score_norm),
                "score_raw": max(prev.score_raw, seg.score_raw),
                "priority": min(prev.priority, seg.priority),
                "slice_indices": tuple(sorted({*prev.slice_indices, *seg.slice_indices})),
            })
            continue
        keep[k] = seg
        last = k
    return [keep[k] for k in range(len(snapped)) if k in keep]
