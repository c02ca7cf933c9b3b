"""Artefacts of the highlight pipeline. Frames are source frame indices, times float seconds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from indexer.models import Slice, VideoInfo
from indexer.speech.models import Transcript
from rhl_common.models import Frozen

DescriptionSource = Literal["vlm", "vocab", "user", "template", "signals"]


class Description(Frozen):
    """Something worth keeping, in words. Priority 1 is the most important, 3 the least."""

    text: str = Field(min_length=1)
    priority: int = Field(default=2, ge=1, le=3)
    source: DescriptionSource = "user"
    start_hint_s: float | None = None
    end_hint_s: float | None = None
    domain: str | None = None


class Hit(Frozen):
    """One slice scored against one description.

    ``score_raw`` is the cosine similarity; ``score_norm`` the per-query z-score of that cosine
    within the searched set of slices, which is what every threshold uses. ``channel`` says what
    matched: the pictures (CLIP) or what is said (the transcript, MiniLM).
    """

    slice_index: int = Field(ge=0)
    description_index: int = Field(ge=0)
    score_raw: float
    score_norm: float
    channel: Literal["visual", "speech"] = "visual"


class Segment(Frozen):
    """A kept stretch of the video. ``end_frame`` is exclusive."""

    video_id: str
    start_frame: int = Field(ge=0)
    end_frame: int
    start_s: float = Field(ge=0)
    end_s: float
    description_index: int = Field(ge=0)
    priority: int = Field(ge=1, le=3)
    score_raw: float
    score_norm: float
    slice_indices: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _check_order(self) -> Segment:
        if self.end_frame <= self.start_frame or self.end_s <= self.start_s:
            raise ValueError(f"empty segment: frames {self.start_frame}-{self.end_frame}")
        return self

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.end_s - self.start_s


class CropBox(Frozen):
    """A crop window for one source frame, in source pixels (display orientation)."""

    frame: int = Field(ge=0)
    x_px: int = Field(ge=0)
    y_px: int = Field(ge=0)
    w_px: int = Field(gt=0)
    h_px: int = Field(gt=0)


class ScoreTrack(Frozen):
    """The per-slice scores behind a run's choice, for ``timeline.png`` and for inspection.

    Row ``k`` of every sequence belongs to the slice ``[start_s[k], end_s[k])`` (the signal grid,
    in time order). ``decision_score`` is what the selection compared with
    ``decision_threshold``: the fused highlightness for query-free runs, the best description's
    match (z-score lifted by the signals) for a request; in query-free runs an event that shows a
    new view needs only ``new_view_threshold`` (see ``retrieval_hl.select.events``). ``fused_z``
    is the fused signal score (0 = a typical slice of this video); ``signals`` holds each
    measured signal in its own unit (see ``retrieval_hl.signals.meter``; ``None`` = not
    measured); ``semantic_z`` holds, per description, the per-slice match z-scores when a
    semantic encoder ran.
    """

    start_s: tuple[float, ...]
    end_s: tuple[float, ...]
    decision_score: tuple[float, ...]
    decision_threshold: float | None = None
    new_view_threshold: float | None = None
    decision_label: str = "fused highlightness (signal z)"
    fused_z: tuple[float, ...] = ()
    signals: dict[str, tuple[float | None, ...]] = Field(default_factory=dict)
    semantic_z: tuple[tuple[float, ...], ...] = ()

    @model_validator(mode="after")
    def _check_lengths(self) -> ScoreTrack:
        n = len(self.start_s)
        rows = [self.end_s, self.decision_score, *self.signals.values(), *self.semantic_z]
        if self.fused_z:
            rows.append(self.fused_z)
        if any(len(r) != n for r in rows):
            raise ValueError(f"every per-slice sequence of a score track needs {n} values")
        return self


class Highlight(Frozen):
    """Everything a run found for one video: the file ``highlights.json`` holds exactly this."""

    video: VideoInfo
    encoder: str
    descriptions: tuple[Description, ...]
    segments: tuple[Segment, ...]
    slices: tuple[Slice, ...] = ()
    crops: tuple[CropBox, ...] = ()
    ratio_wh: tuple[int, int] | None = None
    settings: dict = Field(default_factory=dict)
    order: Literal["chronological", "score"] = "chronological"
    track: ScoreTrack | None = None
    transcript: Transcript | None = None

    @property
    def duration_s(self) -> float:
        """Total length of the kept segments in seconds."""
        return sum(s.duration_s for s in self.segments)
