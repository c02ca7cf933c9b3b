"""Competition batch mode: an index in, one predictions line per index entry out.

Each video runs isolated with a time limit (a child process of its own, or a Ray actor with
``executor=RayExecutor(...)``), so a corrupt file, a crash or a hang costs that video (an empty
prediction list and a logged reason), never the batch. After every
video the whole predictions file is rewritten atomically in index order, so a kill at any moment
leaves a valid file, and ``resume`` skips the ids it already holds.
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from indexer.encoders import Encoder
from indexer.models import VideoInfo
from retrieval_hl.competition.format import IndexEntry, VideoPrediction, load_index
from retrieval_hl.config import Settings
from retrieval_hl.executors import Executor
from retrieval_hl.executors.local import LocalExecutor
from rhl_common.atomic import check_writable, write_atomic
from rhl_common.errors import ConfigError, EncoderError, RHLError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".flv", ".ts")

# A predictor maps (video path, video id, target ratio) to that video's prediction line.
Predictor = Callable[[Path, str, tuple[int, int]], VideoPrediction]


@dataclass(frozen=True)
class BatchResult:
    """What one batch run did."""

    written: int
    skipped: int
    failed: tuple[tuple[str, str], ...]


def find_video(entry: IndexEntry, videos_dir: Path) -> Path | None:
    """The file of ``entry``: its file name if the index gives one, else ``<video_id>.<ext>``."""
    if entry.file_name:
        p = videos_dir / entry.file_name
        return p if p.is_file() else None
    for ext in VIDEO_EXTENSIONS:
        p = videos_dir / f"{entry.video_id}{ext}"
        if p.is_file():
            return p
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_batch_args(
    index_path: str | Path,
    out_path: str | Path,
    log_path: str | Path | None = None,
    time_limit_s: float = 600.0,
) -> None:
    """Refuse, before any work, outputs that would overwrite an input, and bad limits.

    Raises:
        ConfigError: ``out_path`` or ``log_path`` is the index (or each other), cannot be
            written, or ``time_limit_s`` is not a positive finite number of seconds.

    """
    if not (isinstance(time_limit_s, int | float) and math.isfinite(time_limit_s)
            and time_limit_s > 0):
        raise ConfigError(
            f"--time-limit must be a positive number of seconds, got {time_limit_s!r}"
        )
    index, out = Path(index_path), Path(out_path)
    named = [("--out", out)] + ([("--log", Path(log_path))] if log_path is not None else [])
    for option, p in named:
        if p.resolve() == index.resolve() or _same_file(p, index):
            raise ConfigError(f"{option} {str(p)!r} is the index file; give another file name")
        check_writable(p, what=option)
    if log_path is not None and (out.resolve() == Path(log_path).resolve()
                                 or _same_file(out, Path(log_path))):
        raise ConfigError(f"--log {str(log_path)!r} is the --out file; give another file name")


def _read_done(out_path: Path, entries: Sequence[IndexEntry]) -> dict[str, str]:
    """Finished lines of an earlier run, by video id, that still match the index entries.

    A torn or foreign line is ignored; a line whose ratio differs from its entry's is redone.
    """
    done: dict[str, str] = {}
    if not out_path.is_file():
        return done
    wanted = {e.video_id: e.ratio_wh for e in entries}
    for line in out_path.read_text(encoding="utf-8").splitlines():
        try:
            pred = VideoPrediction.from_json_line(line)
        except RHLError:
            continue
        if pred.video_id not in wanted:
            continue
        if tuple(pred.ratio_wh) != tuple(wanted[pred.video_id]):
            log.info("%s: the earlier line is for ratio %s, the index now asks %s; redone",
                     pred.video_id, pred.ratio_wh, wanted[pred.video_id])
            continue
        done[pred.video_id] = line
    return done


@dataclass(frozen=True)
class _LineOf:
    """Executor work for one batch item ``(path, entry)``: the prediction line of the video."""

    predict: Predictor

    def __call__(self, item: tuple[Path, IndexEntry]) -> str:
        path, entry = item
        return self.predict(path, entry.video_id, entry.ratio_wh).to_json_line()


def run_batch(
    index_path: str | Path,
    videos_dir: str | Path,
    out_path: str | Path,
    predict: Predictor,
    *,
    resume: bool = False,
    time_limit_s: float = 600.0,
    isolate: bool = True,
    progress: Callable[[int], None] | None = None,
    executor: Executor | None = None,
) -> BatchResult:
    """Predict every entry of ``index_path`` and write ``out_path`` (JSONL, index order).

    The videos run on ``executor`` (default: this machine, a child process per video unless
    ``isolate`` is False); whatever runs them, the file is rewritten after every video.

    Raises:
        ConfigError: the index is unreadable, ``videos_dir`` is not a directory, ``out_path``
            is the index or cannot be written, or ``time_limit_s`` is not positive and finite.

    """
    check_batch_args(index_path, out_path, None, time_limit_s)
    entries: Sequence[IndexEntry] = load_index(index_path)
    videos = Path(videos_dir)
    if not videos.is_dir():
        raise ConfigError(f"videos directory not found: {str(videos)!r}")
    out = Path(out_path)
    done = _read_done(out, entries) if resume else {}
    skipped = len(done)
    failed: list[tuple[str, str]] = []

    def flush() -> None:
        lines = [done[e.video_id] for e in entries if e.video_id in done]
        write_atomic(out, "".join(f"{x}\n" for x in lines))

    def finish(entry: IndexEntry, line: str | None, reason: str | None, elapsed_s: float) -> None:
        if reason is None:
            log.info("%s: done in %.1f s", entry.video_id, elapsed_s)
        else:
            log.error("%s: empty prediction: %s", entry.video_id, reason)
            failed.append((entry.video_id, reason))
            line = VideoPrediction(video_id=entry.video_id, ratio_wh=entry.ratio_wh).to_json_line()
        done[entry.video_id] = line
        flush()
        if progress:
            progress(1)

    flush()
    todo: list[tuple[Path, IndexEntry]] = []
    for entry in entries:
        if entry.video_id in done:
            if progress:
                progress(1)
            continue
        path = find_video(entry, videos)
        if path is None:
            finish(entry, None, f"no video file for id {entry.video_id!r} in {videos}", 0.0)
        else:
            todo.append((path, entry))
    (executor or LocalExecutor(isolate=isolate)).run(
        _LineOf(predict), todo, time_limit_s=time_limit_s,
        done=lambda o: finish(todo[o.index][1], o.value, o.error, o.elapsed_s),
    )
    order = {e.video_id: k for k, e in enumerate(entries)}
    failed.sort(key=lambda f: order[f[0]])
    return BatchResult(written=len(entries) - skipped, skipped=skipped, failed=tuple(failed))


def probe_sizes(entries: Sequence[IndexEntry], videos_dir: str | Path) -> dict[str, VideoInfo]:
    """Probe the videos of ``entries`` that can be found and opened; the rest are left out."""
    from indexer.probe import probe_video

    out = {}
    for e in entries:
        path = find_video(e, Path(videos_dir))
        if path is None:
            log.warning("%s: no video file in %s", e.video_id, videos_dir)
            continue
        try:
            out[e.video_id] = probe_video(path, e.video_id)
        except RHLError as exc:
            log.warning("%s: %s", e.video_id, exc)
    return out


@dataclass(frozen=True)
class HighlightPredictor:
    """The main job as a batch predictor: highlights, then a crop box per kept frame.

    The encoder is loaded on the first video a process predicts and kept for the next ones (a
    Ray actor predicts many; a local child process one).
    """

    settings: Settings

    @functools.cached_property
    def encoder(self) -> Encoder | None:
        """The semantic encoder, or ``None`` on signals only (loaded once per process)."""
        from retrieval_hl.pipeline import load_encoder_or_none

        return load_encoder_or_none(self.settings, required=False)

    def __call__(self, path: Path, video_id: str, ratio_wh: tuple[int, int]) -> VideoPrediction:
        """Predict one video's line."""
        from retrieval_hl.pipeline import highlight_video

        hl = highlight_video(path, settings=self.settings, ratio_wh=ratio_wh, video_id=video_id,
                             encoder=self.encoder)
        return VideoPrediction.from_crop_boxes(video_id, ratio_wh, hl.crops)


def for_remote_workers(settings: Settings) -> Settings:
    """``settings`` for predictors on other machines (``rhl batch --ray``).

    A store path names a folder on each worker's own disk, so workers keep slice vectors in
    memory only (the predictions do not need them stored); a Qdrant server URL is one store all
    of them write to (idempotent ids, so a retried video writes the same points again).
    """
    if settings.store.strip().startswith(("http://", "https://")):
        return settings
    log.info("batch on Ray: slice vectors are not kept (store %s is local to each machine; "
             "give --store http://QDRANT:6333 to keep them)", settings.store)
    return settings.model_copy(update={"store": "qdrant::memory:"})


def _encoder_problem(spec: str) -> str | None:
    """Why the encoder ``spec`` cannot be built here, or ``None`` when it can."""
    import torch  # noqa: F401  (before anything that may import decord)

    from indexer.encoders import create_encoder

    try:
        create_encoder(spec)
    except EncoderError as exc:
        return str(exc)
    return None


def make_predictor(settings: Settings) -> Predictor:
    """The default batch predictor for ``settings``.

    Whether the encoder loads is settled once, in a process of its own (the parent forks a
    child per video and stays free of torch threads). When it cannot, ``semantic="auto"`` warns
    once and runs every video on signals only, instead of each video paying for a failed load
    (about 3 s for ViT-B-32) and repeating the warning; ``semantic="on"`` stops before any video.

    Raises:
        EncoderError: ``semantic="on"`` and the encoder's weights cannot be had.
    """
    if settings.semantic != "off":
        try:
            with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
                problem = pool.submit(_encoder_problem, settings.encoder).result()
        except Exception as exc:  # noqa: BLE001 - a crashed check means no encoder, not no batch
            problem = f"the encoder check crashed ({type(exc).__name__}: {exc})"
        if problem is not None:
            if settings.semantic == "on":
                raise EncoderError(problem)
            log.warning("semantic matching is off (query-free highlights only): %s", problem)
            settings = settings.model_copy(update={"semantic": "off"})
    return HighlightPredictor(settings)
