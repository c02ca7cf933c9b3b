"""Cut a video's frame range into 1-3 s slices, optionally never crossing a shot cut. Pure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexer.models import Slice, VideoInfo
from rhl_common.errors import ConfigError

MIN_WINDOW_S = 1.0
MAX_WINDOW_S = 3.0


def make_slices(
    info: VideoInfo, window_s: float = 2.0, cuts: Sequence[int] = (), tags: Sequence[str] = ()
) -> list[Slice]:
    """Split ``info``'s frames into windows of about ``window_s`` seconds.

    With ``cuts`` (frame indices where a new shot starts), each shot is split on its own, so no
    slice spans a cut; a shot's last piece shorter than half a window joins the previous piece.
    Every cut inside the video starts a slice, flagged ``starts_shot`` (see :func:`shot_cuts`).

    Raises:
        ConfigError: ``window_s`` is outside 1-3 s.

    """
    if not MIN_WINDOW_S <= window_s <= MAX_WINDOW_S:
        raise ConfigError(f"slice window must be {MIN_WINDOW_S}-{MAX_WINDOW_S} s, got {window_s}")
    win = max(1, int(round(window_s * info.fps)))
    inside = {int(c) for c in cuts if 0 < c < info.n_frames}
    bounds = sorted({0, info.n_frames, *inside})
    edges: list[int] = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        starts = list(range(a, b, win))
        if len(starts) > 1 and b - starts[-1] < win / 2:
            starts.pop()
        edges.extend(starts)
    edges.append(info.n_frames)
    return [
        Slice(
            video_id=info.video_id,
            index=i,
            start_frame=s,
            end_frame=e,
            start_s=info.time_of(s),
            end_s=_end_s(info, s, e),
            tags=tuple(tags),
            starts_shot=s in inside,
        )
        for i, (s, e) in enumerate(zip(edges[:-1], edges[1:], strict=True))
    ]


def shot_cuts(slices: Sequence[Slice]) -> tuple[int, ...] | None:
    """The shot cuts stored with ``slices`` (the start frames of those flagged ``starts_shot``),
    or ``None`` if any slice does not say (slices stored before the flag was).
    """
    if any(s.starts_shot is None for s in slices):
        return None
    return tuple(s.start_frame for s in slices if s.starts_shot)


def _end_s(info: VideoInfo, start: int, end: int) -> float:
    """End time of the slice ``[start, end)``: the last one ends with the video's duration where
    that is shorter than its frames say (an audio-led container), never before the slice starts
    (a stream-copied cut can report a duration shorter than its frame count covers).
    """
    t = info.time_of(end)
    if end == info.n_frames and info.time_of(start) < info.duration_s:
        return min(t, info.duration_s)
    return t


def sample_frames(info: VideoInfo, sample_fps: float) -> np.ndarray:
    """Frame indices sampled at ``sample_fps`` (at least one), sorted and unique: one in the
    middle of each ``1 / sample_fps`` seconds, every frame at or above the video's own rate.
    """
    if sample_fps <= 0:
        raise ConfigError(f"sample fps must be positive, got {sample_fps}")
    step = info.fps / sample_fps
    if step <= 1.0:  # half-frame positions would round (half to even) onto every other frame
        return np.arange(max(info.n_frames, 1), dtype=np.int64)
    # The index's 2 fps and the meter's 4 fps grids share no frame. Nesting them (one phase
    # for all, the meter's samples 1/8 s earlier) saved 4 % of the decoded frames of the 10-min
    # bench video and no conversion, and moved the dev F (bench/real_filler.py) 79.39 -> 77.85.
    idx = np.round(np.arange(step / 2, info.n_frames, step)).astype(np.int64)
    idx = np.unique(np.clip(idx, 0, info.n_frames - 1))
    return idx if len(idx) else np.zeros(1, dtype=np.int64)


def pool_by_slice(
    slices: Sequence[Slice], frame_indices: np.ndarray, frame_vectors: np.ndarray
) -> np.ndarray:
    """Slice embedding = L2-normalised mean of its sampled frames' embeddings.

    A slice with no sampled frame (shorter than the sampling step) takes the nearest frame.
    """
    starts = np.array([s.start_frame for s in slices])
    ends = np.array([s.end_frame for s in slices])
    out = np.zeros((len(slices), frame_vectors.shape[1]), dtype=np.float32)
    lo = np.searchsorted(frame_indices, starts, side="left")
    hi = np.searchsorted(frame_indices, ends, side="left")
    for i in range(len(slices)):
        if hi[i] > lo[i]:
            out[i] = frame_vectors[lo[i] : hi[i]].mean(axis=0)
        else:
            mid = (starts[i] + ends[i]) / 2
            out[i] = frame_vectors[int(np.argmin(np.abs(frame_indices - mid)))]
    return normalize_rows(out)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)
