"""Probe a video container into a ``VideoInfo``: display size, rotation, frame rate, audio."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import av

from indexer.models import VideoInfo
from rhl_common.errors import VideoOpenError

log = logging.getLogger(__name__)


def video_id_for(path: str | os.PathLike[str]) -> str:
    """Default video id: the file stem plus a short hash of its size and first MiB.

    Stable across runs and machines for the same file; two different files with the same name
    get different ids.
    """
    p = Path(path)
    h = hashlib.sha1(str(p.stat().st_size).encode())
    with p.open("rb") as f:
        h.update(f.read(1 << 20))
    return f"{p.stem}-{h.hexdigest()[:8]}"


def probe_video(path: str | os.PathLike[str], video_id: str | None = None) -> VideoInfo:
    """Read what the container says about ``path``.

    Rotation comes from the first frame's display matrix, so the reported size is what a player
    shows. The frame count comes from the stream header when it has one, else from duration x fps.

    Raises:
        VideoOpenError: the file is missing, not a video, or has no decodable video frame.

    """
    p = Path(path)
    if not p.is_file():
        raise VideoOpenError(f"no such video file: {str(p)!r}")
    if p.stat().st_size == 0:
        raise VideoOpenError(f"video file is empty (0 bytes): {str(p)!r}")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoOpenError(f"not a readable video: {str(p)!r} ({exc})") from None
    with container:
        if not container.streams.video:
            raise VideoOpenError(f"no video stream in {str(p)!r} (audio-only or data file)")
        stream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or float(rate) <= 0:
            raise VideoOpenError(f"video stream of {str(p)!r} has no usable frame rate")
        fps = float(rate)
        guessed = float(stream.guessed_rate or rate)
        vfr = abs(guessed - fps) / fps > 0.01
        try:
            first = next(container.decode(stream))
        except (StopIteration, av.error.FFmpegError):
            raise VideoOpenError(f"no decodable video frame in {str(p)!r}") from None
        rotation = int(round(getattr(first, "rotation", 0) or 0)) % 360
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        n_frames = int(stream.frames or 0)
        if n_frames <= 0:
            n_frames = int(round(duration * fps))
        if duration <= 0:
            duration = n_frames / fps
        coded_w, coded_h = first.width, first.height
    if n_frames <= 0 or duration <= 0:
        raise VideoOpenError(f"video {str(p)!r} has zero length")
    w, h = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
    info = VideoInfo(
        path=str(p.resolve()),
        video_id=video_id or video_id_for(p),
        width_px=w,
        height_px=h,
        fps=fps,
        n_frames=n_frames,
        duration_s=duration,
        rotation_deg=rotation,
        has_audio=has_audio,
        variable_frame_rate=vfr,
    )
    log.debug("probed %s", info)
    return info
