"""Adding many files to a library on an executor (``rhl library add DIR --ray``).

Workers probe, embed and transcribe (the heavy part, models loaded once per worker); this
process commits
what each returns through the library, as it arrives, so the catalog and its writer lock stay in
one place and the vectors reach whatever store the library uses. A file whose source video is
already in the library is not sent again, so an interrupted add resumes.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from indexer.encoders import Encoder, create_encoder
from indexer.pipeline import IndexedVideo, embed_video
from indexer.probe import probe_video
from indexer.speech.models import Transcript
from library.catalog import CLIP_MAX_S, Library, clip_id_for, embed_ranges
from library.models import LibraryClip
from retrieval_hl.config import Settings
from retrieval_hl.executors import Executor, run_files
from retrieval_hl.speech.channel import listen
from rhl_common.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedForLibrary:
    """Executor work: a file path in; ``("video", IndexedVideo, transcript)`` for a video cut
    into shot clips, or ``("clip", (VideoInfo, embed_ranges result), transcript)`` for a file
    that is one clip; ``transcript`` is what is said in the file (``None``: nobody speaks, or
    speech is off or unavailable).
    """

    settings: Settings
    encoder_spec: str
    mode: str = "auto"

    @functools.cached_property
    def encoder(self) -> Encoder:
        """The library's encoder, loaded on first use in each worker process."""
        return create_encoder(self.encoder_spec)

    def __call__(self, path: str) -> tuple[str, Any, Transcript | None]:
        """Probe, embed and transcribe one file the way ``Library.add_path`` would."""
        s, info = self.settings, probe_video(path)
        heard = listen(info, s)
        transcript = heard[0] if heard is not None else None
        mode = self.mode
        if mode == "auto":
            mode = "clip" if info.duration_s <= CLIP_MAX_S else "video"
        if mode == "video":
            v = embed_video(info, self.encoder, window_s=s.window_s, sample_fps=s.sample_fps,
                            snap_to_shots=True, reader=s.reader)
            return ("video", IndexedVideo(v.info, v.slices, v.vectors, v.encoder_spec),
                    transcript)
        n = info.n_frames
        ranges = embed_ranges(info, self.encoder, [(clip_id_for(info.video_id, 0, n), 0, n)],
                              window_s=s.window_s, sample_fps=s.sample_fps, reader=s.reader)
        return "clip", (info, ranges), transcript


@dataclass(frozen=True)
class AddReport:
    """What ``add_paths`` did with one file: its new clips, or why it has none."""

    path: str
    clips: tuple[LibraryClip, ...] = ()
    skipped: bool = False
    error: str | None = None


def add_paths(
    lib: Library,
    paths: Sequence[str | os.PathLike[str]],
    executor: Executor,
    *,
    mode: str = "auto",
    tags: Sequence[str] = (),
    category: str | None = None,
    link: bool = False,
    time_limit_s: float = 3600.0,
    progress: Callable[[int], None] | None = None,
) -> list[AddReport]:
    """Add files to ``lib`` as ``Library.add_path`` does (media copied in unless ``link``),
    embedding them on ``executor``.

    Returns:
        One report per path, in the order given; a file that fails (unreadable, over
        ``time_limit_s``, its worker died after retries) is reported and the others go on.

    Raises:
        ConfigError: unknown mode.
    """
    if mode not in ("auto", "clip", "video"):
        raise ConfigError(f"unknown add mode {mode!r}; choose auto, clip or video")
    have = {c.source_video_id for c in lib.list()}

    def stored(p: str, vid: str) -> AddReport | None:
        if vid not in have:
            return None
        log.info("%s is already in library %s; not sent", p, lib.name)
        return AddReport(p, skipped=True)

    def added(p: str, value: tuple[str, Any, Transcript | None], _elapsed_s: float) -> AddReport:
        kind, embedded, transcript = value
        if kind == "video":
            clips = lib.add_video(p, tags=tags, category=category, link=link, video=embedded,
                                  transcript=transcript)
        else:
            clips = lib.add_clip_file(p, tags=tags, category=category, link=link,
                                      embedded=embedded, transcript=transcript)
        return AddReport(p, tuple(clips))

    def failed(p: str, reason: str) -> AddReport:
        log.error("%s: not added: %s", p, reason)
        return AddReport(p, error=reason)

    return run_files(paths, executor, EmbedForLibrary(lib.settings, lib.encoder_spec, mode),
                     stored=stored, done=added, failed=failed, time_limit_s=time_limit_s,
                     progress=progress)
