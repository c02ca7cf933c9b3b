"""Artefacts produced by the indexer: what a video is and how it is cut into slices."""

from __future__ import annotations

from pydantic import Field, model_validator

from rhl_common.models import Frozen


class VideoInfo(Frozen):
    """What the container says about a video, with rotation already applied to the size.

    ``width_px``/``height_px`` are the *display* size: a phone video stored 1920x1080 with a
    90 degree rotation reports 1080x1920.
    """

    path: str
    video_id: str
    width_px: int = Field(gt=0)
    height_px: int = Field(gt=0)
    fps: float = Field(gt=0)
    n_frames: int = Field(gt=0)
    duration_s: float = Field(gt=0)
    rotation_deg: int = 0
    has_audio: bool = False
    variable_frame_rate: bool = False

    def frame_at(self, time_s: float) -> int:
        """Index of the frame shown at ``time_s`` seconds, clamped to the video."""
        return int(min(max(round(time_s * self.fps), 0), self.n_frames - 1))

    def time_of(self, frame: int) -> float:
        """Start time in seconds of frame ``frame``."""
        return frame / self.fps

    def up_to(self, n_frames: int) -> VideoInfo:
        """The first ``n_frames`` frames of the video (where decoding ended early)."""
        return self.model_copy(update={"n_frames": n_frames, "duration_s": self.time_of(n_frames)})


class Slice(Frozen):
    """A short window of a video, the unit that gets embedded and retrieved.

    ``end_frame`` is exclusive; ``end_s`` is the time where the next slice starts.
    ``starts_shot`` says whether a shot cut found by the indexer starts the slice, so the cuts
    are stored with the slices; ``None`` where that is not known (slices stored before it was).
    """

    video_id: str
    index: int = Field(ge=0)
    start_frame: int = Field(ge=0)
    end_frame: int
    start_s: float = Field(ge=0)
    end_s: float
    tags: tuple[str, ...] = ()
    starts_shot: bool | None = None

    @model_validator(mode="after")
    def _check_order(self) -> Slice:
        if self.end_frame <= self.start_frame or self.end_s <= self.start_s:
            raise ValueError(f"empty slice: frames {self.start_frame}-{self.end_frame}")
        return self

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.end_s - self.start_s
