"""Probe, readers, shots and the indexing pipeline on generated videos, and bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from indexer.decode import DecordReader, PyAVReader, open_reader, proxy_size
from indexer.pipeline import embed_video, load_video, store_video
from indexer.probe import probe_video
from indexer.stores import open_store
from rhl_common.errors import ConfigError, VideoOpenError
from tests.conftest import strip_starts_shot


def test_probe_plain(videos):
    info = probe_video(videos["plain"])
    assert (info.width_px, info.height_px) == (160, 120)
    assert info.fps == pytest.approx(10.0)
    assert info.n_frames == 60 and info.duration_s == pytest.approx(6.0, abs=0.15)
    assert info.has_audio and info.rotation_deg == 0
    assert not probe_video(videos["silent"]).has_audio


def test_probe_rotated_reports_display_size(videos):
    info = probe_video(videos["rotated"])
    assert info.rotation_deg in (90, 270)
    assert (info.width_px, info.height_px) == (32, 64)
    assert open_reader(info).name == "pyav"


def test_rotated_proxy_matches_ffmpeg_display(videos, tmp_path):
    """The proxy frame equals what ffmpeg (which applies rotation) shows."""
    from tests.conftest import ffmpeg

    info = probe_video(videos["rotated"])
    chunk = next(PyAVReader().iter_chunks(info, [0], (32, 64), 8))
    assert chunk.frames.shape == (1, 64, 32, 3)
    ffmpeg(
        "-i",
        str(videos["rotated"]),
        "-frames:v",
        "1",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        str(tmp_path / "f.rgb"),
    )
    ref = np.fromfile(tmp_path / "f.rgb", np.uint8).reshape(64, 32, 3)
    assert np.abs(chunk.frames[0].astype(int) - ref).mean() < 12


@pytest.mark.parametrize("reader", [DecordReader, PyAVReader])
def test_readers_agree_and_chunk(videos, reader):
    info = probe_video(videos["plain"])
    idx = [0, 5, 17, 33, 59]
    chunks = list(reader().iter_chunks(info, idx, proxy_size(info, 64), 2))
    assert [len(c.indices) for c in chunks] == [2, 2, 1]
    got = np.concatenate([c.indices for c in chunks])
    assert got.tolist() == idx
    assert chunks[0].frames.shape[1:] == (64, 86, 3)


@pytest.mark.parametrize("size", [(160, 120), (64, 48)])
def test_decord_and_pyav_decode_same_pixels(videos, size):
    """Both convert colour at full size and scale with the same code: the same pixels, give or
    take a rounding (they differed by a mean of 0.25-0.44 grey levels, up to 12, when each
    scaled in its own yuv->rgb conversion).
    """
    info = probe_video(videos["plain"])
    a = next(DecordReader().iter_chunks(info, [10, 20], size, 8)).frames.astype(int)
    b = next(PyAVReader().iter_chunks(info, [10, 20], size, 8)).frames.astype(int)
    assert a.shape == b.shape == (2, size[1], size[0], 3)
    assert np.abs(a - b).max() <= 1


def test_unknown_reader(videos):
    with pytest.raises(ConfigError, match="unknown reader"):
        open_reader(probe_video(videos["plain"]), "opencv")


def test_embed_video_finds_cuts_and_snaps(videos, tiny_encoder):
    info = probe_video(videos["cuts"])
    v = embed_video(info, tiny_encoder, window_s=2.0, sample_fps=4.0)
    assert len(v.cuts) == 2
    assert abs(v.cuts[0] - 30) <= 3 and abs(v.cuts[1] - 60) <= 3
    for c in v.cuts:
        assert not any(s.start_frame < c < s.end_frame for s in v.slices)
    assert v.vectors.shape == (len(v.slices), 32)
    np.testing.assert_allclose(np.linalg.norm(v.vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["faiss", "qdrant"])
def test_load_video_gives_back_the_cuts(videos, tiny_encoder, tmp_path, kind):
    """The shot cuts are stored with the slices, so a video loaded back has the cuts it was
    indexed with; a store from before (no ``starts_shot``) loads with the cuts unknown.
    """
    uri = f"{kind}:{tmp_path / kind}"
    info = probe_video(videos["cuts"])
    v = embed_video(info, tiny_encoder)
    assert len(v.cuts) == 2 and all(c in {s.start_frame for s in v.slices} for c in v.cuts)
    with open_store(uri) as s:
        store_video(s, v)
    with open_store(uri) as s:
        got = load_video(s, info)
    assert got is not None and got.cuts == v.cuts and got.slices == v.slices
    assert got.info == v.info
    strip_starts_shot(uri)
    with open_store(uri) as s:
        old = load_video(s, info)
    assert old is not None and old.cuts is None
    assert [x.model_copy(update={"starts_shot": None}) for x in v.slices] == list(old.slices)
    np.testing.assert_array_equal(old.vectors, got.vectors)


def test_index_twice_adds_nothing(videos, tiny_encoder, tmp_path):
    store = open_store(str(tmp_path / "idx"))
    v = embed_video(probe_video(videos["plain"]), tiny_encoder)
    assert store_video(store, v) == len(v.slices)
    assert store_video(store, v) == 0
    assert store.count() == len(v.slices)


@pytest.mark.parametrize("name", ["missing", "empty", "text", "audio_only"])
def test_bad_inputs_give_clear_errors(videos, tmp_path, name):
    path = tmp_path / f"{name}.mp4"
    if name == "empty":
        path.write_bytes(b"")
    elif name == "text":
        path.write_text("not a video at all\n" * 100)
    elif name == "audio_only":
        path = videos["audio_only"]
    with pytest.raises(VideoOpenError) as err:
        probe_video(path)
    assert "\n" not in str(err.value)


def test_corrupt_tail_indexes_what_decodes(tiny_encoder, tmp_path, caplog):
    """A fragmented mp4 cut mid-fragment (a recording that stopped): the header survives, the
    last fragment is partial; the frames before the cut are indexed and the loss is logged.
    """
    from tests.conftest import ffmpeg

    whole = tmp_path / "whole.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=6", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-g", "10", "-movflags", "frag_keyframe+empty_moov", str(whole))
    path = tmp_path / "corrupt.mp4"
    data = whole.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    info = probe_video(path)
    assert 20 < info.n_frames < 60
    v = embed_video(info, tiny_encoder, reader="pyav")
    assert len(v.slices) >= 2 and v.vectors.shape == (len(v.slices), 32)
    assert 20 < v.slices[-1].end_frame < info.n_frames  # the partial fragment does not decode
    assert any("decoded only up to frame" in r.getMessage() for r in caplog.records)
    with open_store(str(tmp_path / "idx")) as store:
        store_video(store, v)
        assert load_video(store, info).info == v.info  # a rerun sees the same, shorter video


def test_odd_path_names(videos, tmp_path):
    path = tmp_path / "my clip; 'quoted' \"x\" $HOME.mp4"
    shutil.copy(videos["plain"], path)
    assert probe_video(path).n_frames == 60


def test_auto_reader_falls_back_to_pyav_where_decord_fails(tmp_path):
    """decord2 rejects some proxy sizes (e.g. 96x128): the auto reader carries on with PyAV."""
    from tests.conftest import make_video

    info = probe_video(make_video(tmp_path / "odd.mp4", seconds=2, size="96x128", audio=False))
    reader = open_reader(info)
    chunks = list(reader.iter_chunks(info, [0, 5, 10, 15], (96, 128), 2))
    assert np.concatenate([c.indices for c in chunks]).tolist() == [0, 5, 10, 15]
    assert chunks[0].frames.shape == (2, 128, 96, 3)


def _chunks(n: int, fail_after: int | None = None, produced: list | None = None):
    from indexer.decode import FrameChunk

    for k in range(n):
        if fail_after is not None and k == fail_after:
            raise VideoOpenError(f"decoder died at chunk {k}")
        if produced is not None:
            produced.append(k)
        yield FrameChunk(np.array([k]), np.full((1, 4, 4, 3), k, np.uint8))


def test_prefetch_reraises_a_decoder_error_after_the_good_chunks():
    import threading

    from indexer.decode import prefetch

    got = []
    with pytest.raises(VideoOpenError, match="decoder died at chunk 3"):
        for chunk in prefetch(_chunks(10, fail_after=3)):
            got.append(int(chunk.indices[0]))
    assert got == [0, 1, 2]
    assert not any(t.name == "rhl-decode" and t.is_alive() for t in threading.enumerate())


def test_prefetch_stops_decoding_when_the_consumer_stops():
    import threading

    from indexer.decode import prefetch

    produced: list[int] = []
    stream = prefetch(_chunks(1000, produced=produced), depth=2)
    assert int(next(stream).indices[0]) == 0
    stream.close()  # the consumer gives up (an error of its own, a break)
    assert not any(t.name == "rhl-decode" and t.is_alive() for t in threading.enumerate())
    assert len(produced) <= 5  # the queue's depth and a chunk in hand, not the whole video


def test_the_embedder_gives_freed_memory_back_every_few_batches(tiny_encoder, monkeypatch):
    """A long pass trims the heap every ``TRIM_BATCHES`` embedded batches, not more often."""
    from indexer import pipeline

    trims = []
    real = pipeline.release_free_memory
    monkeypatch.setattr(pipeline, "release_free_memory", lambda: trims.append(1) or real())
    monkeypatch.setattr(pipeline, "TRIM_BATCHES", 2)
    n = 5 * pipeline.EMBED_BATCH
    frames = np.random.default_rng(0).integers(0, 255, (n, 24, 32, 3), dtype=np.uint8)
    emb = pipeline.FrameEmbedder(np.arange(n), tiny_encoder)  # every frame embedded
    for a in range(0, n, 16):
        emb.feed(np.arange(a, a + 16), frames[a : a + 16])
    assert len(trims) == 2  # after batches 2 and 4
    idx, vec = emb.embeddings()
    assert len(trims) == 2 and emb.n_embedded == n == len(idx) == len(vec)
