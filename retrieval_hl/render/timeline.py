"""Editor timelines with OpenTimelineIO: ``highlights.otio`` for a run, ``edit.otio`` for an
assembly, and on request the same timeline as FCPXML, FCP7 XML or a CMX 3600 EDL.

Each kept stretch becomes a clip that references the *source* file (an absolute ``file://`` URL)
with its exact frame range at the source's frame rate, on a video track and, when the source has
sound, the same on an audio track. A marker on each video clip carries the description and the
scores (name = description, colour = priority, ``metadata["rhl"]`` = the numbers), so an editor
opens the picks and can lengthen, reorder or drop them. Where the render joins the cuts with a
crossfade or a dip to black, the timeline has a transition of the same length at each join (see
:func:`build_timeline`).

OpenTimelineIO's core reads and writes only its own ``.otio``; the other formats come from
separate adapter packages (``otio-fcpx-xml-adapter``, ``otio-fcp-adapter``,
``otio-cmx3600-adapter``). Those formats count time in a few standard rates (24, 25, 30,
29.97...): every file written in them is read back and compared frame for frame, and one that
would move a cut (a 24.8 or 10 fps source, say) is not written; the log says why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from retrieval_hl.render.renderer import check_transition, join_fade_s
from rhl_common.atomic import write_atomic
from rhl_common.errors import ConfigError, RenderError
from rhl_common.models import Frozen

if TYPE_CHECKING:
    import opentimelineio as otio

    from retrieval_hl.models import Highlight

log = logging.getLogger(__name__)

TIMELINE_NAME = "highlights.otio"

# Format name -> (OTIO adapter, file suffix, the PyPI package that provides the adapter).
FORMATS: dict[str, tuple[str, str, str]] = {
    "otio": ("otio_json", ".otio", "opentimelineio"),
    "fcpxml": ("fcpx_xml", ".fcpxml", "otio-fcpx-xml-adapter"),
    "xml": ("fcp_xml", ".xml", "otio-fcp-adapter"),
    "edl": ("cmx_3600", ".edl", "otio-cmx3600-adapter"),
}
PRIORITY_COLOURS = {1: "RED", 2: "ORANGE", 3: "YELLOW"}
# Render transition (``renderer.TRANSITIONS``) -> (OTIO transition name, OTIO transition type).
TRANSITIONS = {"crossfade": ("crossfade", "SMPTE_Dissolve"), "dip": ("dip to black", "Custom")}


class TimelineClip(Frozen):
    """One stretch of a source file placed on the timeline; frames at the source's rate.

    ``end_frame`` is exclusive. ``metadata`` lands under ``"rhl"`` on the clip's marker.
    """

    source_path: str
    start_frame: int = Field(ge=0)
    end_frame: int
    fps: float = Field(gt=0)
    n_frames: int = Field(gt=0)
    has_audio: bool = False
    name: str = Field(min_length=1)
    priority: int = Field(default=2, ge=1, le=3)
    metadata: dict = Field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """Length of the stretch in seconds."""
        return (self.end_frame - self.start_frame) / self.fps

    @model_validator(mode="after")
    def _check_order(self) -> TimelineClip:
        if not self.start_frame < self.end_frame <= self.n_frames:
            raise ValueError(
                f"cut frames {self.start_frame}-{self.end_frame} do not fit a source of "
                f"{self.n_frames} frames"
            )
        return self


def _otio():  # noqa: ANN202
    try:
        import opentimelineio as otio
    except ImportError:
        raise ConfigError(
            "editor timelines need OpenTimelineIO: pip install opentimelineio"
        ) from None
    return otio


def build_timeline(
    name: str,
    clips: Sequence[TimelineClip],
    *,
    crossfade_s: float = 0.0,
    transition: str = "crossfade",
) -> otio.schema.Timeline:
    """A timeline of ``clips`` in order: a video track, and an audio track when any has sound.

    With ``crossfade_s`` the clips join as the render joins them (``renderer.join_fade_s``): a
    transition of that length at every join, ``SMPTE_Dissolve`` for a crossfade and a
    ``Custom`` one named "dip to black" for a dip (the sound is a dissolve in both). Each
    transition starts at its cut and overlaps the last frames of one stretch with the first of
    the next, as the render does: a clip's range is its stretch less the tail that plays under
    the next transition, so the timeline lasts as long as the render (and a CMX 3600 dissolve
    holds it exactly); the marker keeps the whole stretch.

    Raises:
        RenderError: no clips.
        ConfigError: an unknown transition.
    """
    if not clips:
        raise RenderError("no clips to put on a timeline")
    check_transition(transition)
    otio = _otio()
    rt, tr = otio.opentime.RationalTime, otio.opentime.TimeRange
    timeline = otio.schema.Timeline(name=name)
    video = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    audio = otio.schema.Track(name="A1", kind=otio.schema.TrackKind.Audio)
    fade_s = join_fade_s(crossfade_s, [c.duration_s for c in clips])
    for k, cut in enumerate(clips):
        stretch = tr(rt(cut.start_frame, cut.fps), rt(cut.end_frame - cut.start_frame, cut.fps))
        tail = round(fade_s * cut.fps) if k < len(clips) - 1 else 0  # under the next transition
        span = tr(stretch.start_time, rt(cut.end_frame - cut.start_frame - tail, cut.fps))
        if k and (fade := round(fade_s * clips[k - 1].fps)):
            offsets = {"in_offset": rt(0, cut.fps), "out_offset": rt(fade, clips[k - 1].fps)}
            name, kind = TRANSITIONS[transition]
            video.append(otio.schema.Transition(
                name=name, transition_type=getattr(otio.schema.TransitionTypes, kind), **offsets))
            audio.append(otio.schema.Transition(
                name="crossfade", transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                **offsets))

        def clip(cut: TimelineClip = cut, span=span, k: int = k):  # noqa: ANN001, ANN202
            ref = otio.schema.ExternalReference(
                target_url=Path(cut.source_path).resolve().as_uri(),
                available_range=tr(rt(0, cut.fps), rt(cut.n_frames, cut.fps)),
            )
            return otio.schema.Clip(name=f"{k + 1:02d} {Path(cut.source_path).name}",
                                    media_reference=ref, source_range=span)

        shown = clip()
        shown.markers.append(otio.schema.Marker(
            name=cut.name, marked_range=stretch,
            color=getattr(otio.schema.MarkerColor, PRIORITY_COLOURS[cut.priority]),
            metadata={"rhl": cut.metadata},
        ))
        video.append(shown)
        if cut.has_audio:
            audio.append(clip())
        else:  # keep the audio track in step with the picture
            audio.append(otio.schema.Gap(source_range=tr(rt(0, cut.fps), span.duration)))
    timeline.tracks.append(video)
    if any(c.has_audio for c in clips):
        timeline.tracks.append(audio)
    return timeline


def highlight_clips(highlight: Highlight) -> list[TimelineClip]:
    """A run's segments as timeline clips, in the order of the rendered video."""
    info = highlight.video
    cuts = []
    for seg in highlight.segments:
        desc = highlight.descriptions[seg.description_index]
        cuts.append(TimelineClip(
            source_path=info.path, start_frame=seg.start_frame, end_frame=seg.end_frame,
            fps=info.fps, n_frames=info.n_frames, has_audio=info.has_audio, name=desc.text,
            priority=seg.priority,
            metadata={"video_id": seg.video_id, "start_s": seg.start_s, "end_s": seg.end_s,
                      "score_norm": seg.score_norm, "score_raw": seg.score_raw,
                      "priority": seg.priority, "source": desc.source},
        ))
    return cuts


def _frames(timeline: otio.schema.Timeline) -> list[tuple[str, int, int]]:
    return [
        (c.media_reference.target_url, c.source_range.start_time.to_frames(),
         c.source_range.duration.to_frames())
        for c in timeline.video_tracks()[0].find_clips()
    ]


def write_timeline(timeline: otio.schema.Timeline, path: str | Path, fmt: str = "otio") -> Path:
    """Write ``timeline`` to ``path`` in ``fmt`` (``otio``, ``fcpxml``, ``xml``, ``edl``).

    Non-OTIO formats are read back first and must give the same frame ranges.

    Raises:
        ConfigError: an unknown format, or its adapter package is not installed.
        RenderError: the format cannot hold this timeline exactly (frame rate, adapter error).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown timeline format {fmt!r}; choose from {', '.join(FORMATS)}")
    otio = _otio()
    adapter, _, package = FORMATS[fmt]
    if adapter not in {a.name for a in otio.plugins.ActiveManifest().adapters}:
        raise ConfigError(f"timeline format {fmt!r} needs the adapter package: pip install "
                          f"{package}")
    rate = timeline.video_tracks()[0].find_clips()[0].source_range.start_time.rate
    kwargs = {"rate": rate} if adapter == "cmx_3600" else {}
    want = [f[1:] + (rate,) for f in _frames(timeline)]
    try:
        # A copy: an adapter may change what it writes (cmx_3600 moves clips around transitions).
        text = otio.adapters.write_to_string(timeline.deepcopy(), adapter, **kwargs)
        back = otio.adapters.read_from_string(text, adapter, **kwargs)
    except Exception as exc:  # adapters raise anything from ValueError to their own errors
        raise RenderError(f"{fmt} cannot hold this timeline ({rate:g} fps): "
                          f"{type(exc).__name__}: {exc}") from None
    got = [(c.source_range.start_time.to_frames(), c.source_range.duration.to_frames(),
            c.source_range.start_time.rate) for c in back.video_tracks()[0].find_clips()]
    if fmt != "otio" and (
        [g[:2] for g in got] != [w[:2] for w in want]
        or any(abs(g[2] - w[2]) > 1e-3 * w[2] for g, w in zip(got, want, strict=True))
    ):
        raise RenderError(f"{fmt} cannot hold this timeline's cuts exactly at {rate:g} fps "
                          "(frames or frame rate change); use the .otio file")
    return write_atomic(path, text)


def write_timelines(
    timeline: otio.schema.Timeline, stem: str | Path, formats: Sequence[str] = ("otio",)
) -> dict[str, Path]:
    """Write ``timeline`` as ``stem`` + each format's suffix; ``otio`` must succeed, the editor
    formats are skipped with a warning when they cannot hold it exactly.

    Returns:
        The written paths by kind: ``otio``, ``fcpxml``, ``xml``, ``edl``.
    """
    written = {}
    for fmt in dict.fromkeys(["otio", *formats]):
        if fmt not in FORMATS:
            raise ConfigError(f"unknown timeline format {fmt!r}; choose from {', '.join(FORMATS)}")
        path = Path(f"{stem}{FORMATS[fmt][1]}")
        if fmt == "otio":
            written[fmt] = write_timeline(timeline, path, fmt)
            continue
        try:
            written[fmt] = write_timeline(timeline, path, fmt)
        except (RenderError, ConfigError) as exc:
            log.warning("%s not written: %s", path.name, exc)
    return written


def read_timeline(path: str | Path) -> otio.schema.Timeline:
    """Read a timeline file back (any format whose adapter is installed).

    Raises:
        ConfigError: the file is missing or not a timeline.
    """
    otio = _otio()
    try:
        return otio.adapters.read_from_file(str(path))
    except Exception as exc:  # noqa: BLE001  (OTIO raises many kinds for a bad file)
        raise ConfigError(f"not a readable timeline {str(path)!r}: {exc}") from None
