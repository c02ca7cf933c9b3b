"""Crop-window geometry: the fixed window size and box IoU. Pure numpy, no I/O.

The one definition of both, for reframing and for the competition format and metric alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rhl_common.errors import ConfigError


def fixed_window_size(width_px: int, height_px: int, ratio_wh: Sequence[int]) -> tuple[int, int]:
    """Largest window of aspect ``ratio_wh`` that fits inside a ``width_px`` x ``height_px`` frame.

    The task's fixed crop size. Both sides are floored, so the box as scored (height
    ``w * th / tw``) never leaves the frame and ``y`` can range over ``0 .. H - h``:
    ``w = min(W, floor(H * tw / th))``, ``h = floor(w * th / tw)``; e.g. 9:16 on 1920x1080 gives
    (607, 1079) (the true box is 607 x 1079.1), 16:9 on 1080x1920 gives (1080, 607) (the true
    height is 607.5).

    Args:
        width_px: Frame width in pixels.
        height_px: Frame height in pixels.
        ratio_wh: Target aspect as two positive integers (width, height), e.g. ``(9, 16)``.

    Returns:
        The window size ``(w, h)`` in pixels.

    Raises:
        ConfigError: The ratio is not two positive integers, the frame size is not positive, or
            the frame is too small to hold a one-pixel window of that ratio.
    """
    try:
        tw, th = ratio_wh
    except (TypeError, ValueError):
        raise ConfigError(f"target ratio must be [tw, th], got {ratio_wh!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (tw, th)):
        raise ConfigError(f"target ratio must be two positive integers, got {ratio_wh!r}")
    if tw <= 0 or th <= 0:
        raise ConfigError(f"target ratio must be positive, got {tw}:{th}")
    if width_px <= 0 or height_px <= 0:
        raise ConfigError(f"frame size must be positive, got {width_px}x{height_px}")
    w = (height_px * tw) // th if width_px * th >= height_px * tw else width_px
    h = (w * th) // tw
    if w < 1 or h < 1:
        raise ConfigError(f"a {width_px}x{height_px} frame size is too small for {tw}:{th}")
    return int(w), int(h)


def box_iou(boxes_a: Any, boxes_b: Any) -> np.ndarray:
    """IoU of ``[x, y, w, h]`` boxes, element-wise with broadcasting.

    Args:
        boxes_a: Array-like of shape ``(..., 4)``.
        boxes_b: Array-like broadcastable against ``boxes_a`` (``a[:, None]`` and ``b[None]``
            give the pairwise matrix; one box of shape ``(4,)`` scores against every row).

    Returns:
        Float array of the broadcast shape without the last axis; 0 where the union is empty.

    Raises:
        ValueError: A last axis is not 4.
    """
    a = np.asarray(boxes_a, dtype=np.float64)
    b = np.asarray(boxes_b, dtype=np.float64)
    if a.shape[-1:] != (4,) or b.shape[-1:] != (4,):
        raise ValueError(f"boxes must have a last axis of 4 (x, y, w, h), got {a.shape}, {b.shape}")
    ax, ay, aw, ah = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bx, by, bw, bh = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    ix = np.clip(np.minimum(ax + aw, bx + bw) - np.maximum(ax, bx), 0.0, None)
    iy = np.clip(np.minimum(ay + ah, by + bh) - np.maximum(ay, by), 0.0, None)
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    out = np.zeros(np.broadcast(ax, bx).shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out
