"""Video files on an executor with resume: what is stored already is not sent again, and every
file gets a report, in the order given (``index_videos``, the library's ``add_paths``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from retrieval_hl.executors.base import Executor, Outcome, Work

R = TypeVar("R")


def run_files(
    paths: Sequence[str | os.PathLike[str]],
    executor: Executor,
    work: Work,
    *,
    stored: Callable[[str, str], R | None],
    done: Callable[[str, Any, float], R],
    failed: Callable[[str, str], R],
    time_limit_s: float,
    progress: Callable[[int], None] | None = None,
) -> list[R]:
    """Run ``work`` on the files not stored yet and report on every file.

    Args:
        paths: The video files.
        executor: Where ``work(path)`` runs.
        work: The per-file work.
        stored: ``stored(path, video_id)``: the report of a file that is stored already (it is
            not sent), or ``None`` to send it.
        done: ``done(path, value, elapsed_s)``: the report of a file the work returned
            ``value`` for; called in this process as each file finishes.
        failed: ``failed(path, reason)``: the report of a file that cannot be read or whose
            work failed (raised, over ``time_limit_s``, its worker died after retries).
        time_limit_s: Time limit per file.
        progress: Called with 1 as each file is reported.

    Returns:
        One report per path, in the order given.
    """
    from indexer.probe import video_id_for

    reports: dict[int, R] = {}
    todo: list[tuple[int, str]] = []

    def report(k: int, value: R) -> None:
        reports[k] = value
        if progress:
            progress(1)

    for k, p in enumerate(map(str, paths)):
        try:
            vid = video_id_for(p)
        except OSError as exc:
            report(k, failed(p, f"cannot read {p!r}: {exc.strerror}"))
            continue
        if (have := stored(p, vid)) is not None:
            report(k, have)
        else:
            todo.append((k, p))

    def finish(o: Outcome) -> None:
        k, p = todo[o.index]
        report(k, done(p, o.value, o.elapsed_s) if o.ok else failed(p, o.error or ""))

    executor.run(work, [p for _, p in todo], time_limit_s=time_limit_s, done=finish)
    return [reports[k] for k in range(len(paths))]
