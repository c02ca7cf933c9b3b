"""Turn hits into segments: threshold, claim, join adjacent slices, bound the length. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from indexer.models import Slice
from retrieval_hl.models import Description, Hit, Segment


def claim_slices(
    hits: Sequence[Hit], descriptions: Sequence[Description], threshold_z: float
) -> dict[int, Hit]:
    """Each slice goes to at most one description: among the hits at or above ``threshold_z``,
    the one with the highest priority (lowest number), then the highest normalised score.
    """
    best: dict[int, Hit] = {}
    for h in hits:
        if h.score_norm < threshold_z:
            continue
        cur = best.get(h.slice_index)
        key = (descriptions[h.description_index].priority, -h.score_norm)
        if cur is None or key < (descriptions[cur.description_index].priority, -cur.score_norm):
            best[h.slice_index] = h
    return best


def _best_window(pieces: list[Slice], z: list[float], max_len_s: float) -> tuple[int, int]:
    """Indices [i, j) of the contiguous run within ``max_len_s`` with the largest score sum."""
    best, best_ij, total, i = float("-inf"), (0, 1), 0.0, 0
    for j in range(len(pieces)):
        total += z[j]
        while pieces[j].end_s - pieces[i].start_s > max_len_s and i < j:
            total -= z[i]
            i += 1
        if total > best:
            best, best_ij = total, (i, j + 1)
    return best_ij


def merge_adjacent(
    slices: Sequence[Slice],
    hits: Sequence[Hit],
    claims: dict[int, Hit],
    descriptions: Sequence[Description],
    *,
    max_gap_s: float = 2.0,
    min_len_s: float = 2.0,
    max_len_s: float = 20.0,
) -> list[Segment]:
    """Join each description's claimed slices into segments.

    Two claimed slices of one description join when the gap between them is at most
    ``max_gap_s`` and no other description claimed a slice in it. A segment longer than
    ``max_len_s`` keeps its best-scoring stretch; one shorter than ``min_len_s`` is dropped.
    """
    ordered = sorted(slices, key=lambda s: s.index)
    pos = {s.index: k for k, s in enumerate(ordered)}
    score = {(h.slice_index, h.description_index): h for h in hits}
    segments: list[Segment] = []
    for d, desc in enumerate(descriptions):
        mine = sorted(pos[i] for i, h in claims.items() if h.description_index == d and i in pos)
        groups: list[list[int]] = []
        for k in mine:
            if groups:
                last = groups[-1][-1]
                gap = ordered[k].start_s - ordered[last].end_s
                free = all(ordered[m].index not in claims for m in range(last + 1, k))
                if gap <= max_gap_s and free:
                    groups[-1].extend(range(last + 1, k + 1))
                    continue
            groups.append([k])
        for group in groups:
            pieces = [ordered[k] for k in group]
            z = [score[(p.index, d)].score_norm if (p.index, d) in score else 0.0 for p in pieces]
            i, j = _best_window(pieces, z, max_len_s)
            pieces = pieces[i:j]
            if pieces[-1].end_s - pieces[0].start_s < min_len_s - 1e-6:
                continue
            kept = [p.index for p in pieces if p.index in claims]
            if not kept:
                continue
            segments.append(
                Segment(
                    video_id=pieces[0].video_id,
                    start_frame=pieces[0].start_frame,
                    end_frame=pieces[-1].end_frame,
                    start_s=pieces[0].start_s,
                    end_s=pieces[-1].end_s,
                    description_index=d,
                    priority=desc.priority,
                    score_raw=sum(claims[i].score_raw for i in kept) / len(kept),
                    score_norm=sum(claims[i].score_norm for i in kept) / len(kept),
                    slice_indices=tuple(kept),
                )
            )
    return sorted(segments, key=lambda s: s.start_frame)
