"""The camera's own motion between two sampled frames, so that what is left is the scene's.

Both users of motion undo the camera first: the signal meter (how much *happens* in a slice,
``signals.meter.residual_motion``) and the subject cue of reframing (*where* something moves
against the background, ``reframe.cues.motion_map``). They share what is here:

- ``small_grey``: the small grey frame motion is measured on (short side
  ``MOTION_SHORT_SIDE_PX``);
- ``CameraMotion``: a similarity transform (shift, rotation, zoom) from the earlier frame to the
  later one, with how much of the evidence it explains, and the two ways of undoing it: the
  camera's flow field (``flow``) and the earlier frame aligned onto the later (``align``);
- ``fit_camera_motion``: the one RANSAC fit of that transform to point correspondences;
- two sources of correspondences: sparse corners tracked with Lucas-Kanade plus a
  phase-correlation shift (``tracked_camera_motions``, cheap, run on every sampled frame of a
  whole video by the meter) and a dense Farneback flow field (``dense_camera_motion``, for the
  cue, which needs the dense flow anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MOTION_SHORT_SIDE_PX = 128
RANSAC_THRESHOLD_PX = 1.5


def small_grey(
    image: np.ndarray, short_side_px: int = MOTION_SHORT_SIDE_PX
) -> tuple[np.ndarray, float]:
    """A grey uint8 copy of ``image`` whose short side is at most ``short_side_px``.

    Args:
        image: RGB uint8 (h, w, 3) or grey uint8 (h, w).
        short_side_px: Short side of the result; smaller images are not enlarged.

    Returns:
        ``(grey, scale)``: the grey image (area-averaged when shrunk) and its scale to the input.
    """
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    h, w = grey.shape
    scale = min(1.0, short_side_px / min(h, w))
    if scale < 1.0:
        grey = cv2.resize(
            grey, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    return grey, scale


@dataclass(frozen=True)
class CameraMotion:
    """The camera's motion from an earlier frame to a later one, as a similarity transform.

    Attributes:
        matrix: 2x3 affine matrix mapping earlier-frame pixels to later-frame pixels.
        support: How much of the evidence the transform explains, 0-1: the RANSAC inlier share
            of a fit, or the peak response of a phase correlation.
    """

    matrix: np.ndarray
    support: float

    def flow(self, height: int, width: int) -> np.ndarray:
        """The displacement the camera causes at every pixel, float (height, width, 2)."""
        m = self.matrix
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        gx = m[0, 0] * xx + m[0, 1] * yy + m[0, 2] - xx
        gy = m[1, 0] * xx + m[1, 1] * yy + m[1, 2] - yy
        return np.dstack([gx, gy])

    def align(self, earlier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The earlier grey frame warped onto the later one, and where the warp is valid.

        Returns:
            ``(warped, seen)``: the warped frame (0 outside) and a boolean mask of the pixels it
            covers, eroded by one pixel so interpolated borders do not count.
        """
        h, w = earlier.shape
        warped = cv2.warpAffine(earlier, self.matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        seen = cv2.warpAffine(
            np.full_like(earlier, 255), self.matrix, (w, h), flags=cv2.INTER_NEAREST, borderValue=0
        )
        return warped, cv2.erode(seen, np.ones((3, 3), np.uint8)) > 0


def fit_camera_motion(
    src: np.ndarray, dst: np.ndarray, max_iters: int = 2000
) -> CameraMotion | None:
    """RANSAC similarity transform taking points ``src`` to ``dst``; ``None`` if none fits.

    Args:
        src: Points in the earlier frame, float32 (n, 2).
        dst: The same points in the later frame.
        max_iters: RANSAC iterations at most.
    """
    m, inliers = cv2.estimateAffinePartial2D(
        src,
        dst,
        method=cv2.RANSAC,
        ransacReprojThreshold=RANSAC_THRESHOLD_PX,
        maxIters=max_iters,
        confidence=0.99,
    )
    if m is None:
        return None
    return CameraMotion(m, float(np.mean(inliers)) if inliers is not None else 0.0)


def tracked_camera_motions(earlier: np.ndarray, later: np.ndarray) -> list[CameraMotion]:
    """Camera-motion hypotheses from sparse tracking, for grey uint8 frames of one size.

    A similarity fitted with RANSAC to Lucas-Kanade flow of up to 150 corners (rotation and
    zoom), and the shift found by phase correlation (still works when motion blur leaves few
    corners to track). Either may be missing; the caller decides which, if any, to believe.
    """
    h, w = earlier.shape
    out: list[CameraMotion] = []
    pts = cv2.goodFeaturesToTrack(
        earlier, maxCorners=150, qualityLevel=0.01, minDistance=max(3, min(h, w) // 16), blockSize=5
    )
    if pts is not None and len(pts) >= 8:
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(
            earlier, later, pts, None, winSize=(21, 21), maxLevel=4
        )
        ok = status.ravel() == 1
        if ok.sum() >= 8:
            fit = fit_camera_motion(
                pts[ok].reshape(-1, 2), nxt[ok].reshape(-1, 2), max_iters=500
            )
            if fit is not None:
                out.append(fit)
    win = cv2.createHanningWindow((w, h), cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(
        earlier.astype(np.float32), later.astype(np.float32), win
    )
    if response > 0.05:
        out.append(CameraMotion(np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]), float(response)))
    return out


def dense_camera_motion(flow: np.ndarray, step: int = 4) -> CameraMotion | None:
    """Camera motion fitted to a dense flow field (h, w, 2), sampled every ``step`` pixels.

    The background dominates the fit; ``support`` is the share of flow vectors that agree with
    it, which says how far the residual can be trusted (motion blur, parallax and repeated
    texture lower it).
    """
    h, w = flow.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    src = np.column_stack([xx[::step, ::step].ravel(), yy[::step, ::step].ravel()])
    dst = src + flow[::step, ::step].reshape(-1, 2)
    return fit_camera_motion(src, dst)
