"""Highlightness without a query: signals, fusion, the no-highlight rule, extents; end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.models import Slice, VideoInfo
from indexer.slicing import make_slices
from retrieval_hl.select.events import (
    MIN_FUSED_SCALE,
    MIN_SCALE,
    STAND_OUT,
    Weights,
    baseline,
    fuse_signals,
    robust_z,
    select_highlights,
    sustained_score,
)
from retrieval_hl.signals.meter import SliceSignals, residual_motion, shot_density
from tests.conftest import ffmpeg, video_info

# ----------------------------------------------------------------------------- helpers


def one_second_slices(info: VideoInfo) -> list[Slice]:
    return make_slices(info, window_s=1.0)


def noisy_signals(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A busy-but-unremarkable video: every signal wanders around its typical value."""
    rng = np.random.default_rng(seed)
    return {
        "motion": 2.0 + 0.6 * rng.standard_normal(n),
        "audio_loudness": -30.0 + 2.5 * rng.standard_normal(n),
        "audio_onset": 0.10 + 0.03 * rng.standard_normal(n),
        "shot_density": np.zeros(n),
        "faces": np.zeros(n),
        "people": np.zeros(n),
        "sharpness": 300.0 * np.exp(0.1 * rng.standard_normal(n)),
        "exposure": np.full(n, 0.05),
    }


def plant(sig: dict[str, np.ndarray], lo: int, hi: int, strength: float = 1.0) -> None:
    """Make slices [lo, hi) a highlight: strong residual motion, loud, with onsets."""
    sig["motion"][lo:hi] = 2.0 + 10.0 * strength
    sig["audio_loudness"][lo:hi] = -30.0 + 18.0 * strength
    sig["audio_onset"][lo:hi] = 0.10 + 0.4 * strength


def spans(segments) -> list[tuple[float, float]]:
    return [(round(s.start_s, 3), round(s.end_s, 3)) for s in segments]


def same_spans(got, want, frame_s: float = 0.1) -> bool:
    """``got`` spans equal ``want`` to within a frame (``frame_s``): where the event starts or
    ends with a cut in the picture, the boundary is the cut, found at the first frame the signal
    meter samples after it (``indexer.shots``), up to a frame late."""
    return len(got) == len(want) and all(
        abs(a - c) <= frame_s + 1e-6 and abs(b - d) <= frame_s + 1e-6
        for (a, b), (c, d) in zip(got, want, strict=True)
    )


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


# ----------------------------------------------------------------------------- signals container


def test_slice_signals_validate_and_round_trip():
    sig = SliceSignals(**noisy_signals(5))
    assert len(sig) == 5
    assert sig.motion.dtype == np.float64 and not sig.motion.flags.writeable
    back = SliceSignals.from_dict(sig.to_dict())
    for name in SliceSignals.names:
        np.testing.assert_allclose(getattr(back, name), getattr(sig, name))
    with pytest.raises(ValueError, match="audio_onset"):
        SliceSignals(**{**noisy_signals(5), "audio_onset": np.zeros(4)})
    with pytest.raises(ValueError, match="1-D"):
        SliceSignals(**{**noisy_signals(5), "faces": np.zeros((5, 2))})
    with pytest.raises(ValueError, match="unknown signals"):
        SliceSignals.from_dict({"motion": [1.0], "speed": [2.0]})


def test_to_dict_writes_nan_as_none():
    sig = SliceSignals(**{**noisy_signals(3), "motion": np.array([1.0, np.nan, 2.0])})
    assert sig.to_dict()["motion"] == [1.0, None, 2.0]


def test_shot_density_counts_cuts_per_second_around_each_slice():
    info = video_info(20.0)
    slices = make_slices(info, window_s=2.0)
    dens = shot_density(info, slices, cuts=[100, 110, 120], window_s=4.0)  # cuts at 10, 11, 12 s
    assert dens[0] == 0.0
    assert dens[5] == pytest.approx(3 / 4)  # slice 10-12 s, window 9-13 s
    assert dens.argmax() in (5,)


# ----------------------------------------------------------------------------- motion measure


def textured(h: int = 96, w: int = 128, seed: int = 1) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h // 4, w // 4), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC), (3, 3), 0)


def test_camera_pan_is_discounted():
    big = textured(96, 160)
    prev, cur = big[:, 10:138].copy(), big[:, 16:144].copy()  # the camera pans 6 px
    raw = float(np.abs(prev.astype(int) - cur.astype(int)).mean())
    assert residual_motion(prev, cur) < 0.25 * raw


def test_subject_on_still_background_is_not_aligned_away():
    bg = np.full((96, 128), 32, np.uint8)
    bg[60:80, 10:30] = 128  # a still grey square
    prev, cur = bg.copy(), bg.copy()
    prev[20:44, 40:64] = 250
    cur[20:44, 52:76] = 250  # a bright box moves 12 px
    raw = float(np.abs(prev.astype(int) - cur.astype(int)).mean())
    assert residual_motion(prev, cur) == pytest.approx(raw, rel=0.05)
    assert residual_motion(bg, bg) == 0.0


# ----------------------------------------------------------------------------- fusion


def test_robust_z_respects_the_noise_floor_and_clips():
    x = np.array([1.0, 1.0, 1.0, 1.01, 1.0, 100.0])
    z = robust_z(x, min_scale=0.5, clip=5.0)
    assert abs(z[3]) < 0.05  # a tiny wobble stays tiny: the scale is the floor, not MAD = 0
    assert z[5] == 5.0
    assert np.all(robust_z(np.full(4, np.nan), 1.0) == 0.0)


def test_fuse_is_zero_when_nothing_varies():
    score = fuse_signals(SliceSignals.zeros(12))
    assert np.all(score == 0.0)


def test_missing_audio_does_not_dilute_motion():
    sig = noisy_signals(30)
    plant(sig, 10, 14)
    silent = {**sig, "audio_loudness": np.zeros(30), "audio_onset": np.zeros(30)}
    only_motion = Weights(audio_loudness=0.0, audio_onset=0.0)
    np.testing.assert_allclose(
        fuse_signals(SliceSignals(**silent)), fuse_signals(SliceSignals(**sig), only_motion)
    )


def test_blur_without_motion_is_pushed_down_but_motion_blur_is_not():
    sig = noisy_signals(30)
    plant(sig, 10, 14)
    base = fuse_signals(SliceSignals(**sig))
    blurry = {**sig, "sharpness": sig["sharpness"].copy()}
    blurry["sharpness"][[3, 11]] = 5.0  # slice 3 is still, slice 11 is in the action
    score = fuse_signals(SliceSignals(**blurry))
    assert score[3] < base[3] - 0.5
    assert score[11] == pytest.approx(base[11])


def test_badly_exposed_slices_are_pushed_down():
    sig = noisy_signals(30)
    sig["exposure"][7] = 0.9
    assert fuse_signals(SliceSignals(**sig))[7] < fuse_signals(SliceSignals(**noisy_signals(30)))[7]


def test_semantic_relevance_joins_the_score():
    n = 30
    sem = np.zeros((n, 2))
    sem[20:25, 1] = 4.0
    score = fuse_signals(SliceSignals.zeros(n), semantic=sem)
    assert set(np.flatnonzero(score > 1.0)) == set(range(20, 25))
    with pytest.raises(ValueError, match="one value per slice"):
        fuse_signals(SliceSignals.zeros(n), semantic=np.zeros(n + 1))


# ----------------------------------------------------------------------------- selection


def test_planted_peak_is_selected_with_its_extent():
    info = video_info()
    slices = one_second_slices(info)
    sig = noisy_signals(len(slices))
    plant(sig, 12, 17)
    segs = select_highlights(slices, fuse_signals(SliceSignals(**sig)), info)
    assert spans(segs) == [(12.0, 17.0)]
    assert segs[0].slice_indices == (12, 13, 14, 15, 16)
    assert segs[0].description_index == 0 and segs[0].priority == 1
    assert segs[0].score_norm >= STAND_OUT


def test_two_separated_events_are_both_kept_whole():
    info = video_info()
    slices = one_second_slices(info)
    sig = noisy_signals(len(slices))
    plant(sig, 5, 9, strength=1.0)
    plant(sig, 25, 31, strength=0.6)  # weaker than the first, far above the ordinary level
    segs = select_highlights(slices, fuse_signals(SliceSignals(**sig)), info)
    assert spans(segs) == [(5.0, 9.0), (25.0, 31.0)]


def test_one_long_event_is_kept_from_onset_to_settle():
    info = video_info(60.0)
    slices = one_second_slices(info)
    sig = noisy_signals(len(slices), seed=4)
    plant(sig, 20, 32)
    sig["motion"][23:26] += 10.0  # its climax: the rest of the event still counts
    segs = select_highlights(slices, fuse_signals(SliceSignals(**sig)), info)
    assert spans(segs) == [(20.0, 32.0)]


def test_ordinary_motion_only_has_nothing_that_stands_out():
    info = video_info()
    slices = one_second_slices(info)
    assert select_highlights(slices, np.zeros(len(slices)), info) == []
    for seed in range(20):
        score = fuse_signals(SliceSignals(**noisy_signals(len(slices), seed)))
        assert select_highlights(slices, score, info) == []


def test_weak_bump_inside_ordinary_variation_is_left_out():
    info = video_info()
    slices = one_second_slices(info)
    sig = noisy_signals(len(slices))
    plant(sig, 5, 10, strength=1.0)
    sig["motion"][25:28] += 0.6  # one spread of motion: ordinary
    segs = select_highlights(slices, fuse_signals(SliceSignals(**sig)), info)
    assert spans(segs) == [(5.0, 10.0)]


def test_main_job_keeps_the_best_stretch_when_nothing_stands_out():
    info = video_info()
    slices = one_second_slices(info)
    score = np.zeros(len(slices))
    score[5] = 3.0  # one noisy slice
    score[20:24] = 1.8  # a lasting moment, lower at its top
    assert select_highlights(slices, score, info, min_len_s=3.0, min_contrast=50) == []
    segs = select_highlights(slices, score, info, min_len_s=3.0, min_contrast=50,
                             allow_empty=False)
    assert spans(segs) == [(20.0, 24.0)]
    flat = select_highlights(slices, np.zeros(len(slices)), info, allow_empty=False)
    assert len(flat) == 1 and flat[0].duration_s == pytest.approx(2.0)


def test_sustained_score_averages_over_min_len():
    info = video_info(10.0)
    slices = one_second_slices(info)
    score = np.zeros(10)
    score[4] = 3.0
    sus = sustained_score(score, slices, 3.0)
    np.testing.assert_allclose(sus[3:6], 1.0)
    assert sus[0] == 0.0 and sus.sum() == pytest.approx(3.0)
    np.testing.assert_allclose(sustained_score(score, slices, 1.0), score)


def test_baseline_is_the_median_and_robust_spread():
    assert baseline(np.zeros(20)) == (0.0, MIN_FUSED_SCALE)
    x = np.r_[np.zeros(10), np.ones(10), 50.0]
    med, spread = baseline(x)
    assert med == 1.0 and spread == pytest.approx(1.4826)


def test_short_isolated_spike_is_not_an_event_but_a_short_strong_one_is_widened():
    info = video_info()
    slices = one_second_slices(info)
    sig = noisy_signals(len(slices))
    sig["motion"][30] += 3.0  # one slice, a few spreads: averaged away over min_len_s
    assert select_highlights(slices, fuse_signals(SliceSignals(**sig)), info) == []
    plant(sig, 10, 11)  # one strong slice: an event, widened to min_len_s around it
    segs = select_highlights(slices, fuse_signals(SliceSignals(**sig)), info, min_len_s=2.0)
    assert len(segs) == 1 and segs[0].duration_s == pytest.approx(2.0)
    assert segs[0].start_s <= 10.0 and segs[0].end_s >= 11.0


def test_event_boundaries_snap_to_shot_cuts():
    info = video_info()
    slices = one_second_slices(info)
    sig = noisy_signals(len(slices))
    plant(sig, 12, 17)
    score = fuse_signals(SliceSignals(**sig))
    segs = select_highlights(slices, score, info, cuts=[124, 167, 300])  # 12.4 s and 16.7 s
    assert [(s.start_frame, s.end_frame) for s in segs] == [(124, 167)]
    far = select_highlights(slices, score, info, cuts=[100, 190])  # 2 s away: left alone
    assert spans(far) == [(12.0, 17.0)]


def test_budget_is_spent_on_the_strongest_events_first():
    info = video_info(60.0)
    slices = one_second_slices(info)
    sig = noisy_signals(len(slices))
    plant(sig, 5, 10, strength=0.6)
    plant(sig, 25, 30, strength=1.0)
    plant(sig, 45, 50, strength=0.8)
    score = fuse_signals(SliceSignals(**sig))
    assert spans(select_highlights(slices, score, info)) == [(5.0, 10.0), (25.0, 30.0),
                                                             (45.0, 50.0)]
    segs = select_highlights(slices, score, info, budget_s=12.0)
    # the two strongest whole, then 2 s (min_len_s) of the third around its peak
    assert spans(segs)[1:] == [(25.0, 30.0), (45.0, 50.0)]
    assert 5.0 <= segs[0].start_s and segs[0].end_s <= 10.0 and segs[0].duration_s == 2.0
    assert sum(s.duration_s for s in segs) == pytest.approx(12.0)
    assert spans(select_highlights(slices, score, info, budget_s=6.0)) == [(25.0, 30.0)]


def test_main_job_fills_its_budget_with_the_next_best_moments():
    info = video_info(60.0)
    slices = one_second_slices(info)
    sig = noisy_signals(len(slices), seed=2)
    plant(sig, 25, 30)
    score = fuse_signals(SliceSignals(**sig))
    assert spans(select_highlights(slices, score, info, budget_s=20.0)) == [(25.0, 30.0)]
    segs = select_highlights(slices, score, info, budget_s=20.0, allow_empty=False)
    assert any(a <= 25.0 and b >= 30.0 for a, b in spans(segs)) and len(segs) >= 2
    assert 10.0 <= sum(s.duration_s for s in segs) <= 20.0
    # a budget as long as the video is not filled with stretches at the ordinary level
    whole = select_highlights(slices, score, info, budget_s=60.0, allow_empty=False)
    assert sum(s.duration_s for s in whole) < 30.0


def test_long_highlight_is_cut_to_max_len():
    info = video_info(60.0)
    slices = one_second_slices(info)
    sig = noisy_signals(len(slices))
    plant(sig, 10, 35)
    segs = select_highlights(slices, fuse_signals(SliceSignals(**sig)), info, max_len_s=20.0)
    assert len(segs) == 1 and segs[0].duration_s == pytest.approx(20.0)
    assert 10.0 <= segs[0].start_s and segs[0].end_s <= 35.0


def test_select_rejects_bad_input():
    info = video_info()
    slices = one_second_slices(info)
    with pytest.raises(ValueError, match="one value per slice"):
        select_highlights(slices, np.zeros(3), info)
    with pytest.raises(ValueError, match="min_len_s"):
        select_highlights(slices, np.zeros(len(slices)), info, min_len_s=5.0, max_len_s=2.0)
    assert select_highlights([], np.zeros(0), info) == []


# ----------------------------------------------------------------------------- end to end


BASE = "color=c=0x202020:s=160x120:r=10:d=12,drawbox=x=20:y=70:w=24:h=24:color=0x808080:t=fill"


@pytest.fixture(scope="module")
def event_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """12 s, 10 fps: still and silent except 5-8 s, where a box races across and noise roars."""
    d = tmp_path_factory.mktemp("highlight")
    event = d / "event.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"{BASE}[bg];color=c=white:s=30x30:r=10:d=12[box];"
        "[bg][box]overlay=x='(t-5)*40':y='45+30*sin(t*6)':enable='between(t,5,8)'",
        "-f",
        "lavfi",
        "-i",
        "anoisesrc=d=12:c=white:a=0.5:r=44100,volume=volume=0:enable='not(between(t,5,8))'",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "10",
        "-c:a",
        "aac",
        "-shortest",
        str(event),
    )
    static = d / "static.mp4"
    ffmpeg("-f", "lavfi", "-i", BASE, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(static))
    return {"event": event, "static": static}


@pytest.mark.parametrize("window_s", [1.0, 2.0])
def test_end_to_end_finds_the_loud_fast_moment(event_videos, window_s):
    from indexer.probe import probe_video
    from retrieval_hl.signals.meter import measure_signals_and_cuts

    info = probe_video(event_videos["event"])
    slices = make_slices(info, window_s=window_s)
    sig, _ = measure_signals_and_cuts(info, slices, cuts=None)
    inside = [i for i, s in enumerate(slices) if s.start_s >= 5.0 - 1e-6 and s.end_s <= 8 + 1e-6]
    outside = [i for i, s in enumerate(slices) if s.end_s <= 5.0 + 1e-6 or s.start_s >= 8 - 1e-6]
    assert inside and outside
    assert sig.motion[inside].min() > 5 * max(sig.motion[outside].max(), 0.5)
    assert sig.audio_loudness[inside].min() > sig.audio_loudness[outside].max() + 20.0
    for values in (sig.motion, sig.audio_loudness):
        best = slices[int(np.argmax(values))]
        assert best.start_s < 8.0 and best.end_s > 5.0
    assert np.all(sig.shot_density == 0.0)

    segs = select_highlights(slices, fuse_signals(sig), info)
    assert len(segs) == 1
    assert iou((segs[0].start_s, segs[0].end_s), (5.0, 8.0)) > 0.5
    if window_s == 1.0:
        assert spans(segs) == [(5.0, 8.0)]


def test_end_to_end_static_silent_video_has_no_highlight(event_videos):
    from indexer.probe import probe_video
    from retrieval_hl.signals.meter import measure_signals_and_cuts

    info = probe_video(event_videos["static"])
    assert not info.has_audio
    slices = make_slices(info, window_s=2.0)
    sig, _ = measure_signals_and_cuts(info, slices)
    assert np.all(sig.audio_loudness == 0.0) and np.all(sig.audio_onset == 0.0)
    assert sig.motion.max() < MIN_SCALE["motion"]
    assert select_highlights(slices, fuse_signals(sig), info) == []


# ----------------------------------------------------------------------------- planted cases

PLANT_BG = (
    "color=c=0x202020:s=160x120:r=10:d=30[bg];color=c=0x909090:s=16x16:r=10:d=30[walker];"
    # ordinary motion the whole time: a small figure pacing to and fro
    "[bg][walker]overlay=x='70+50*sin(t*0.8)':y=10[o];"
)
# The event: a big orange box fills most of the view and shakes (a new look: most cells of the
# look thumbnail change), or a small white box races across an unchanged view (the same look).
BIG_BOX = "color=c=0xff8000:s=120x96:r=10:d=30[box];", "'20+20*sin(t*6)'", "'12+10*sin(t*5)'"
BIG_BLUE_BOX = BIG_BOX[0].replace("0xff8000", "0x2040ff"), *BIG_BOX[1:]
SMALL_BOX = "color=c=white:s=30x30:r=10:d=30[box];", "'mod(t*90,130)'", "'45+30*sin(t*6)'"


def planted_video(path: Path, spans_s: list[tuple[float, float]], box=BIG_BOX) -> Path:
    """30 s, 10 fps: a figure paces the whole time under a low hiss; during ``spans_s`` a box
    (``BIG_BOX``, ``SMALL_BOX``..., or one per span) moves about and the hiss roars."""
    on = "+".join(f"between(t,{a},{b})" for a, b in spans_s) or "0"
    boxes = box if isinstance(box, list) else [box] * len(spans_s)
    chain, last = PLANT_BG, "o"
    for k, ((a, b), (source, x, y)) in enumerate(zip(spans_s, boxes, strict=True)):
        chain = source.replace("[box]", f"[box{k}]") + chain
        chain += f"[{last}][box{k}]overlay=x={x}:y={y}:enable='between(t,{a},{b})'[v{k}];"
        last = f"v{k}"
    ffmpeg(
        "-f", "lavfi", "-i", f"{chain}[{last}]null",
        "-f", "lavfi", "-i",
        f"anoisesrc=d=30:c=pink:a=0.5:r=44100,volume=volume='if({on},1,0.03)':eval=frame",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10", "-c:a", "aac", "-shortest",
        str(path),
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("planted")
    return {
        "two": planted_video(d / "two.mp4", [(5, 8), (20, 23)], [BIG_BOX, BIG_BLUE_BOX]),
        "long": planted_video(d / "long.mp4", [(6, 16)]),
        "ordinary": planted_video(d / "ordinary.mp4", []),
        "one_small": planted_video(d / "one_small.mp4", [(12, 15)], SMALL_BOX),
        "recurring": planted_video(d / "recurring.mp4", [(4, 7), (13, 16), (22, 25)], SMALL_BOX),
    }


def run_main_job(path: Path, **settings):
    from retrieval_hl.config import Settings
    from retrieval_hl.pipeline import highlight_video

    return highlight_video(path, settings=Settings(semantic="off", **settings))


BATCH = {"allow_empty": True, "budget": "none"}  # what `rhl batch` uses


def test_planted_two_separated_events_give_two_whole_segments(planted):
    hl = run_main_job(planted["two"], **BATCH)
    assert same_spans(spans(hl.segments), [(5.0, 8.0), (20.0, 23.0)])
    for seg in hl.segments:
        label = hl.descriptions[seg.description_index].text
        assert label != "highlight" and "fast" in label and "louder" in label
    from retrieval_hl.render.export import srt_text

    assert srt_text(hl).count("fast") == 2 and "highlight" not in srt_text(hl)


def test_planted_long_event_is_one_segment_from_onset_to_settle(planted):
    assert same_spans(spans(run_main_job(planted["long"], **BATCH).segments), [(6.0, 16.0)])


def test_planted_ordinary_motion_is_empty_in_batch_but_watchable_in_the_main_job(planted, caplog):
    assert run_main_job(planted["ordinary"], **BATCH).segments == ()
    hl = run_main_job(planted["ordinary"])  # default budget "auto": 10 s of a 30 s video
    assert hl.segments and 3.0 <= hl.duration_s <= 11.0
    assert "nothing stands out; kept the best" in caplog.text


def test_planted_event_in_an_unchanged_view_stands_out_only_when_it_does_not_recur(planted):
    # Alone, a small box racing under a roar is the video's event; the same three times is what
    # this video ordinarily does (a car passing a fixed camera), so the batch keeps none of it.
    assert spans(run_main_job(planted["one_small"], **BATCH).segments) == [(12.0, 15.0)]
    assert run_main_job(planted["recurring"], **BATCH).segments == ()
    assert len(run_main_job(planted["recurring"], budget="9s").segments) == 3  # the main job


def test_planted_budget_is_spent_on_whole_events(planted):
    two = spans(run_main_job(planted["two"], budget="7s").segments)
    assert same_spans(two, [(5.0, 8.0), (20.0, 23.0)])
    one = spans(run_main_job(planted["two"], budget="4s").segments)
    assert same_spans(one, [(5.0, 8.0)]) or same_spans(one, [(20.0, 23.0)])


def test_labels_say_what_was_seen():
    from retrieval_hl.select.labels import describe_evidence

    base = {k: np.zeros(20) for k in SliceSignals.names}
    base["motion"] = np.full(20, 1.0)
    base["audio_loudness"] = np.full(20, -40.0)
    sig = dict(base)
    sig["motion"] = np.r_[np.full(5, 1.0), np.full(3, 12.0), np.full(12, 1.0)]
    sig["people"] = np.r_[np.zeros(5), np.ones(3), np.zeros(12)]
    sig["subject_size"] = np.r_[np.zeros(5), np.full(3, 0.7), np.zeros(12)]
    sig["audio_loudness"] = np.r_[np.full(5, -40.0), np.full(3, -28.0), np.full(12, -40.0)]
    assert describe_evidence(SliceSignals(**sig), [5, 6, 7]) == (
        "a person moving fast, close to the camera; the sound gets louder"
    )
    far = dict(base)
    far["vehicles"] = np.ones(20)
    far["subject_size"] = np.full(20, 0.1)
    far["camera_motion"] = np.r_[np.zeros(10), np.full(3, 6.0), np.zeros(7)]
    assert describe_evidence(SliceSignals(**far), [10, 11, 12]) == (
        "a vehicle, far off; the camera moves"
    )
    assert describe_evidence(SliceSignals(**base), [3, 4]) == "an ordinary moment"
    assert describe_evidence(SliceSignals(**base), []) == "an ordinary moment"
    raised = dict(base)
    raised["speech_emphasis_db"] = np.r_[np.zeros(14), np.full(2, 6.0), np.full(4, 1.5)]
    assert describe_evidence(SliceSignals(**raised), [13, 14, 15]) == "a raised voice"
    assert describe_evidence(SliceSignals(**raised), [16, 17]) == "an ordinary moment"


def test_labels_say_a_new_view_where_nothing_else_looks_alike():
    from retrieval_hl.select.labels import describe_evidence

    n = 20
    base = {k: np.zeros(n) for k in SliceSignals.names}
    looks = np.full((n, 16 * 9 * 3), 100.0)
    looks[8:11] = 160.0  # three slices unlike the rest by 60 levels in every cell and channel
    sig = SliceSignals(**base, looks=looks)
    mids = np.arange(n) + 0.5
    assert describe_evidence(sig, [8, 9, 10], mids) == "a new view"
    assert describe_evidence(sig, [2, 3], mids) == "an ordinary moment"
    assert describe_evidence(sig, [8, 9, 10]) == "an ordinary moment"  # no times: not judged
