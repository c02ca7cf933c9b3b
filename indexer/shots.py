"""Shot cuts from PySceneDetect's content detector, fed the proxy frames we decode anyway."""

from __future__ import annotations

import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detectors import ContentDetector


class ShotDetector:
    """Streams proxy frames into PySceneDetect's ``ContentDetector`` and collects cut frames.

    Cuts are as precise as the sampling: a cut is reported at the first sampled frame after it.
    """

    def __init__(self, fps: float, threshold: float = 27.0, min_shot_s: float = 1.0) -> None:
        self._fps = fps
        self._detector = ContentDetector(threshold=threshold, min_scene_len=f"{min_shot_s}s")
        self._cuts: list[int] = []
        self._last: int | None = None

    def feed(self, indices: np.ndarray, frames_rgb: np.ndarray) -> list[int]:
        """Process consecutive sampled frames (RGB uint8, display orientation).

        Returns:
            The cuts found while processing them (frame indices where a new shot starts).
        """
        found: list[int] = []
        for idx, frame in zip(indices, frames_rgb, strict=True):
            tc = FrameTimecode(int(idx), fps=self._fps)
            cuts = self._detector.process_frame(tc, np.ascontiguousarray(frame[..., ::-1]))
            found.extend(c.frame_num for c in cuts)
            self._last = int(idx)
        self._cuts.extend(found)
        return found

    def cuts(self) -> list[int]:
        """Frame indices where a new shot starts, sorted."""
        extra = []
        if self._last is not None:
            extra = [
                c.frame_num
                for c in self._detector.post_process(FrameTimecode(self._last, fps=self._fps))
            ]
        return sorted({int(c) for c in [*self._cuts, *extra] if c > 0})
