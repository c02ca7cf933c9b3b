"""Offline labels for query-free segments: say what the signals saw there. Pure.

A label is built from the evidence measured on the segment's slices, each judged against this
video's own typical level where the unit is relative (motion, sound) and against a fixed share of
the frame where it is not (presence, size):

- who: the kind of subject (person, animal, vehicle, else a face) seen in at least half of the
  sampled frames, and how large it is (``CLOSE`` of the frame or more: close to the camera;
  ``FAR`` or less: far off);
- motion: residual motion (camera discounted) ``FAST_Z`` robust z or more above the video's
  median is "moving fast", ``MOVING_Z`` or more "moving"; camera motion at least twice the
  video's median and ``MIN_CAMERA`` grey levels is "the camera moves";
- look: a stretch nothing else in the video looks like (``events.look_novelty`` of at least
  ``events.NEW_LOOK_LAB``) is "a new view";
- sound: loudness ``LOUDER_DB`` over the video's median is "the sound gets louder", onset
  strength ``ONSET_Z`` robust z over it is "sudden sounds", a voice ``RAISED_DB`` or more over
  the speaker's own level somewhere in it (``speech_emphasis_db``) "a raised voice"; cuts
  ``CUTS_Z`` over: "quick cuts".

For example "a person moving fast, close to the camera; the sound gets louder". A segment with no
evidence at all is "an ordinary moment", never the bare word "highlight".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval_hl.select.events import MIN_SCALE, NEW_LOOK_LAB, look_novelty, robust_z
from retrieval_hl.signals.meter import SliceSignals

PRESENT = 0.5  # share of the sampled frames
CLOSE, FAR = 0.5, 0.2  # subject size, share of the frame
FAST_Z, MOVING_Z = 3.0, 1.0
MIN_CAMERA = 2.0  # grey levels
LOUDER_DB = 6.0
RAISED_DB = 4.0  # ordinary remarks peak at 2.3 dB at most, raised ones at 5.8 or more (bench)
ONSET_Z = 2.0
CUTS_Z = 2.0
ARTICLE = {"person": "a person", "animal": "an animal", "vehicle": "a vehicle"}


def describe_evidence(
    sig: SliceSignals, positions: Sequence[int], mids_s: Sequence[float] | None = None
) -> str:
    """What the signals saw on the slices at ``positions`` (indices into ``sig``).

    Args:
        sig: The video's signals, one value per slice.
        positions: The segment's slices.
        mids_s: The middles of ``sig``'s slices in seconds, in time order; with
            ``sig.looks`` it lets the label say whether the segment shows "a new view".

    Returns:
        A short English phrase, e.g. "a person moving fast, close to the camera; the sound gets
        louder".
    """
    pos = np.asarray(positions, dtype=np.int64)
    if pos.size == 0 or len(sig) == 0:
        return "an ordinary moment"

    def mean(values: np.ndarray) -> float:
        v = np.asarray(values, dtype=np.float64)[pos]
        return float(np.nanmean(v)) if np.isfinite(v).any() else 0.0

    def z(name: str) -> float:
        return float(np.mean(robust_z(getattr(sig, name), MIN_SCALE[name])[pos]))

    kinds = {"person": mean(sig.people), "animal": mean(sig.animals),
             "vehicle": mean(sig.vehicles)}
    kind = max(kinds, key=kinds.get)
    who = ARTICLE[kind] if kinds[kind] >= PRESENT else (
        "a face" if mean(sig.faces) >= PRESENT else "")
    motion_z = z("motion")
    moving = "moving fast" if motion_z >= FAST_Z else "moving" if motion_z >= MOVING_Z else ""
    if who:
        first = f"{who} {moving}".strip()
        size = mean(sig.subject_size)
        if size >= CLOSE:
            first += ", close to the camera"
        elif 0 < size <= FAR:
            first += ", far off"
    else:
        first = {"moving fast": "fast movement", "moving": "movement"}.get(moving, "")
    parts = [first] if first else []
    camera = np.nan_to_num(np.asarray(sig.camera_motion, dtype=np.float64))
    if mean(camera) >= max(2 * float(np.median(camera)), MIN_CAMERA):
        parts.append("the camera moves")
    if sig.looks is not None and mids_s is not None:
        mids = np.asarray(mids_s, dtype=np.float64)
        if look_novelty(sig.looks, mids, int(pos.min()), int(pos.max()) + 1) >= NEW_LOOK_LAB:
            parts.append("a new view")
    sound = []
    loud = np.asarray(sig.audio_loudness, dtype=np.float64)
    if np.isfinite(loud).any() and mean(loud) - float(np.nanmedian(loud)) >= LOUDER_DB:
        sound.append("the sound gets louder")
    if z("audio_onset") >= ONSET_Z:
        sound.append("sudden sounds")
    if float(np.max(sig.speech_emphasis_db[pos])) >= RAISED_DB:
        sound.append("a raised voice")
    if sound:
        parts.append(", ".join(sound))
    if z("shot_density") >= CUTS_Z:
        parts.append("quick cuts")
    return "; ".join(parts) if parts else "an ordinary moment"
