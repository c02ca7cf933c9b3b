"""Grounding: a fixed-size crop box on the subject for every kept frame.

Thin orchestration around the pure parts: decode a low-resolution proxy of the frames that are
needed (sampled at ``sample_fps`` inside each contiguous run of requested frames), locate the
subject on each sample (``cues``), interpolate to every frame, smooth into a camera path and
place the windows (``grounding``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from indexer.decode import decode_proxy, proxy_size
from indexer.models import VideoInfo
from retrieval_hl.models import CropBox
from retrieval_hl.reframe.camera_path import place_windows, runs_of, smooth_camera_path
from retrieval_hl.reframe.cues import SubjectLocator
from retrieval_hl.reframe.window import fixed_window_size
from retrieval_hl.vision.detectors import open_face_detector, open_object_detector

log = logging.getLogger(__name__)

PROXY_SHORT_SIDE_PX = 224
MIN_SLACK_FRAC = 0.01


def sample_run(run_frames: np.ndarray, step: int) -> np.ndarray:
    """Frames of one contiguous run to analyse: every ``step``-th one, plus the last.

    Args:
        run_frames: Consecutive frame indices.
        step: Sampling step in frames (at least 1).

    Returns:
        Sorted unique frame indices, first and last of the run included.
    """
    if run_frames.size == 0:
        return run_frames.copy()
    picked = run_frames[:: max(1, step)]
    return np.unique(np.concatenate([picked, run_frames[-1:]]))


class _LocatorSink:
    """``FrameSink`` running the ``SubjectLocator`` on the sampled frames, one frame behind.

    The delay lets a run's first frame see the run's next one (its motion).
    """

    short_side_px = PROXY_SHORT_SIDE_PX

    def __init__(self, locator: SubjectLocator, wanted: np.ndarray, run_start: set[int]) -> None:
        self.wanted = wanted
        self._locator = locator
        self._run_start = run_start
        self._pending: tuple[int, np.ndarray] | None = None
        self.measured: dict[int, tuple[float, float, float]] = {}

    def feed(self, indices: np.ndarray, frames_rgb: np.ndarray) -> None:
        for idx, rgb in zip(indices.tolist(), frames_rgb, strict=True):
            if self._pending is not None:
                following = rgb if idx not in self._run_start else None
                self._measure(*self._pending, following)
            self._pending = (idx, rgb.copy())

    def finish(self) -> dict[int, tuple[float, float, float]]:
        """Measure the last frame held back; returns frame -> ``(cx, cy, conf)``."""
        if self._pending is not None:
            self._measure(*self._pending, None)
            self._pending = None
        return self.measured

    def _measure(self, idx: int, rgb: np.ndarray, following: np.ndarray | None) -> None:
        if idx in self._run_start:
            self._locator.reset()
            self.measured[idx] = self._locator.update(rgb, following)
        else:
            self.measured[idx] = self._locator.update(rgb)


def ground_frames(
    info: VideoInfo,
    frames: Sequence[int],
    ratio_wh: tuple[int, int],
    cuts: Sequence[int] = (),
    reader: str = "auto",
    sample_fps: float = 8.0,
    face_detector: str = "auto",
    object_detector: str = "auto",
    relevance: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[CropBox]:
    """One fixed-size crop box per requested frame, following the subject with a smooth path.

    Requested frames may form several disjoint stretches; each contiguous run is analysed and
    smoothed on its own, and the camera path also restarts at every shot cut.

    Args:
        info: The probed video.
        frames: Source frame indices to crop, in any order; duplicates get the same box.
        ratio_wh: Target aspect (width, height), e.g. ``(9, 16)`` or ``(16, 9)``.
        cuts: Frames where a new shot starts.
        reader: Video reader back-end (``auto``, ``decord``, ``pyav``).
        sample_fps: Analysis rate; the path is interpolated to every frame in between.
        face_detector: ``auto``, ``retinaface`` or ``none`` (see ``detectors.open_face_detector``).
        object_detector: ``auto``, ``efficientdet`` or ``none`` (people, animals, vehicles; see
            ``detectors.open_object_detector``).
        relevance: Optional text-conditioned relevance grid per proxy frame (see
            ``SubjectLocator``), ranked between people and motion.

    Returns:
        ``CropBox`` per entry of ``frames``, in the same order, integer and inside the frame.

    Raises:
        ValueError: A frame index is negative or past the end, or ``sample_fps`` is not positive.
    """
    if sample_fps <= 0:
        raise ValueError(f"sample_fps must be positive, got {sample_fps}")
    requested = np.asarray(list(frames), dtype=np.int64)
    if requested.size == 0:
        return []
    if requested.min() < 0 or requested.max() >= info.n_frames:
        raise ValueError(
            f"frame indices must lie in 0..{info.n_frames - 1}, got "
            f"{int(requested.min())}..{int(requested.max())}"
        )
    src = (info.width_px, info.height_px)
    win = fixed_window_size(info.width_px, info.height_px, ratio_wh)
    uniq = np.unique(requested)
    runs = [uniq[r] for r in runs_of(uniq, cuts)]
    step = max(1, int(round(info.fps / sample_fps)))
    samples = [sample_run(r, step) for r in runs]
    run_start = {int(s[0]) for s in samples}
    wanted = np.concatenate(samples)

    measured: dict[int, tuple[float, float, float]] = {}
    # A window that can move by at most ~1 % of the frame is not worth analysing: centre it.
    slack = max(src[0] - win[0], src[1] - win[1]) / max(src)
    if slack > MIN_SLACK_FRAC:
        locator = SubjectLocator(
            src, win, open_face_detector(face_detector), open_object_detector(object_detector),
            relevance,
        )
        sink = _LocatorSink(locator, wanted, run_start)
        log.debug(
            "grounding %s: %d frames in %d runs, %d samples at proxy %dx%d",
            info.video_id,
            uniq.size,
            len(runs),
            wanted.size,
            *proxy_size(info, sink.short_side_px),
        )
        decode_proxy(info, [sink], reader)
        measured = sink.finish()

    boxes: dict[int, CropBox] = {}
    for run, picked in zip(runs, samples, strict=True):
        got = [i for i in picked.tolist() if i in measured]
        centres = np.full((run.size, 2), np.nan)
        conf = np.zeros(run.size)
        if got:
            t = np.asarray(got, dtype=np.float64)
            m = np.asarray([measured[i] for i in got])
            ok = m[:, 2] > 0
            if ok.any():
                centres[:, 0] = np.interp(run, t[ok], m[ok, 0])
                centres[:, 1] = np.interp(run, t[ok], m[ok, 1])
            conf = np.interp(run, t, m[:, 2])
        valid = np.isfinite(centres[:, 0])
        local_cuts = np.flatnonzero(np.isin(run, np.asarray(cuts, dtype=np.int64)))
        path = smooth_camera_path(
            centres, valid, local_cuts.tolist(), src, win, weights=np.maximum(conf, 0.05)
        )
        for f, (x, y) in zip(run.tolist(), place_windows(path, win, src).tolist(), strict=True):
            boxes[f] = CropBox(frame=f, x_px=x, y_px=y, w_px=win[0], h_px=win[1])
    return [boxes[int(f)] for f in requested]
