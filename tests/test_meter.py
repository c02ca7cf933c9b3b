"""The signal meter's presence detections: reused on a still view within a shot, rerun on a
change or a cut (``DETECT_REUSE_CHANGE``) or after a borderline answer
(``DETECT_REUSE_MARGIN``), fed frames directly (no video needed but for the real detectors')."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import retrieval_hl.signals.meter as meter
from indexer.pipeline import frame_change, grey_thumbnails
from tests.conftest import shared_data, video_info


class PlantedPresence:
    """Stands in for ``PresenceDetector``: a face where the frame has a pure white pixel, else
    none, a borderline (unstable) answer where it has a pure black one; counts its calls across
    instances."""

    calls = 0

    def __call__(self, rgb: np.ndarray) -> tuple[tuple[float, ...], bool]:
        PlantedPresence.calls += 1
        face = float((rgb == 255).all(axis=-1).any())
        return (face, 0.0, 0.0, 0.0, 0.0), not (rgb == 0).all(axis=-1).any()


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


def still_view(rng: np.random.Generator) -> np.ndarray:
    """A blurred random picture (levels 40-216), the background of a still camera."""
    return cv2.GaussianBlur(rng.integers(40, 216, (120, 160, 3), np.uint8), (9, 9), 0)


def test_a_still_view_reuses_detections_until_a_small_face_appears(planted):
    rng = np.random.default_rng(0)
    background = still_view(rng)
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


@pytest.mark.parametrize("borderline", [True, False])
def test_a_borderline_answer_is_not_reused(planted, borderline):
    # A one-pixel "face" from 4 s on: far under the change measure, so only a borderline answer
    # before it (the planted black pixel) gets it seen; a stable one is reused and misses it.
    background = still_view(np.random.default_rng(2))
    if borderline:
        background[0, 0] = 0

    def frame_at(i: int) -> np.ndarray:
        frame = background.copy()
        if i >= 32:
            frame[60, 80] = 255
        return frame

    m, idx, faces = run_meter(frame_at)
    if borderline:
        np.testing.assert_array_equal(faces, (idx >= 32).astype(float))
        assert planted.calls == m.n_detected == len(idx) == 8
    else:
        np.testing.assert_array_equal(faces, np.zeros(len(idx)))
        assert planted.calls == m.n_detected == 1


class Grab:
    """A ``FrameSink`` that keeps copies of the meter's proxies of the source frames
    ``wanted``."""

    short_side_px = meter.ANALYSIS_SHORT_SIDE_PX
    exact_colour = meter.SignalMeter.exact_colour

    def __init__(self, *wanted: int) -> None:
        self.wanted = np.array(wanted)
        self.frames: dict[int, np.ndarray] = {}

    def feed(self, indices: np.ndarray, frames_rgb: np.ndarray) -> None:
        self.frames.update(
            (int(i), f.copy()) for i, f in zip(indices, frames_rgb, strict=True) if i in self.wanted
        )


def test_real_detectors_rerun_after_a_borderline_miss(monkeypatch: pytest.MonkeyPatch):
    # long_jump.mp4, source frames 3 and 28 as the meter gets them: the same still view (a
    # change under 1 grey level); EfficientDet's best person score is 0.28 on the first, just
    # under its 0.3 threshold, and 0.32 on the second.
    from indexer.decode import decode_proxy
    from indexer.probe import probe_video
    from retrieval_hl.vision.detectors import open_object_detector

    clip = shared_data("clips") / "long_jump.mp4"
    objects = open_object_detector()
    if objects is None:
        pytest.skip("ai-edge-litert / pyautoflip not installed")
    info = probe_video(clip)
    grab = Grab(*meter.SignalMeter(info, detect_cuts=False).wanted.tolist())
    decode_proxy(info, [grab])  # the meter's frames: the reader depends on how many
    a, b = grab.frames[3], grab.frames[28]
    assert frame_change(grey_thumbnails(a[None]), grey_thumbnails(b[None]))[0] < (
        meter.DETECT_REUSE_CHANGE
    )
    best_a, best_b = (objects.detect(f).best_scores["person"] for f in (a, b))
    assert objects.threshold - meter.DETECT_REUSE_MARGIN < best_a < objects.threshold < best_b
    presence = meter.PresenceDetector()
    (row_a, stable_a), (row_b, _) = presence(a), presence(b)
    assert (row_a[1], row_b[1]) == (0.0, 1.0)  # a miss, then a person
    assert not stable_a

    def people(margin: float) -> tuple[list[float], int]:
        monkeypatch.setattr(meter, "DETECT_REUSE_MARGIN", margin)
        m = meter.SignalMeter(video_info(seconds=2.0, fps=1.0), sample_fps=1.0)
        m.feed(np.array([0, 1]), np.stack([a, b]))  # both detected (one a second)
        return m._person, m.n_detected

    assert people(meter.DETECT_REUSE_MARGIN) == ([0.0, 1.0], 2)
    assert people(0.0) == ([0.0, 0.0], 1)  # no margin: the hit inherits the miss


def test_real_faces_are_looked_for_only_where_a_person_may_be(monkeypatch: pytest.MonkeyPatch):
    # Y1HGC.mp4 (a person at a doorway) at 240 px: frame 120 shows the empty doorway
    # (EfficientDet's best person score 0.10, stably under its 0.3 threshold), frame 180 the
    # person, face to the camera.
    import av

    presence = meter.PresenceDetector()
    if presence.faces is None or presence.objects is None:
        pytest.skip("a detector's package is not installed")
    frames = {}
    with av.open(str(shared_data("moments") / "Y1HGC.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in (120, 180):
                rgb = f.to_ndarray(format="rgb24")
                size = (round(rgb.shape[1] * 240 / rgb.shape[0]), 240)
                frames[i] = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            if i == 180:
                break
    faces = presence.faces
    ran: list[np.ndarray] = []

    class Spy:
        threshold = faces.threshold

        def detect(self, rgb: np.ndarray):  # noqa: ANN202
            ran.append(rgb)
            return faces.detect(rgb)

    monkeypatch.setattr(presence, "faces", Spy())
    empty, stable = presence(frames[120])
    assert empty[:2] == (0.0, 0.0) and stable and not ran
    assert len(faces.detect(frames[120]).boxes) == 0  # run anyway, it finds no face there
    (face, person, *_), _ = presence(frames[180])
    assert (face, person) == (1.0, 1.0) and len(ran) == 1
