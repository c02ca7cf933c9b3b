"""What the web page does, without the page: run the main job on an uploaded file, and adjust a
finished run (drop segments, change the budget). Every run gets a fresh directory, so the page
never shows a file of an earlier version.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import Field

from retrieval_hl.config import Settings, parse_budget
from retrieval_hl.models import Highlight
from rhl_common.errors import ConfigError
from rhl_common.models import Frozen

log = logging.getLogger(__name__)

RATIOS: dict[str, tuple[int, int] | None] = {
    "original": None, "9:16": (9, 16), "16:9": (16, 9), "1:1": (1, 1), "4:5": (4, 5),
}

# Stage -> (fraction done when it starts, what the page says)
Progress = Callable[[float, str], None]


class JobRequest(Frozen):
    """What the page asked for: the uploaded file (copied into the work directory), the optional
    request in English or Chinese, the publishing ratio and the length budget.
    """

    video_path: str
    prompt: str | None = None
    ratio: str = "original"
    budget: str = "0.2"


class JobResult(Frozen):
    """A finished run: its directory, the files written (by kind) and the highlight itself."""

    request: JobRequest
    run_dir: str
    files: dict[str, str] = Field(default_factory=dict)
    highlight: Highlight


def stage_upload(upload: str | Path, work_dir: str | Path) -> Path:
    """Copy an uploaded file into ``work_dir/uploads`` (the page's upload cache may be cleared
    while the run is still being adjusted) and return the copy.

    Raises:
        ConfigError: nothing was uploaded.
    """
    if not upload:
        raise ConfigError("no video uploaded: drop a video file on the page first")
    src = Path(upload)
    dest_dir = Path(tempfile.mkdtemp(prefix="upload-", dir=Path(work_dir)))
    dest = dest_dir / src.name
    shutil.copyfile(src, dest)
    return dest


def _check(request: JobRequest) -> tuple[int, int] | None:
    if request.ratio not in RATIOS:
        raise ConfigError(f"bad ratio {request.ratio!r}; choose from {', '.join(RATIOS)}")
    parse_budget(request.budget, 1.0)  # a bad budget fails before any work
    return RATIOS[request.ratio]


def run_job(
    request: JobRequest,
    work_dir: str | Path,
    settings: Settings,
    progress: Progress = lambda f, s: None,
) -> JobResult:
    """Find, render and draw the highlights of ``request.video_path`` into a new run directory.

    Raises:
        RHLError: bad input (not a video, a bad budget or ratio, missing weights for a request).
    """
    ratio_wh = _check(request)
    progress(0.01, "loading (the first run imports the models)")
    from indexer.probe import probe_video
    from retrieval_hl.pipeline import highlight_video

    progress(0.02, "reading the video")
    info = probe_video(request.video_path)
    s = settings.model_copy(update={"budget": request.budget})
    total = max(1, int(info.duration_s * s.sample_fps) + 1)
    done = [0]

    def frames(n: int) -> None:
        done[0] += n
        progress(0.05 + 0.6 * min(done[0] / total, 1.0), "analysing the video")

    progress(0.05, "analysing the video")
    hl = highlight_video(request.video_path, prompt=request.prompt or None, settings=s,
                         ratio_wh=ratio_wh, progress=frames)
    return _export(request, hl, work_dir, s, progress)


def adjust_job(
    previous: JobResult,
    keep: Sequence[int],
    budget: str,
    work_dir: str | Path,
    settings: Settings,
    progress: Progress = lambda f, s: None,
) -> JobResult:
    """A new version of ``previous``: with another ``budget`` the video is picked again (the
    segments to keep then refer to the new pick, so all are kept); with the same budget only the
    segments at positions ``keep`` stay, with their crop boxes.

    Raises:
        ConfigError: a bad budget, or nothing left to keep.
    """
    if budget.strip() != previous.request.budget.strip():
        request = previous.request.model_copy(update={"budget": budget.strip()})
        return run_job(request, work_dir, settings, progress)
    hl = previous.highlight
    kept = [seg for k, seg in enumerate(hl.segments) if k in set(keep)]
    if not kept:
        raise ConfigError("every segment was dropped: keep at least one")
    frames = {f for seg in kept for f in range(seg.start_frame, seg.end_frame)}
    hl = hl.model_copy(update={
        "segments": tuple(kept),
        "crops": tuple(c for c in hl.crops if c.frame in frames),
    })
    s = settings.model_copy(update={"budget": budget})
    return _export(previous.request, hl, work_dir, s, progress)


def _export(request: JobRequest, hl: Highlight, work_dir: str | Path, s: Settings,
            progress: Progress) -> JobResult:
    from retrieval_hl.pipeline import export_highlights

    run_dir = Path(tempfile.mkdtemp(prefix=f"{hl.video.video_id}-", dir=Path(work_dir)))
    progress(0.7, "rendering the highlight video")
    written = export_highlights(hl, run_dir, settings=s)
    progress(1.0, "done")
    log.info("web run %s: %d segments -> %s", hl.video.video_id, len(hl.segments), run_dir)
    return JobResult(request=request, run_dir=str(run_dir), highlight=hl,
                     files={k: str(p) for k, p in written.items()})
