"""Where per-video work runs, behind one :class:`Executor` protocol.

- ``local``: :class:`retrieval_hl.executors.local.LocalExecutor`, a child process per video on
  this machine (the batch's isolation and time limit), or in-process with ``isolate=False``;
- ``ray``: :class:`retrieval_hl.executors.ray_actors.RayExecutor`, one Ray actor per worker on a
  Ray cluster (or a local Ray), models loaded once per actor. ``ray`` is an optional extra
  (``pip install retrieval-hl[ray]``) imported only when this executor runs.

The caller (``run_batch``, ``index_videos``, the library's ``add_paths``) keeps resume, ordering
and writing (for video files, with :func:`~retrieval_hl.executors.files.run_files`); an executor
only runs ``work(item)`` for each item and reports each outcome.
"""

from __future__ import annotations

import importlib

from retrieval_hl.executors.base import Executor, Outcome, Work, failure_reason
from retrieval_hl.executors.files import run_files
from rhl_common.errors import ConfigError

__all__ = ["EXECUTORS", "Executor", "Outcome", "Work", "create_executor", "failure_reason",
           "run_files"]

# Executor name -> "module:class", imported when one of that kind is created.
EXECUTORS: dict[str, str] = {
    "local": "retrieval_hl.executors.local:LocalExecutor",
    "ray": "retrieval_hl.executors.ray_actors:RayExecutor",
}


def create_executor(name: str, **options: object) -> Executor:
    """The executor ``name`` (a key of :data:`EXECUTORS`) built with ``options``.

    Raises:
        ConfigError: unknown name, or (``ray``) the ray package is not installed.

    """
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    module, cls = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
