"""The Python API as the README shows it: ``from retrieval_hl import ...``."""

from __future__ import annotations

import logging

import pytest

from retrieval_hl.config import Settings
from rhl_common.errors import EncoderError
from tests.conftest import TINY, strip_starts_shot


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """Settings whose encoder's weights are nowhere (as on a machine without the hub)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    return Settings(encoder=f"open_clip:ViT-B-32:{tmp_path / 'absent.bin'}",
                    store=str(tmp_path / "store"))


def test_highlight_video_falls_back_to_signals(videos, tmp_path, no_weights, caplog):
    from retrieval_hl import export_highlights, highlight_video

    ticks = []
    hl = highlight_video(videos["cuts"], settings=no_weights, ratio_wh=(9, 16),
                         progress=ticks.append)
    assert hl.encoder == "none" and {d.source for d in hl.descriptions} == {"signals"}
    assert any("semantic matching is off" in r.getMessage() for r in caplog.records)
    assert hl.segments and hl.crops
    # The progress bar moves in signals-only mode, to about its total (duration x sample fps).
    assert sum(ticks) == pytest.approx(hl.video.duration_s * no_weights.sample_fps, rel=0.15)
    written = export_highlights(hl, tmp_path / "out", settings=no_weights.model_copy(
        update={"render": False}))
    assert written["json"].exists() and written["srt"].exists() and "mp4" not in written


def test_index_and_find_need_the_weights(videos, no_weights):
    from retrieval_hl import index_video

    with pytest.raises(EncoderError, match="absent.bin"):
        index_video(videos["plain"], settings=no_weights)


def test_index_find_export(videos, tmp_path):
    """The README's three calls, with the seeded tiny encoder standing in for real weights."""
    from retrieval_hl import export_highlights, find_highlights, index_video

    s = Settings(encoder=TINY, store=str(tmp_path / "store"), render=False, budget="none")
    video = index_video(videos["cuts"], settings=s)
    assert video.encoder_spec == TINY and len(video.slices) >= 4
    hl = find_highlights(video, prompt="a red screen; a blue screen", settings=s)
    assert [d.text for d in hl.descriptions] == ["a red screen", "a blue screen"]
    assert hl.encoder == TINY and hl.segments
    for seg in hl.segments:
        assert seg.video_id == video.info.video_id
        assert 0 <= seg.start_frame < seg.end_frame <= video.info.n_frames
        assert seg.end_s - seg.start_s >= s.min_len_s - 1e-6
        assert seg.description_index in (0, 1)
    starts = [seg.start_frame for seg in hl.segments]
    assert starts == sorted(starts)  # chronological order by default
    # The same video again: the stored slices are reused, the answer is the same.
    again = find_highlights(index_video(videos["cuts"], settings=s), prompt="a red screen; "
                            "a blue screen", settings=s)
    def spans(h):
        return [(x.start_frame, x.end_frame, x.description_index) for x in h.segments]

    assert spans(again) == spans(hl)  # (scores differ in the last float32 digits only)
    written = export_highlights(hl, tmp_path / "out", settings=s)
    assert written["json"].read_text().count('"start_frame"') >= len(hl.segments)


@pytest.mark.parametrize("kind", ["faiss", "qdrant"])
def test_rerun_gives_the_same_highlights(videos, tmp_path, kind, caplog):
    """``highlight_video`` twice on one store: the rerun reuses the index, with the shot cuts it
    was made with, and finds the same highlights. An index written before the cuts were stored
    still runs, as it did then (the signal meter finds its own cuts).
    """
    from retrieval_hl import export_highlights, highlight_video

    caplog.set_level(logging.INFO, logger="retrieval_hl.pipeline")
    uri = f"{kind}:{tmp_path / kind}"
    s = Settings(encoder=TINY, store=uri, render=False, speech="off")
    runs = []
    for k in range(2):
        hl = highlight_video(videos["cuts"], settings=s)
        written = export_highlights(hl, tmp_path / f"run{k}", settings=s)
        runs.append((hl, written["json"].read_bytes()))
    assert "already indexed" in caplog.text
    (first, first_json), (again, again_json) = runs
    assert first.segments and sum(x.starts_shot for x in first.slices) == 2  # the index's cuts
    if kind == "faiss":
        assert again == first and again_json == first_json
    else:
        # Reopened, qdrant-client's local mode gives back the vectors as they were sent, not as
        # it normalised them on insert: a score can move in the last bits of a float32.
        scores = {"segments": {"__all__": {"score_raw", "score_norm"}}}
        assert again.model_dump(exclude=scores) == first.model_dump(exclude=scores)
        for a, b in zip(again.segments, first.segments, strict=True):
            assert (a.score_raw, a.score_norm) == pytest.approx((b.score_raw, b.score_norm))
    strip_starts_shot(uri)
    old = highlight_video(videos["cuts"], settings=s)
    assert old.segments and not any(x.starts_shot for x in old.slices)
