"""What every ``rhl`` command shares: console logging and the ``-q``/``-v`` options, which are
accepted before the subcommand (``rhl -q index``) and after it (``rhl index -q``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

PACKAGES = ("rhl_common", "indexer", "retrieval_hl", "library", "prompts")


class _ConsoleHandler(logging.StreamHandler):
    """The CLI's stderr log handler; replaced, not stacked, when the CLI runs again in-process."""


def setup_logging(verbose: int, quiet: bool) -> None:
    """Log to stderr: warnings with ``quiet``, debug with ``verbose`` (-vv: libraries too)."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = _ConsoleHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)  # a log file (batch) may lower the loggers' levels, not the console's
    root = logging.getLogger()
    # Handlers the host installed (an embedding app, pytest's capture) stay.
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _ConsoleHandler)]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)
    for name in PACKAGES:
        logging.getLogger(name).setLevel(level)


def _state(ctx: click.Context) -> dict[str, Any]:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = {"config": None, "quiet": False, "verbose": 0}
    return root.obj


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        state = _state(ctx)
        state["quiet"] = True
        setup_logging(state["verbose"], True)


def _set_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value and not ctx.resilient_parsing:
        state = _state(ctx)
        state["verbose"] += value
        setup_logging(state["verbose"], state["quiet"])


def log_options(f: Any) -> Any:
    """Add ``-v``/``--verbose`` and ``-q``/``--quiet`` to a command or group."""
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet,
                     help="Warnings and errors only; no progress bars.")(f)
    return click.option("-v", "--verbose", count=True, expose_value=False, callback=_set_verbose,
                        help="More log output (-vv includes libraries).")(f)


class Command(click.Command):
    """A command that also takes ``-q``/``-v`` after its name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        log_options(self)


class Group(click.Group):
    """A group whose commands (and subgroups) take ``-q``/``-v`` after their names."""

    command_class = Command

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not any(p.name == "quiet" for p in self.params):
            log_options(self)


Group.group_class = Group
