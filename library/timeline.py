"""An assembly plan as an editor timeline (``edit.otio``): each cut references its source file
with its exact frame range, a marker carries the event's text and the match scores, and the cuts
join with the plan's transition as the render joins them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from indexer.probe import probe_video
from library.models import AssemblyPlan
from retrieval_hl.render.timeline import TimelineClip, build_timeline, write_timelines


def plan_clips(plan: AssemblyPlan) -> list[TimelineClip]:
    """The plan's steps as timeline clips, in output order; each source is probed once for its
    frame rate, length and sound.

    Raises:
        VideoOpenError: a source file is missing or unreadable.
    """
    infos = {p: probe_video(p) for p in dict.fromkeys(s.source_path for s in plan.steps)}
    cuts = []
    for step in plan.steps:
        info = infos[step.source_path]
        cuts.append(TimelineClip(
            source_path=step.source_path, start_frame=step.start_frame,
            end_frame=min(step.end_frame, info.n_frames), fps=info.fps, n_frames=info.n_frames,
            has_audio=info.has_audio, name=step.text,
            priority=plan.script.steps[step.event_index].priority,
            metadata={"clip_id": step.clip_id, "event_index": step.event_index,
                      "start_s": step.start_s, "end_s": step.end_s,
                      "out_start_s": step.out_start_s, "out_end_s": step.out_end_s,
                      "score_norm": step.score_norm, "score_raw": step.score_raw},
        ))
    return cuts


def write_plan_timelines(
    plan: AssemblyPlan, stem: str | Path, formats: Sequence[str] = ("otio",)
) -> dict[str, Path]:
    """Write the plan's timeline as ``stem.otio`` (and ``formats``, see ``write_timelines``).

    Raises:
        VideoOpenError: a source file is missing or unreadable.
        RenderError: the plan has no steps.
    """
    name = plan.script.title or Path(stem).name
    timeline = build_timeline(name, plan_clips(plan), crossfade_s=plan.crossfade_s,
                              transition=plan.transition)
    return write_timelines(timeline, stem, formats)
