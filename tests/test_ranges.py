"""The VLM's time ranges: chunk plans, validation, merging across borders, priority dedup."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.models import Slice, VideoInfo
from retrieval_hl.models import Description, Hit, Segment
from retrieval_hl.select.ranges import (
    Candidate,
    Chunk,
    clip_to_ranges,
    fill_missed,
    limit_count,
    merge_candidates,
    plan_chunks,
    range_segments,
    steer_hits,
    to_candidates,
)

INFO = VideoInfo(path="x.mp4", video_id="x", width_px=64, height_px=48, fps=10.0, n_frames=1000,
                 duration_s=100.0)  # fmt: skip


def d(text: str, start: float | None, end: float | None, priority: int = 2) -> Description:
    return Description(text=text, priority=priority, source="vlm", start_hint_s=start,
                       end_hint_s=end)  # fmt: skip


@pytest.mark.parametrize(
    ("duration", "chunk", "overlap", "n"),
    [(10, 30, 2, 1), (30, 30, 2, 1), (31, 30, 2, 2), (100, 30, 2, 4), (139.3, 30, 2, 5),
     (600, 30, 0, 20)],
)  # fmt: skip
def test_plan_chunks_cover_with_overlap(duration, chunk, overlap, n):
    chunks = plan_chunks(duration, chunk, overlap)
    assert len(chunks) == n
    assert chunks[0].start_s == 0 and chunks[-1].end_s == pytest.approx(duration)
    assert [c.is_last for c in chunks] == [False] * (n - 1) + [True]
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.end_s - b.start_s == pytest.approx(overlap)  # neighbours share the overlap
    lengths = [c.duration_s for c in chunks]
    assert max(lengths) <= chunk + 1e-9 and max(lengths) - min(lengths) < 1e-9  # no stub chunk


CHUNK = Chunk(index=1, start_s=28.0, end_s=58.0, is_last=False)


def test_to_candidates_maps_validates_and_repairs():
    items = [
        d("ok", 2.0, 5.0, 1),
        d("reversed", 6.0, 4.0),
        d("after the chunk", 31.0, 33.0),
        d("point in time", 10.0, None),
        d("slightly over", 28.0, 30.4),
        d("untimed", None, None),
    ]
    cands, dropped = to_candidates(items, CHUNK, 100.0)
    got = {c.description.text: (c.start_s, c.end_s) for c in cands}
    assert got == {"ok": (30.0, 33.0), "point in time": (38.0, 41.0), "slightly over": (56.0, 58.0)}
    assert dropped == 2
    assert all(c.description.start_hint_s == c.start_s for c in cands)


def test_to_candidates_reads_video_times_when_the_model_used_them():
    cands, dropped = to_candidates([d("a", 40.0, 44.0), d("b", 50.0, 57.0)], CHUNK, 100.0)
    assert [(c.start_s, c.end_s) for c in cands] == [(40.0, 44.0), (50.0, 57.0)]
    assert dropped == 0


def test_to_candidates_clamps_to_video_end():
    last = Chunk(index=3, start_s=84.0, end_s=100.0)
    cands, _ = to_candidates([d("a", 14.0, 19.0)], last, 100.0)
    assert (cands[0].start_s, cands[0].end_s) == (98.0, 100.0)


def cand(text, start, end, chunk, priority=1):
    return Candidate(description=d(text, start, end, priority), start_s=start, end_s=end,
                     chunk=chunk)  # fmt: skip


def test_merge_fourteen_candidates_into_four_events():
    """Four goals seen by overlapping chunks, repeated and jittered: one event each."""
    c0, c1, c2, c3 = (Chunk(index=i, start_s=a, end_s=b, is_last=i == 3) for i, (a, b) in
                      enumerate([(0, 30.5), (28.5, 59), (57, 87.5), (85.5, 100)]))
    truth = [(10.0, 14.0), (27.0, 31.0), (60.0, 63.0), (86.0, 90.0)]
    cands = [
        cand("goal one", 10.2, 13.8, c0), cand("the first goal", 9.6, 14.1, c0, 2),
        cand("a goal", 10.0, 14.3, c0, 2),
        cand("goal two", 27.1, c0.end_s, c0), cand("goal two", c1.start_s, 31.2, c1),
        cand("a player scores", 26.8, 30.0, c0, 3), cand("celebration", 28.5, 30.9, c1, 2),
        cand("goal three", 60.0, 63.2, c1, 2), cand("goal three", 59.7, 62.8, c2),
        cand("ball in the net", 60.4, 63.0, c2, 3), cand("goal three again", 60.1, 62.9, c2),
        cand("goal four", 86.0, c2.end_s, c2), cand("goal four", c3.start_s, 90.1, c3),
        cand("goal four replay", 86.2, 89.8, c3, 2),
    ]
    assert len(cands) == 14
    events = merge_candidates(cands)
    assert len(events) == 4
    got = sorted((e.start_hint_s, e.end_hint_s) for e, _ in events)
    for (a, b), (ta, tb) in zip(got, truth, strict=True):
        assert abs(a - ta) <= 0.6 and abs(b - tb) <= 0.6
    assert all(e.priority == 1 for e, _ in events)  # the most important member speaks
    assert sum(n for _, n in events) == 14
    assert {e.text for e, _ in events} >= {"goal one", "goal four"}


def test_merge_keeps_distinct_neighbours_apart():
    c = Chunk(index=0, start_s=0.0, end_s=30.0, is_last=False)
    events = merge_candidates([cand("jump", 5.0, 8.0, c), cand("landing", 8.5, 11.0, c)])
    assert len(events) == 2


def test_merge_trims_long_events():
    c = Chunk(index=0, start_s=0.0, end_s=60.0)
    (e, n), = merge_candidates([cand("long", 10.0, 50.0, c)], max_len_s=20.0)
    assert (e.start_hint_s, e.end_hint_s, n) == (20.0, 40.0, 1)


def test_range_segments_and_limits():
    descs = [d("a", 10.0, 14.0, 2), d("b", None, None, 1), d("c", 50.0, 52.0, 1)]
    segs = range_segments(descs, INFO, support=[3, 0, 1])
    assert [(s.start_frame, s.end_frame, s.description_index, s.priority, s.score_norm)
            for s in segs] == [(100, 140, 0, 2, 3.0), (500, 520, 2, 1, 1.0)]  # fmt: skip
    assert [s.description_index for s in limit_count(segs, 1)] == [2]  # priority 1 wins
    assert limit_count(segs, None) == segs


def seg(a, b, k=0, prio=2):
    return Segment(video_id="x", start_frame=a, end_frame=b, start_s=a / 10, end_s=b / 10,
                   description_index=k, priority=prio, score_raw=0.0, score_norm=1.0)


def test_fill_missed_adds_only_uncovered_ranges():
    descs = [d("found", 10.0, 14.0), d("missed", 50.0, 54.0), d("no time", None, None)]
    out = fill_missed([seg(100, 130, 0)], descs, INFO)  # covers 3 of the 4 s of "found"
    assert [(s.start_frame, s.end_frame, s.description_index) for s in out] == [
        (100, 130, 0), (500, 540, 1)]  # fmt: skip


def test_steer_hits_lowers_scores_outside_the_range():
    slices = [Slice(video_id="x", index=i, start_frame=i * 20, end_frame=i * 20 + 20,
                    start_s=i * 2.0, end_s=i * 2.0 + 2) for i in range(5)]  # fmt: skip
    descs = [d("hinted", 2.0, 6.0), d("free", None, None)]
    hits = [Hit(slice_index=i, description_index=k, score_raw=0.0, score_norm=1.0)
            for i in range(5) for k in range(2)]  # fmt: skip
    out = steer_hits(hits, slices, descs, inside_z=1.0, outside_z=2.0)
    z = np.array([h.score_norm for h in out]).reshape(5, 2)
    assert z[:, 0].tolist() == [-1.0, 2.0, 2.0, -1.0, -1.0]
    assert z[:, 1].tolist() == [1.0] * 5


def test_clip_to_ranges_trims_overhang_only_near_the_range():
    descs = [d("a", 10.3, 13.6), d("free", None, None)]
    segs = [seg(80, 160, 0), seg(400, 420, 0), seg(80, 160, 1), seg(100, 120, 0)]
    out = clip_to_ranges(segs, descs, INFO, pad_s=0.5)
    assert [(s.start_frame, s.end_frame) for s in out] == [(98, 141), (400, 420), (80, 160),
                                                           (100, 120)]  # fmt: skip
    assert out[0].start_s == pytest.approx(9.8) and out[0].end_s == pytest.approx(14.1)
