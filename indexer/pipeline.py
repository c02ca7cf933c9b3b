"""Index a video: probe, decode a proxy in chunks, detect shots, embed, slice, store.

Embedding is coarse to fine (``EmbedPlan``): a cheap visual-change measure taken in the same
decoding pass decides which sampled frames the encoder really sees; the others reuse the
embedding of the last frame that was embedded in their shot.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from indexer.decode import DEFAULT_SHORT_SIDE_PX, FrameSink, decode_proxy
from indexer.encoders import Encoder
from indexer.models import Slice, VideoInfo
from indexer.shots import ShotDetector
from indexer.slicing import make_slices, pool_by_slice, sample_frames, shot_cuts
from indexer.stores import VectorStore
from rhl_common.errors import VideoOpenError
from rhl_common.memory import release_free_memory

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
    frame_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    frame_vectors: np.ndarray | None = None
    n_embedded: int = 0
    """Sampled frames the encoder really embedded (the others reuse a neighbour's vector)."""

    @property
    def cuts(self) -> tuple[int, ...] | None:
        """Frames where a new shot starts, as stored with the slices (``shot_cuts``): the same
        whether the video was just decoded or loaded back, so every run uses the same cuts.
        ``None`` for slices from a store written before the cuts were kept.
        """
        return shot_cuts(self.slices)


THUMB_PX = 32
CHANGE_GRID = 4


@dataclass(frozen=True)
class EmbedPlan:
    """Coarse to fine: which sampled frames the encoder embeds, from a cheap change measure.

    The measure is ``frame_change`` (grey levels, 0-255) of two frames' ``THUMB_PX`` x
    ``THUMB_PX`` grey thumbnails, taken in the decoding pass at no real cost.

    Candidate regions (dense): a sampled frame whose change from the previous one is at least
    ``active_change`` and at least ``lively`` times the median change of the sampled frames of
    the last ``context_s`` seconds (livelier than this video is around it), with the frame
    before it. There every frame is embedded unless it differs from the last embedded frame by
    less than ``duplicate_change`` (a near-duplicate).

    Elsewhere (sparse): a frame is embedded only when it has drifted ``sparse_change`` from the
    last embedded frame (the picture has become another one without a cut). Whatever the
    measure says, the first sampled frame of every shot is embedded, and no sampled frame is
    ``max_gap_s`` or more after an embedded one, so a search can still find anything. A frame
    not embedded takes the vector of the last embedded frame before it (always in its shot).

    ``max_gap_s`` is 2 s, the default slice (``window_s``): every such slice pools at least one
    frame embedded from inside it, so none is found only through a neighbour's picture. On
    real footage (2 min of ``bench/throughput.py``'s video, ``ViT-B-32:random``) these defaults
    embedded 69 % of the sampled frames (the older near-duplicate-only plan 92 %); a reused
    vector had cosine >= 0.996 with the frame's own.
    """

    active_change: float = 6.0
    lively: float = 1.5
    context_s: float = 60.0
    duplicate_change: float = 1.0
    sparse_change: float = 12.0
    max_gap_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.duplicate_change <= self.sparse_change or self.max_gap_s <= 0:
            raise ValueError(
                f"bad EmbedPlan {self}: need 0 <= duplicate_change <= sparse_change, max_gap_s > 0"
            )
        if self.lively < 0 or self.context_s <= 0:
            raise ValueError(f"bad EmbedPlan {self}: need lively >= 0, context_s > 0")


def grey_thumbnails(frames_rgb: np.ndarray) -> np.ndarray:
    """``THUMB_PX`` x ``THUMB_PX`` grey thumbnails (float32, grey levels) of RGB uint8 frames."""
    size = (THUMB_PX, THUMB_PX)
    return np.stack([
        cv2.cvtColor(cv2.resize(f, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        for f in frames_rgb
    ]).astype(np.float32)


def frame_change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How much each thumbnail in ``a`` differs from the one in ``b``: the largest mean absolute
    grey difference over a ``CHANGE_GRID`` x ``CHANGE_GRID`` grid of cells, so a small subject
    moving over a still background counts as much as a change of the whole picture.
    """
    g = CHANGE_GRID
    d = np.abs(a - b).reshape(len(a), g, THUMB_PX // g, g, THUMB_PX // g)
    return d.mean(axis=(2, 4)).max(axis=(1, 2))


EMBED_BATCH = 32
"""Frames the encoder is given at once: a decoded chunk holds fewer of the frames to embed,
so they wait for the next chunks (bf16 ViT-B-32 on one thread: 76 CPU-ms an image at batches of
8, 67 at 32, process CPU time on this project's 2-core machine under load)."""


TRIM_BATCHES = 8
"""Batches embedded between two trims of the heap (``release_free_memory``): what the pass
frees (decoded chunks, the encoder's and the detectors' buffers) stays resident under glibc, a
little more after every batch, so the pass's memory grew with the video (its peak in
``bench/memory_profile.py``, 10 vs 60 min: 1591 vs 1676 MiB before, 1605 vs 1624 with this).
Each trim costs ~0.1-0.3 CPU-s, mostly the pages it gives back faulting in again (one after
every batch: +5-8 % CPU on the pass of the 2.5-min video); one every 8 batches (~3 min of
video) costs about the same per minute at any length."""


class FrameEmbedder:
    """A ``FrameSink`` that embeds the frames it wants, and finds shot cuts in them, as they pass.

    With a ``plan`` it embeds coarse to fine (see ``EmbedPlan``); without one, every wanted
    frame. Frames to embed are gathered into batches of ``EMBED_BATCH``. Memory holds one
    vector per embedded frame, one index per wanted frame and at most one batch of frames.
    """

    def __init__(
        self,
        wanted: np.ndarray,
        encoder: Encoder,
        *,
        short_side_px: int = DEFAULT_SHORT_SIDE_PX,
        shots: ShotDetector | None = None,
        progress: Callable[[int], None] | None = None,
        plan: EmbedPlan | None = None,
        fps: float | None = None,
    ) -> None:
        """Set up for one pass.

        Args:
            wanted: Source frame indices to embed, sorted and unique.
            encoder: Embeds the frames.
            short_side_px: Proxy short side the encoder wants.
            shots: Fed the same frames, to find the cuts; ``None`` finds none.
            progress: Called with the number of frames just taken (for a progress bar).
            plan: Embed coarse to fine by this plan; ``None`` embeds every wanted frame.
            fps: The video's frame rate (needed with a ``plan``, for its ``max_gap_s``).

        Raises:
            ValueError: a ``plan`` without ``fps``.
        """
        if plan is not None and not fps:
            raise ValueError("FrameEmbedder needs the video's fps to follow an EmbedPlan")
        self.wanted = np.asarray(wanted, dtype=np.int64)
        self.short_side_px = short_side_px
        self.shots = shots
        self.plan = plan
        self.n_embedded = 0
        self._max_gap = (plan.max_gap_s * fps) if plan is not None and fps else 0.0
        self._encoder = encoder
        self._progress = progress
        self._idx: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        self._uses: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]  # row of _vec per frame
        self._vec: list[np.ndarray] = [np.zeros((0, encoder.dim), dtype=np.float32)]
        self._batch: list[np.ndarray] = []  # frames taken, not embedded yet
        self._batches = 0  # embedded so far
        self._prev_thumb: np.ndarray | None = None  # the previous sampled frame's
        step = float(np.median(np.diff(self.wanted))) if len(self.wanted) > 1 else 1.0
        context = max(1, int(plan.context_s * fps / step)) if plan is not None and fps else 1
        self._recent: deque[float] = deque(maxlen=context)  # changes of the last context_s
        self._kept_thumb: np.ndarray | None = None  # the last embedded frame's
        self._kept_idx = -1

    def feed(self, indices: np.ndarray, frames_rgb: np.ndarray) -> None:
        """Embed the wanted frames among ``frames_rgb`` (source frames ``indices``, in order)."""
        mine = np.isin(indices, self.wanted)
        if not mine.any():
            return
        idx, frames = indices[mine], frames_rgb[mine]
        cuts = self.shots.feed(idx, frames) if self.shots is not None else []
        take = np.ones(len(idx), bool) if self.plan is None else self._plan(idx, frames, cuts)
        # Each frame uses the vector of the last embedded frame at or before it.
        self._uses.append(self.n_embedded - 1 + np.cumsum(take))
        self._idx.append(idx)
        self._batch.extend(frames[take])
        self.n_embedded += int(take.sum())
        if len(self._batch) >= EMBED_BATCH:
            self._embed_batch()
        if self._progress:
            self._progress(len(idx))

    def _embed_batch(self) -> None:
        if self._batch:
            self._vec.append(self._encoder.encode_images(np.stack(self._batch)))
            self._batch = []
            self._batches += 1
            if self._batches % TRIM_BATCHES == 0:
                release_free_memory()

    def _plan(self, idx: np.ndarray, frames: np.ndarray, cuts: Sequence[int]) -> np.ndarray:
        """Which of these frames to embed, by ``self.plan``."""
        plan = self.plan
        assert plan is not None
        thumbs = grey_thumbnails(frames)
        prev = thumbs[:1] if self._prev_thumb is None else self._prev_thumb[None]
        change = frame_change(thumbs, np.concatenate([prev, thumbs[:-1]]))
        active = np.zeros(len(idx), dtype=bool)
        for k, c in enumerate(change):
            typical = float(np.median(self._recent)) if self._recent else 0.0
            active[k] = c >= max(plan.active_change, plan.lively * typical)
            self._recent.append(float(c))
        active[:-1] |= active[1:]  # a region starts at the frame before the change
        self._prev_thumb = thumbs[-1]
        new_shot = np.isin(idx, np.asarray(cuts, dtype=np.int64))
        take = np.zeros(len(idx), dtype=bool)
        kept_thumb, kept_idx = self._kept_thumb, self._kept_idx
        for k in range(len(idx)):
            if kept_thumb is None or new_shot[k] or idx[k] - kept_idx >= self._max_gap:
                take[k] = True
            else:
                drift = float(frame_change(thumbs[k : k + 1], kept_thumb[None])[0])
                take[k] = drift >= (plan.duplicate_change if active[k] else plan.sparse_change)
            if take[k]:
                kept_thumb, kept_idx = thumbs[k], int(idx[k])
        self._kept_thumb, self._kept_idx = kept_thumb, kept_idx
        return take

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """The frames taken so far and their vectors (row i belongs to frame i); frames that
        were not embedded carry the vector they reuse.
        """
        self._embed_batch()
        self._vec = [np.concatenate(self._vec)]
        return np.concatenate(self._idx), self._vec[0][np.concatenate(self._uses)]


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
    plan: EmbedPlan | None = EmbedPlan(),
) -> IndexedVideo:
    """Decode ``info``'s proxy frames in chunks, embed them and pool them into slices.

    ``sinks`` ride along the same pass (e.g. the signal meter, see ``decode_proxy``), so the
    video is decoded once. ``progress`` is called with the number of frames just taken (for a
    progress bar). ``plan`` embeds coarse to fine (``None``: every sampled frame). Memory holds
    one chunk of frames plus one vector per sampled frame.
    """
    if plan is not None and not encoder.per_frame:
        log.info("%s embeds runs of frames: every sampled frame is embedded", encoder.spec)
        plan = None
    shots = ShotDetector(info.fps, min_shot_s=max(1.0, 2.0 / sample_fps)) if snap_to_shots else None
    embedder = FrameEmbedder(
        sample_frames(info, sample_fps),
        encoder,
        short_side_px=short_side_px,
        shots=shots,
        progress=progress,
        plan=plan,
        fps=info.fps,
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
        info = info.up_to(last)
    slices = make_slices(info, window_s, cuts, tags)
    vectors = pool_by_slice(slices, frame_indices, frame_vectors)
    log.info(
        "%s: %d frames sampled, %d embedded, %d cuts, %d slices",
        info.video_id,
        len(frame_indices),
        embedder.n_embedded,
        len(cuts),
        len(slices),
    )
    return IndexedVideo(
        info,
        tuple(slices),
        vectors,
        encoder.spec,
        frame_indices,
        frame_vectors,
        embedder.n_embedded,
    )


def store_video(store: VectorStore, video: IndexedVideo) -> int:
    """Put ``video``'s slices into ``store``, replacing any earlier slicing in one step
    (:meth:`VectorStore.replace_video`); returns new points.
    """
    return store.replace_video(video.info.video_id, video.slices, video.vectors, video.encoder_spec)


def load_video(store: VectorStore, info: VideoInfo) -> IndexedVideo | None:
    """The slices and vectors of an already indexed video, or ``None`` if the store lacks it.

    As ``embed_video`` gave them: with the shot cuts stored in the slices, and ``info`` cut to
    the last slice where decoding ended early when the video was indexed (a corrupt tail).
    """
    slices, vectors = store.get_video(info.video_id)
    if not slices:
        return None
    if slices[-1].end_frame < info.n_frames:
        info = info.up_to(slices[-1].end_frame)
    return IndexedVideo(info, tuple(slices), vectors, store.encoder_spec or "")
