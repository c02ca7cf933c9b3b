"""The pure core: slicing, scores, claiming, merging, dedup, budget, order."""

from __future__ import annotations

import re

import numpy as np
import pytest

from indexer.models import Slice
from indexer.slicing import make_slices, pool_by_slice, sample_frames
from retrieval_hl.config import parse_budget
from retrieval_hl.models import Description, Hit, Segment
from retrieval_hl.select.dedup import apply_budget, order_segments, suppress_overlaps
from retrieval_hl.select.merge import claim_slices, merge_adjacent
from retrieval_hl.select.scores import normalize_scores, retrieve
from rhl_common.errors import ConfigError
from tests.conftest import video_info


def seg(a: float, b: float, prio: int = 2, z: float = 1.0, d: int = 0) -> Segment:
    return Segment(
        video_id="v",
        start_frame=int(a * 10),
        end_frame=int(b * 10),
        start_s=a,
        end_s=b,
        description_index=d,
        priority=prio,
        score_raw=0.2,
        score_norm=z,
    )


def test_fixed_windows_cover_video_without_gaps():
    sl = make_slices(video_info(19.0), window_s=2.0)
    assert sl[0].start_frame == 0 and sl[-1].end_frame == 190
    assert all(a.end_frame == b.start_frame for a, b in zip(sl, sl[1:], strict=False))
    # 19 s = 9 windows of 2 s and a 1 s rest, which is at least half a window: kept.
    assert [s.duration_s for s in sl][-1] == pytest.approx(1.0)
    assert len(sl) == 10


def test_short_rest_joins_previous_slice():
    sl = make_slices(video_info(20.5), window_s=2.0)
    assert len(sl) == 10 and sl[-1].duration_s == pytest.approx(2.5)


def test_last_slice_valid_when_the_duration_is_shorter_than_the_frames():
    # a stream-copied cut: 122 s of frames at 10 fps, a container duration of 120 s
    info = video_info(20.0).model_copy(update={"n_frames": 1220, "duration_s": 120.0})
    sl = make_slices(info, window_s=2.0)
    assert sl[-1].end_frame == 1220 and sl[-1].end_s > sl[-1].start_s
    assert sl[-2].end_s == pytest.approx(120.0)  # the slices before it end at their frames


def test_slices_never_cross_cuts():
    sl = make_slices(video_info(20.0), window_s=2.0, cuts=[35, 120])
    bounds = {s.start_frame for s in sl}
    assert {0, 35, 120} <= bounds
    for s in sl:
        assert not (s.start_frame < 35 < s.end_frame) and not (s.start_frame < 120 < s.end_frame)


@pytest.mark.parametrize("w", [0.5, 3.5])
def test_window_out_of_range(w):
    with pytest.raises(ConfigError, match="1.0-3.0"):
        make_slices(video_info(20.0), window_s=w)


def test_sampling_and_pooling():
    idx = sample_frames(video_info(4.0), 2.0)
    assert idx.tolist() == [2, 8, 12, 18, 22, 28, 32, 38]  # every 5th frame, from the 2.5th
    sl = make_slices(video_info(4.0), 2.0)
    vec = np.zeros((len(idx), 3), np.float32)
    vec[: len(idx) // 2, 0] = 1
    vec[len(idx) // 2 :, 1] = 2
    pooled = pool_by_slice(sl, idx, vec)
    np.testing.assert_allclose(pooled, [[1, 0, 0], [0, 1, 0]], atol=1e-6)


def test_sampling_at_the_video_rate_or_above_takes_every_frame():
    info = video_info(2.0, 30.0)
    assert sample_frames(info, 30.0).tolist() == list(range(60))
    assert sample_frames(info, 60.0).tolist() == list(range(60))
    assert len(sample_frames(info, 29.0)) == 58  # just under: a frame left out now and then


def test_zscore_per_query_and_flat_column():
    raw = np.array([[0.1, 0.3], [0.2, 0.3], [0.3, 0.3]])
    z = normalize_scores(raw)
    np.testing.assert_allclose(z[:, 0], [-1.2247, 0, 1.2247], atol=1e-3)
    assert np.all(z[:, 1] == 0)


def _planted(n: int = 10, hot: dict[int, list[int]] | None = None):
    """Slices of 2 s, vectors that match description d exactly on the slices in hot[d]."""
    rng = np.random.default_rng(0)
    sl = make_slices(video_info(2.0 * n), 2.0)
    dim = 16
    text = np.eye(dim, dtype=np.float32)[: len(hot or {})]
    vec = rng.normal(0, 0.05, (n, dim)).astype(np.float32)
    for d, idx in (hot or {}).items():
        vec[idx, d] += 1.0
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    return sl, vec, text


def test_retrieve_merge_finds_planted_run():
    sl, vec, text = _planted(12, {0: [4, 5, 6]})
    descs = [Description(text="goal", priority=1)]
    hits = retrieve(sl, vec, descs, text)
    assert len(hits) == 12
    claims = claim_slices(hits, descs, 1.0)
    assert sorted(claims) == [4, 5, 6]
    segs = merge_adjacent(sl, hits, claims, descs, max_gap_s=2.0, min_len_s=2.0, max_len_s=20)
    assert [(s.start_s, s.end_s) for s in segs] == [(8.0, 14.0)]
    assert segs[0].score_norm > 1.0 and segs[0].slice_indices == (4, 5, 6)


def test_join_across_small_gap_but_not_large_or_claimed():
    sl, vec, text = _planted(14, {0: [1, 3, 8], 1: [10]})
    descs = [Description(text="a", priority=2), Description(text="b", priority=1)]
    hits = retrieve(sl, vec, descs, text)
    claims = claim_slices(hits, descs, 1.0)
    segs = merge_adjacent(sl, hits, claims, descs, max_gap_s=2.0, min_len_s=2.0, max_len_s=20)
    spans = sorted((s.start_s, s.end_s, s.description_index) for s in segs)
    # 1 and 3 join over the one-slice gap; 8 stands alone (gap 8 s); 10 belongs to b.
    assert spans == [(2.0, 8.0, 0), (16.0, 18.0, 0), (20.0, 22.0, 1)]


def test_slice_claimed_twice_goes_to_higher_priority():
    sl, vec, text = _planted(10, {0: [5], 1: [5]})
    descs = [Description(text="low", priority=3), Description(text="high", priority=1)]
    claims = claim_slices(retrieve(sl, vec, descs, text), descs, 1.0)
    assert claims[5].description_index == 1


def test_max_len_keeps_best_stretch_and_min_len_drops():
    sl = make_slices(video_info(20.0), 2.0)
    descs = [Description(text="a")]
    z = [0, 1, 1, 1, 3, 3, 1, 1, 1, 0]
    hits = [
        Hit(slice_index=i, description_index=0, score_raw=0.2, score_norm=v)
        for i, v in enumerate(z)
    ]
    claims = claim_slices(hits, descs, 1.0)
    segs = merge_adjacent(sl, hits, claims, descs, max_gap_s=0, min_len_s=2, max_len_s=4.0)
    assert [(s.start_s, s.end_s) for s in segs] == [(8.0, 12.0)]
    segs = merge_adjacent(sl, hits, claims, descs, max_gap_s=0, min_len_s=17.0, max_len_s=20)
    assert segs == []


def test_suppress_overlaps_trims_lower_priority():
    out = suppress_overlaps([seg(0, 10, prio=2), seg(6, 12, prio=1)], min_len_s=2)
    assert [(s.start_s, s.end_s, s.priority) for s in out] == [(0, 6, 2), (6, 12, 1)]
    out = suppress_overlaps([seg(5, 7, prio=3), seg(0, 10, prio=1)], min_len_s=2)
    assert [(s.start_s, s.end_s) for s in out] == [(0, 10)]


def test_budget_prefers_priority_then_fits_shorter():
    segs = [seg(0, 10, prio=1, z=2), seg(20, 28, prio=2, z=3), seg(40, 44, prio=3, z=1)]
    kept = apply_budget(segs, 15, fps=10)
    assert sorted((s.start_s, s.end_s) for s in kept) == [(0, 10), (40, 44)]
    assert apply_budget(segs, None, fps=10) == segs
    cut = apply_budget([seg(0, 10)], 4, fps=10)
    assert cut[0].duration_s == pytest.approx(4.0) and cut[0].start_s == pytest.approx(3.0)


def test_order():
    segs = [seg(20, 22, prio=1), seg(0, 2, prio=2)]
    assert [s.start_s for s in order_segments(segs, "chronological")] == [0, 20]
    assert [s.start_s for s in order_segments(segs, "score")] == [20, 0]


@pytest.mark.parametrize(
    "text,expected", [("60s", 60), ("2m", 120), ("0.2", 20.0), ("none", None), ("45", 45)]
)
def test_parse_budget(text, expected):
    assert parse_budget(text, 100.0) == expected


@pytest.mark.parametrize(
    ("duration_s", "expected"),
    [(10.0, 5.0), (30.0, 10.0), (600.0, 120.0), (3600.0, 180.0)],
)
def test_auto_budget_suits_a_short_clip_and_a_long_video(duration_s, expected):
    assert parse_budget("auto", duration_s) == pytest.approx(expected)


def test_parse_budget_bad():
    with pytest.raises(ConfigError, match="bad budget"):
        parse_budget("lots", 100)


def test_extend_to_min_len_stays_inside_video_and_off_neighbours():
    from retrieval_hl.select.dedup import extend_to_min_len

    out = extend_to_min_len([seg(0.5, 1.5), seg(4.0, 5.0), seg(5.5, 9.0)], 3.0, fps=10,
                            n_frames=100)
    assert [(s.start_frame, s.end_frame) for s in out] == [(0, 30), (30, 55), (55, 90)]
    assert extend_to_min_len([seg(9.0, 9.8)], 3.0, fps=10, n_frames=100)[0].end_frame == 100


def test_slice_rejects_empty():
    with pytest.raises(ValueError):
        Slice(video_id="v", index=0, start_frame=5, end_frame=5, start_s=0.5, end_s=0.5)


@pytest.mark.parametrize("content", [None, "{not json", '{"unknown": 1}'])
def test_saved_artefacts_that_cannot_be_read_are_one_line_errors(tmp_path, content):
    from library.assemble import load_plan
    from library.catalog import CATALOG_NAME, Library
    from retrieval_hl.render.export import load_highlight

    readers = {"highlights file": load_highlight, "assembly plan": load_plan,
               "library catalog": lambda p: Library.open(p.parent)}
    for what, read in readers.items():
        path = tmp_path / what.replace(" ", "_") / CATALOG_NAME
        path.parent.mkdir()
        if content is not None:
            path.write_text(content)
        elif what == "library catalog":
            continue  # a folder without a catalog is a new, empty library
        with pytest.raises(ConfigError, match=re.escape(f"not a readable {what} '{path}': ")):
            read(path)
