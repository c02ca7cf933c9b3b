"""The one proxy-decode loop: sinks share a pass, each gets its own frames."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.decode import CHUNK_FRAMES, PyAVReader, decode_proxy, proxy_size, resize_like_pil
from indexer.pipeline import EMBED_BATCH, FrameEmbedder
from indexer.probe import probe_video
from indexer.slicing import sample_frames
from rhl_common.errors import ConfigError
from tests.conftest import ffmpeg, shared_data


class Collect:
    """A FrameSink that keeps the indices and shapes of the frames it wants."""

    def __init__(self, wanted, short_side_px):
        self.wanted = np.asarray(wanted, dtype=np.int64)
        self.short_side_px = short_side_px
        self.got: list[int] = []
        self.shapes: set[tuple[int, ...]] = set()
        self.chunks = 0

    def feed(self, indices, frames_rgb):
        self.chunks += 1
        keep = np.isin(indices, self.wanted)
        self.got += indices[keep].tolist()
        self.shapes |= {f.shape for f in frames_rgb[keep]}


def test_sinks_share_one_pass_each_at_its_own_size(videos):
    info = probe_video(videos["plain"])  # 160x120, 60 frames
    a = Collect([0, 10, 20, 59], short_side_px=48)
    b = Collect(range(0, 60, 3), short_side_px=96)
    n = decode_proxy(info, [a, b])
    assert n == len(set(a.wanted) | set(b.wanted)) == 23
    assert a.got == [0, 10, 20, 59] and b.got == list(range(0, 60, 3))
    (wa, ha), (wb, hb) = proxy_size(info, 48), proxy_size(info, 96)
    assert a.shapes == {(ha, wa, 3)} and b.shapes == {(hb, wb, 3)}
    assert b.chunks == -(-23 // CHUNK_FRAMES)  # one pass, chunks holding what each sink wants


def test_embedder_sink_matches_a_direct_encode(videos, tiny_encoder):
    info = probe_video(videos["plain"])
    emb = FrameEmbedder(np.array([1, 30, 58]), tiny_encoder)
    seen = Collect([1, 30, 58], short_side_px=emb.short_side_px)
    decode_proxy(info, [seen, emb])
    idx, vec = emb.embeddings()
    assert idx.tolist() == [1, 30, 58] and vec.shape == (3, tiny_encoder.dim)
    frames = next(iter_frames(info, [1, 30, 58], emb.short_side_px))
    np.testing.assert_allclose(vec, tiny_encoder.encode_images(frames), atol=1e-5)


def iter_frames(info, indices, side):
    from indexer.decode import open_reader

    for chunk in open_reader(info).iter_chunks(info, indices, proxy_size(info, side), 8):
        yield chunk.frames


def test_no_sinks_decodes_nothing_and_bad_reader_raises(videos):
    info = probe_video(videos["plain"])
    assert decode_proxy(info, []) == 0
    with pytest.raises(ConfigError, match="opencv"):
        decode_proxy(info, [Collect([0], 64)], reader="opencv")


def test_auto_reads_a_dense_pass_in_order_and_sparse_picks_by_seeking():
    from indexer.decode import DecordReader, FallbackReader, PyAVReader, open_reader
    from tests.conftest import video_info

    info = video_info(seconds=40.0, fps=10.0)  # 400 frames
    assert isinstance(open_reader(info, "auto", np.arange(0, 400, 5)), PyAVReader)  # 2 fps
    assert isinstance(open_reader(info, "auto", np.arange(0, 400, 40)), FallbackReader)
    assert isinstance(open_reader(info, "auto"), FallbackReader)  # nothing said: seek
    assert isinstance(open_reader(info, "decord", np.arange(400)), DecordReader)  # as asked


def every_frame(path, keep):
    """Plain PyAV, independent of the reader: every frame decoded, counted in output order."""
    import av

    with av.open(str(path)) as container:
        frames = container.decode(container.streams.video[0])
        return {i: f.to_ndarray(format="rgb24") for i, f in enumerate(frames) if i in keep}


def read(reader, info, wanted):
    return {i: f.to_ndarray(format="rgb24") for i, f in reader.iter_frames(info, wanted)}


def assert_same_frames(got, expected, wanted):
    assert sorted(got) == sorted(expected) == list(wanted)
    for i in wanted:
        np.testing.assert_array_equal(got[i], expected[i], err_msg=f"frame {i}")


# B-frames in three codecs; AVI's demuxer guesses the timestamps (from 1, not 0).
B_FRAME_ENCODES = {
    "h264.mp4": ["-c:v", "libx264", "-bf", "3"],
    "hevc.mkv": ["-c:v", "libx265", "-x265-params", "bframes=3:log-level=error"],
    "mpeg4.avi": ["-c:v", "mpeg4", "-bf", "2"],
}


@pytest.mark.parametrize("name", B_FRAME_ENCODES)
def test_pyav_skips_unwanted_non_reference_frames_and_keeps_the_wanted_exact(tmp_path, name):
    path = tmp_path / name
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30:duration=4",
           *B_FRAME_ENCODES[name], "-pix_fmt", "yuv420p", str(path))
    info = probe_video(path)
    wanted = list(range(3, info.n_frames, 7))  # about the indexing pass's share at 30 fps
    reader = PyAVReader()
    assert_same_frames(read(reader, info, wanted), every_frame(path, wanted), wanted)
    assert reader.decoded_frames < 0.75 * (wanted[-1] + 1)  # non-reference frames skipped
    dense = list(range(info.n_frames))  # every frame wanted: every frame decoded, as before
    assert read(reader, info, dense).keys() == every_frame(path, dense).keys()
    assert reader.decoded_frames == info.n_frames


def test_pyav_indexes_frames_as_counted_across_a_timestamp_gap(tmp_path):
    path = tmp_path / "gap.mp4"  # a frame's time missing at 3 s, as where recordings are joined
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30:duration=6",
           "-vf", "setpts=N/(30*TB)+gte(N\\,90)*0.05/TB", "-fps_mode", "passthrough",
           *B_FRAME_ENCODES["h264.mp4"], "-pix_fmt", "yuv420p", str(path))
    info = probe_video(path)
    assert not info.variable_frame_rate
    wanted = list(range(3, info.n_frames, 7))
    reader = PyAVReader()
    assert_same_frames(read(reader, info, wanted), every_frame(path, wanted), wanted)
    assert reader.decoded_frames < 0.75 * (wanted[-1] + 1)


def test_pyav_decodes_every_frame_at_a_variable_frame_rate(tmp_path):
    path = tmp_path / "h264.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30:duration=2",
           *B_FRAME_ENCODES["h264.mp4"], "-pix_fmt", "yuv420p", str(path))
    info = probe_video(path).model_copy(update={"variable_frame_rate": True})
    wanted = list(range(3, info.n_frames, 7))
    reader = PyAVReader()
    assert_same_frames(read(reader, info, wanted), every_frame(path, wanted), wanted)
    assert reader.decoded_frames == wanted[-1] + 1  # counted in output order, none skipped


def test_pyav_skipping_on_real_footage_keeps_the_wanted_frames_exact():
    path = shared_data("clips") / "juggle.mp4"  # 1280x720, 24 fps, x264 with B-frames
    info = probe_video(path)
    wanted = np.union1d(sample_frames(info, 4.0), sample_frames(info, 2.0)).tolist()
    reader = PyAVReader()
    assert_same_frames(read(reader, info, wanted), every_frame(path, wanted), wanted)
    assert reader.decoded_frames < 0.75 * (wanted[-1] + 1)


def test_embedder_batches_frames_across_chunks(tiny_encoder):
    calls = []

    class Counting:
        dim = tiny_encoder.dim

        def encode_images(self, frames):
            calls.append(len(frames))
            return tiny_encoder.encode_images(frames)

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (EMBED_BATCH + 10, 24, 32, 3), dtype=np.uint8)
    emb = FrameEmbedder(np.arange(len(frames)), Counting())
    for start in range(0, len(frames), 7):  # chunks of 7 frames, as a decode pass feeds them
        emb.feed(np.arange(start, min(start + 7, len(frames))), frames[start : start + 7])
    idx, vec = emb.embeddings()
    assert calls == [35, 7]  # a batch once EMBED_BATCH frames waited, the rest at the end
    assert idx.tolist() == list(range(len(frames)))
    np.testing.assert_allclose(vec, tiny_encoder.encode_images(frames), atol=1e-5)


def test_encoder_threads_are_scoped(tiny_encoder, monkeypatch):
    import torch

    before = torch.get_num_threads()
    seen = []
    real = tiny_encoder._preprocess

    def spy(x):
        seen.append(torch.get_num_threads())
        return real(x)

    monkeypatch.setattr(tiny_encoder, "_preprocess", spy)  # torch's part of either runtime
    tiny_encoder.encode_images(np.zeros((2, 24, 32, 3), np.uint8))
    assert seen == [tiny_encoder.threads] and torch.get_num_threads() == before


class CollectFrames(Collect):
    """A Collect that keeps the frames too, with exact colour or the cheap scaling."""

    def __init__(self, wanted, short_side_px, exact_colour):
        super().__init__(wanted, short_side_px)
        self.exact_colour = exact_colour
        self.frames: list[np.ndarray] = []

    def feed(self, indices, frames_rgb):
        super().feed(indices, frames_rgb)
        self.frames += list(frames_rgb[np.isin(indices, self.wanted)])


def test_cheap_and_exact_sinks_at_one_size_each_get_their_own_frames(videos):
    info = probe_video(videos["plain"])
    wanted = [3, 17, 40]
    exact = CollectFrames(wanted, 96, exact_colour=True)
    cheap = CollectFrames(wanted, 96, exact_colour=False)
    plain = Collect(wanted, 96)  # no attribute: exact colour
    decode_proxy(info, [exact, cheap, plain])
    assert exact.got == cheap.got == plain.got == wanted
    reference = np.concatenate(list(iter_frames(info, wanted, 96)))
    np.testing.assert_array_equal(np.stack(exact.frames), reference)  # the model's own path
    diff = np.abs(np.stack(cheap.frames).astype(int) - reference)
    assert np.stack(cheap.frames).shape == reference.shape and diff.mean() < 3


@pytest.mark.parametrize("size", [(398, 224), (100, 61), (640, 360)])
def test_exact_resize_is_pils_bicubic_within_one_level(size):
    """The encoder's proxies are open_clip's own preprocessing: PIL's bicubic resize."""
    from PIL import Image

    rng = np.random.default_rng(0)
    # Edges and texture (the hard case for a resize) over smooth gradients.
    y, x = np.mgrid[0:360, 0:640]
    smooth = np.stack([x * 255 // 639, y * 255 // 359, (x + y) % 256], axis=-1)
    frame = np.where(rng.random((360, 640, 1)) < 0.2, rng.integers(0, 256, (360, 640, 3)), smooth)
    frame = frame.astype(np.uint8)
    ours = resize_like_pil(frame, *size)
    pil = np.asarray(Image.fromarray(frame).resize(size, Image.BICUBIC))
    assert ours.shape == pil.shape == (size[1], size[0], 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - pil).max() <= 1
