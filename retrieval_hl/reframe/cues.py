"""Where the subject is in a proxy frame: detectors, text relevance, motion and saliency, fused.

Every cue is a real measurement on the decoded proxy (short side ~224 px, sampled at a few fps);
the caller interpolates between samples and smooths the result into a camera path.

Cues, in fusion priority:

1. **Faces** -- RetinaFace (``retrieval_hl.vision.detectors``).
2. **People** -- COCO EfficientDet-Lite0 (``retrieval_hl.vision.detectors``), class person.
3. **Animals and vehicles** -- the same detector and pass, its animal and vehicle classes.
4. **Text** -- when a trained semantic encoder is loaded: where the description that chose the
   segment shows in the frame (``Encoder.relevance_maps``).
5. **Motion** -- dense Farneback flow between consecutive sampled proxy frames, minus the camera's
   own motion (a similarity transform fitted to the flow with RANSAC, see
   ``retrieval_hl.vision.camera_motion``), so what is left is what moves *against* the
   background: the subject in both static and tracking shots.
6. **Saliency** -- spectral residual (Hou & Zhang, CVPR 2007) in numpy, with the usual centre
   bias of photographed scenes.

Fusion: the first cue in that order whose confidence reaches ``STRONG_CONF`` wins; else the most
confident cue (weighted by its priority) if any reaches ``WEAK_CONF``; else the frame centre with
confidence 0, which the camera path treats as "no measurement". A detection is aimed at its box
centre: the task's crop is the fixed window centred on the subject's box, and that window shows
as much of the subject as fits. A face inside the picked person's box is that person's face, so it
aims at the person's centre (the whole subject), not at the head. Detections compete by score,
size, motion inside them and overlap with the one picked on the previous sample (the camera
should keep following the same subject); a detector's confidence drops when no single detection
dominates (a crowd is not *the* subject), and detections that stay still while something else
clearly moves count less.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from retrieval_hl.reframe.window import box_iou
from retrieval_hl.vision.camera_motion import dense_camera_motion, small_grey
from retrieval_hl.vision.detectors import Detections, Detector

log = logging.getLogger(__name__)

STRONG_CONF = 0.5
WEAK_CONF = 0.12
PRIORITY_WEIGHT = {
    "face": 1.0, "person": 0.9, "object": 0.85, "text": 0.85, "motion": 0.8, "saliency": 0.5
}
SALIENCY_SIDE_PX = 64
FOCUS_MAX_FRAC = 0.6
# Camera flow (px per sampled frame on the motion proxy) from which a shot counts as panning.
PAN_FLOW_PX = 1.0
# Weight of the frame centre as a prior observation (a confidence-weighted pull to the centre):
# photographers frame subjects near the centre, so a shaky cue should move the crop only a bit.
CENTRE_PRIOR = 0.15


@dataclass(frozen=True)
class Cue:
    """One cue's answer for one frame: subject centre in proxy pixels and a confidence in [0, 1]."""

    name: str
    cx: float
    cy: float
    conf: float


def motion_map(prev_gray: np.ndarray, gray: np.ndarray) -> tuple[np.ndarray, float]:
    """Motion that the camera's own motion does not explain, per pixel (pixels of the input).

    Dense Farneback flow, minus the camera's motion fitted to it
    (``vision.camera_motion.dense_camera_motion``: the background dominates the fit), minus a
    robust noise floor. Where the fit explains little of the flow (motion blur, parallax,
    repeated texture) the residual means little, so the share of flow vectors that agree with
    the fit comes back as the map's reliability.

    Args:
        prev_gray: Previous frame, float32 gray.
        gray: Current frame, same size.

    Returns:
        ``(map, reliability)``: a non-negative float32 map of the input's size and the RANSAC
        inlier share of the camera-motion fit in ``[0, 1]``.
    """
    flow = cv2.calcOpticalFlowFarneback(prev_gray, gray, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    h, w = gray.shape
    camera = dense_camera_motion(flow)
    if camera is None:
        glob = np.median(flow.reshape(-1, 2), axis=0)
        cam = np.broadcast_to(glob, flow.shape)
        shift, reliability = np.abs(glob), 0.0
    else:
        cam = camera.flow(h, w)
        shift = np.abs(camera.matrix[:, 2])
        reliability = camera.support
    res = flow - cam
    mag = np.hypot(res[..., 0], res[..., 1])
    # While the camera pans, what it follows stays put in the frame: its residual points against
    # the background's flow. A residual *along* that flow is something nearer than the
    # background sliding past faster (parallax: foliage, fences, passers-by), not the subject.
    cam_mag = np.hypot(cam[..., 0], cam[..., 1])
    along = (res[..., 0] * cam[..., 0] + res[..., 1] * cam[..., 1]) / np.maximum(
        cam_mag * mag, 1e-6
    )
    panning = np.clip(cam_mag / PAN_FLOW_PX, 0.0, 1.0)
    mag = mag * (1.0 - panning * np.clip(along, 0.0, 1.0))
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


def pick_detection(
    det: Detections,
    kind: str,
    frame_wh: tuple[int, int],
    motion: np.ndarray | None,
    score_full: float = 1.0,
    previous: np.ndarray | None = None,
) -> tuple[Cue, np.ndarray] | None:
    """The detection most likely to be the subject, as a cue, and its box.

    Each detection is weighed by score x sqrt(area) x motion support x (1 + IoU with
    ``previous``); confidence is the winner's score (relative to ``score_full``) times its share
    of all the weight (dominance), times its motion support, times a size factor that discounts
    tiny boxes.

    Args:
        det: Detections of one cue (``face``, ``person`` or ``object``), proxy pixels.
        kind: The cue's name; for faces, the body below the face counts when looking for motion.
        frame_wh: Proxy frame (w, h).
        motion: Motion map of this frame (any size), or ``None``.
        score_full: The detector's score that counts as certain.
        previous: Box picked on the previous sample of this stretch, if any.

    Returns:
        ``(cue, box)`` or ``None`` when there is no detection.
    """
    if len(det.scores) == 0:
        return None
    fw, fh = frame_wh
    boxes = det.boxes.astype(np.float64)
    area = boxes[:, 2] * boxes[:, 3] / float(fw * fh)
    score = np.clip(det.scores.astype(np.float64) / score_full, 0, 1)
    support = np.ones(len(score))
    if motion is not None and motion.sum() > 1e-6:
        mh, mw = motion.shape
        sx, sy = mw / fw, mh / fh
        inside = np.empty(len(score))
        for i, (x, y, w, h) in enumerate(boxes):
            if kind == "face":  # the body below the face moves, too
                x, w, h = x - w / 2, 2 * w, 3.5 * h
            x0, x1 = int(max(0, x * sx)), int(min(mw, (x + w) * sx)) + 1
            y0, y1 = int(max(0, y * sy)), int(min(mh, (y + h) * sy)) + 1
            inside[i] = motion[y0:y1, x0:x1].sum()
        support = 0.5 + 0.5 * inside / max(float(motion.sum()), 1e-9)
    weight = score * np.sqrt(area) * support
    if previous is not None:
        weight = weight * (1.0 + box_iou(boxes, previous))
    best = int(np.argmax(weight))
    dominance = float(weight[best] / weight.sum())
    x, y, w, h = boxes[best]
    # Tiny detections are unreliable and rarely the subject.
    size = float(np.clip(h / (0.06 * fh), 0.0, 1.0))
    conf = float(score[best]) * dominance * size * float(support[best])
    cue = Cue(kind, x + w / 2.0, y + h / 2.0, conf)
    return cue, boxes[best]


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
        object_detector: Detector | None = None,
        relevance: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """Set up for one video.

        Args:
            source_size: Source frame (width, height): results are in these pixels.
            window_size: Crop window (w, h) in source pixels; the densest-region search of the
                motion and saliency maps uses it (capped at ``FOCUS_MAX_FRAC`` of the frame).
            face_detector: From ``open_face_detector``; ``None`` turns faces off.
            object_detector: From ``open_object_detector`` (people, animals, vehicles); ``None``
                turns those cues off.
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
        self._objects = object_detector
        self._previous: dict[str, np.ndarray] = {}
        self._relevance = relevance
        self._prev: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the previous frame and picks (a new run or shot starts)."""
        self._prev = None
        self._previous.clear()

    def cues(self, rgb: np.ndarray, following: np.ndarray | None = None) -> list[Cue]:
        """Every cue's answer for this proxy frame, in proxy pixels, in priority order.

        Motion compares the frame with the previous one; the first frame of a run has none, so
        it is compared with ``following`` (the run's next sampled frame) when that is given.
        """
        ph, pw = rgb.shape[:2]
        gray, s = small_grey(rgb)
        gray = gray.astype(np.float32)
        gh, gw = gray.shape
        focus = (round(self._focus_frac[0] * gw), round(self._focus_frac[1] * gh))
        out: list[Cue] = []
        motion, reliability = None, 0.0
        if self._prev is not None and self._prev.shape == gray.shape:
            motion, reliability = motion_map(self._prev, gray)
        elif following is not None:
            after = small_grey(following)[0].astype(np.float32)
            if after.shape == gray.shape:
                motion, reliability = motion_map(gray, after)
        self._prev = gray
        found: list[tuple[str, Detections, float]] = []
        if self._faces is not None:
            found.append(("face", self._faces.detect(rgb), self._faces.score_full))
        if self._objects is not None:
            objects = self._objects.detect(rgb)
            found.append(("person", objects.of("person"), self._objects.score_full))
            found.append(("object", objects.of("animal", "vehicle"), self._objects.score_full))
        for name, det, full in found:
            pick = pick_detection(det, name, (pw, ph), motion, full, self._previous.get(name))
            if pick is None:
                self._previous.pop(name, None)
            else:
                out.append(pick[0])
                self._previous[name] = pick[1]
        out = _face_on_its_body(out, self._previous)
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

    def update(
        self, rgb: np.ndarray, following: np.ndarray | None = None
    ) -> tuple[float, float, float]:
        """Fused subject centre for the next sampled frame.

        Args:
            rgb: Proxy frame, RGB uint8 (h, w, 3), display orientation.
            following: The run's next sampled frame, for the motion of a run's first frame.

        Returns:
            ``(cx, cy, conf)`` in source pixels; ``conf`` 0 means no subject was found and the
            centre is the frame centre. The fused cue is pulled towards the frame centre with the
            weight ``CENTRE_PRIOR`` against its own confidence.
        """
        ph, pw = rgb.shape[:2]
        cue = fuse_cues(self.cues(rgb, following))
        mx, my = self._src[0] / 2.0, self._src[1] / 2.0
        if cue is None:
            return mx, my, 0.0
        k = cue.conf / (cue.conf + CENTRE_PRIOR)
        cx, cy = cue.cx * self._src[0] / pw, cue.cy * self._src[1] / ph
        return mx + k * (cx - mx), my + k * (cy - my), cue.conf


def _face_on_its_body(found: list[Cue], boxes: dict[str, np.ndarray]) -> list[Cue]:
    """Aim a face cue at the centre of the picked person box that holds it (its body)."""
    face = next((c for c in found if c.name == "face"), None)
    body = next((c for c in found if c.name == "person"), None)
    if face is None or body is None:
        return found
    x, y, w, h = boxes["person"]
    if not (x <= face.cx <= x + w and y <= face.cy <= y + h):
        return found
    aimed = Cue("face", body.cx, body.cy, face.conf)
    return [aimed if c is face else c for c in found]


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
