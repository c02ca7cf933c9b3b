"""Coarse-to-fine embedding: fewer frames through the encoder, the same search answers."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.pipeline import EmbedPlan, FrameEmbedder, embed_video
from indexer.probe import probe_video
from tests.conftest import ffmpeg


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Four 6 s shots at 10 fps: still red, moving test pattern, still bars, zooming fractal."""
    path = tmp_path_factory.mktemp("c2f") / "planted.mp4"
    sources = ["color=c=red:", "testsrc2=", "smptebars=", "mandelbrot="]
    args = []
    for src in sources:
        args += ["-f", "lavfi", "-i", f"{src}size=160x120:rate=10"]
    trims = "".join(f"[{i}:v]trim=duration=6[s{i}];" for i in range(len(sources)))
    chain = "".join(f"[s{i}]" for i in range(len(sources)))
    graph = f"{trims}{chain}concat=n={len(sources)}:v=1:a=0,format=yuv420p[v]"
    ffmpeg(*args, "-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", str(path))
    return probe_video(path)


def hit_rate(video, queries, query_frames) -> float:
    """Share of frame queries whose own slice scores best (ties count: reused vectors tie)."""
    scores = queries @ video.vectors.T
    starts = np.array([s.start_frame for s in video.slices])
    own = np.searchsorted(starts, query_frames, side="right") - 1
    return float(np.mean(scores[np.arange(len(own)), own] >= scores.max(axis=1) - 1e-5))


def test_coarse_to_fine_embeds_fewer_frames_and_finds_every_frame_as_often(planted, tiny_encoder):
    dense = embed_video(planted, tiny_encoder, plan=None)
    coarse = embed_video(planted, tiny_encoder)
    assert dense.n_embedded == len(dense.frame_indices) == 48
    assert [s.start_frame for s in coarse.slices] == [s.start_frame for s in dense.slices]
    assert coarse.cuts == dense.cuts == (62, 122, 182)  # first sampled frame of each shot
    # The still shots cost one frame per max_gap_s (2 s) each; the moving ones are dense.
    assert coarse.n_embedded <= 0.75 * dense.n_embedded
    for cut in coarse.cuts:  # every shot's first sampled frame is embedded, never reused
        k = int(np.searchsorted(coarse.frame_indices, cut))
        np.testing.assert_allclose(coarse.frame_vectors[k], dense.frame_vectors[k], atol=1e-5)
    # A query built from a frame's own (dense) embedding finds that frame's slice as often.
    queries, frames = dense.frame_vectors, dense.frame_indices
    assert hit_rate(coarse, queries, frames) >= hit_rate(dense, queries, frames) >= 0.5


def test_still_frames_reuse_and_the_gap_forces_a_fresh_one(planted, tiny_encoder):
    plan = EmbedPlan(max_gap_s=2.0)
    emb = FrameEmbedder(np.arange(0, 60, 5), tiny_encoder, plan=plan, fps=planted.fps)
    from indexer.decode import decode_proxy

    decode_proxy(planted, [emb])
    idx, vec = emb.embeddings()
    assert len(idx) == 12 and emb.n_embedded == 3  # still red: frames 0, 20, 40 (every 2 s)
    assert np.allclose(vec, vec[0], atol=1e-4)


def test_dense_in_a_lively_region_sparse_in_slow_drift(tiny_encoder):
    """30 s at 2 fps: 20 s of a picture drifting slowly (4 grey levels a frame, below
    active_change), then 10 s where every frame is new noise."""
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0, 80, 64, dtype=np.float32), (48, 1))
    slow = [ramp + 4.0 * k for k in range(40)]
    lively = [rng.uniform(0, 255, (48, 64)) for _ in range(20)]
    frames = np.stack([np.repeat(f[..., None], 3, axis=2) for f in slow + lively]).astype(np.uint8)
    idx = np.arange(60) * 15  # 30 fps video sampled at 2 fps
    plan = EmbedPlan()
    emb = FrameEmbedder(idx, tiny_encoder, plan=plan, fps=30.0)
    taken = []
    for a in range(0, 60, 16):  # in chunks, as a decoding pass feeds it
        before = emb.n_embedded
        emb.feed(idx[a : a + 16], frames[a : a + 16])
        taken.append(emb.n_embedded - before)
    _, vec = emb.embeddings()
    fresh = np.r_[True, np.any(np.abs(vec[1:] - vec[:-1]) > 1e-6, axis=1)]
    # Slow drift: a fresh frame once it drifted sparse_change (12 levels: every 3rd frame).
    assert fresh[:39].sum() == len(range(0, 39, 3))
    assert fresh[39:].all()  # the lively stretch (and the frame before it): every frame
    assert emb.n_embedded == fresh.sum() == sum(taken)


def test_bad_plans_are_refused(tiny_encoder):
    with pytest.raises(ValueError, match="duplicate_change"):
        EmbedPlan(duplicate_change=20.0, sparse_change=10.0)
    with pytest.raises(ValueError, match="lively"):
        EmbedPlan(lively=-1.0)
    with pytest.raises(ValueError, match="fps"):
        FrameEmbedder(np.arange(3), tiny_encoder, plan=EmbedPlan())


def test_video_level_encoders_embed_every_sampled_frame(planted):
    from indexer.encoders import create_encoder

    assert create_encoder("open_clip:rhl-tiny-vit:random").per_frame
    video_level = create_encoder("xclip:rhl-tiny-xclip:random")
    assert not video_level.per_frame
    video = embed_video(planted, video_level)
    assert video.n_embedded == len(video.frame_indices) == 48
