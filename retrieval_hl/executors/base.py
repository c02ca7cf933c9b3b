"""The executor protocol: run one picklable ``work`` callable over items, report each outcome."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from rhl_common.errors import RHLError

# Work maps one item (e.g. a video's path and id) to a picklable value. A worker calls the same
# object for every item it is given, so work may load its models on first use and keep them.
Work = Callable[[Any], Any]


@dataclass(frozen=True)
class Outcome:
    """What became of one item: a value, or the one-line reason it has none.

    Attributes:
        index: Position of the item in the sequence given to :meth:`Executor.run`.
        value: ``work(item)``; ``None`` when it failed.
        error: Why it failed (raised, over the time limit, its worker died); ``None`` on success.
        elapsed_s: Wall time from the item's start to its outcome.
    """

    index: int
    value: Any = None
    error: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether ``work`` returned a value."""
        return self.error is None


@runtime_checkable
class Executor(Protocol):
    """Runs ``work`` over items, each isolated from the others and under a time limit."""

    name: str

    def run(
        self,
        work: Work,
        items: Sequence[Any],
        *,
        time_limit_s: float,
        done: Callable[[Outcome], None],
    ) -> None:
        """Call ``work(item)`` for every item; call ``done`` once per item as it finishes.

        ``done`` runs in the calling process, in finishing order (not item order). A failure
        (an exception, the time limit, a dead worker after its retries) costs that item only.
        """
        ...


def failure_reason(exc: BaseException) -> str:
    """One line saying why ``work`` failed: the message of our own errors, else type, message
    and the innermost frame.
    """
    if isinstance(exc, RHLError):
        text = str(exc)
    else:
        where = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-1)
        frame = where[-2].strip().splitlines()[0] if len(where) > 1 else ""
        text = f"{type(exc).__name__}: {exc}" + (f" | {frame}" if frame else "")
    return text.splitlines()[0] if text.strip() else type(exc).__name__
