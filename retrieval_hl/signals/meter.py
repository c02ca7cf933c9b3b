"""Per-slice measurements of "something happens here", taken without any query.

``measure_signals_and_cuts`` (or a ``SignalMeter`` riding along the indexer's pass) decodes the
video's proxy frames once, in chunks (memory stays flat however long the video is), and the audio
track once, streamed; it keeps one small number per sampled
frame or audio hop and reduces them to one value per slice. Every signal is a real measurement in
its own unit; ``retrieval_hl.select.events`` turns them into one score.

Signals, each with its unit:

- ``motion`` (grey levels, 0-255): mean absolute frame-to-frame difference on a ~128 px grey
  proxy after undoing the global (camera) motion, see ``residual_motion`` and
  ``retrieval_hl.vision.camera_motion``; frame pairs that
  straddle a shot cut are not counted.
- ``audio_loudness`` (dBFS): mean over the slice of the short-term (32 ms) RMS level of the
  16 kHz mono audio, each floored at ``LOUDNESS_FLOOR_DB``: how loud the slice is for most of
  its length, not how loud its loudest instant is (that is ``audio_onset``). 0 everywhere when
  the video has no audio.
- ``audio_onset`` (mean log-magnitude flux): peak spectral-flux onset strength in the slice.
- ``voice_loudness_db`` (dBFS): the level of the slice's *voiced* audio only: the power mean
  (an Leq) over its 32 ms hops that are periodic at a voice's pitch (``voiced_hops``: 80-400 Hz,
  normalised autocorrelation at least ``VOICING_MIN``) and above ``VOICE_FLOOR_DB``; NaN where
  no hop is voiced, all NaN without audio. Noise, hiss, wind and most impacts are not periodic,
  so this is how loud a voice (or another pitched sound) is, not how loud the slice is. Evidence
  for ``speech_emphasis_db``; not fused.
- ``shot_density`` (cuts per second): cuts within ``density_window_s`` centred on the slice.
- ``faces`` (fraction 0-1): sampled frames with a face; 0 without a face detector.
- ``people`` (fraction 0-1): sampled frames with a person; 0 without an object detector.
- ``animals``, ``vehicles`` (fraction 0-1): the same for an animal or a vehicle (evidence for
  labels; not fused).
- ``subject_size`` (fraction 0-1): the largest person, animal or vehicle box, as the larger of
  its height and width over the frame's, averaged over the sampled frames (0 where none): how
  close the subject is (evidence for labels; not fused).
- ``camera_motion`` (grey levels): how much of the raw frame-to-frame difference the camera's own
  motion explains (raw minus residual difference): a pan, a follow or a shake.
- ``speech_rate`` (words per second): words of the video's transcript whose middle falls in the
  slice, per second (``retrieval_hl.speech.rate``): speech presence and pace; 0 where nobody
  speaks, and all zeros (ignored by the fusion) without a transcript.
- ``speech_emphasis_db`` (dB): how much louder the voice is in a slice where someone speaks than
  the speaker's own ordinary level in this video (``retrieval_hl.speech.rate.emphasis_db``):
  raised voice, shouting, excitement; 0 where nobody speaks or the voice is at or under its
  usual level, all zeros without a transcript.
- ``sharpness`` (grey levels squared): median variance of the Laplacian, ~240 px grey proxy.
- ``exposure`` (penalty 0-1, higher is worse): the larger of the clipped-pixel fraction and the
  distance of the mean luma from the comfortable middle range.
- ``looks`` (CIELAB levels, OpenCV's 8-bit scale): not a signal but what each slice looks like, a
  ``LOOK_SIZE`` thumbnail in Lab averaged over the slice's sampled frames (``look_of``), so that
  ``retrieval_hl.select.events`` can ask whether the video shows something like it elsewhere.

Faces and people come from the detectors of ``retrieval_hl.vision.detectors`` (RetinaFace and COCO
EfficientDet-Lite0), run on ``DETECT_FPS`` frames a second; a frame that barely differs from the
last one they ran on in its shot reuses that one's detections (``DETECT_REUSE_CHANGE``) unless
a score there sat near a detector's threshold (``DETECT_REUSE_MARGIN``). Faces are looked for
only where the object detector is not stably sure there is no person (``PresenceDetector``). Without
a detector its signal is all zeros, which the fusion ignores. A face counts when its box's short
side is at least ``MIN_FACE_FRAC`` of the frame's, a person when its box is at least
``MIN_PERSON_FRAC`` of the frame's height: a face in the crowd or a speck of a figure is not
"people in the picture".
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from indexer.models import Slice, VideoInfo

if TYPE_CHECKING:
    from retrieval_hl.vision.detectors import Detections

log = logging.getLogger(__name__)

SAMPLE_FPS = 4.0
ANALYSIS_SHORT_SIDE_PX = 240
DETECT_FPS = 1.0
AUDIO_RATE_HZ = 16_000
AUDIO_FFT = 512
AUDIO_HOP = 256
AUDIO_BLOCK_S = 8.0
LOUDNESS_FLOOR_DB = -70.0
# Voicing (see ``voiced_hops``): a hop is voiced when its normalised autocorrelation peaks at
# VOICING_MIN or more at a lag of a voice's pitch (80-400 Hz) and it is louder than
# VOICE_FLOOR_DB. White noise peaks at 0.25 (99th percentile) with a Hann window, a buzz under
# 30 % noise at over 0.9.
VOICING_MIN = 0.5
VOICE_FLOOR_DB = -60.0
PITCH_HZ = (80.0, 400.0)
ONSET_GAIN = 100.0
DENSITY_WINDOW_S = 6.0
CLIP_LOW, CLIP_HIGH = 5, 250
MIN_FACE_FRAC = 1 / 20
MIN_PERSON_FRAC = 1 / 6
# A detected frame whose ``indexer.pipeline.frame_change`` (grey levels: the largest mean change
# of a 4x4 grid cell of a 32 px grey thumbnail) from the last frame the detectors really ran on,
# in the same shot, is under this reuses that frame's detections. 1 grey level is the indexer's
# own bound for a near-duplicate (``EmbedPlan.duplicate_change``), and it is under what the
# smallest subject that counts does: a face of ``MIN_FACE_FRAC`` of the short side covers about
# 2 % of a cell of a 16:9 frame (1.6 x 0.9 of its 8 x 8 thumbnail pixels), so coming or going
# at 45 grey levels of contrast it changes that cell by 1; a person of ``MIN_PERSON_FRAC`` of the
# height spans most of a cell's height. A still camera on a still scene stays under it (each
# thumbnail pixel averages the noise of some 100 proxy pixels). Only a stable answer is reused:
# see DETECT_REUSE_MARGIN.
DETECT_REUSE_CHANGE = 1.0
# A frame whose best score for some kind (``Detections.best_scores``) lies within this of that
# detector's threshold, above or below, is not reused from: a near-identical next frame can land
# on the other side, so it runs the detectors again. Measured on the meter's frames of real
# footage (../shared/data clips, filler, moments, davis16 and the 2.5-min bench video): over the
# 1913 pairs of sampled frames up to 10 s apart that differ by under DETECT_REUSE_CHANGE, a best
# score within 0.2 of its threshold moved by 0.02 (median), 0.08 (99th percentile) and 0.15 at
# most for people; 0.14 and 0.19 for faces. 0.12 is the smallest margin (steps of 0.02) from
# outside which none of those pairs crossed a threshold (at 0.10 one did: people 0.41 -> 0.28).
DETECT_REUSE_MARGIN = 0.12
# Signals that may be left out (then zeros).
EVIDENCE = ("animals", "vehicles", "subject_size", "camera_motion", "voice_loudness_db",
            "speech_rate", "speech_emphasis_db")
LOOK_SIZE = (16, 9)  # long x short side of the look thumbnail, in cells


@dataclass(frozen=True)
class SliceSignals:
    """One value per slice for every signal; ``motion[i]`` belongs to the i-th slice measured.

    Units are in the module docstring. ``exposure`` is a penalty: higher means worse exposed.
    NaN means "not measured" and counts as the video's typical value when fused. The evidence
    signals (``EVIDENCE``) may be left out: they are then zeros.
    """

    motion: np.ndarray
    audio_loudness: np.ndarray
    audio_onset: np.ndarray
    shot_density: np.ndarray
    faces: np.ndarray
    people: np.ndarray
    sharpness: np.ndarray
    exposure: np.ndarray
    animals: np.ndarray | None = None
    vehicles: np.ndarray | None = None
    subject_size: np.ndarray | None = None
    camera_motion: np.ndarray | None = None
    voice_loudness_db: np.ndarray | None = None
    speech_rate: np.ndarray | None = None
    speech_emphasis_db: np.ndarray | None = None
    looks: np.ndarray | None = None
    """(n, d) Lab thumbnails, one row per slice (``look_of``); ``None`` when not measured."""

    names: ClassVar[tuple[str, ...]] = (
        "motion",
        "audio_loudness",
        "audio_onset",
        "shot_density",
        "faces",
        "people",
        "sharpness",
        "exposure",
        *EVIDENCE,
    )

    def __post_init__(self) -> None:
        n = None
        for f in fields(self):
            if f.name == "looks":
                continue
            value = getattr(self, f.name)
            if value is None:  # an evidence signal left out
                value = np.zeros(len(self.motion))
            arr = np.array(value, dtype=np.float64)  # a copy: frozen for real
            if arr.ndim != 1:
                raise ValueError(f"signal {f.name!r} must be 1-D, got shape {arr.shape}")
            if n is not None and len(arr) != n:
                raise ValueError(f"signal {f.name!r} has {len(arr)} values, expected {n}")
            n = len(arr)
            arr.setflags(write=False)
            object.__setattr__(self, f.name, arr)
        if self.looks is not None:
            looks = np.array(self.looks, dtype=np.float32)
            if looks.ndim != 2 or len(looks) != n:
                raise ValueError(f"looks must be ({n}, d), got shape {looks.shape}")
            looks.setflags(write=False)
            object.__setattr__(self, "looks", looks)

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


GRID = 4
BLOCK_GAIN = 0.8
BLOCK_MAJORITY = 0.5


def _block_residual(a: np.ndarray, b: np.ndarray, seen: np.ndarray | None) -> np.ndarray:
    """Mean absolute difference of ``a`` and ``b`` per cell of a ``GRID`` x ``GRID`` grid."""
    import cv2

    diff = cv2.absdiff(a, b).astype(np.float32)
    mask = np.ones_like(diff) if seen is None else seen.astype(np.float32)
    num = cv2.resize(diff * mask, (GRID, GRID), interpolation=cv2.INTER_AREA)
    den = cv2.resize(mask, (GRID, GRID), interpolation=cv2.INTER_AREA)
    return np.where(den > 0.3, num / np.maximum(den, 1e-6), np.nan)


def residual_motion(prev: np.ndarray, cur: np.ndarray) -> float:
    """Mean absolute grey difference between ``cur`` and ``prev`` after undoing camera motion.

    Camera motion is a hypothesis (``vision.camera_motion.tracked_camera_motions``: a RANSAC
    similarity on tracked corners, or the phase-correlation shift) accepted only when it
    explains the *whole* frame: aligning must cut the difference by at least a fifth in most
    cells of a 4x4 grid. A subject moving over a still or flat
    background improves only the cells it occupies, so its motion is never aligned away; a pan
    improves almost all of them.

    Args:
        prev: Earlier grey frame, uint8 (h, w), already small and lightly blurred.
        cur: Later grey frame, same size.

    Returns:
        The mean residual in grey levels over the pixels both frames see.
    """
    import cv2

    from retrieval_hl.vision.camera_motion import tracked_camera_motions

    base = _block_residual(prev, cur, None)
    best = float(np.nanmean(base))
    if best < 1.0:
        return best
    for camera in tracked_camera_motions(prev, cur):
        warped, seen = camera.align(prev)
        if seen.mean() < 0.3:
            continue
        cells = _block_residual(warped, cur, seen)
        both = np.isfinite(cells)
        better = (cells[both] < BLOCK_GAIN * base[both]).sum()
        if better >= BLOCK_MAJORITY * GRID * GRID:
            best = min(best, float(cv2.absdiff(warped, cur)[seen].mean()))
    return best


def exposure_penalty(grey: np.ndarray) -> float:
    """Exposure penalty of one grey frame in 0-1; 0 is well exposed.

    The larger of: the fraction of clipped pixels (at most ``CLIP_LOW`` or at least
    ``CLIP_HIGH``) and how far the mean luma lies outside the middle range 64-192 (1 at 0 or 255).
    """
    clipped = float(np.mean((grey <= CLIP_LOW) | (grey >= CLIP_HIGH)))
    offset = max(0.0, abs(float(grey.mean()) - 128.0) - 64.0) / 64.0
    return min(1.0, max(clipped, offset))


def look_of(rgb: np.ndarray) -> np.ndarray:
    """What a frame looks like, coarsely: its ``LOOK_SIZE`` area-averaged thumbnail (long side
    along the frame's long side) in CIELAB, flattened to float32. Lab, so that a difference of
    one level means about the same visible change in any colour.
    """
    import cv2

    long_px, short_px = LOOK_SIZE
    size = (long_px, short_px) if rgb.shape[1] >= rgb.shape[0] else (short_px, long_px)
    thumb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(thumb, cv2.COLOR_RGB2LAB).astype(np.float32).ravel()


def sharpness_of(grey: np.ndarray) -> float:
    """Variance of the Laplacian of a grey frame: low means blurry (or flat)."""
    import cv2

    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


class PresenceDetector:
    """Frame -> presence of faces, people, animals, vehicles and the subject's size, from
    ``retrieval_hl.vision.detectors``.
    """

    def __init__(self) -> None:
        from retrieval_hl.vision.detectors import open_face_detector, open_object_detector

        self.faces = open_face_detector("auto")
        self.objects = open_object_detector("auto")

    @property
    def active(self) -> bool:
        """At least one detector could be loaded."""
        return self.faces is not None or self.objects is not None

    def __call__(self, rgb: np.ndarray) -> tuple[tuple[float, ...], bool]:
        """The presence row: 1.0 / 0.0 for a big enough face, person, animal and vehicle, then
        the largest such subject's size (fraction of the frame, 0 if none); NaN where a
        detector is off. And whether the answer is stable: no kind's best score lies within
        ``DETECT_REUSE_MARGIN`` of its detector's threshold.

        The object detector runs first; where it is stably sure there is no person (its best
        person score at least ``DETECT_REUSE_MARGIN`` under its threshold) the face detector
        does not run and the frame has no face: a face that counts is a person's, which the
        COCO person class covers however little of the body shows.
        """
        h, w = rgb.shape[:2]
        face = person = animal = vehicle = size = np.nan
        stable = True
        may_have_person = True
        if self.objects is not None:
            found = self.objects.detect(rgb)
            stable &= _stable(found, self.objects.threshold)
            big = np.maximum(found.boxes[:, 3] / h, found.boxes[:, 2] / w)
            person, animal, vehicle = (
                float(np.any(big[found.kinds == kind] >= MIN_PERSON_FRAC))
                for kind in ("person", "animal", "vehicle")
            )
            size = float(big.max()) if len(big) else 0.0
            no_person = self.objects.threshold - DETECT_REUSE_MARGIN
            may_have_person = found.best_scores.get("person", np.inf) > no_person
        if self.faces is not None:
            face = 0.0
            if may_have_person:
                found = self.faces.detect(rgb)
                stable &= _stable(found, self.faces.threshold)
                b = found.boxes
                face = float(np.any(np.minimum(b[:, 2], b[:, 3]) >= MIN_FACE_FRAC * min(h, w)))
        return (face, person, animal, vehicle, size), stable


def _stable(found: Detections, threshold: float) -> bool:
    """No kind's best score in ``found`` lies within ``DETECT_REUSE_MARGIN`` of ``threshold``."""
    return all(abs(s - threshold) >= DETECT_REUSE_MARGIN for s in found.best_scores.values())


# --------------------------------------------------------------------------- per-slice reduction


def _reduce(
    slices_bounds: tuple[np.ndarray, np.ndarray],
    idx: np.ndarray,
    values: np.ndarray,
    how: Callable[[np.ndarray], float],
    fill_nearest: bool,
) -> np.ndarray:
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
            out[i] = how(values[lo[i] : hi[i]])
        elif fill_nearest:
            mid = (starts[i] + ends[i]) / 2
            out[i] = values[int(np.argmin(np.abs(idx - mid)))]
    return out


def _slice_looks(
    slices_bounds: tuple[np.ndarray, np.ndarray], idx: np.ndarray, looks: np.ndarray
) -> np.ndarray:
    """Mean look per slice from per-frame ``looks`` (n_frames, d) at frames ``idx``; a slice
    without a sampled frame takes its nearest frame's.
    """
    starts, ends = slices_bounds
    lo = np.searchsorted(idx, starts, side="left")
    hi = np.searchsorted(idx, ends, side="left")
    out = np.empty((len(starts), looks.shape[1]), dtype=np.float32)
    for i in range(len(starts)):
        if hi[i] > lo[i]:
            out[i] = looks[lo[i] : hi[i]].mean(axis=0)
        else:
            out[i] = looks[int(np.argmin(np.abs(idx - (starts[i] + ends[i]) / 2)))]
    return out


def _slice_motion(
    slices_bounds: tuple[np.ndarray, np.ndarray], idx: np.ndarray, pair_motion: np.ndarray
) -> np.ndarray:
    """Mean motion of the frame pairs inside each slice (``pair_motion[k]`` is frames k-1 -> k).

    Only pairs with both frames in the slice count, so a change at a slice boundary is not
    smeared into the neighbour; a slice with no such pair takes the pairs that touch it, then
    its nearest pair.
    """
    inner = pair_motion.copy()
    starts, ends = slices_bounds
    k = np.searchsorted(starts, idx, side="right") - 1
    inner[1:][k[1:] != k[:-1]] = np.nan
    out = _reduce(slices_bounds, idx, inner, np.mean, fill_nearest=False)
    missing = np.isnan(out)
    if missing.any():
        out[missing] = _reduce(
            (starts[missing], ends[missing]), idx, pair_motion, np.mean, fill_nearest=True
        )
    return out


def _straddles_cut(prev_idx: np.ndarray, cur_idx: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """True where a cut c satisfies prev < c <= cur."""
    if len(cuts) == 0:
        return np.zeros(len(cur_idx), dtype=bool)
    return np.searchsorted(cuts, cur_idx, side="right") > np.searchsorted(cuts, prev_idx, "right")


def shot_density(
    info: VideoInfo,
    slices: Sequence[Slice],
    cuts: Sequence[int],
    window_s: float = DENSITY_WINDOW_S,
) -> np.ndarray:
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


def voiced_hops(frames: np.ndarray, window: np.ndarray) -> np.ndarray:
    """True for each row of ``frames`` (hops of 16 kHz audio) that is periodic at a voice's
    pitch: its autocorrelation, normalised by its energy and unbiased by the ``window``'s own,
    reaches ``VOICING_MIN`` at a lag within ``PITCH_HZ``. Silent rows are not voiced.
    """
    n = frames.shape[1]
    lo, hi = int(AUDIO_RATE_HZ / PITCH_HZ[1]), int(AUDIO_RATE_HZ / PITCH_HZ[0]) + 1

    def acf(x: np.ndarray) -> np.ndarray:
        return np.fft.irfft(np.abs(np.fft.rfft(x, 2 * n, axis=-1)) ** 2, axis=-1)[..., :hi]

    own = acf(window)
    r = acf(frames * window)
    energy = r[:, :1]
    peak = (r[:, lo:] / np.maximum(energy, 1e-20) / (own[lo:] / own[0])).max(axis=1)
    return (energy[:, 0] > 1e-12) & (peak >= VOICING_MIN)


class _AudioBins:
    """Streams 16 kHz mono samples into per-slice level sums, voiced power and onset peaks."""

    def __init__(self, starts_s: np.ndarray, ends_s: np.ndarray) -> None:
        self.starts_s, self.ends_s = starts_s, ends_s
        n = len(starts_s)
        self.db_sum = np.zeros(n)
        self.count = np.zeros(n)
        self.voiced_power = np.zeros(n)
        self.voiced_count = np.zeros(n)
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
        db = np.maximum(10.0 * np.log10(np.maximum(power, 1e-12)), LOUDNESS_FLOOR_DB)
        mag = np.abs(np.fft.rfft(frames * self._window, axis=1)) / self._norm
        spec = np.log1p(ONSET_GAIN * mag)
        prev = spec[:1] if self._prev_spec is None else self._prev_spec[None, :]
        flux = np.maximum(np.diff(np.concatenate([prev, spec]), axis=0), 0.0).mean(axis=1)
        self._prev_spec = spec[-1]
        centre_s = offset_s + (self._carry_start + np.arange(n) * AUDIO_HOP + AUDIO_FFT / 2) / (
            AUDIO_RATE_HZ
        )
        k = np.searchsorted(self.starts_s, centre_s, side="right") - 1
        ok = (k >= 0) & (centre_s < self.ends_s[np.clip(k, 0, None)])
        np.add.at(self.db_sum, k[ok], db[ok])
        np.add.at(self.count, k[ok], 1)
        voiced = ok & (db > VOICE_FLOOR_DB) & voiced_hops(frames, self._window)
        np.add.at(self.voiced_power, k[voiced], power[voiced])
        np.add.at(self.voiced_count, k[voiced], 1)
        np.maximum.at(self.onset, k[ok], flux[ok])
        used = n * AUDIO_HOP
        self._carry = buf[used:]
        self._carry_start += used

    def loudness_db(self) -> np.ndarray:
        mean = self.db_sum / np.maximum(self.count, 1)
        return np.where(self.count > 0, mean, LOUDNESS_FLOOR_DB)

    def voice_loudness_db(self) -> np.ndarray:
        mean = self.voiced_power / np.maximum(self.voiced_count, 1)
        return np.where(self.voiced_count > 0, 10.0 * np.log10(np.maximum(mean, 1e-12)), np.nan)


def measure_audio(
    info: VideoInfo, slices: Sequence[Slice]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-slice mean short-term level (dBFS), peak onset strength and voiced level (dBFS) of
    the audio, streamed.

    The track is decoded with PyAV and resampled to 16 kHz mono; samples are processed in blocks
    of ``AUDIO_BLOCK_S`` seconds and only per-slice sums are kept. A video without audio, or
    whose audio cannot be decoded, gives zeros for the first two and NaN (no voice) for the
    third.

    Args:
        info: The video.
        slices: Its slices, in time order.

    Returns:
        ``(loudness_db, onset, voice_loudness_db)``, one value per slice each.
    """
    silent = np.zeros(len(slices)), np.zeros(len(slices)), np.full(len(slices), np.nan)
    if not info.has_audio or not slices:
        return silent
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
        return silent
    with container:
        if not container.streams.audio:
            return silent
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
        return silent
    return bins.loudness_db(), bins.onset, bins.voice_loudness_db()


def _stream_offset_s(container: Any, astream: Any) -> float:
    """How much later the audio starts than the video, in seconds (0 when unknown)."""
    try:
        vstream = container.streams.video[0]
        a0 = float(astream.start_time * astream.time_base) if astream.start_time else 0.0
        v0 = float(vstream.start_time * vstream.time_base) if vstream.start_time else 0.0
        return a0 - v0
    except (IndexError, TypeError):
        return 0.0


# --------------------------------------------------------------------------- the measurement


class SignalMeter:
    """Streaming half of ``measure_signals_and_cuts``: feed it proxy frames, then ``finish``.

    A ``FrameSink`` of ``indexer.decode.decode_proxy``: it can ride along another decoding pass
    (the indexer's), so a video is decoded once for embeddings, shots and signals; it keeps only
    the frames in ``wanted`` and a few numbers each.
    """

    short_side_px = ANALYSIS_SHORT_SIDE_PX
    exact_colour = False  # measurements, not a model's input: the cheap scaling (see decode)

    def __init__(
        self,
        info: VideoInfo,
        sample_fps: float = SAMPLE_FPS,
        *,
        detect_cuts: bool = True,
    ) -> None:
        from indexer.slicing import sample_frames

        self.info = info
        self.wanted = sample_frames(info, sample_fps)
        self._want = set(self.wanted.tolist())
        self._detect_every = max(1, int(round(sample_fps / DETECT_FPS)))
        self._presence = PresenceDetector()
        self._shots = None
        if detect_cuts:
            from indexer.shots import ShotDetector

            self._shots = ShotDetector(info.fps, min_shot_s=max(1.0, 2.0 / sample_fps))
        self._idx: list[int] = []
        self._motion: list[float] = []
        self._sharp: list[float] = []
        self._expo: list[float] = []
        self._face: list[float] = []
        self._person: list[float] = []
        self._presence_rows: list[tuple[float, ...]] = []
        self._camera: list[float] = []
        self._looks: list[np.ndarray] = []
        self._prev_small: np.ndarray | None = None
        self._cuts: list[int] = []  # found so far, when detecting them
        self._detected: tuple[int, np.ndarray, tuple[float, ...]] | None = None
        """The last frame the detectors ran on with a stable answer: its index, grey thumbnail
        and presence row (``None`` after an unstable one)."""
        self.n_detected = 0
        """Frames the detectors really ran on (the other detected frames reused a row)."""
        self._t0 = time.perf_counter()

    def feed(self, indices: np.ndarray, frames_rgb: np.ndarray) -> None:
        """Take the wanted frames among ``frames_rgb`` (source frames ``indices``, in order)."""
        import cv2

        from retrieval_hl.vision.camera_motion import small_grey

        keep = [k for k, i in enumerate(indices) if int(i) in self._want]
        if not keep:
            return
        indices, frames_rgb = np.asarray(indices)[keep], frames_rgb[keep]
        if self._shots is not None:
            self._cuts.extend(self._shots.feed(indices, frames_rgb))
        for i, rgb in zip(indices, frames_rgb, strict=True):
            grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            small = cv2.GaussianBlur(small_grey(grey)[0], (3, 3), 0)
            prev = self._prev_small
            self._motion.append(np.nan if prev is None else residual_motion(prev, small))
            self._camera.append(np.nan if prev is None else max(
                0.0, float(cv2.absdiff(prev, small).mean()) - self._motion[-1]))
            self._prev_small = small
            self._sharp.append(sharpness_of(grey))
            self._expo.append(exposure_penalty(grey))
            self._looks.append(look_of(rgb))
            k = len(self._idx)
            row = self._presence_of(int(i), rgb) if k % self._detect_every == 0 else (np.nan,) * 5
            self._face.append(row[0])
            self._person.append(row[1])
            self._presence_rows.append(row[2:])
            self._idx.append(int(i))

    def _presence_of(self, i: int, rgb: np.ndarray) -> tuple[float, ...]:
        """The presence row of frame ``i``: the detectors', or the last detected frame's when
        that one's answer was stable (``PresenceDetector``) and this one is in the same shot and
        differs from it by less than ``DETECT_REUSE_CHANGE``.
        """
        from indexer.pipeline import frame_change, grey_thumbnails

        thumb = grey_thumbnails(rgb[None])
        if self._detected is not None:
            last, last_thumb, row = self._detected
            k = bisect.bisect_right(self._cuts, i)  # cuts at or before this frame
            same_shot = k == 0 or self._cuts[k - 1] <= last
            if same_shot and frame_change(thumb, last_thumb)[0] < DETECT_REUSE_CHANGE:
                return row
        row, stable = self._presence(rgb)
        self._detected = (i, thumb, row) if stable else None
        self.n_detected += 1
        return row

    @property
    def n_fed(self) -> int:
        """Frames taken so far."""
        return len(self._idx)

    def detected_cuts(self) -> list[int]:
        """Cuts found in the frames fed so far (empty when not detecting)."""
        return self._shots.cuts() if self._shots is not None else []

    def finish(
        self,
        slices: Sequence[Slice],
        cuts: Sequence[int] | None = None,
        *,
        density_window_s: float = DENSITY_WINDOW_S,
    ) -> tuple[SliceSignals, tuple[int, ...]]:
        """Per-slice signals from what was fed; ``cuts=None`` uses the detected ones.

        Raises:
            VideoOpenError: no frame was fed.
        """
        from rhl_common.errors import VideoOpenError

        info = self.info
        if not slices:
            return SliceSignals.zeros(0), tuple(cuts or ())
        if not self._idx:
            raise VideoOpenError(f"no frame could be decoded from {info.path!r}")
        idx = np.asarray(self._idx, dtype=np.int64)
        cut_list = self.detected_cuts() if cuts is None else cuts
        cut_arr = np.asarray(sorted(cut_list), dtype=np.int64)
        motion_arr = np.asarray(self._motion)
        motion_arr[1:][_straddles_cut(idx[:-1], idx[1:], cut_arr)] = np.nan
        bounds = (np.array([x.start_frame for x in slices]),
                  np.array([x.end_frame for x in slices]))
        motion_s = _slice_motion(bounds, idx, motion_arr)
        if np.isnan(motion_s).all():
            motion_s[:] = 0.0
        faces_s, people_s = (
            _reduce(bounds, idx, np.asarray(values), np.mean, fill_nearest=True)
            if np.isfinite(values).any()
            else np.zeros(len(slices))
            for values in (self._face, self._person)
        )
        loud, onset, voice = measure_audio(info, slices)
        evidence = [
            _reduce(bounds, idx, np.asarray(values), np.mean, fill_nearest=True)
            if np.isfinite(values).any()
            else np.zeros(len(slices))
            for values in np.asarray(self._presence_rows, dtype=np.float64).reshape(-1, 3).T
        ]
        camera = np.asarray(self._camera)
        camera[1:][_straddles_cut(idx[:-1], idx[1:], cut_arr)] = np.nan
        sig = SliceSignals(
            motion=motion_s,
            audio_loudness=loud,
            audio_onset=onset,
            shot_density=shot_density(info, slices, cut_arr.tolist(), density_window_s),
            faces=faces_s,
            people=people_s,
            sharpness=_reduce(bounds, idx, np.asarray(self._sharp), np.median, fill_nearest=True),
            exposure=_reduce(bounds, idx, np.asarray(self._expo), np.mean, fill_nearest=True),
            animals=evidence[0],
            vehicles=evidence[1],
            subject_size=evidence[2],
            camera_motion=np.nan_to_num(_slice_motion(bounds, idx, camera), nan=0.0),
            voice_loudness_db=voice,
            looks=_slice_looks(bounds, idx, np.asarray(self._looks)),
        )
        log.info(
            "%s: signals for %d slices from %d frames (%d cuts, audio %s) in %.1f s",
            info.video_id, len(slices), len(idx), len(cut_arr),
            "on" if info.has_audio else "off", time.perf_counter() - self._t0,
        )
        return sig, tuple(int(c) for c in cut_arr)


def measure_signals_and_cuts(
    info: VideoInfo,
    slices: Sequence[Slice],
    cuts: Sequence[int] | None = (),
    reader: str = "auto",
    sample_fps: float = SAMPLE_FPS,
    *,
    density_window_s: float = DENSITY_WINDOW_S,
    progress: Callable[[int], None] | None = None,
) -> tuple[SliceSignals, tuple[int, ...]]:
    """Measure every signal for every slice of ``info``, decoding the video once.

    Frames are sampled at ``sample_fps`` and decoded as a ~240 px proxy in chunks; per frame only
    a handful of numbers are kept. Motion is measured between consecutive sampled frames and
    counted in the slice holding both; a pair straddling a cut is skipped. A slice with no
    sampled frame takes its nearest frame's values.

    Args:
        info: The probed video.
        slices: Its slices (from ``make_slices``), in time order.
        cuts: Frame indices where a new shot starts; ``None`` detects them in the same decoding
            pass (PySceneDetect's content detector).
        reader: Video reader back-end: ``auto``, ``decord`` or ``pyav``.
        sample_fps: Sampled frames per second of video.
        density_window_s: Window of the shot-density count, in seconds.
        progress: Called with the number of sampled frames just measured.

    Returns:
        One value per slice for each signal, and the cuts used (given or detected).

    Raises:
        VideoOpenError: No frame of the video could be decoded.
        ConfigError: ``sample_fps`` is not positive or ``reader`` is unknown.
    """
    from indexer.decode import decode_proxy

    if not slices:
        return SliceSignals.zeros(0), tuple(cuts or ())
    meter = SignalMeter(info, sample_fps, detect_cuts=cuts is None)
    decode_proxy(info, [meter], reader, progress=progress)
    return meter.finish(slices, cuts, density_window_s=density_window_s)

