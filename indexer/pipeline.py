"""Index a video: probe, decode a proxy in chunks, detect shots, embed, slice, store."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from indexer.decode import DEFAULT_SHORT_SIDE_PX, FrameSink, decode_proxy
from indexer.encoders import Encoder
from indexer.models import Slice, VideoInfo
from indexer.shots import ShotDetector
from indexer.slicing import make_slices, pool_by_slice, sample_frames
from indexer.stores import VectorStore
from rhl_common.errors import VideoOpenError

log = logging.getLogger(__name__)


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


class FrameEmbedder:
    """A ``FrameSink`` that embeds the frames it wants, and finds shot cuts in them, as they pass.

    Memory holds one vector per wanted frame.
    """

    def __init__(
        self,
        wanted: np.ndarray,
        encoder: Encoder,
        *,
        short_side_px: int = DEFAULT_SHORT_SIDE_PX,
        shots: ShotDetector | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Set up for one pass.

        Args:
            wanted: Source frame indices to embed, sorted and unique.
            encoder: Embeds the frames.
            short_side_px: Proxy short side the encoder wants.
            shots: Fed the same frames, to find the cuts; ``None`` finds none.
            progress: Called with the number of frames just embedded (for a progress bar).
        """
        self.wanted = np.asarray(wanted, dtype=np.int64)
        self.short_side_px = short_side_px
        self.shots = shots
        self._encoder = encoder
        self._progress = progress
        self._idx: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        self._vec: list[np.ndarray] = [np.zeros((0, encoder.dim), dtype=np.float32)]

    def feed(self, indices: np.ndarray, frames_rgb: np.ndarray) -> None:
        """Embed the wanted frames among ``frames_rgb`` (source frames ``indices``, in order)."""
        mine = np.isin(indices, self.wanted)
        if not mine.any():
            return
        idx, frames = indices[mine], frames_rgb[mine]
        if self.shots is not None:
            self.shots.feed(idx, frames)
        self._idx.append(idx)
        self._vec.append(self._encoder.encode_images(frames))
        if self._progress:
            self._progress(len(idx))

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """The frames embedded so far and their vectors (row i belongs to frame i)."""
        return np.concatenate(self._idx), np.concatenate(self._vec)


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

    ``sinks`` ride along the same pass (e.g. the signal meter, see ``decode_proxy``), so the
    video is decoded once. ``progress`` is called with the number of frames just embedded (for a
    progress bar). Memory holds one chunk of frames plus one vector per sampled frame.
    """
    shots = ShotDetector(info.fps, min_shot_s=max(1.0, 2.0 / sample_fps)) if snap_to_shots else None
    embedder = FrameEmbedder(
        sample_frames(info, sample_fps),
        encoder,
        short_side_px=short_side_px,
        shots=shots,
        progress=progress,
    )
    decode_proxy(info, [*sinks, embedder], reader)
    frame_indices, frame_vectors = embedder.embeddings()
    if not len(frame_indices):
        raise VideoOpenError(f"no frame could be decoded from {info.path!r}")
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
