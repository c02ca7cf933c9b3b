"""Named points on the commit paths where tests inject a kill or a write error.

Product code calls :func:`reached` at each point; it does nothing unless a test has set
:data:`hook` (in-process, or in a child process it starts), e.g. to ``os.kill`` itself with
SIGKILL exactly between two steps of a commit, or to raise ``OSError(ENOSPC)`` there.
"""

from __future__ import annotations

from collections.abc import Callable

# Called with the point's name; None in production.
hook: Callable[[str], None] | None = None


def reached(point: str) -> None:
    """Mark that the commit path has reached ``point`` (a test hook may kill or raise here)."""
    if hook is not None:
        hook(point)
