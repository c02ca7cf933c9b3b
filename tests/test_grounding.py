from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval_hl.reframe.camera_path import (
    MAX_ACCEL_FRAC,
    MAX_SPEED_FRAC,
    fill_gaps,
    place_windows,
    runs_of,
    smooth_camera_path,
)
from retrieval_hl.reframe.window import fixed_window_size
from rhl_common.errors import ConfigError
from tests.conftest import ffmpeg

FRAME = (854, 480)
WIN = fixed_window_size(*FRAME, (9, 16))


def path_x(xs, valid=None, cuts=(), frame=FRAME, win=WIN, **kw):
    xs = np.asarray(xs, dtype=float)
    centres = np.column_stack([xs, np.full(xs.size, frame[1] / 2)])
    ok = np.ones(xs.size, bool) if valid is None else np.asarray(valid)
    return smooth_camera_path(centres, ok, cuts, frame, win, **kw)[:, 0]


# --- window size ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "ratio", "expected"),
    [
        ((1920, 1080), (9, 16), (607, 1079)),
        ((1920, 1080), (16, 9), (1920, 1080)),
        ((854, 480), (9, 16), (270, 480)),
        ((854, 480), (16, 9), (853, 479)),
        ((1080, 1920), (9, 16), (1080, 1920)),
        ((1080, 1920), (16, 9), (1080, 607)),
        ((720, 1280), (16, 9), (720, 405)),
        ((640, 480), (9, 16), (270, 480)),
    ],
)
def test_fixed_window_size(frame, ratio, expected):
    assert fixed_window_size(*frame, ratio) == expected


def test_fixed_window_size_rejects_bad_input():
    with pytest.raises(ConfigError, match="ratio"):
        fixed_window_size(100, 100, (0, 16))
    with pytest.raises(ConfigError, match="frame size"):
        fixed_window_size(0, 100, (9, 16))


# --- camera path ---------------------------------------------------------------------------


def test_holds_still_inside_dead_zone():
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.08, 0.08, 120) * WIN[0]  # inside the 12 % dead zone
    px = path_x(400 + jitter)
    assert np.ptp(px) < 1.0


def test_pans_with_bounded_speed_and_acceleration():
    xs = np.r_[np.full(40, 200.0), np.full(80, 650.0)]
    px = path_x(xs)
    v = np.diff(px)
    assert np.abs(v).max() <= MAX_SPEED_FRAC * FRAME[0] + 1e-6
    assert np.abs(np.diff(v)).max() <= MAX_ACCEL_FRAC * FRAME[0] + 1e-6
    assert abs(px[0] - 200) < 0.12 * WIN[0]
    assert abs(px[-1] - 650) < 0.12 * WIN[0]
    assert np.all(v >= -1e-6)  # one smooth pan, no back-and-forth


def test_follows_steady_motion_without_lag():
    xs = np.linspace(200, 650, 150)
    px = path_x(xs)
    assert np.abs(px[20:-20] - xs[20:-20]).mean() < 0.1 * WIN[0]


def test_resets_at_cut():
    xs = np.r_[np.full(50, 200.0), np.full(50, 650.0)]
    px = path_x(xs, cuts=[50])
    assert abs(px[49] - 200) < 5
    assert abs(px[50] - 650) < 5


def test_fills_frames_without_subject():
    xs = np.full(60, np.nan)
    xs[:10], xs[50:] = 300.0, 500.0
    valid = np.isfinite(xs)
    px = path_x(np.nan_to_num(xs), valid=valid)
    assert np.isfinite(px).all()
    assert abs(px[0] - 300) < 0.12 * WIN[0] and abs(px[-1] - 500) < 0.12 * WIN[0]
    nothing = path_x(np.zeros(30), valid=np.zeros(30, bool))
    np.testing.assert_allclose(nothing, FRAME[0] / 2)


def test_fill_gaps_interpolates_and_holds():
    v = np.array([np.nan, 2.0, np.nan, 4.0, np.nan])
    np.testing.assert_allclose(fill_gaps(v, np.isfinite(v), 0.0), [2, 2, 3, 4, 4])


def test_portrait_source_moves_vertically():
    frame = (720, 1280)
    win = fixed_window_size(*frame, (16, 9))
    ys = np.r_[np.full(30, 300.0), np.full(60, 1000.0)]
    centres = np.column_stack([np.full(ys.size, 360.0), ys])
    p = smooth_camera_path(centres, np.ones(ys.size, bool), (), frame, win)
    np.testing.assert_allclose(p[:, 0], 360.0)
    assert p[0, 1] < 420 and p[-1, 1] > 880


def test_clamps_at_edges_and_returns_ints():
    xs = np.r_[np.full(30, 0.0), np.full(30, FRAME[0] + 100.0)]
    px = path_x(xs, cuts=[30])
    xy = place_windows(np.column_stack([px, np.full(60, 240.0)]), WIN, FRAME)
    assert xy.dtype == np.int64
    assert xy[0, 0] == 0 and xy[-1, 0] == FRAME[0] - WIN[0]
    assert (xy[:, 1] == 0).all()
    wild = place_windows(np.array([[-500.0, -500.0], [5000.0, 5000.0]]), WIN, FRAME)
    assert wild.tolist() == [[0, 0], [FRAME[0] - WIN[0], 0]]


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="does not fit"):
        place_windows(np.zeros((1, 2)), (900, 480), FRAME)
    with pytest.raises(ValueError, match="rows"):
        smooth_camera_path(np.zeros((3, 2)), np.ones(2, bool), (), FRAME, WIN)


def test_runs_of_splits_gaps_and_cuts():
    runs = runs_of([0, 1, 2, 5, 6, 7, 8], cuts=[7])
    assert [r.tolist() for r in runs] == [[0, 1, 2], [3, 4], [5, 6]]


# --- end to end ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moving_box(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("video") / "box.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=320x180:d=4:r=25", "-f", "lavfi", "-i",
           "color=c=white:s=40x40:d=4:r=25", "-filter_complex",
           "[0][1]overlay=x='t*60':y=70:shortest=1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(out))
    return out


def test_crop_follows_moving_box(moving_box):
    from indexer.probe import probe_video
    from retrieval_hl.reframe.crops import ground_frames

    info = probe_video(moving_box)
    boxes = ground_frames(info, range(info.n_frames), (9, 16))
    assert len(boxes) == info.n_frames
    w, h = fixed_window_size(info.width_px, info.height_px, (9, 16))
    assert {(b.w_px, b.h_px) for b in boxes} == {(w, h)}
    assert all(0 <= b.x_px <= info.width_px - w and 0 <= b.y_px <= info.height_px - h
               for b in boxes)
    t = np.array([b.frame for b in boxes]) / info.fps
    truth = np.clip(t * 60 + 20, w / 2, info.width_px - w / 2)
    centre = np.array([b.x_px + w / 2 for b in boxes])
    assert np.abs(centre - truth).mean() < 0.06 * info.width_px
    assert centre[-1] - centre[0] > 0.5 * info.width_px


def test_disjoint_runs_and_cuts(moving_box):
    from indexer.probe import probe_video
    from retrieval_hl.reframe.crops import ground_frames

    info = probe_video(moving_box)
    frames = [*range(70, 90), *range(5, 30)]
    boxes = ground_frames(info, frames, (16, 9), cuts=[15], sample_fps=5)
    assert [b.frame for b in boxes] == frames
    assert {(b.w_px, b.h_px, b.x_px, b.y_px) for b in boxes} == {(320, 180, 0, 0)}
    tall = ground_frames(info, frames, (9, 16), cuts=[15], sample_fps=5)
    assert [b.frame for b in tall] == frames
    assert all(0 <= b.x_px <= 320 - 101 and (b.w_px, b.h_px) == (101, 179) for b in tall)
    # The white box's centre is at x = 60 t + 20 in both runs.
    for b in (tall[0], tall[-1]):
        assert abs(b.x_px + 101 / 2 - (60 * b.frame / info.fps + 20)) < 0.1 * 320
    with pytest.raises(ValueError, match="frame indices"):
        ground_frames(info, [-1, 3], (9, 16))


# --- motion cue --------------------------------------------------------------------------------


def _texture(h, w, seed):
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h // 4, w // 4), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC), (3, 3), 0)


def test_motion_cue_keeps_the_followed_subject_and_drops_parallax():
    from retrieval_hl.reframe.cues import motion_map

    bg = _texture(128, 260, 1)
    subject, near = _texture(40, 24, 2), _texture(40, 24, 3)
    frames = []
    for k in range(2):  # the camera pans right 4 px: the background flows left 4 px
        f = bg[:, 10 + 4 * k : 210 + 4 * k].copy()
        f[44:84, 40:64] = subject  # followed by the camera: still in the frame
        x = 130 - 8 * k  # a nearer object sliding past twice as fast as the background
        f[44:84, x : x + 24] = near
        frames.append(f.astype(np.float32))
    mm, reliability = motion_map(*frames)
    assert reliability > 0.5
    at_subject = float(mm[44:84, 36:68].sum())
    at_near = float(mm[44:84, 118:158].sum())
    assert at_subject > 3 * at_near


def test_first_frame_of_a_run_gets_motion_from_the_next_one():
    from retrieval_hl.reframe.cues import SubjectLocator

    bg = _texture(120, 220, 4)
    frames = []
    for k in range(2):
        f = np.repeat(bg[..., None], 3, axis=2)
        f[40:80, 150 + 6 * k : 180 + 6 * k] = _texture(40, 30, 5)[..., None]
        frames.append(f)
    loc = SubjectLocator((440, 240), (135, 240))
    assert "motion" not in {c.name for c in loc.cues(frames[0])}
    loc.reset()
    cues = {c.name: c for c in loc.cues(frames[0], following=frames[1])}
    assert cues["motion"].cx > 140  # on the moving patch, right of centre
