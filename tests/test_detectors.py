"""Detectors: EfficientDet anchor/decoding maths, the real models on real frames, and the
detection cues of grounding (planted detections through the ``Detector`` protocol)."""

import json

import numpy as np
import pytest

from retrieval_hl.reframe.cues import SubjectLocator, fuse_cues, pick_detection
from retrieval_hl.reframe.window import box_iou
from retrieval_hl.signals.meter import PresenceDetector
from retrieval_hl.vision.detectors import (
    COCO_PERSON,
    Detections,
    _package_file,
    decode_efficientdet,
    efficientdet_anchors,
    efficientdet_for_classes,
    open_face_detector,
    open_object_detector,
)
from tests.conftest import shared_data


def test_anchor_layout_matches_the_graph():
    a = efficientdet_anchors(320)
    assert a.shape == (19206, 4)  # 9 anchors on 40², 20², 10², 5², 3² cells
    # first cell of level 3 (stride 8): centre (4, 4), square anchor of 3 * 8 px
    np.testing.assert_allclose(a[0], [4, 4, 24, 24])
    # aspect 2 is wider than tall, with the same area
    np.testing.assert_allclose(a[1, 2] * a[1, 3], 24 * 24)
    assert a[1, 3] > a[1, 2]
    # the last anchor sits in the last cell of level 7 (3 x 3 cells of 320 / 3 px)
    np.testing.assert_allclose(a[-1, :2], [320 - 320 / 6, 320 - 320 / 6])


def _raw(n_classes: int = 2):
    anchors = np.array([[100, 100, 40, 40], [102, 101, 40, 40], [200, 50, 20, 20]], float)
    deltas = np.zeros((3, 4))
    scores = np.zeros((3, n_classes))
    return anchors, deltas, scores


def test_decode_zero_deltas_gives_anchors_scaled_to_frame():
    anchors, deltas, scores = _raw()
    scores[2, 1] = 0.9
    boxes, sc, cls, best = decode_efficientdet(deltas, scores, anchors, (640, 320), 320, 0.3)
    assert cls.tolist() == [1] and best.tolist() == pytest.approx([0.0, 0.9])
    # yc=200, xc=50, h=w=20 in 320 px input; frame is 2x wider
    np.testing.assert_allclose(boxes[0], [80, 190, 40, 20])
    assert sc[0] == pytest.approx(0.9)


def test_decode_regression_threshold_and_nms():
    anchors, deltas, scores = _raw()
    deltas[0] = [0.5, -0.25, np.log(2), 0.0]  # yc += 20, xc -= 10, h doubled
    deltas[1] = [0.45, -0.2, np.log(2), 0.0]  # lands 3 px from the first
    scores[0, 0] = 0.8  # car
    scores[1, 0] = 0.6  # car, overlaps the first: suppressed
    scores[2, 0] = 0.2  # below threshold
    boxes, sc, cls, best = decode_efficientdet(deltas, scores, anchors, (320, 320), 320, 0.3)
    assert cls.tolist() == [0] and sc.tolist() == pytest.approx([0.8])
    assert best.tolist() == pytest.approx([0.8, 0.0])  # each class's best, in column order
    np.testing.assert_allclose(boxes[0], [90 - 20, 120 - 40, 40, 80])


def test_decode_keeps_overlapping_boxes_of_different_classes():
    anchors, deltas, scores = _raw()
    scores[0, 0] = 0.8
    scores[1, 1] = 0.7
    scores[1, 0] = 0.5  # the same anchor's weaker class is not a second box
    _, sc, cls, _ = decode_efficientdet(deltas, scores, anchors, (320, 320), 320, 0.3)
    assert sorted(zip(cls.tolist(), sc.tolist(), strict=True)) == [
        (0, pytest.approx(0.8)), (1, pytest.approx(0.7))]


def test_decode_reports_the_best_score_of_a_class_that_stays_under_the_threshold():
    anchors, deltas, scores = _raw()
    scores[0, 0], scores[1, 0], scores[2, 1] = 0.25, 0.28, 0.1
    boxes, _, _, best = decode_efficientdet(deltas, scores, anchors, (320, 320), 320, 0.3)
    assert len(boxes) == 0
    assert best.tolist() == pytest.approx([0.28, 0.1])


def test_box_iou():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]], float)
    np.testing.assert_allclose(box_iou(boxes, np.array([0, 0, 10, 10.0])), [1, 50 / 150, 0])


def test_pick_detection_prefers_the_box_it_followed():
    det = Detections(
        np.array([[10, 10, 40, 80], [150, 10, 40, 80]], np.float32),
        np.array([0.5, 0.5], np.float32),
        np.array(["person", "person"]),
    )
    cue, box = pick_detection(det, "person", (200, 100), None, 0.6, previous=np.array(
        [148, 12, 40, 80.0]
    ))
    assert box[0] == 150 and cue.cx == pytest.approx(170)
    assert cue.cy == pytest.approx(10 + 80 / 2)  # the box centre: the subject-centred window
    assert 0 < cue.conf < 1
    # no history: a tie, and the dominance of the winner is only one half
    cue2, _ = pick_detection(det, "person", (200, 100), None, 0.6)
    assert cue2.conf < cue.conf


def test_pick_detection_discounts_still_boxes_when_something_else_moves():
    det = Detections(
        np.array([[10, 10, 40, 80], [150, 10, 40, 80]], np.float32),
        np.array([0.6, 0.5], np.float32),
        np.array(["person", "person"]),
    )
    motion = np.zeros((100, 200), np.float32)
    motion[20:80, 155:185] = 1.0  # only the second one moves
    cue, box = pick_detection(det, "person", (200, 100), motion, 0.6)
    assert box[0] == 150


class PlantedDetector:
    """A detector that reports one box per frame: where the frame's bright square is."""

    name = "planted"
    score_full = 1.0

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def detect(self, rgb: np.ndarray) -> Detections:
        ys, xs = np.nonzero(rgb[..., 0] > 200)
        if xs.size == 0:
            return Detections.empty()
        box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        return Detections(np.array([box], np.float32), np.array([0.9], np.float32),
                          np.array([self.kind]))


def test_locator_ranks_people_over_animals_and_follows_them():
    frame = np.full((120, 240, 3), 90, np.uint8)
    frame[30:90, 180:210] = 255
    loc = SubjectLocator((480, 240), (135, 240), None, PlantedDetector("person"))
    cx, cy, conf = loc.update(frame)
    assert conf > 0.5 and cx > 2 * 180 * 0.9  # pulled towards the person, source pixels
    cues = {c.name: c for c in loc.cues(frame)}
    assert fuse_cues(list(cues.values())).name == "person"
    loc2 = SubjectLocator((480, 240), (135, 240), None, PlantedDetector("animal"))
    assert {c.name for c in loc2.cues(frame)} >= {"object"}


def test_real_detectors_find_nothing_in_a_flat_frame():
    faces, objects = open_face_detector(), open_object_detector()
    if objects is None:
        pytest.skip("ai-edge-litert / pyautoflip not installed")
    flat = np.full((224, 398, 3), 128, np.uint8)
    found = objects.detect(flat)
    assert len(found.scores) == 0
    # every kind is scored, under the threshold
    assert sorted(found.best_scores) == ["animal", "person", "vehicle"]
    assert all(0 <= s <= objects.threshold for s in found.best_scores.values())
    assert found.of("person").best_scores == {"person": found.best_scores["person"]}
    if faces is not None:
        found = faces.detect(flat)
        assert len(found.scores) == 0
        assert list(found.best_scores) == ["face"]
        assert 0 <= found.best_scores["face"] <= faces.threshold
    (face, person, animal, vehicle, size), _ = PresenceDetector()(flat)
    assert person == animal == vehicle == size == 0.0
    assert face == 0.0 if faces is not None else np.isnan(face)


def _davis_frame(seq: str, frame: int) -> np.ndarray:
    """Frame ``frame`` of the DAVIS sequence ``seq``, RGB (skips when the shared data is absent)."""
    import av

    with av.open(str(shared_data("davis16") / f"{seq}.mp4")) as c:
        return next(f for i, f in enumerate(c.decode(video=0)) if i == frame).to_ndarray(
            format="rgb24"
        )


def test_the_graph_cut_to_our_classes_scores_them_as_the_whole_graph_does():
    if open_object_detector() is None:
        pytest.skip("ai-edge-litert / pyautoflip not installed")
    import cv2
    from ai_edge_litert.interpreter import Interpreter

    graph = _package_file("pyautoflip", "detection/efficientdet_lite0.tflite", "").read_bytes()
    class_ids = np.array([15, COCO_PERSON, 2])  # bird, person, car: any classes, any order
    cut = efficientdet_for_classes(graph, class_ids)
    outputs = []
    for g in (graph, cut):
        net = Interpreter(model_content=g)
        net.allocate_tensors()
        raw = []
        for seq, frame in (("blackswan", 20), ("parkour", 40), ("car-roundabout", 30)):
            x = cv2.resize(_davis_frame(seq, frame), (320, 320), interpolation=cv2.INTER_LINEAR)
            net.set_tensor(net.get_input_details()[0]["index"], x[None])
            net.invoke()
            outs = {o["name"]: net.get_tensor(o["index"])[0] for o in net.get_output_details()}
            raw.append(outs)
        outputs.append(raw)
    # the whole graph's outputs by name; the cut one's are the deltas, then the scores
    for full, ours in zip(*outputs, strict=True):
        deltas, scores = full["StatefulPartitionedCall:0"], full["StatefulPartitionedCall:1"]
        cut_deltas, cut_scores = ours.values()
        assert cut_scores.shape == (19206, 3)
        np.testing.assert_array_equal(cut_scores, scores[:, class_ids])  # bit for bit
        np.testing.assert_array_equal(cut_deltas, deltas)
        assert scores[:, class_ids].max() > 0.5  # a swan, a person, a car


@pytest.mark.parametrize(
    ("seq", "frame", "kind"),
    [("car-roundabout", 30, "vehicle"), ("blackswan", 20, "animal"), ("parkour", 40, "person")],
)
def test_real_object_detector_on_davis(seq, frame, kind):
    objects = open_object_detector()
    if objects is None:
        pytest.skip("ai-edge-litert / pyautoflip not installed")
    rgb = _davis_frame(seq, frame)
    davis = shared_data("davis16")
    gt = json.loads((davis / "annotations.json").read_text())[seq]["subject_boxes_xywh"][frame]
    det = objects.detect(rgb).of(kind)
    assert len(det.scores) > 0
    assert box_iou(det.boxes.astype(float), np.asarray(gt, float)).max() > 0.5


class FixedDetector:
    """A detector that reports the same boxes on every frame."""

    name = "fixed"
    score_full = 1.0

    def __init__(self, kind: str, *boxes: tuple[float, float, float, float]) -> None:
        self.kind, self.boxes = kind, np.array(boxes, np.float32).reshape(-1, 4)

    def detect(self, rgb: np.ndarray) -> Detections:
        n = len(self.boxes)
        return Detections(self.boxes, np.full(n, 0.9, np.float32), np.array([self.kind] * n))


@pytest.mark.parametrize(("face_box", "aim_y"), [((95, 20, 20, 20), 20 + 160 / 2),
                                                 ((10, 150, 20, 20), 150 + 20 / 2)])
def test_a_face_on_a_picked_body_aims_at_the_body_centre(face_box, aim_y):
    # Portrait proxy 120x240, a person 40x160 with its head at the top: the subject-centred
    # window is centred on the person's box, not the head. A face outside the body keeps its
    # own centre.
    frame = np.full((240, 120, 3), 90, np.uint8)
    loc = SubjectLocator((120, 240), (120, 67), FixedDetector("face", face_box),
                         FixedDetector("person", (85, 20, 40, 160)))
    cues = {c.name: c for c in loc.cues(frame)}
    assert cues["person"].cy == pytest.approx(20 + 160 / 2)
    assert cues["face"].cy == pytest.approx(aim_y)
