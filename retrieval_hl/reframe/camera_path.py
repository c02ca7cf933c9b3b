"""The virtual camera path: pure numpy, no I/O.

The crop size is fixed (``window.fixed_window_size``: the largest rectangle of the target ratio
inside the frame); only its position moves. Positions come from a *camera path*, not from
per-frame subject jumps:

* the camera holds still while the subject stays inside a comfort zone (a dead zone, a fraction
  of the window) around the current view;
* when the subject leaves it, the camera pans until the subject is re-centred, with bounded
  speed and acceleration (in pixels per frame, relative to the frame size);
* at a shot cut the path is reset: the new shot starts centred on its subject;
* frames without a subject hold the last position or interpolate between known ones.

The whole clip is known offline, so each shot is followed twice, forwards and backwards, and the
two paths are averaged. The forward follower lags the subject by as much as the backward one
leads it, so the average is centred with no lag, and it still obeys the speed and acceleration
bounds (a convex combination of two paths that obey them does too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Defaults, all relative: the dead zone to the window size, speed and acceleration to the frame.
DEAD_ZONE_FRAC = 0.12
RECENTRE_FRAC = 0.02
MAX_SPEED_FRAC = 0.03
MAX_ACCEL_FRAC = 0.003
FOLLOW_GAIN = 0.15
PRESMOOTH_FRAMES = 9


def runs_of(frames: Sequence[int] | np.ndarray, cuts: Sequence[int] = ()) -> list[np.ndarray]:
    """Split frame indices into runs of consecutive frames that do not cross a shot cut.

    Args:
        frames: Frame indices, in the order they will be processed (sorted ascending).
        cuts: Frames where a new shot starts.

    Returns:
        Index arrays into ``frames``, one per run, covering every position once, in order.
    """
    f = np.asarray(frames, dtype=np.int64)
    if f.size == 0:
        return []
    breaks = np.diff(f) != 1
    if len(cuts):
        breaks |= np.isin(f[1:], np.asarray(cuts, dtype=np.int64))
    starts = np.concatenate([[0], np.flatnonzero(breaks) + 1, [f.size]])
    return [np.arange(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True)]


def fill_gaps(values: np.ndarray, valid: np.ndarray, default: float) -> np.ndarray:
    """Fill invalid entries of a 1-D series: interpolate inside, hold the nearest at the ends.

    Args:
        values: The series, shape ``(n,)``.
        valid: Which entries are measurements, shape ``(n,)``.
        default: Value of every entry when none is valid.

    Returns:
        A new float array with no gap.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = np.asarray(valid, dtype=bool) & np.isfinite(v)
    if not ok.any():
        return np.full(v.shape, float(default))
    t = np.arange(v.size)
    return np.interp(t, t[ok], v[ok])


def _weighted_moving_average(x: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or x.size < 2:
        return x.copy()
    kernel = np.ones(k)
    pad = k // 2
    xp = np.pad(x * w, pad, mode="edge")
    wp = np.pad(w, pad, mode="edge")
    num = np.convolve(xp, kernel, mode="valid")[: x.size]
    den = np.convolve(wp, kernel, mode="valid")[: x.size]
    out = x.copy()
    nz = den > 1e-9
    out[nz] = num[nz] / den[nz]
    return out


def _follow(
    target: np.ndarray, dead_zone: float, recentre: float, v_max: float, a_max: float, gain: float
) -> np.ndarray:
    """Causal virtual operator: hold inside the dead zone, else pan (bounded) until re-centred."""
    n = target.size
    p = np.empty(n)
    pos, vel, moving = float(target[0]), 0.0, False
    for t in range(n):
        err = float(target[t]) - pos
        if not moving and abs(err) > dead_zone:
            moving = True
        elif moving and abs(err) <= recentre:
            moving = False
        want = float(np.clip(gain * err, -v_max, v_max)) if moving else 0.0
        # Braking distance: never overshoot the target because of the acceleration bound.
        stop = vel * vel / (2.0 * a_max) if a_max > 0 else 0.0
        if moving and abs(err) <= stop and np.sign(err) == np.sign(vel):
            want = 0.0
        vel += float(np.clip(want - vel, -a_max, a_max))
        pos += vel
        p[t] = pos
    return p


def smooth_axis(
    target: np.ndarray,
    lo: float,
    hi: float,
    *,
    dead_zone_px: float,
    recentre_px: float,
    max_speed_px: float,
    max_accel_px: float,
    gain: float = FOLLOW_GAIN,
    weights: np.ndarray | None = None,
    presmooth_frames: int = PRESMOOTH_FRAMES,
) -> np.ndarray:
    """Camera path along one axis for one shot: forward-backward dead-zone follower.

    Args:
        target: Subject centre per frame with no gaps, shape ``(n,)``.
        lo: Smallest allowed window centre (half the window).
        hi: Largest allowed window centre (frame size minus half the window).
        dead_zone_px: The camera holds while the subject is within this distance of its centre.
        recentre_px: A pan stops once the subject is this close to the centre again.
        max_speed_px: Speed bound in pixels per frame.
        max_accel_px: Acceleration bound in pixels per frame squared.
        gain: Fraction of the remaining error the camera wants to close per frame while panning.
        weights: Optional per-frame confidence used by the pre-smoothing.
        presmooth_frames: Width of the confidence-weighted moving average applied to the target.

    Returns:
        The window centre per frame, inside ``[lo, hi]``.
    """
    x = np.asarray(target, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    if hi <= lo:
        return np.full(x.size, (lo + hi) / 2.0)
    w = np.ones_like(x) if weights is None else np.clip(np.asarray(weights, float), 1e-3, None)
    x = np.clip(_weighted_moving_average(x, w, presmooth_frames), lo, hi)
    args = (dead_zone_px, min(recentre_px, dead_zone_px), max_speed_px, max_accel_px, gain)
    fwd = _follow(x, *args)
    bwd = _follow(x[::-1], *args)[::-1]
    return np.clip(0.5 * (fwd + bwd), lo, hi)


def smooth_camera_path(
    centres: np.ndarray,
    valid: np.ndarray,
    cuts: Sequence[int],
    frame_size: tuple[int, int],
    window_size: tuple[int, int],
    *,
    weights: np.ndarray | None = None,
    dead_zone_frac: float = DEAD_ZONE_FRAC,
    recentre_frac: float = RECENTRE_FRAC,
    max_speed_frac: float = MAX_SPEED_FRAC,
    max_accel_frac: float = MAX_ACCEL_FRAC,
    gain: float = FOLLOW_GAIN,
    presmooth_frames: int = PRESMOOTH_FRAMES,
) -> np.ndarray:
    """Turn per-frame subject centres of one contiguous stretch of frames into a camera path.

    Args:
        centres: Subject centre ``(x, y)`` per frame in source pixels, shape ``(n, 2)``.
        valid: Which rows hold a measurement, shape ``(n,)``; the rest are filled by
            interpolation between measurements (held at the ends), or the frame centre.
        cuts: Positions (0-based, into ``centres``) where a new shot starts; the path resets there.
        frame_size: Source frame ``(width, height)`` in pixels.
        window_size: Crop window ``(w, h)`` in pixels, see ``window.fixed_window_size``.
        weights: Optional confidence per frame in ``[0, 1]`` for the pre-smoothing.
        dead_zone_frac: Dead zone half-width as a fraction of the window size along each axis.
        recentre_frac: A pan ends when the subject is this close (fraction of window) to centre.
        max_speed_frac: Speed bound as a fraction of the frame size per frame.
        max_accel_frac: Acceleration bound as a fraction of the frame size per frame squared.
        gain: Fraction of the remaining error closed per frame while panning.
        presmooth_frames: Width of the moving average applied to the subject track first.

    Returns:
        Window centres, shape ``(n, 2)`` float, each keeping the window inside the frame.

    Raises:
        ValueError: Shapes disagree or the window does not fit in the frame.
    """
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    ok = np.asarray(valid, dtype=bool).reshape(-1)
    if ok.shape[0] != c.shape[0]:
        raise ValueError(f"valid has {ok.shape[0]} rows, centres {c.shape[0]}")
    fw, fh = frame_size
    ww, wh = window_size
    if not (0 < ww <= fw and 0 < wh <= fh):
        raise ValueError(f"window {ww}x{wh} does not fit in frame {fw}x{fh}")
    n = c.shape[0]
    out = np.empty((n, 2))
    if n == 0:
        return out
    wts = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    bounds = sorted({int(k) for k in cuts if 0 < int(k) < n})
    for a, b in zip([0, *bounds], [*bounds, n], strict=True):
        for axis, (fsize, wsize) in enumerate(((fw, ww), (fh, wh))):
            lo, hi = wsize / 2.0, fsize - wsize / 2.0
            track = fill_gaps(c[a:b, axis], ok[a:b], default=fsize / 2.0)
            out[a:b, axis] = smooth_axis(
                track,
                lo,
                hi,
                dead_zone_px=dead_zone_frac * wsize,
                recentre_px=recentre_frac * wsize,
                max_speed_px=max_speed_frac * fsize,
                max_accel_px=max_accel_frac * fsize,
                gain=gain,
                weights=None if wts is None else wts[a:b],
                presmooth_frames=presmooth_frames,
            )
    return out


def place_windows(
    path: np.ndarray, window_size: tuple[int, int], frame_size: tuple[int, int]
) -> np.ndarray:
    """Integer top-left corners of fixed-size windows centred on ``path``, clamped to the frame.

    Args:
        path: Window centres, shape ``(n, 2)``.
        window_size: Window ``(w, h)`` in pixels.
        frame_size: Frame ``(width, height)`` in pixels.

    Returns:
        ``(n, 2)`` int64 array of ``(x, y)`` with ``0 <= x <= width - w`` and
        ``0 <= y <= height - h``.

    Raises:
        ValueError: The window does not fit in the frame.
    """
    ww, wh = window_size
    fw, fh = frame_size
    if not (0 < ww <= fw and 0 < wh <= fh):
        raise ValueError(f"window {ww}x{wh} does not fit in frame {fw}x{fh}")
    p = np.asarray(path, dtype=np.float64).reshape(-1, 2)
    xy = np.rint(p - np.array([ww, wh]) / 2.0)
    xy = np.clip(xy, 0, np.array([fw - ww, fh - wh]))
    return xy.astype(np.int64)
