"""Highlights without a query: fuse per-slice signals into one score, then find the events. Pure.

Fusion
    Each signal is put on a common scale *within the video* with a robust z-score
    (median / 1.4826 MAD), whose scale never drops below the signal's noise floor
    (``MIN_SCALE``, in the signal's own unit) so that compression noise in a static shot is not
    blown up into peaks; z is clipped to ``[-z_clip, z_clip]``. The score is the weighted mean of
    the z-scores of the *informative* signals (those that vary by at least their noise floor in
    this video: a missing audio track or a video without cuts does not dilute the rest), minus
    quality penalties: a slice much blurrier (sharpness z below ``-quality_gate_z``) or much worse
    exposed (exposure-penalty z above ``quality_gate_z``) than the rest of the video is pushed
    down in proportion to how far it lies past the gate; blur on a slice with strong motion
    (motion z of 2 or more) is motion blur and is not penalised. A semantic relevance array
    (per-slice z-scores from text queries) can join the mean with its own weight. The result is in
    "signal z" units: 0 is a typical slice of this video.

The video's ordinary level
    The fused score's median ``m`` and robust spread ``s`` (1.4826 MAD, at least
    ``MIN_FUSED_SCALE``) describe what this video ordinarily does: people walking, traffic, a
    conveyor all vary, and their variation is ``s``. A slice's *contrast* is ``(score - m) / s``.

Events (whole, from onset to settle)
    Taking the highest slices first, an event is the run of slices around one whose contrast
    stays at least ``SETTLE`` robust spreads (the score has not settled back among the ordinary
    slices), trimmed at both ends to the slices at ``SETTLE_FRAC`` of its peak contrast or more;
    the whole run is used up, so its shoulders do not become events of their own. A boundary
    within one slice of a shot cut moves to the cut (an edit is where an event begins or ends to
    the frame), and a shot inside the event whose part of it averages under half the peak's
    contrast ends it at that cut (past it, the video shows its ordinary self). An event shorter
    than the shortest clip is widened around its middle, one longer than ``max_len_s`` keeps its
    best-scoring stretch; kept events at most ``max_gap_s`` apart are joined, up to
    ``max_len_s``.

Standing out ("nothing here" calibrated)
    An event's strength is its sustained contrast: the best mean contrast over a window of
    ``min_len_s``, so one noisy slice cannot carry it. Ordinary footage has events too (a car
    passes, someone walks by, a box rides the conveyor) and they *recur*: the video shows the
    same view again and again. A highlight is something it shows once. So an event stands out
    when either

    - it shows a **new look** and lifts at least ``NEW_LOOK_FRACTION`` of ``STAND_OUT`` robust
      spreads: nothing in the video more than ``LOOK_MARGIN_S`` outside the event looks like it,
      i.e. every other slice's Lab thumbnail (``signals.meter.look_of``) differs from the event's
      most novel slice by at least ``NEW_LOOK_LAB`` levels in most of its cells
      (``look_novelty``). A vehicle or a person crossing a fixed view changes a few cells of a
      16x9 thumbnail; a different place, subject or camera changes most of them;
    - or it is the video's **only event** (no other event is even half as strong) and sustains
      ``STAND_OUT`` robust spreads: with nothing else happening there is nothing for it to recur
      among (a normal variable passes 3 sigmas once in ~740 draws: ordinary variation, sustained
      over two seconds, almost never does). Two or more events of the same look are what the
      video ordinarily does: a car passing, someone walking by.

    Without looks (``looks=None``) an event stands out on ``STAND_OUT`` alone. As the spread is at
    least ``MIN_FUSED_SCALE``, the lift is always at least 1 signal-z unit. No absolute activity
    level is involved: continuous walking, traffic or swaying trees set their own spread, and
    their events look like the rest of the video.

Choice and budget
    Every event that stands out is kept, strongest first, until ``budget_s`` is spent (an event
    that does not fit whole keeps the stretch around its peak that does, if that is at least a
    clip long; the first one is cut to any budget). With ``allow_empty`` (the competition batch)
    that is all: a video where nothing stands out gets ``[]``. Without it (the main job, which
    always returns something to watch) the rest of the budget goes to the next-best events
    (stretches above the ordinary level that do not stand out), never to stretches at the
    ordinary level: a budget longer than the video's events is not filled with filler. With no
    budget it keeps, after those that stand out, the events that lift ``STAND_OUT`` spreads even
    though they recur (a viewer keeps both of two plays); with none of either, its single best
    event, and with no event at all its best sustained stretch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from indexer.models import Slice, VideoInfo
from retrieval_hl.models import Segment
from retrieval_hl.signals.meter import SliceSignals
from rhl_common.models import Frozen

log = logging.getLogger(__name__)

MAD_TO_SIGMA = 1.4826
# Least robust spread of the fused score: the weighted mean of two or three independent
# unit-spread z-scores varies by about 0.6; a fused score that seems to vary by less than half of
# that is flat, or its MAD is a poor estimate (a few dozen slices), not a sign of a calm video.
MIN_FUSED_SCALE = 0.5

# Noise floor of each signal in its own unit (sharpness after log1p): the smallest spread that
# counts as real variation. Below it a video is "flat" in that signal.
MIN_SCALE: dict[str, float] = {
    "motion": 0.5,  # grey levels of residual frame difference
    "camera_motion": 0.5,  # grey levels of frame difference the camera's motion explains
    "audio_loudness": 2.0,  # dB
    "audio_onset": 0.05,  # mean log-magnitude flux
    "shot_density": 0.05,  # cuts per second
    "faces": 0.25,  # fraction of sampled frames
    "people": 0.25,  # fraction of sampled frames
    "sharpness": 0.15,  # log(1 + Laplacian variance)
    "exposure": 0.05,  # penalty 0-1
    "semantic": 0.25,  # query z-score
    "speech_rate": 0.5,  # words per second
    "speech_emphasis_db": 3.0,  # dB over the speaker's level (ordinary speech: up to ~2)
}

# Segment length bounds of the query-free events (the Settings defaults are these).
MIN_LEN_S = 2.0
MAX_LEN_S = 20.0
# Contrast (robust spreads of this video's fused score) an event must sustain to stand out, and
# the level at which it has settled back among the ordinary slices (see the module docstring).
STAND_OUT = 3.0
SETTLE = 1.0
SETTLE_FRAC = 0.25
# A new look (see the module docstring and ``look_novelty``): the least median colour difference,
# in OpenCV's 8-bit Lab levels, between an event and everything the video shows more than
# LOOK_MARGIN_S outside it. Objects crossing a fixed view stay under ~11 on real footage, a cut
# to another place or subject gives over 20; 15 is far from both (a just-noticeable difference is
# about 2-3). Such an event needs NEW_LOOK_FRACTION of the usual contrast (its look is evidence).
NEW_LOOK_LAB = 15.0
LOOK_MARGIN_S = 2.0
NEW_LOOK_FRACTION = 2 / 3


class Weights(Frozen):
    """Weights of the fused highlightness score. Defaults: motion and audio lead.

    Camera motion weighs as much as the subject's own motion: in a video whose camera mostly
    holds still, the camera starting to pan or follow is the operator turning to something
    (where the camera always moves, its robust z stays near 0).

    The positive weights enter a weighted mean (their scale is relative); the penalties are
    subtracted in signal-z units per z past ``quality_gate_z``.
    """

    motion: float = Field(1.0, ge=0)
    camera_motion: float = Field(1.0, ge=0)
    audio_loudness: float = Field(0.8, ge=0)
    audio_onset: float = Field(0.5, ge=0)
    shot_density: float = Field(0.3, ge=0)
    faces: float = Field(0.2, ge=0)
    people: float = Field(0.2, ge=0)
    semantic: float = Field(1.0, ge=0)
    # Off by default: where someone talks throughout (a vlog, commentary) it is flat and adds
    # nothing; in mostly silent footage any remark becomes the event. bench/speech_signal.py:
    # 0.25 keeps more ordinary remarks (78 against 72 of 195) and fewer of the footage's events
    # (59 against 64 of 123) than emphasis alone, and the raised remark no more often.
    speech_rate: float = Field(0.0, ge=0)
    # A voice raised above the speaker's own level (retrieval_hl.speech.rate.emphasis_db);
    # ordinary speech, at its own level, is 0 like silence. bench/speech_signal.py: at 1 the
    # raised remark is the main job's best clip in 14 of 27 runs (7 at 0, 21 at 2) while the
    # footage's own events kept go from 70 to 62 of 123 (56 at 2: too many lost).
    speech_emphasis: float = Field(1.0, ge=0)
    blur_penalty: float = Field(0.5, ge=0)
    exposure_penalty: float = Field(0.5, ge=0)
    quality_gate_z: float = Field(1.5, ge=0)
    z_clip: float = Field(5.0, gt=0)


def robust_z(x: np.ndarray, min_scale: float, clip: float = 5.0) -> np.ndarray:
    """Robust z-scores of ``x`` within itself: (x - median) / max(1.4826 MAD, ``min_scale``).

    NaN (unmeasured) becomes 0, the typical value; the result is clipped to ``[-clip, clip]``.

    Args:
        x: One value per slice.
        min_scale: Noise floor of the signal, in its unit; the scale never goes below it.
        clip: Bound of the absolute z.

    Returns:
        float64 z-scores, same length as ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if not ok.any():
        return np.zeros(len(x))
    med = float(np.median(x[ok]))
    scale = max(MAD_TO_SIGMA * float(np.median(np.abs(x[ok] - med))), min_scale)
    z = np.where(ok, (np.where(ok, x, med) - med) / scale, 0.0)
    return np.clip(z, -clip, clip)


def _informative(x: np.ndarray, min_scale: float) -> bool:
    ok = np.isfinite(x)
    return bool(ok.sum() > 1 and np.ptp(x[ok]) >= min_scale)


def fuse_signals(
    sig: SliceSignals,
    weights: Weights | None = None,
    semantic: np.ndarray | None = None,
) -> np.ndarray:
    """One highlightness score per slice from ``sig`` (and optional semantic relevance).

    See the module docstring for the method. A video in which no signal varies beyond its noise
    floor scores 0 everywhere.

    Args:
        sig: The measured signals.
        weights: Fusion weights; ``None`` uses the defaults of ``Weights``.
        semantic: Optional per-slice relevance z-scores from text queries, shape (n,) or
            (n, queries); with several queries a slice takes its best one.

    Returns:
        float64 scores in signal-z units, one per slice (0 = typical for this video).

    Raises:
        ValueError: ``semantic`` does not have one row per slice.
    """
    w = weights or Weights()
    n = len(sig)
    terms: list[tuple[float, np.ndarray, str]] = [
        (w.motion, sig.motion, "motion"),
        (w.camera_motion, sig.camera_motion, "camera_motion"),
        (w.audio_loudness, sig.audio_loudness, "audio_loudness"),
        (w.audio_onset, sig.audio_onset, "audio_onset"),
        (w.shot_density, sig.shot_density, "shot_density"),
        (w.faces, sig.faces, "faces"),
        (w.people, sig.people, "people"),
        (w.speech_rate, sig.speech_rate, "speech_rate"),
        (w.speech_emphasis, sig.speech_emphasis_db, "speech_emphasis_db"),
    ]
    if semantic is not None:
        sem = np.asarray(semantic, dtype=np.float64)
        if sem.ndim == 2:
            sem = sem.max(axis=1) if sem.shape[1] else np.zeros(sem.shape[0])
        if sem.shape != (n,):
            raise ValueError(f"semantic must have one value per slice ({n}), got {sem.shape}")
        terms.append((w.semantic, sem, "semantic"))
    num, den = np.zeros(n), 0.0
    for weight, values, name in terms:
        if weight > 0 and _informative(values, MIN_SCALE[name]):
            num += weight * robust_z(values, MIN_SCALE[name], w.z_clip)
            den += weight
    score = num / den if den > 0 else num
    sharp = np.log1p(np.maximum(np.asarray(sig.sharpness, dtype=np.float64), 0.0))
    z_sharp = robust_z(sharp, MIN_SCALE["sharpness"], w.z_clip)
    z_expo = robust_z(sig.exposure, MIN_SCALE["exposure"], w.z_clip)
    # Blur that comes with strong motion is motion blur, part of the action: only blur that the
    # motion does not explain (defocus, a soft shot) is penalised, fully at motion z <= 0.
    z_motion = robust_z(sig.motion, MIN_SCALE["motion"], w.z_clip)
    unexplained = np.clip(1.0 - z_motion / 2.0, 0.0, 1.0)
    penalty = w.blur_penalty * unexplained * np.maximum(
        -z_sharp - w.quality_gate_z, 0.0
    ) + w.exposure_penalty * np.maximum(z_expo - w.quality_gate_z, 0.0)
    return score - penalty


def baseline(score: np.ndarray) -> tuple[float, float]:
    """The video's ordinary level: the median of ``score`` and its robust spread (1.4826 MAD, at
    least ``MIN_FUSED_SCALE``). An empty score gives ``(0, MIN_FUSED_SCALE)``.
    """
    score = np.asarray(score, dtype=np.float64)
    if score.size == 0:
        return 0.0, MIN_FUSED_SCALE
    med = float(np.median(score))
    return med, max(MAD_TO_SIGMA * float(np.median(np.abs(score - med))), MIN_FUSED_SCALE)


def window_slices(slices: Sequence[Slice], min_len_s: float) -> int:
    """How many slices (of the median slice length) make ``min_len_s``, at least 1."""
    if not slices:
        return 1
    slice_s = float(np.median([s.duration_s for s in slices]))
    return int(np.clip(round(min_len_s / max(slice_s, 1e-6)), 1, len(slices)))


def sustained_score(score: np.ndarray, slices: Sequence[Slice], min_len_s: float) -> np.ndarray:
    """``score`` averaged over a centred window as long as the shortest allowed segment.

    Judging events on this, a highlight has to last: one noisy slice is averaged with its
    neighbours, a real moment of ``min_len_s`` or more keeps its height.

    Args:
        score: One value per slice, slices in time order.
        slices: The slices, in time order (their median length sets the window in slices).
        min_len_s: Shortest segment length in seconds.

    Returns:
        The moving average, same length (at the ends the window shifts inside the video, so a
        lone slice at an end is averaged like any other).
    """
    score = np.asarray(score, dtype=np.float64)
    if len(score) == 0:
        return score.copy()
    k = window_slices(slices, min_len_s)
    csum = np.concatenate([[0.0], np.cumsum(score)])
    lo = np.clip(np.arange(len(score)) - (k - 1) // 2, 0, len(score) - k)
    return (csum[lo + k] - csum[lo]) / k


def keep_level(score: np.ndarray, min_contrast: float = STAND_OUT) -> float:
    """The fused score an event must sustain to stand out: the median plus ``min_contrast``
    robust spreads (see ``baseline``). ``nan`` for no slices.
    """
    score = np.asarray(score, dtype=np.float64)
    if score.size == 0:
        return float("nan")
    med, spread = baseline(score)
    return med + min_contrast * spread


@dataclass(frozen=True)
class _Event:
    """An event on the time-ordered slices: positions ``[lo, hi)``, frames, strength."""

    lo: int
    hi: int
    start_frame: int
    end_frame: int
    peak: int  # position of its best sustained slice
    contrast: float  # sustained contrast at the peak, robust spreads
    lift: float  # the same in signal-z units over the median


def _find_events(
    contrast: np.ndarray, sustained: np.ndarray, bounds: np.ndarray, cuts: np.ndarray,
    snap_frames: int,
) -> list[_Event]:
    """Every candidate event, strongest first (see the module docstring).

    ``bounds`` is (n, 2) start/end frames of the time-ordered slices; ``cuts`` sorted frames.
    """
    n = len(contrast)
    free = np.ones(n, dtype=bool)
    events: list[_Event] = []
    for p in np.argsort(-contrast, kind="stable"):
        if not free[p] or contrast[p] < SETTLE:
            continue
        lo, hi = p, p + 1  # the run above the ordinary level around p, all consumed
        while lo > 0 and free[lo - 1] and contrast[lo - 1] >= SETTLE:
            lo -= 1
        while hi < n and free[hi] and contrast[hi] >= SETTLE:
            hi += 1
        free[lo:hi] = False
        top = np.flatnonzero(contrast[lo:hi] >= max(SETTLE, SETTLE_FRAC * contrast[p])) + lo
        a, b = int(top[0]), int(top[-1]) + 1
        peak = a + int(np.argmax(sustained[a:b]))
        start = _snap(bounds[a, 0], cuts, snap_frames)
        end = _snap(bounds[b - 1, 1], cuts, snap_frames)
        start, end = _within_shots(start, end, int(p), contrast, bounds, cuts)
        events.append(_Event(a, b, start, end, peak, float(sustained[peak]), 0.0))
    return events


def _within_shots(
    start: int, end: int, p: int, contrast: np.ndarray, bounds: np.ndarray, cuts: np.ndarray
) -> tuple[int, int]:
    """``[start, end)`` cut back to the shots around slice ``p`` that carry the event: going out
    from ``p``'s shot, a shot whose part of the event averages under half of ``p``'s contrast
    ends it (the cut is where the event ends, the rest is what the video ordinarily shows).
    """
    inside = cuts[(cuts > start) & (cuts < end)]
    if len(inside) == 0:
        return start, end
    edges = np.r_[start, inside, end]
    mids = (bounds[:, 0] + bounds[:, 1]) / 2
    k = int(np.clip(np.searchsorted(edges, mids[p], "right") - 1, 0, len(edges) - 2))

    def carries(i: int) -> bool:
        sel = (mids >= edges[i]) & (mids < edges[i + 1])
        return bool(sel.any()) and float(contrast[sel].mean()) >= contrast[p] / 2

    lo, hi = k, k + 1
    while lo > 0 and carries(lo - 1):
        lo -= 1
    while hi < len(edges) - 1 and carries(hi):
        hi += 1
    return int(edges[lo]), int(edges[hi])


def _snap(frame: int, cuts: np.ndarray, within: int) -> int:
    """``frame`` moved to the nearest shot cut at most ``within`` frames away, if any."""
    if len(cuts) == 0:
        return int(frame)
    k = int(np.argmin(np.abs(cuts - frame)))
    return int(cuts[k]) if abs(int(cuts[k]) - frame) <= within else int(frame)


def select_highlights(
    slices: Sequence[Slice],
    score: np.ndarray,
    info: VideoInfo,
    *,
    cuts: Sequence[int] = (),
    min_len_s: float = MIN_LEN_S,
    max_len_s: float = MAX_LEN_S,
    max_gap_s: float = 2.0,
    budget_s: float | None = None,
    min_contrast: float = STAND_OUT,
    allow_empty: bool = True,
    min_clip_s: float | None = None,
    looks: np.ndarray | None = None,
) -> list[Segment]:
    """Find the video's events and keep those that stand out, strongest first, within the budget.

    The rules are in the module docstring. Segments carry ``description_index=0`` and priority 1
    (the caller labels them), the event's sustained lift over the median (signal-z units) as
    ``score_raw`` and its sustained contrast (robust spreads) as ``score_norm``.

    Args:
        slices: The video's slices; ``score[i]`` belongs to ``slices[i]``.
        score: Fused highlightness per slice (``fuse_signals``).
        info: The video (frame rate and length).
        cuts: Frames where a new shot starts; event boundaries snap to them.
        min_len_s: The window an event is judged over; and the shortest segment, unless
            ``min_clip_s`` says otherwise.
        max_len_s: Longest segment; a longer event keeps its best-scoring stretch.
        max_gap_s: Kept events at most this far apart are joined into one segment (of at most
            ``max_len_s``).
        budget_s: Total seconds allowed (strongest events first); ``None`` for no budget.
        min_contrast: Least sustained contrast, in robust spreads, to stand out.
        allow_empty: ``True``: only events that stand out (``[]`` when none does). ``False``:
            the rest of the budget goes to the next-best events, and a video without any
            event keeps its best sustained stretch; never empty while the video has a slice.
        min_clip_s: Shortest segment kept (a shorter one is widened around its middle, not into
            a neighbour); ``None``: ``min_len_s``. The main job asks for clips long enough to
            watch.
        looks: What each slice looks like, (n, d) in Lab levels (``SliceSignals.looks``), rows
            as ``slices``; ``None`` judges events on contrast alone.

    Returns:
        Segments in chronological order.

    Raises:
        ValueError: ``score`` does not have one value per slice, or a length is not positive.
    """
    score = np.asarray(score, dtype=np.float64)
    if score.shape != (len(slices),):
        raise ValueError(f"score must have one value per slice ({len(slices)}), got {score.shape}")
    if not 0 < min_len_s <= max_len_s:
        raise ValueError(f"need 0 < min_len_s <= max_len_s, got {min_len_s}, {max_len_s}")
    if len(slices) == 0:
        return []
    order = np.argsort([s.start_frame for s in slices], kind="stable")
    ordered = [slices[i] for i in order]
    sc = score[order]
    sc = np.nan_to_num(sc, nan=float(np.nanmedian(sc)) if np.isfinite(sc).any() else 0.0)
    med, spread = baseline(sc)
    contrast = (sc - med) / spread
    sustained = sustained_score(contrast, ordered, min_len_s)
    bounds = np.array([(s.start_frame, s.end_frame) for s in ordered], dtype=np.int64)
    slice_frames = int(np.median(bounds[:, 1] - bounds[:, 0]))
    cut_arr = np.unique(np.asarray(cuts, dtype=np.int64))
    events = [
        _Event(e.lo, e.hi, e.start_frame, e.end_frame, e.peak, e.contrast, e.contrast * spread)
        for e in _find_events(contrast, sustained, bounds, cut_arr, slice_frames)
    ]
    events.sort(key=lambda e: -e.contrast)
    if looks is None:
        standing = [e for e in events if e.contrast >= min_contrast]
    else:
        ordered_looks = np.asarray(looks, dtype=np.float32)[order]
        mids_s = (bounds[:, 0] + bounds[:, 1]) / 2 / info.fps
        standing = [
            e for e in events
            if (e.contrast >= min_contrast and not _rivals(e, events))
            or (e.contrast >= NEW_LOOK_FRACTION * min_contrast
                and look_novelty(ordered_looks, mids_s, e.lo, e.hi) >= NEW_LOOK_LAB)
        ]
    rest = [e for e in events if e not in standing]
    if not allow_empty and not events:  # nothing above the ordinary level: the best stretch
        k = window_slices(ordered, min_len_s)
        p = int(np.argmax(sustained))
        a = int(np.clip(p - (k - 1) // 2, 0, max(len(ordered) - k, 0)))
        b = min(a + k, len(ordered))
        rest = [_Event(a, b, int(bounds[a, 0]), int(bounds[b - 1, 1]), p,
                       float(sustained[p]), float(sustained[p]) * spread)]
    pool = standing
    if not allow_empty:
        recurring = [e for e in rest if e.contrast >= min_contrast]
        pool = standing + rest if budget_s is not None else (standing + recurring) or rest[:1]
    fps, n_frames = info.fps, bounds[-1, 1]
    min_len_f = int(round((min_len_s if min_clip_s is None else min_clip_s) * fps))
    max_len_f = int(round(max_len_s * fps))
    budget_f = None if budget_s is None else int(round(budget_s * fps))
    gap_f = int(round(max_gap_s * fps))
    kept: list[tuple[int, int, _Event]] = []
    for e in pool:
        left = None if budget_f is None else budget_f - _total(_join(kept, gap_f, max_len_f))
        shortest = min(min_len_f, n_frames) if kept else 1  # the best one is cut to any budget
        if left is not None and left < shortest:
            break
        a, b = _bounded(e, bounds, contrast, min_len_f, max_len_f, n_frames, kept)
        if b <= a:
            continue
        if left is not None:  # what it adds, with the gaps it closes, must fit
            now = _total(_join(kept, gap_f, max_len_f))
            over = _total(_join([*kept, (a, b, e)], gap_f, max_len_f)) - now - left
            if over > 0:
                if b - a - over < shortest:
                    continue
                a, b = _trim(a, b, e, bounds, b - a - over)
        kept.append((a, b, e))
    joined = _join(kept, gap_f, max_len_f)
    segments = [_segment(info, a, b, evs, ordered) for a, b, evs in joined]
    total = sum(s.duration_s for s in segments)
    log.info(
        "%s: %d event(s), %d stand out (best contrast %.1f, need %.1f); kept %d segment(s), "
        "%.1f s", info.video_id, len(events), len(standing),
        events[0].contrast if events else 0.0, min_contrast, len(segments), total,
    )
    if not standing and segments:
        log.warning("%s: nothing stands out; kept the best %.1f s", info.video_id, total)
    return segments


def _rivals(e: _Event, events: Sequence[_Event]) -> int:
    """How many other events are at least half as strong as ``e``."""
    return sum(1 for o in events if o is not e and o.contrast >= e.contrast / 2)


def look_novelty(
    looks: np.ndarray, mids_s: np.ndarray, lo: int, hi: int, margin_s: float = LOOK_MARGIN_S
) -> float:
    """How unlike the rest of the video the slices ``[lo, hi)`` look, in Lab levels.

    Two looks differ by the median over the thumbnail's cells of the colour difference (the
    Euclidean distance in Lab) between the same cell of each: the median, so that a car or a
    person crossing part of an unchanged view does not count, while a new place, subject or
    camera changes most cells. For each slice of ``[lo, hi)``, the difference to its nearest
    look-alike among the slices whose middle lies more than ``margin_s`` outside the stretch;
    the largest of these. ``inf`` when no slice lies that far outside (nothing to compare with).

    Args:
        looks: (n, cells * 3) Lab thumbnails of the time-ordered slices (``look_of``).
        mids_s: (n,) their middles in seconds.
        lo: First slice of the stretch.
        hi: One past its last slice.
        margin_s: How far outside the stretch a look-alike must be.
    """
    outside = (mids_s < mids_s[lo] - margin_s) | (mids_s > mids_s[hi - 1] + margin_s)
    if not outside.any():
        return float("inf")
    others = looks[outside].reshape(int(outside.sum()), -1, 3)
    return max(
        float(np.median(np.linalg.norm(others - row.reshape(-1, 3), axis=2), axis=1).min())
        for row in looks[lo:hi]
    )


def _join(kept: Sequence[tuple[int, int, _Event]], gap_f: int, max_f: int) -> list[list]:
    """Kept spans in time order, those at most ``gap_f`` frames apart joined while the result
    stays within ``max_f`` frames: ``[start, end, events]`` each.
    """
    joined: list[list] = []
    for a, b, e in sorted(kept, key=lambda t: t[0]):
        near = joined and a - joined[-1][1] <= gap_f
        if near and max(b, joined[-1][1]) - joined[-1][0] <= max_f:
            joined[-1][1] = max(joined[-1][1], b)
            joined[-1][2].append(e)
        else:
            joined.append([a, b, [e]])
    return joined


def _total(joined: Sequence[list]) -> int:
    return sum(b - a for a, b, _ in joined)


def _bounded(
    e: _Event, bounds: np.ndarray, contrast: np.ndarray, min_len_f: int, max_len_f: int,
    n_frames: int, kept: Sequence[tuple[int, int, _Event]],
) -> tuple[int, int]:
    """The event's frames, widened to ``min_len_f`` (not into kept neighbours) or cut to its best
    ``max_len_f`` stretch.
    """
    a, b = e.start_frame, e.end_frame
    if b - a > max_len_f:
        k = int(np.searchsorted(bounds[e.lo:e.hi, 1], bounds[e.lo, 0] + max_len_f, "right"))
        k = max(k, 1)
        sums = np.convolve(contrast[e.lo:e.hi], np.ones(k), "valid")
        i = e.lo + int(np.argmax(sums))
        a, b = int(bounds[i, 0]), min(int(bounds[i, 0]) + max_len_f, e.end_frame)
    lo = max([kb for ka, kb, _ in kept if kb <= a] + [0])
    hi = min([ka for ka, kb, _ in kept if ka >= b] + [n_frames])
    if any(ka < b and kb > a for ka, kb, _ in kept):
        return a, a  # overlaps a kept event: already shown
    need = min_len_f - (b - a)
    if need > 0:
        a = max(lo, a - need // 2)
        b = min(hi, a + min_len_f)
        a = max(lo, b - min_len_f)
    return a, b


def _trim(a: int, b: int, e: _Event, bounds: np.ndarray, length: int) -> tuple[int, int]:
    """``length`` frames of ``[a, b)`` centred on the event's peak slice."""
    mid = (int(bounds[e.peak, 0]) + int(bounds[e.peak, 1])) // 2
    start = int(np.clip(mid - length // 2, a, b - length))
    return start, start + length


def _segment(
    info: VideoInfo, a: int, b: int, events: Sequence[_Event], ordered: Sequence[Slice]
) -> Segment:
    best = max(events, key=lambda e: e.contrast)
    inside = tuple(s.index for s in ordered if s.start_frame < b and s.end_frame > a)
    return Segment(
        video_id=info.video_id,
        start_frame=a,
        end_frame=b,
        start_s=a / info.fps,
        end_s=b / info.fps,
        description_index=0,
        priority=1,
        score_raw=best.lift,
        score_norm=best.contrast,
        slice_indices=inside,
    )
