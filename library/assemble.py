"""Script-driven assembly: match each event of a script to a library clip, then render the edit.

Planning, step by step:

1. every event is embedded (its text, or a given query vector, e.g. an image embedding) and
   scored against every clip of the library; scores are normalised per event against the whole
   library (leave-one-out z, see ``library.scoring``). A text event is also matched against what
   is said in the clips (MiniLM, their best sentence; a clip where nobody speaks at cosine 0,
   and a cosine under the speech floor no match), normalised the same way; the two channels
   fuse by the larger z, the per-slice rule of ``rhl highlight``
   (``retrieval_hl.speech.hybrid``), and each cut says which channel matched. Reciprocal rank,
   the rule of ``rhl search``, ranks but gives no score to hold against a threshold, which
   step 3 needs;
2. events pick clips in priority order (1 first; script order within a priority), each taking its
   best-scoring clip among those its ``category``/``tags`` allow; a clip is used once unless
   ``allow_reuse``;
3. an event whose best allowed clip scores below ``min_z`` is *missed*, not filled: the plan lists
   it with the reason and the best candidate, and the edit goes on without it;
4. an event with a duration gets the stretch of its clip whose slices match it best (by the
   channel that matched); without one it gets the whole clip;
5. the output format is fixed in the plan: the first clip's size (or a given one), its frame rate
   (or a given one), stereo 48 kHz audio.

The functions up to :func:`build_plan` are pure; :func:`plan_assembly` gathers their inputs
from a :class:`~library.catalog.Library`. :func:`render_plan` hands the cuts to the one renderer
(``retrieval_hl.render.renderer``), which scales and pads every cut to the plan's size, resamples
to its fps, and gives sources without audio a silent track, so the cuts join cleanly
(optionally with crossfades).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from indexer.models import VideoInfo
from indexer.probe import probe_video
from indexer.speech.models import Transcript
from indexer.speech.windows import cut_transcript
from library.models import AssemblyPlan, LibraryClip, MissedEvent, PlanStep, Script
from library.scoring import default_min_z, normalise_scores
from library.script import normalise_label, normalise_labels
from retrieval_hl.render.export import srt_of
from retrieval_hl.render.renderer import (
    DEFAULT_LOUDNESS_LUFS,
    Cut,
    join_fade_s,
    music_file,
    render_cuts,
)
from retrieval_hl.speech.captions import stretch_cues
from retrieval_hl.speech.hybrid import cap_unmatched_speech, fuse_scores
from rhl_common.atomic import write_atomic
from rhl_common.errors import ConfigError, EncoderError, RenderError

if TYPE_CHECKING:
    from library.catalog import Library

log = logging.getLogger(__name__)

DEFAULT_SIZE = (1280, 720)
DEFAULT_FPS = 30.0
MissReason = Literal["no_candidates", "below_threshold", "all_used"]


@dataclass(frozen=True)
class Assignment:
    """Which clip (column index) an event got, or why it got none."""

    event_index: int
    clip_index: int | None
    best_index: int | None
    reason: MissReason | None = None


def candidate_mask(script: Script, clips: Sequence[LibraryClip]) -> np.ndarray:
    """(events x clips) True where the event's category and tags allow the clip."""
    rows = []
    for s in script.steps:
        cat = normalise_label(s.category) if s.category else None
        want = set(normalise_labels(s.tags))
        rows.append([(cat is None or c.category == cat) and want <= set(c.tags) for c in clips])
    return np.array(rows, dtype=bool).reshape(len(script.steps), len(clips))


def assign_clips(
    z: np.ndarray,
    allowed: np.ndarray,
    priorities: Sequence[int],
    min_z: float,
    allow_reuse: bool = False,
) -> list[Assignment]:
    """Give each event its best allowed clip scoring at least ``min_z``, without reuse by default.

    Events choose in order of (priority, position), so a priority-1 event is never left without a
    clip because an earlier priority-3 event took it.

    Args:
        z: Normalised scores (events x clips); NaN = no score.
        allowed: (events x clips) which clips each event may use.
        priorities: Per event, 1..3.
        min_z: The match threshold on ``z``.
        allow_reuse: Let several events use the same clip.

    Returns:
        One assignment per event, in event order.

    """
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    n_events = len(priorities)
    out: dict[int, Assignment] = {}
    used: set[int] = set()
    for e in sorted(range(n_events), key=lambda e: (priorities[e], e)):
        ok = allowed[e] & ~np.isnan(z[e]) if z.shape[1] else np.zeros(0, dtype=bool)
        if not ok.any():
            out[e] = Assignment(e, None, None, "no_candidates")
            continue
        score = np.where(ok, z[e], -np.inf)
        best = int(np.argmax(score))
        if score[best] < min_z:
            out[e] = Assignment(e, None, best, "below_threshold")
            continue
        free = score >= min_z
        if not allow_reuse:
            free[list(used)] = False
        if not free.any():
            out[e] = Assignment(e, None, best, "all_used")
            continue
        pick = int(np.argmax(np.where(free, score, -np.inf)))
        used.add(pick)
        out[e] = Assignment(e, pick, best)
    return [out[e] for e in range(n_events)]


def best_window(
    slice_starts_s: np.ndarray,
    slice_ends_s: np.ndarray,
    slice_scores: np.ndarray,
    clip_start_s: float,
    clip_end_s: float,
    duration_s: float | None,
) -> tuple[float, float]:
    """The ``duration_s`` stretch of a clip whose slices score best (overlap-weighted mean).

    The whole clip when ``duration_s`` is ``None``, not shorter than the clip, or there are no
    slices; ties go to the earliest stretch.
    """
    if duration_s is None or duration_s >= clip_end_s - clip_start_s or len(slice_starts_s) == 0:
        return clip_start_s, clip_end_s
    a = np.asarray(slice_starts_s, dtype=np.float64)
    b = np.asarray(slice_ends_s, dtype=np.float64)
    cand = np.concatenate([a, b - duration_s, (a + b) / 2 - duration_s / 2])
    cand = np.unique(np.clip(cand, clip_start_s, clip_end_s - duration_s))
    ends = cand + duration_s
    overlap = np.clip(
        np.minimum(ends[:, None], b[None, :]) - np.maximum(cand[:, None], a[None, :]), 0, None
    )
    score = overlap @ np.asarray(slice_scores, dtype=np.float64)
    start = float(cand[int(np.argmax(score))])
    return start, start + duration_s


def _even(n: int) -> int:
    return max(2, int(n) // 2 * 2)


def build_plan(
    script: Script,
    clips: Sequence[LibraryClip],
    raw: np.ndarray,
    z: np.ndarray,
    assignments: Sequence[Assignment],
    windows: dict[int, tuple[float, float]],
    *,
    by_speech: np.ndarray | None = None,
    library: str,
    encoder: str,
    min_z: float,
    allow_reuse: bool = False,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    crossfade_s: float = 0.0,
) -> AssemblyPlan:
    """Lay the assigned clips out on the output timeline, in script order.

    Args:
        script: The script.
        clips: The scored clips (columns of ``raw`` and ``z``).
        raw: Cosines (events x clips).
        z: Normalised scores (events x clips).
        assignments: One per event (see :func:`assign_clips`).
        windows: Per event index with a clip, the (start, end) source seconds to use.
        by_speech: (events x clips) True where ``raw`` and ``z`` are the speech channel's.
        library: The library's name, recorded in the plan.
        encoder: The encoder spec, recorded in the plan.
        min_z: The threshold used, recorded in the plan.
        allow_reuse: Recorded in the plan.
        size: Output (width, height); default the first cut's clip size (made even).
        fps: Output frame rate; default the first cut's clip frame rate.
        crossfade_s: Crossfade between cuts, shortened to half the shortest cut.

    Returns:
        The plan. Each cut lasts a whole number of output frames (at least one).

    """
    used = [a for a in assignments if a.clip_index is not None]
    first = clips[used[0].clip_index] if used else None  # type: ignore[index]
    if size is not None:
        width, height = _even(size[0]), _even(size[1])
    elif first is not None:
        width, height = _even(first.width_px), _even(first.height_px)
    else:
        width, height = DEFAULT_SIZE
    out_fps = float(fps) if fps else (first.fps if first is not None else DEFAULT_FPS)
    cuts: list[tuple[Assignment, LibraryClip, int, float]] = []
    for a in used:
        clip = clips[a.clip_index]  # type: ignore[index]
        start_s, end_s = windows.get(a.event_index, (clip.start_s, clip.end_s))
        n_out = max(1, math.floor((end_s - start_s) * out_fps + 1e-6))
        start_frame = min(max(round(start_s * clip.fps), clip.start_frame), clip.end_frame - 1)
        cuts.append((a, clip, start_frame, n_out / out_fps))
    fade = math.floor(join_fade_s(crossfade_s, [d for *_, d in cuts]) * out_fps) / out_fps
    steps, t = [], 0.0
    for pos, (a, clip, start_frame, dur) in enumerate(cuts):
        start = start_frame / clip.fps
        end_frame = max(start_frame + 1, min(round((start + dur) * clip.fps), clip.end_frame))
        out_start = max(0.0, t - fade) if pos else 0.0
        steps.append(
            PlanStep(
                position=pos,
                event_index=a.event_index,
                text=script.steps[a.event_index].text,
                clip_id=clip.clip_id,
                source_path=clip.source_path,
                media_path=clip.media_path,
                media_start_s=clip.media_start_s,
                start_frame=start_frame,
                end_frame=end_frame,
                start_s=start,
                end_s=start + dur,
                out_start_s=out_start,
                out_end_s=out_start + dur,
                score_raw=float(raw[a.event_index, a.clip_index]),
                score_norm=float(z[a.event_index, a.clip_index]),
                channel="speech" if by_speech is not None
                and by_speech[a.event_index, a.clip_index] else "visual",
                transcript=_words_of_cut(clip, start, start + dur),
            )
        )
        t = out_start + dur
    missed = [_missed(script, clips, z, a, min_z) for a in assignments if a.clip_index is None]
    return AssemblyPlan(
        script=script,
        library=library,
        encoder=encoder,
        steps=tuple(steps),
        missed=tuple(missed),
        width_px=width,
        height_px=height,
        fps=out_fps,
        crossfade_s=fade,
        min_z=min_z,
        allow_reuse=allow_reuse,
    )


def _words_of_cut(clip: LibraryClip, start_s: float, end_s: float) -> Transcript | None:
    """What is said in ``clip`` between source seconds ``start_s`` and ``end_s``, on the cut's
    own time line; ``None`` where nobody speaks.
    """
    if clip.transcript is None:
        return None
    said = cut_transcript(clip.transcript, start_s - clip.start_s, end_s - clip.start_s,
                          clip.clip_id, retime=True)
    return said if said.has_speech else None


def _missed(
    script: Script, clips: Sequence[LibraryClip], z: np.ndarray, a: Assignment, min_z: float
) -> MissedEvent:
    step = script.steps[a.event_index]
    best = clips[a.best_index] if a.best_index is not None else None
    best_z = float(z[a.event_index, a.best_index]) if a.best_index is not None else None
    if a.reason == "no_candidates":
        filt = [f"category {step.category!r}"] if step.category else []
        filt += [f"tags {', '.join(step.tags)}"] if step.tags else []
        reason = (
            f"no clip in the library has {' and '.join(filt)}" if filt
            else "the library has no searchable clips"
        )
    elif a.reason == "below_threshold":
        reason = (
            f"no good match: the best clip {best.clip_id} scores z={best_z:.2f}, "  # type: ignore[union-attr]
            f"below {min_z:.2f}"
        )
    else:
        reason = "every matching clip is already used by another event (allow reuse to share)"
    return MissedEvent(
        event_index=a.event_index,
        text=step.text,
        reason=reason,
        best_clip_id=best.clip_id if best else None,
        best_score_norm=best_z,
    )


def plan_assembly(
    script: Script,
    library: Library,
    *,
    query_vectors: np.ndarray | None = None,
    min_z: float | None = None,
    allow_reuse: bool = False,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    crossfade_s: float = 0.0,
) -> AssemblyPlan:
    """Match a script's events to the library's clips and lay out the edit.

    Args:
        script: The events, in output order.
        library: Where the clips come from.
        query_vectors: One query vector per event instead of its text embedding (e.g. image
            embeddings of example frames), float32 (events, dim).
        min_z: Match threshold on the normalised score; default
            :func:`~library.scoring.default_min_z` of the library size.
        allow_reuse: Let several events use the same clip.
        size: Output (width, height); default the first cut's.
        fps: Output frame rate; default the first cut's.
        crossfade_s: Crossfade between cuts (0 = hard cuts).

    Returns:
        The plan; events without a good match are in ``plan.missed``.

    Raises:
        ConfigError: ``query_vectors`` of the wrong shape, or bad size/fps/crossfade.
        EncoderError: the library's encoder cannot be loaded and nothing said in it is
            searchable (or ``query_vectors`` were given).

    """
    if size is not None and (size[0] < 2 or size[1] < 2):
        raise ConfigError(f"output size must be at least 2x2, got {size[0]}x{size[1]}")
    if fps is not None and not 0 < fps <= 240:
        raise ConfigError(f"output fps must be in (0, 240], got {fps}")
    if crossfade_s < 0:
        raise ConfigError(f"crossfade must be 0 or more seconds, got {crossfade_s}")
    if len(library) == 0:
        raise ConfigError(f"library {library.name} is empty: add clips with `rhl library add`")
    texts = [s.text for s in script.steps]
    speech_q = None
    if query_vectors is None and (tenc := library.speech_encoder()) is not None:
        speech_q = tenc.encode_texts(texts)
    if query_vectors is not None:
        queries = np.asarray(query_vectors, dtype=np.float32)
        if queries.ndim != 2 or len(queries) != len(texts):
            raise ConfigError(
                f"query_vectors must be ({len(texts)}, dim), one per event; got {queries.shape}"
            )
    else:
        from library.catalog import warn_if_not_multilingual

        try:
            warn_if_not_multilingual(texts, library.encoder)
            queries = library.encoder.encode_texts(texts)
        except EncoderError as exc:
            if speech_q is None:
                raise
            log.warning("visual matching off, events match what is said only: %s", exc)
            queries = None
    clips = library.list()
    raw = np.full((len(texts), len(clips)), np.nan)
    if queries is not None:
        clips, raw = library.score_clips(queries)
    z = normalise_scores(raw) if raw.size else raw
    by_speech = np.zeros(raw.shape, dtype=bool)
    if speech_q is not None:
        _, spoken = library.score_speech(speech_q, silent_as_zero=True)
        z_speech = cap_unmatched_speech(spoken.T, normalise_scores(spoken).T).T
        z, by_speech = fuse_scores(z, z_speech)
        raw = np.where(by_speech, spoken, raw)
    n_scored = int((~np.isnan(z)).any(axis=0).sum()) if z.size else 0
    threshold = default_min_z(n_scored) if min_z is None else float(min_z)
    assignments = assign_clips(
        z, candidate_mask(script, clips), [s.priority for s in script.steps], threshold,
        allow_reuse,
    )
    windows: dict[int, tuple[float, float]] = {}
    for a in assignments:
        if a.clip_index is None:
            continue
        clip = clips[a.clip_index]
        duration = script.steps[a.event_index].duration_s
        if duration is None or duration >= clip.duration_s:
            continue
        spoken_here = bool(by_speech[a.event_index, a.clip_index])
        slices, vecs = library.slice_vectors(clip.clip_id, "speech" if spoken_here else "visual")
        query = (speech_q if spoken_here else queries)[a.event_index]  # type: ignore[index]
        windows[a.event_index] = best_window(
            np.array([s.start_s for s in slices]),
            np.array([s.end_s for s in slices]),
            vecs @ query if len(slices) else np.zeros(0),
            clip.start_s,
            clip.end_s,
            duration,
        )
    plan = build_plan(
        script, clips, raw, z, assignments, windows, by_speech=by_speech,
        library=library.name, encoder=library.encoder_spec, min_z=threshold,
        allow_reuse=allow_reuse, size=size, fps=fps, crossfade_s=crossfade_s,
    )
    for m in plan.missed:
        log.warning("event %d %r left out: %s", m.event_index + 1, m.text, m.reason)
    log.info(
        "plan: %d of %d events matched, %.1f s, %dx%d @ %.3g fps (min z %.2f over %d clips)",
        len(plan.steps), len(script.steps), plan.duration_s, plan.width_px, plan.height_px,
        plan.fps, threshold, n_scored,
    )
    return plan


# -- files --------------------------------------------------------------------------------------


def save_plan(plan: AssemblyPlan, path: str | Path) -> Path:
    """Write ``plan`` as JSON, atomically."""
    return write_atomic(path, plan.model_dump_json(indent=2))


def load_plan(path: str | Path) -> AssemblyPlan:
    """Read a plan written by :func:`save_plan`.

    Raises:
        ConfigError: the file is missing or not a plan.

    """
    return AssemblyPlan.from_json_file(path, "assembly plan")


def plan_srt(plan: AssemblyPlan) -> str:
    """Captions for the rendered edit: the spoken words of each cut, a few at a time and timed
    to the edit, as ``highlights.srt`` of ``rhl highlight`` (``retrieval_hl.speech.captions``);
    the cut's event text where nobody speaks.
    """
    cues = []
    for s in plan.steps:
        words = s.transcript.words if s.transcript is not None else ()
        cues += stretch_cues(words, (0.0, s.duration_s), (s.out_start_s, s.out_end_s), s.text)
    return srt_of(cues)


# -- rendering ----------------------------------------------------------------------------------


def render_plan(
    plan: AssemblyPlan,
    out_path: str | Path,
    *,
    reframe: bool = True,
    loudness_lufs: float | None = DEFAULT_LOUDNESS_LUFS,
    reader: str = "auto",
    music: str | Path | None = None,
) -> Path:
    """Cut every step from its source and join them into ``out_path`` (H.264 + AAC stereo).

    A cut whose source has another shape than ``width_px`` x ``height_px`` is reframed: the
    grounding stage gives each of its frames a crop box of the output's ratio that follows the
    subject, and the crop is scaled to the output size (``reframe=False``: scaled to fit and
    padded with black bars instead). Every cut is resampled to the plan's fps, its audio to
    48 kHz stereo (silence where the source has none); cuts join with the plan's transition and
    the result is loudness-normalised to ``loudness_lufs`` (``None``: as is). ``music`` (a file,
    or a folder to pick one from) goes under the edit, ducked under the cuts' own sound.

    Raises:
        RenderError: the plan has no steps, or ffmpeg failed.
        VideoOpenError: a source file is missing or unreadable.

    """
    if not plan.steps:
        raise RenderError("the plan has no matched events: nothing to render")
    infos = [probe_video(s.media[0]) for s in plan.steps]
    for step, info in zip(plan.steps, infos, strict=True):
        if step.media[1] >= info.duration_s:
            raise RenderError(
                f"cut {step.position} starts at {step.media[1]:.2f} s but {info.path!r} is only "
                f"{info.duration_s:.2f} s long: the file changed since it was added"
            )
    size = (plan.width_px, plan.height_px)
    with tempfile.TemporaryDirectory(prefix="rhl-assemble-") as tmp:
        cuts = []
        for step, info in zip(plan.steps, infos, strict=True):
            if reframe and abs(info.width_px / info.height_px - size[0] / size[1]) > 0.02 * (
                size[0] / size[1]
            ):
                path = _reframed_step(_in_media(step, info), info, size, Path(tmp), reader)
                cuts.append(Cut(source_path=str(path), start_s=0.0, duration_s=step.duration_s,
                                has_audio=info.has_audio))
            else:
                media, start_s = step.media
                cuts.append(Cut(source_path=media, start_s=start_s, duration_s=step.duration_s,
                                has_audio=info.has_audio))
        render_cuts(
            cuts, out_path, fps=plan.fps, size=size, audio=True, crossfade_s=plan.crossfade_s,
            transition=plan.transition, loudness_lufs=loudness_lufs,
            music=music_file(music, plan.script.title or "") if music is not None else None,
        )
    log.info("rendered %d cuts, %.1f s -> %s", len(plan.steps), plan.duration_s, out_path)
    return Path(out_path)


def _in_media(step: PlanStep, info: VideoInfo) -> PlanStep:
    """``step`` with its frames counted in the file it is cut from (the library's copy)."""
    if step.media_path is None:
        return step
    shift = round(step.media_start_s * info.fps)
    return step.model_copy(update={"start_frame": max(0, step.start_frame - shift),
                                   "end_frame": max(1, step.end_frame - shift)})


def _reframed_step(
    step: PlanStep, info: VideoInfo, size: tuple[int, int], tmp: Path, reader: str
) -> Path:
    """One cut cropped to the output's ratio (boxes from the grounding stage) and scaled to
    ``size``, at the source's frame rate, with its sound: a source for the final join.
    """
    from retrieval_hl.models import Highlight, Segment
    from retrieval_hl.reframe.crops import ground_frames
    from retrieval_hl.render.export import render_highlight, render_reframed

    g = math.gcd(*size)
    ratio = (size[0] // g, size[1] // g)
    end = min(step.end_frame, info.n_frames)
    seg = Segment(video_id=info.video_id, start_frame=step.start_frame, end_frame=end,
                  start_s=step.start_frame / info.fps, end_s=end / info.fps,
                  description_index=0, priority=1, score_raw=step.score_raw,
                  score_norm=step.score_norm)
    boxes = ground_frames(info, range(seg.start_frame, seg.end_frame), ratio, reader=reader)
    hl = Highlight(video=info, encoder="none", descriptions=(), segments=(seg,),
                   crops=tuple(boxes), ratio_wh=ratio)
    hard = render_highlight(hl, tmp / f"hard-{step.position}.mp4", loudness_lufs=None)
    return render_reframed(hl, hard, tmp / f"step-{step.position}.mp4", size)
