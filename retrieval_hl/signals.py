"""Per-slice measurements of "something happens here", taken without any query.

``measure_signals`` decodes the video's proxy frames once, in chunks (memory stays flat however
long the video is), and the audio track once, streamed; it keeps one small number per sampled
frame or audio hop and reduces them to one value per slice. Every signal is a real measurement in
its own unit; ``retrieval_hl.highlightness`` turns them into one score.

| signal | unit | how |
|---|---|---|
| ``motion`` | grey levels (0-255) | mean absolute frame-to-frame difference on a ~128 px grey proxy, |
|  |  | after undoing the global (camera) motion: a similarity transform fitted with RANSAC to |
|  |  | sparse Lucas-Kanade flow; pairs that straddle a shot cut are not counted |
| ``audio_loudness`` | dBFS | RMS of 16 kHz mono audio per slice, floored at ``LOUDNESS_FLOOR_DB``; |
|  |  | 0 everywhere when the video has no audio |
| ``audio_onset`` | log-magnitude flux | peak spectral-flux onset strength in the slice |
| ``shot_density`` | cuts per second | cuts within ``density_window_s`` centred on the slice |
| ``faces`` | fraction 0-1 | sampled frames with a frontal face (0 when no face detector is available) |
| ``sharpness`` | grey levels squared | median variance of the Laplacian on a ~240 px grey proxy |
| ``exposure`` | penalty 0-1 | higher is worse: the larger of the clipped-pixel fraction and the |
|  |  | distance of the mean luma from the comfortable middle range |

Face detection uses OpenCV's Haar frontal-face cascade when the installed OpenCV still has
``CascadeClassifier`` (OpenCV 4; OpenCV 5 dropped it), else YuNet (``cv2.FaceDetectorYN``) when
given a model file, else none: the ``faces`` signal is then all zeros, which the fusion ignores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from indexer.models import Slice, VideoInfo

log = logging.getLogger(__name__)

SAMPLE_FPS = 4.0
ANALYSIS_SHORT_SIDE_PX = 240
MOTION_SHORT_SIDE_PX = 128
FACE_FPS = 2.0
CHUNK_FRAMES = 32
AUDIO_RATE_HZ = 16_000
AUDIO_FFT = 512
AUDIO_HOP = 256
AUDIO_BLOCK_S = 8.0
LOUDNESS_FLOOR_DB = -70.0
ONSET_GAIN = 100.0
DENSITY_WINDOW_S = 6.0
CLIP_LOW, CLIP_HIGH = 5, 250


@dataclass(frozen=True)
class SliceSignals:
    """One value per slice for every signal; ``motion[i]`` belongs to the i-th slice measured.

    Units are in the module docstring. ``exposure`` is a penalty: higher means worse exposed.
    NaN means "not measured" and counts as the video's typical value when fused.
    """

    motion: np.ndarray
    audio_loudness: np.ndarray
    audio_onset: np.ndarray
    shot_density: np.ndarray
    faces: np.ndarray
    sharpness: np.ndarray
    exposure: np.ndarray

    names: ClassVar[tuple[str, ...]] = (
        "motion", "audio_loudness", "audio_onset", "shot_density", "faces", "sharpness", "exposure",
    )

    def __post_init__(self) -> None:
        n = None
        for f in fields(self):
            arr = np.asarray(getattr(self, f.name), dtype=np.float64)
            if arr.ndim != 1:
                raise ValueError(f"signal {f.name!r} must be 1-D, got shape {arr.shape}")
            if n is not None and len(arr) != n:
                raise ValueError(f"signal {f.name!r} has {len(arr)} values, expected {n}")
            n = len(arr)
            arr.setflags(write=False)
            object.__setattr__(self, f.name, arr)

    def __len__(self) -> int:
        return len(self.motion)

    @classmethod
    def zeros(cls, n: int) -> SliceSignals:
        """All signals zero for ``n`` slices (a base for synthetic inputs)."""
        return cls(**{name: np.zeros(n) for name in cls.names})

    @classmethod
    def from_dict(cls, data: dict[str, Sequence[float]]) -> SliceSignals:
        """Inverse of ``to_dict``; missing signals are zeros, unknown names raise ``ValueError``."""
        unknown = set(data) - set(cls.names)
        if unknown:
            raise ValueError(f"unknown signals {sorted(unknown)}; known: {', '.join(cls.names)}")
        n = len(next(iter(data.values()))) if data else 0
        return cls(**{name: np.asarray(data.get(name, np.zeros(n)), float) for name in cls.names})

    def to_dict(self) -> dict[str, list[float | None]]:
        """Signal name -> per-slice values as JSON-ready floats (NaN becomes ``None``)."""
        return {
            name: [None if not np.isfinite(v) else float(v) for v in getattr(self, name)]
            for name in self.names
        }


# --------------------------------------------------------------------------- frame measures


def _grey_small(grey: np.ndarray, short_side: int) -> np.ndarray:
    import cv2

    h, w = grey.shape
    scale = min(1.0, short_side / min(h, w))
    if scale < 1.0:
        grey = cv2.resize(grey, (max(2, round(w * scale)), max(2, round(h * scale))),
                          interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(grey, (3, 3), 0)


def _global_transform(prev: np.ndarray, cur: np.ndarray) -> np.ndarray | None:
    """Similarity transform prev -> cur explaining the camera motion, or None (no camera motion).

    A transform is accepted only if RANSAC finds it for most tracked points and those points
    span a good part of the frame: a moving subject in front of a flat background has tracked
    corners too, but they are clustered, and aligning to them would erase the very motion we
    want to measure.
    """
    import cv2

    h, w = prev.shape
    pts = cv2.goodFeaturesToTrack(prev, maxCorners=150, qualityLevel=0.01,
                                  minDistance=max(3, min(h, w) // 16), blockSize=5)
    if pts is None or len(pts) < 8:
        return None
    nxt, status, _ = cv2.calcOpticalFlowPyrLK(prev, cur, pts, None, winSize=(15, 15), maxLevel=3)
    ok = status.ravel() == 1
    if ok.sum() < 8:
        return None
    p0, p1 = pts[ok].reshape(-1, 2), nxt[ok].reshape(-1, 2)
    m, inliers = cv2.estimateAffinePartial2D(p0, p1, method=cv2.RANSAC, ransacReprojThreshold=1.0,
                                             maxIters=500, confidence=0.99)
    if m is None or inliers is None:
        return None
    inl = inliers.ravel().astype(bool)
    if inl.sum() < 8 or inl.mean() < 0.5:
        return None
    span = np.ptp(p0[inl, 0]) / w * np.ptp(p0[inl, 1]) / h
    if span < 0.2:
        return None
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    if abs(m[0, 2]) < 0.3 and abs(m[1, 2]) < 0.3 and abs(scale - 1) < 0.005 and abs(m[1, 0]) < 0.005:
        return None
    return m


def residual_motion(prev: np.ndarray, cur: np.ndarray) -> float:
    """Mean absolute grey difference between ``cur`` and ``prev`` after undoing camera motion.

    Args:
        prev: Earlier grey frame, uint8 (h, w), already small and lightly blurred.
        cur: Later grey frame, same size.

    Returns:
        The mean residual in grey levels over the pixels both frames see.
    """
    import cv2

    m = _global_transform(prev, cur)
    if m is None:
        return float(cv2.absdiff(prev, cur).mean())
    h, w = prev.shape
    warped = cv2.warpAffine(prev, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    seen = cv2.warpAffine(np.full_like(prev, 255), m, (w, h), flags=cv2.INTER_NEAREST,
                          borderValue=0)
    seen = cv2.erode(seen, np.ones((3, 3), np.uint8)) > 0
    if seen.mean() < 0.3:
        return float(cv2.absdiff(prev, cur).mean())
    return float(cv2.absdiff(warped, cur)[seen].mean())


def exposure_penalty(grey: np.ndarray) -> float:
    """Exposure penalty of one grey frame in 0-1; 0 is well exposed.

    The larger of: the fraction of clipped pixels (at most ``CLIP_LOW`` or at least
    ``CLIP_HIGH``) and how far the mean luma lies outside the middle range 64-192 (1 at 0 or 255).
    """
    clipped = float(np.mean((grey <= CLIP_LOW) | (grey >= CLIP_HIGH)))
    offset = max(0.0, abs(float(grey.mean()) - 128.0) - 64.0) / 64.0
    return min(1.0, max(clipped, offset))


def sharpness_of(grey: np.ndarray) -> float:
    """Variance of the Laplacian of a grey frame: low means blurry (or flat)."""
    import cv2

    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def _open_face_detector(face_model: str | None) -> Callable[[np.ndarray], bool] | None:
    """A callable grey frame -> "has a face", or None when this OpenCV offers no detector."""
    import cv2

    cascade_cls = getattr(cv2, "CascadeClassifier", None)
    data = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if cascade_cls is not None and data and face_model is None:
        cascade = cascade_cls(data + "haarcascade_frontalface_default.xml")
        if not cascade.empty():
            def haar(grey: np.ndarray) -> bool:
                side = max(20, min(grey.shape) // 10)
                found = cascade.detectMultiScale(cv2.equalizeHist(grey), scaleFactor=1.15,
                                                 minNeighbors=5, minSize=(side, side))
                return len(found) > 0

            log.debug("faces: OpenCV Haar frontal-face cascade")
            return haar
    if face_model is not None and hasattr(cv2, "FaceDetectorYN"):
        yunet = cv2.FaceDetectorYN.create(face_model, "", (320, 320), 0.7)

        def yn(grey: np.ndarray) -> bool:
            h, w = grey.shape
            yunet.setInputSize((w, h))
            _, found = yunet.detect(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
            return found is not None and len(found) > 0

        log.debug("faces: YuNet from %s", face_model)
        return yn
    log.warning("no face detector in this OpenCV (%s has no CascadeClassifier) and no YuNet "
                "model given: the faces signal is off", cv2.__version__)
    return None


# --------------------------------------------------------------------------- per-slice reduction


def _reduce(slices_bounds: tuple[np.ndarray, np.ndarray], idx: np.ndarray, values: np.ndarray,
            how: Callable[[np.ndarray], float], fill_nearest: bool) -> np.ndarray:
    """One value per slice from per-frame ``values`` at frames ``idx`` (NaN values ignored)."""
    starts, ends = slices_bounds
    out = np.full(len(starts), np.nan)
    ok = np.isfinite(values)
    idx, values = idx[ok], values[ok]
    if len(idx) == 0:
        return out
    lo = np.searchsorted(idx, starts, side="left")
    hi = np.searchsorted(idx, ends, side="left")
    for i in range(len(starts)):
        if hi[i] > lo[i]:
            out[i] = how(values[lo[i]:hi[i]])
        elif fill_nearest:
            mid = (starts[i] + ends[i]) / 2
            out[i] = values[int(np.argmin(np.abs(idx - mid)))]
    return out


def _straddles_cut(prev_idx: np.ndarray, cur_idx: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """True where a cut c satisfies prev < c <= cur."""
    if len(cuts) == 0:
        return np.zeros(len(cur_idx), dtype=bool)
    return np.searchsorted(cuts, cur_idx, side="right") > np.searchsorted(cuts, prev_idx, "right")


def shot_density(info: VideoInfo, slices: Sequence[Slice], cuts: Sequence[int],
                 window_s: float = DENSITY_WINDOW_S) -> np.ndarray:
    """Cuts per second within ``window_s`` centred on each slice (clipped to the video). Pure.

    Args:
        info: The video.
        slices: Its slices.
        cuts: Frame indices where a new shot starts.
        window_s: Length of the counting window in seconds.

    Returns:
        One density per slice, in cuts per second.
    """
    cut_s = np.sort(np.array([info.time_of(c) for c in cuts], dtype=np.float64))
    mid = np.array([(s.start_s + s.end_s) / 2 for s in slices], dtype=np.float64)
    lo = np.clip(mid - window_s / 2, 0.0, info.duration_s)
    hi = np.clip(mid + window_s / 2, 0.0, info.duration_s)
    count = np.searchsorted(cut_s, hi, side="left") - np.searchsorted(cut_s, lo, side="left")
    return count / np.maximum(hi - lo, 1e-6)


# --------------------------------------------------------------------------- audio


class _AudioBins:
    """Streams 16 kHz mono samples into per-slice power sums and onset peaks."""

    def __init__(self, starts_s: np.ndarray, ends_s: np.ndarray) -> None:
        self.starts_s, self.ends_s = starts_s, ends_s
        n = len(starts_s)
        self.power = np.zeros(n)
        self.count = np.zeros(n)
        self.onset = np.zeros(n)
        self._carry = np.zeros(0, dtype=np.float32)
        self._carry_start = 0  # sample index of _carry[0]
        self._prev_spec: np.ndarray | None = None
        self._window = np.hanning(AUDIO_FFT).astype(np.float32)
        self._norm = float(self._window.sum() / 2)

    def feed(self, samples: np.ndarray, offset_s: float = 0.0) -> None:
        buf = np.concatenate([self._carry, samples.astype(np.float32, copy=False)])
        n = (len(buf) - AUDIO_FFT) // AUDIO_HOP + 1
        if n <= 0:
            self._carry = buf
            return
        frames = np.lib.stride_tricks.sliding_window_view(buf, AUDIO_FFT)[::AUDIO_HOP][:n]
        power = np.mean(np.square(frames, dtype=np.float64), axis=1)
        spec = np.log1p(ONSET_GAIN * np.abs(np.fft.rfft(frames * self._window, axis=1)) / self._norm)
        prev = spec[:1] if self._prev_spec is None else self._prev_spec[None, :]
        flux = np.maximum(np.diff(np.concatenate([prev, spec]), axis=0), 0.0).mean(axis=1)
        self._prev_spec = spec[-1]
        centre_s = offset_s + (self._carry_start + np.arange(n) * AUDIO_HOP + AUDIO_FFT / 2) / (
            AUDIO_RATE_HZ)
        k = np.searchsorted(self.starts_s, centre_s, side="right") - 1
        ok = (k >= 0) & (centre_s < self.ends_s[np.clip(k, 0, None)])
        np.add.at(self.power, k[ok], power[ok])
        np.add.at(self.count, k[ok], 1)
        np.maximum.at(self.onset, k[ok], flux[ok])
        used = n * AUDIO_HOP
        self._carry = buf[used:]
        self._carry_start += used

    def loudness_db(self) -> np.ndarray:
        mean = np.where(self.count > 0, self.power / np.maximum(self.count, 1), 0.0)
        db = 10.0 * np.log10(np.maximum(mean, 1e-12))
        return np.maximum(db, LOUDNESS_FLOOR_DB)


def measure_audio(info: VideoInfo, slices: Sequence[Slice]) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice RMS loudness (dBFS) and peak onset strength from the audio track, streamed.

    The track is decoded with PyAV and resampled to 16 kHz mono; samples are processed in blocks
    of ``AUDIO_BLOCK_S`` seconds and only per-slice sums are kept. A video without audio, or
    whose audio cannot be decoded, gives zeros for both.

    Args:
        info: The video.
        slices: Its slices, in time order.

    Returns:
        ``(loudness_db, onset)``, one value per slice each.
    """
    zeros = np.zeros(len(slices))
    if not info.has_audio or not slices:
        return zeros, zeros.copy()
    import av

    starts = np.array([s.start_s for s in slices], dtype=np.float64)
    ends = np.array([s.end_s for s in slices], dtype=np.float64)
    bins = _AudioBins(starts, ends)
    block: list[np.ndarray] = []
    held = 0
    try:
        container = av.open(info.path)
    except av.error.FFmpegError as exc:
        log.warning("cannot open the audio of %s: %s; audio signals off", info.path, exc)
        return zeros, zeros.copy()
    with container:
        if not container.streams.audio:
            return zeros, zeros.copy()
        astream = container.streams.audio[0]
        offset_s = _stream_offset_s(container, astream)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE_HZ)
        decoded = False
        try:
            for frame in container.decode(astream):
                for out in resampler.resample(frame):
                    block.append(out.to_ndarray().reshape(-1))
                    held += block[-1].size
                    decoded = True
                if held >= AUDIO_BLOCK_S * AUDIO_RATE_HZ:
                    bins.feed(np.concatenate(block), offset_s)
                    block, held = [], 0
            for out in resampler.resample(None):
                block.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            log.warning("audio decoding stopped early in %s: %s", info.path, exc)
        if block:
            bins.feed(np.concatenate(block), offset_s)
    if not decoded:
        log.warning("no audio could be decoded from %s; audio signals off", info.path)
        return zeros, zeros.copy()
    return bins.loudness_db(), bins.onset


def _stream_offset_s(container, astream) -> float:  # noqa: ANN001 (PyAV objects)
    """How much later the audio starts than the video, in seconds (0 when unknown)."""
    try:
        vstream = container.streams.video[0]
        a0 = float(astream.start_time * astream.time_base) if astream.start_time else 0.0
        v0 = float(vstream.start_time * vstream.time_base) if vstream.start_time else 0.0
        return a0 - v0
    except (IndexError, TypeError):
        return 0.0


# --------------------------------------------------------------------------- the measurement


def measure_signals(
    info: VideoInfo,
    slices: Sequence[Slice],
    cuts: Sequence[int] | None = (),
    reader: str = "auto",
    sample_fps: float = SAMPLE_FPS,
    *,
    face_model: str | None = None,
    density_window_s: float = DENSITY_WINDOW_S,
) -> SliceSignals:
    """Measure every signal for every slice of ``info``, decoding the video once.

    Frames are sampled at ``sample_fps`` and decoded as a ~240 px proxy in chunks; per frame only
    a handful of numbers are kept. Motion is measured between consecutive sampled frames and
    counted in the slice of the later frame; a pair straddling a cut is skipped. A slice with no
    sampled frame takes its nearest frame's values.

    Args:
        info: The probed video.
        slices: Its slices (from ``make_slices``), in time order.
        cuts: Frame indices where a new shot starts; ``None`` detects them in the same decoding
            pass (PySceneDetect's content detector).
        reader: Video reader back-end: ``auto``, ``decord`` or ``pyav``.
        sample_fps: Sampled frames per second of video.
        face_model: Optional YuNet ONNX file for ``cv2.FaceDetectorYN``, used where OpenCV has
            no Haar cascade.
        density_window_s: Window of the shot-density count, in seconds.

    Returns:
        One value per slice for each signal.

    Raises:
        VideoOpenError: No frame of the video could be decoded.
        ConfigError: ``sample_fps`` is not positive or ``reader`` is unknown.
    """
    import cv2

    from indexer.errors import VideoOpenError
    from indexer.readers import open_reader, proxy_size
    from indexer.slicing import sample_frames

    if not slices:
        return SliceSignals.zeros(0)
    t0 = time.perf_counter()
    wanted = sample_frames(info, sample_fps)
    size = proxy_size(info, ANALYSIS_SHORT_SIDE_PX)
    face_every = max(1, int(round(sample_fps / FACE_FPS)))
    detect_face = _open_face_detector(face_model)
    shots = None
    if cuts is None:
        from indexer.shots import ShotDetector

        shots = ShotDetector(info.fps, min_shot_s=max(1.0, 2.0 / sample_fps))

    idx_parts: list[np.ndarray] = []
    motion, sharp, expo, face = [], [], [], []
    prev_small: np.ndarray | None = None
    k = 0
    for chunk in open_reader(info, reader).iter_chunks(info, wanted, size, CHUNK_FRAMES):
        if shots is not None:
            shots.feed(chunk.indices, chunk.frames)
        idx_parts.append(np.asarray(chunk.indices, dtype=np.int64))
        for rgb in chunk.frames:
            grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            small = _grey_small(grey, MOTION_SHORT_SIDE_PX)
            motion.append(np.nan if prev_small is None else residual_motion(prev_small, small))
            prev_small = small
            sharp.append(sharpness_of(grey))
            expo.append(exposure_penalty(grey))
            if detect_face is not None and k % face_every == 0:
                face.append(float(detect_face(grey)))
            else:
                face.append(np.nan)
            k += 1
    if not idx_parts:
        raise VideoOpenError(f"no frame could be decoded from {info.path!r}")
    idx = np.concatenate(idx_parts)
    cut_arr = np.asarray(sorted(shots.cuts() if shots is not None else cuts), dtype=np.int64)
    motion_arr = np.asarray(motion)
    motion_arr[1:][_straddles_cut(idx[:-1], idx[1:], cut_arr)] = np.nan

    bounds = (np.array([s.start_frame for s in slices]), np.array([s.end_frame for s in slices]))
    motion_s = _reduce(bounds, idx, motion_arr, np.mean, fill_nearest=True)
    if np.isnan(motion_s).all():
        motion_s[:] = 0.0
    faces_s = (_reduce(bounds, idx, np.asarray(face), np.mean, fill_nearest=True)
               if detect_face is not None else np.zeros(len(slices)))
    loud, onset = measure_audio(info, slices)
    sig = SliceSignals(
        motion=motion_s,
        audio_loudness=loud,
        audio_onset=onset,
        shot_density=shot_density(info, slices, cut_arr.tolist(), density_window_s),
        faces=faces_s,
        sharpness=_reduce(bounds, idx, np.asarray(sharp), np.median, fill_nearest=True),
        exposure=_reduce(bounds, idx, np.asarray(expo), np.mean, fill_nearest=True),
    )
    log.info("%s: signals for %d slices from %d frames (%d cuts, audio %s) in %.1f s",
             info.video_id, len(slices), len(idx), len(cut_arr),
             "on" if info.has_audio else "off", time.perf_counter() - t0)
    return sig
