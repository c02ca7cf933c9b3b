"""The text-conditioned relevance cue: patch maps, the cue, and grounding that follows it."""

from __future__ import annotations

import numpy as np

from retrieval_hl.reframe.cues import _text_cue, fuse_cues
from tests.conftest import ffmpeg


def test_relevance_maps_cover_the_frame(tiny_encoder):
    frames = np.random.default_rng(0).integers(0, 255, (3, 60, 100, 3), dtype=np.uint8)
    q = tiny_encoder.encode_texts(["a dog"])[0]
    maps = tiny_encoder.relevance_maps(frames, q)
    assert maps.shape == (3, 4, 4)  # 32 px input, 8 px patches
    assert np.all(np.abs(maps) <= 1.0 + 1e-5)


def test_text_cue_points_at_the_peak_and_is_sure_only_when_it_stands_out():
    grid = np.zeros((7, 7))
    grid[1, 5] = 1.0
    cue = _text_cue(grid + 0.01 * np.random.default_rng(1).normal(size=(7, 7)), (700, 350),
                    (0.2, 0.2))
    assert cue.name == "text" and cue.conf > 0.9
    assert abs(cue.cx - 550) < 60 and abs(cue.cy - 75) < 40
    assert _text_cue(np.zeros((7, 7)), (700, 350), (0.2, 0.2)) is None
    flat = _text_cue(np.random.default_rng(2).normal(size=(7, 7)), (700, 350), (0.2, 0.2))
    assert flat is None or flat.conf < 0.5
    assert fuse_cues([cue]).name == "text"


def test_grounding_follows_the_relevance_cue(tmp_path):
    from indexer.probe import probe_video
    from retrieval_hl.reframe.crops import ground_frames

    path = tmp_path / "still.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=320x180:r=10:d=2", "-pix_fmt", "yuv420p",
           str(path))
    info = probe_video(path)
    grid = np.zeros((7, 7))
    grid[3, 6] = 1.0  # "the described thing is at the right edge"

    boxes = ground_frames(info, range(info.n_frames), (9, 16), face_detector="none",
                          object_detector="none", relevance=lambda rgb: grid)
    plain = ground_frames(info, range(info.n_frames), (9, 16), face_detector="none",
                          object_detector="none")
    assert np.mean([b.x_px for b in boxes]) > np.mean([b.x_px for b in plain]) + 40
