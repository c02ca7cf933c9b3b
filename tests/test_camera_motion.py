"""Camera-motion compensation shared by signals and reframing, on synthetic shifted texture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from retrieval_hl.vision.camera_motion import (
    CameraMotion,
    dense_camera_motion,
    fit_camera_motion,
    small_grey,
    tracked_camera_motions,
)


def textured(h: int = 96, w: int = 160, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h // 4, w // 4), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC), (3, 3), 0)


def test_small_grey_shrinks_the_short_side_only_when_larger():
    rgb = np.zeros((240, 320, 3), np.uint8)
    grey, scale = small_grey(rgb, 128)
    assert grey.shape == (128, 171) and grey.dtype == np.uint8 and scale == pytest.approx(128 / 240)
    small = np.zeros((60, 80), np.uint8)
    assert small_grey(small, 128)[0] is small and small_grey(small, 128)[1] == 1.0


def test_tracked_and_dense_find_the_same_pan():
    big = textured()
    prev, cur = big[:, 10:138].copy(), big[:, 16:144].copy()  # the scene moves 6 px left
    tracked = tracked_camera_motions(prev, cur)
    assert tracked and all(m.matrix[0, 2] == pytest.approx(-6, abs=0.3) for m in tracked)
    flow = cv2.calcOpticalFlowFarneback(
        prev.astype(np.float32), cur.astype(np.float32), None, 0.5, 3, 15, 3, 5, 1.2, 0
    )
    dense = dense_camera_motion(flow)
    assert dense is not None and dense.matrix[0, 2] == pytest.approx(-6, abs=0.5)
    assert dense.support > 0.5


def test_align_undoes_the_motion_and_flow_is_the_field():
    big = textured()
    prev, cur = big[:, 10:138].copy(), big[:, 16:144].copy()
    shift = CameraMotion(np.array([[1.0, 0, -6], [0, 1.0, 0]]), 1.0)
    warped, seen = shift.align(prev)
    assert 0.8 < seen.mean() < 1.0
    assert np.abs(warped.astype(int) - cur.astype(int))[seen].mean() < 1.0
    field = shift.flow(4, 5)
    assert field.shape == (4, 5, 2)
    np.testing.assert_allclose(field[..., 0], -6) and np.testing.assert_allclose(field[..., 1], 0)


def test_fit_support_is_the_share_of_points_that_agree():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (40, 2)).astype(np.float32)
    dst = src + np.float32([3, -2])
    fit = fit_camera_motion(src, dst)
    assert fit is not None and fit.support == 1.0
    np.testing.assert_allclose(fit.matrix, [[1, 0, 3], [0, 1, -2]], atol=1e-4)
    dst[:10] = rng.uniform(0, 100, (10, 2))  # a quarter of the points move on their own
    fit = fit_camera_motion(src, dst)
    assert fit is not None and fit.support == pytest.approx(0.75, abs=0.03)
