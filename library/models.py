"""Artefacts of the library: catalogued clips, scripts, assembly plans. All JSON round-trip.

Frames are integer indices into the clip's *source* video (``end_frame`` exclusive), times float
seconds in that source; ``out_*`` times are positions in the assembled output.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from indexer.speech.models import Transcript
from rhl_common.models import Frozen

ClipOrigin = Literal["clip", "video", "run"]
Channel = Literal["visual", "speech"]


class LibraryClip(Frozen):
    """One clip of the library: a frame range of a source file, with tags and metadata.

    ``origin`` says how it came in: a whole clip file (``clip``), a piece of a longer video cut at
    shot boundaries (``video``), or a segment of a ``rhl highlight`` run (``run``). ``score_norm``
    is the highlight run's normalised score for ``run`` clips, else ``None``.

    ``media_path`` is the library's own copy of the clip's media (a stream copy of its span, so
    the clip outlives its source), relative to the library directory in ``library.json`` and
    absolute once the library is open; it starts at source time ``media_start_s`` (the keyframe
    at or before ``start_s``). ``None``: the clip was added with ``--link`` and plays from
    ``source_path`` only.

    ``transcript`` is what is said in the clip: the words of its source's transcript within its
    span, on the clip's own time line (0 = ``start_s``); ``None`` where nobody speaks or speech
    was off when it was added.
    """

    clip_id: str = Field(min_length=1)
    source_path: str
    source_video_id: str
    start_frame: int = Field(ge=0)
    end_frame: int
    start_s: float = Field(ge=0)
    end_s: float
    fps: float = Field(gt=0)
    width_px: int = Field(gt=0)
    height_px: int = Field(gt=0)
    has_audio: bool = False
    n_slices: int = Field(ge=1)
    tags: tuple[str, ...] = ()
    category: str | None = None
    summary: str = ""
    score_norm: float | None = None
    origin: ClipOrigin = "clip"
    created_utc: datetime
    media_path: str | None = None
    media_start_s: float = Field(default=0.0, ge=0)
    transcript: Transcript | None = None

    @model_validator(mode="after")
    def _check_order(self) -> LibraryClip:
        if self.end_frame <= self.start_frame or self.end_s <= self.start_s:
            raise ValueError(f"empty clip: frames {self.start_frame}-{self.end_frame}")
        return self

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.end_s - self.start_s


class Catalog(Frozen):
    """The file ``library.json``: which clips a library holds, its encoder and vector store.

    ``store`` is ``None`` when the vectors live in the library directory itself (FAISS).
    ``pending`` lists clips a writer was adding or removing when it last wrote the catalog:
    their vectors and media may exist without an entry in ``clips`` (the writer was killed) and
    are removed by the next writer; readers ignore them.
    """

    format_version: int = 1
    encoder: str | None = None
    store: str | None = None
    collection: str = "library"
    clips: tuple[LibraryClip, ...] = ()
    pending: tuple[str, ...] = ()


class LibraryHit(Frozen):
    """A clip scored against one query: the visual channel's raw cosine and library-normalised
    score (``None`` when the visual encoder could not run), and for a text search what is said:
    the best cosine of one of the clip's sentences (``score_speech``), the reciprocal-rank fusion
    of both channels (``score_fused``) and the ``channels`` whose list holds the clip.
    """

    clip: LibraryClip
    score_raw: float | None
    score_norm: float | None
    score_speech: float | None = None
    score_fused: float | None = None
    channels: tuple[Channel, ...] = ("visual",)


class ScriptStep(Frozen):
    """One event of a script: what to show, and optionally for how long and from which clips.

    ``tags`` and ``category`` restrict the clips the event may use; priority 1 events pick their
    clip before priority 2 and 3 ones (the output order stays the script's).
    """

    text: str = Field(min_length=1)
    duration_s: float | None = Field(default=None, gt=0)
    tags: tuple[str, ...] = ()
    category: str | None = None
    priority: int = Field(default=2, ge=1, le=3)


class Script(Frozen):
    """An ordered list of events to assemble: from a text file, a YAML file or a template."""

    steps: tuple[ScriptStep, ...] = Field(min_length=1)
    title: str | None = None
    category: str | None = None
    source: str | None = None


class PlanStep(Frozen):
    """One cut of the assembled edit: a source range placed at ``out_start_s`` in the output;
    ``channel`` says what matched its event (what is shown, or what is said), ``score_raw`` is
    that channel's cosine and ``score_norm`` its library-normalised score.

    Frames and times are the source's; the cut is taken from ``media_path`` (the library's copy,
    which starts at source time ``media_start_s``) when there is one, else from ``source_path``.
    ``transcript`` is what is said in the cut, on the cut's own time line (0 = ``start_s``), so a
    saved plan captions its edit without the library; ``None`` where nobody speaks.
    """

    position: int = Field(ge=0)
    event_index: int = Field(ge=0)
    text: str
    clip_id: str
    source_path: str
    media_path: str | None = None
    media_start_s: float = Field(default=0.0, ge=0)
    start_frame: int = Field(ge=0)
    end_frame: int
    start_s: float = Field(ge=0)
    end_s: float
    out_start_s: float = Field(ge=0)
    out_end_s: float
    score_raw: float
    score_norm: float
    channel: Channel = "visual"
    transcript: Transcript | None = None

    @model_validator(mode="after")
    def _check_order(self) -> PlanStep:
        if self.end_s <= self.start_s or self.out_end_s <= self.out_start_s:
            raise ValueError(f"empty plan step {self.position}: {self.start_s}-{self.end_s} s")
        return self

    @property
    def media(self) -> tuple[str, float]:
        """The file to cut this step from and the time in it where ``start_s`` falls."""
        if self.media_path is not None:
            return self.media_path, self.start_s - self.media_start_s
        return self.source_path, self.start_s

    @property
    def duration_s(self) -> float:
        """Length in seconds taken from the source."""
        return self.end_s - self.start_s


class MissedEvent(Frozen):
    """An event that got no clip, and why; the best candidate is kept for the report."""

    event_index: int = Field(ge=0)
    text: str
    reason: str
    best_clip_id: str | None = None
    best_score_norm: float | None = None


class AssemblyPlan(Frozen):
    """A script matched against a library: the edit to render, and the events left out.

    The output format (``width_px`` x ``height_px``, ``fps``, stereo 48 kHz audio) is fixed here,
    so a saved plan renders the same edit again without the library.
    """

    script: Script
    library: str
    encoder: str
    steps: tuple[PlanStep, ...]
    missed: tuple[MissedEvent, ...] = ()
    width_px: int = Field(gt=0)
    height_px: int = Field(gt=0)
    fps: float = Field(gt=0)
    crossfade_s: float = Field(default=0.0, ge=0)
    transition: Literal["crossfade", "dip"] = "crossfade"
    min_z: float
    allow_reuse: bool = False

    @property
    def duration_s(self) -> float:
        """Length of the rendered edit in seconds."""
        return self.steps[-1].out_end_s if self.steps else 0.0
