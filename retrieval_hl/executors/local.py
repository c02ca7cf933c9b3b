"""The local executor: a child process per item on this machine, or the calling process."""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from retrieval_hl.executors.base import Outcome, Work, failure_reason

log = logging.getLogger(__name__)


def _child(work: Work, item: Any, conn) -> None:  # noqa: ANN001
    try:
        conn.send(("ok", work(item)))
    except BaseException as exc:  # noqa: BLE001 - any crash costs this item only
        conn.send(("error", failure_reason(exc)))
    finally:
        conn.close()


def _start_method() -> str:
    """Fork where there is fork, except in a process where Ray runs: forking a process whose
    Ray threads hold locks can hang the child.
    """
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        return "spawn"
    return "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def run_isolated(work: Work, item: Any, limit_s: float) -> Any:
    """``work(item)`` in a child process (forked where possible) that is killed after
    ``limit_s`` seconds.

    Raises:
        TimeoutError: over the time limit.
        RuntimeError: ``work`` raised (the message is its one-line reason) or the child died.

    """
    ctx = mp.get_context(_start_method())
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(work, item, send), daemon=True)
    proc.start()
    send.close()
    if not recv.poll(limit_s):
        proc.kill()
        proc.join()
        raise TimeoutError(f"over the per-video time limit of {limit_s:g} s")
    try:
        status, payload = recv.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"worker died (exit code {proc.exitcode})") from None
    proc.join()
    if status != "ok":
        raise RuntimeError(payload)
    return payload


class LocalExecutor:
    """Items one after another on this machine, each in a child process of its own (``isolate``)
    so a crash or a hang costs that item only, or in the calling process.

    Args:
        isolate: A child process per item, killed at the time limit. Without it the time limit
            is not enforced and a crash ends the run.
    """

    name: ClassVar[str] = "local"

    def __init__(self, isolate: bool = True) -> None:
        self.isolate = isolate

    def run(
        self,
        work: Work,
        items: Sequence[Any],
        *,
        time_limit_s: float,
        done: Callable[[Outcome], None],
    ) -> None:
        """Run ``work`` on each item in order; see :class:`retrieval_hl.executors.Executor`."""
        for i, item in enumerate(items):
            t0 = time.monotonic()
            try:
                value = run_isolated(work, item, time_limit_s) if self.isolate else work(item)
            except Exception as exc:  # noqa: BLE001 - per-item isolation
                reason = str(exc) if self.isolate else failure_reason(exc)
                done(Outcome(i, error=reason.splitlines()[0] if reason else type(exc).__name__,
                             elapsed_s=time.monotonic() - t0))
                continue
            done(Outcome(i, value=value, elapsed_s=time.monotonic() - t0))
