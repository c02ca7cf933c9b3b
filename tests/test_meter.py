"""The signal meter's presence detections: reused on a still view within a shot, rerun on a
change or a cut (``DETECT_REUSE_CHANGE``), fed frames directly (no video needed)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import retrieval_hl.signals.meter as meter
from indexer.pipeline import frame_change, grey_thumbnails
from tests.conftest import video_info


class PlantedPresence:
    """Stands in for ``PresenceDetector``: a face where the frame has a pure white pixel, else
    none; counts its calls across instances."""

    calls = 0

    def __call__(self, rgb: np.ndarray) -> tuple[float, ...]:
        PlantedPresence.calls += 1
        return float((rgb == 255).all(axis=-1).any()), 0.0, 0.0, 0.0, 0.0


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> type[PlantedPresence]:
    monkeypatch.setattr(meter, "PresenceDetector", PlantedPresence)
    PlantedPresence.calls = 0
    return PlantedPresence


def run_meter(frame_at, *, detect_cuts: bool = False, chunk: int = 5):
    """Feed an 8 s, 8 fps imagined video to a meter, ``chunk`` sampled frames at a time; the
    frame shown at source frame ``i`` is ``frame_at(i)``. Returns the meter and, per detected
    frame, its index and the face value the meter kept."""
    m = meter.SignalMeter(video_info(seconds=8.0, fps=8.0), detect_cuts=detect_cuts)
    for lo in range(0, len(m.wanted), chunk):
        idx = m.wanted[lo : lo + chunk]
        m.feed(idx, np.stack([frame_at(int(i)) for i in idx]))
    detected = np.arange(0, m.n_fed, m._detect_every)
    return m, np.asarray(m._idx)[detected], np.asarray(m._face)[detected]


def test_a_still_view_reuses_detections_until_a_small_face_appears(planted):
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(40, 216, (120, 160, 3), np.uint8), (9, 9), 0)
    side = round(meter.MIN_FACE_FRAC * 120)  # the smallest face that counts

    def frame_at(i: int) -> np.ndarray:
        noise = rng.integers(-2, 3, background.shape)  # a still camera's noise
        frame = np.clip(background.astype(int) + noise, 0, 254).astype(np.uint8)
        if i >= 32:  # from 4 s on
            frame[20 : 20 + side, 40 : 40 + side] = 255
        return frame

    m, idx, faces = run_meter(frame_at)
    assert len(idx) == 8
    np.testing.assert_array_equal(faces, (idx >= 32).astype(float))
    assert planted.calls == m.n_detected == 2  # the first frame, and the first with the face


def test_a_cut_between_equally_grey_pictures_reruns_the_detectors(planted):
    red, blue = np.array([200, 60, 60], np.uint8), np.array([40, 104, 255], np.uint8)
    a, b = np.full((120, 160, 3), red), np.full((120, 160, 3), blue)
    b[60, 80] = 255  # a "face" in the second shot, a speck to the change measure
    # the change measure cannot tell the two shots apart; only the cut can
    change = frame_change(grey_thumbnails(a[None]), grey_thumbnails(b[None]))[0]
    assert change < meter.DETECT_REUSE_CHANGE

    m, idx, faces = run_meter(lambda i: a if i < 32 else b, detect_cuts=True)
    assert m.detected_cuts() == [33]
    np.testing.assert_array_equal(faces, (idx >= 33).astype(float))
    assert planted.calls == m.n_detected == 2


def test_every_detected_frame_is_detected_when_the_view_keeps_changing(planted):
    rng = np.random.default_rng(1)
    m, idx, _ = run_meter(lambda i: rng.integers(0, 255, (120, 160, 3), np.uint8))
    assert planted.calls == m.n_detected == len(idx) == 8
