"""Index a video: probe, decode a proxy in chunks, detect shots, embed, slice, store."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from indexer.decode import DEFAULT_SHORT_SIDE_PX, open_reader, prefetch, proxy_size
from indexer.encoders import Encoder
from indexer.models import Slice, VideoInfo
from indexer.shots import ShotDetector
from indexer.slicing import make_slices, pool_by_slice, sample_frames
from indexer.stores import VectorStore
from rhl_common.errors import VideoOpenError

log = logging.getLogger(__name__)

CHUNK_FRAMES = 32


@dataclass(frozen=True)
class IndexedVideo:
    """A video's slices and their vectors (row i belongs to ``slices[i]``).

    The frame-level fields are filled when the video was just decoded and empty when it was
    loaded back from a store.
    """

    info: VideoInfo
    slices: tuple[Slice, ...]
    vectors: np.ndarray
    encoder_spec: str
    cuts: tuple[int, ...] = ()
    frame_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    frame_vectors: np.ndarray | None = None


class FrameSink(Protocol):
    """Something else that wants proxy frames from the indexer's single decoding pass."""

    wanted: np.ndarray
    short_side_px: int

    def feed(self, indices: np.ndarray, frames_rgb: np.ndarray) -> None:
        """Take the frames of this chunk it wants (it filters by ``wanted`` itself)."""
        ...


def embed_video(
    info: VideoInfo,
    encoder: Encoder,
    *,
    window_s: float = 2.0,
    sample_fps: float = 2.0,
    snap_to_shots: bool = True,
    reader: str = "auto",
    short_side_px: int = DEFAULT_SHORT_SIDE_PX,
    tags: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    sinks: Sequence[FrameSink] = (),
) -> IndexedVideo:
    """Decode ``info``'s proxy frames in chunks, embed them and pool them into slices.

    ``sinks`` ride along the same pass (e.g. the signal meter): the pass decodes the union of
    all wanted frames at the largest proxy size asked for, so the video is decoded once.
    ``progress`` is called with the number of frames just processed (for a progress bar).
    Memory holds one chunk of frames plus one vector per sampled frame.
    """
    wanted = sample_frames(info, sample_fps)
    decode = np.union1d(wanted, np.concatenate([s.wanted for s in sinks])) if sinks else wanted
    side = max([short_side_px, *(s.short_side_px for s in sinks)])
    size = proxy_size(info, side)
    shots = ShotDetector(info.fps, min_shot_s=max(1.0, 2.0 / sample_fps)) if snap_to_shots else None
    got_idx: list[np.ndarray] = []
    got_vec: list[np.ndarray] = []
    chunks = open_reader(info, reader).iter_chunks(info, decode, size, CHUNK_FRAMES)
    for chunk in prefetch(chunks):
        for sink in sinks:
            sink.feed(chunk.indices, chunk.frames)
        mine = np.isin(chunk.indices, wanted)
        if not mine.any():
            continue
        idx, frames = chunk.indices[mine], chunk.frames[mine]
        if shots is not None:
            shots.feed(idx, frames)
        got_idx.append(idx)
        got_vec.append(encoder.encode_images(frames))
        if progress:
            progress(len(idx))
    if not got_idx:
        raise VideoOpenError(f"no frame could be decoded from {info.path!r}")
    frame_indices = np.concatenate(got_idx)
    frame_vectors = np.concatenate(got_vec)
    cuts = tuple(shots.cuts()) if shots is not None else ()
    # A corrupt tail ends decoding early: slice only what was decoded.
    last = int(frame_indices[-1]) + 1
    if last < info.n_frames - max(1, round(info.fps / sample_fps)) - 1:
        log.warning("decoded only up to frame %d of %d in %s", last, info.n_frames, info.path)
        info = info.model_copy(update={"n_frames": last, "duration_s": info.time_of(last)})
    slices = make_slices(info, window_s, cuts, tags)
    vectors = pool_by_slice(slices, frame_indices, frame_vectors)
    log.info(
        "%s: %d frames sampled, %d cuts, %d slices",
        info.video_id,
        len(frame_indices),
        len(cuts),
        len(slices),
    )
    return IndexedVideo(
        info, tuple(slices), vectors, encoder.spec, cuts, frame_indices, frame_vectors
    )


def store_video(store: VectorStore, video: IndexedVideo) -> int:
    """Put ``video``'s slices into ``store``, replacing any earlier slicing; returns new points."""
    if store.count(video.info.video_id) and store.count(video.info.video_id) != len(video.slices):
        store.delete_video(video.info.video_id)
    return store.upsert(video.slices, video.vectors, video.encoder_spec)


def load_video(store: VectorStore, info: VideoInfo) -> IndexedVideo | None:
    """The slices and vectors of an already indexed video, or ``None`` if the store lacks it."""
    slices, vectors = store.get_video(info.video_id)
    if not slices:
        return None
    return IndexedVideo(info, tuple(slices), vectors, store.encoder_spec or "")
