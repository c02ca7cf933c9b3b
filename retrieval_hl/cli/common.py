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


def ray_options(f: Any) -> Any:
    """Add ``--ray [ADDRESS]`` and ``--workers N`` (see :func:`make_executor`)."""
    f = click.option("--workers", type=click.IntRange(1), default=None,
                     help="With --ray: worker actors (default: one per CPU of the cluster).")(f)
    return click.option(
        "--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
        is_eager=True, callback=_check_ray_address,
        help="Run the videos on Ray workers: a cluster ADDRESS (auto, HOST:PORT, "
             "ray://HOST:10001) or, alone, $RAY_ADDRESS or a Ray on this machine. "
             "Needs: pip install 'retrieval-hl[ray]'.")(f)


def _check_ray_address(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse an ADDRESS that is a file or folder: ``rhl index --ray DIR`` took DIR for one.

    Eager, so this says so before click misses the arguments that were taken.
    """
    import os

    if value and os.path.exists(value):
        raise click.UsageError(
            f"--ray takes a cluster address, got the path {value!r}; put the videos before "
            "--ray, or write --ray=ADDRESS", ctx=ctx
        )
    return value


def make_executor(ray_address: str | None, workers: int | None) -> Any:
    """The executor the ``--ray``/``--workers`` options ask for; ``None`` (local) without ``--ray``.

    Raises:
        click.UsageError: ``--workers`` without ``--ray``.
        ConfigError: ray is not installed.
    """
    if ray_address is None:
        if workers is not None:
            raise click.UsageError("--workers needs --ray")
        return None
    from retrieval_hl.executors import create_executor

    return create_executor("ray", address=ray_address or None, workers=workers)


def video_files(paths: Any) -> list[str]:
    """``paths`` with each folder replaced by the video files in it (sorted by name)."""
    from pathlib import Path

    from retrieval_hl.competition.batch import VIDEO_EXTENSIONS

    out: list[str] = []
    for p in paths:
        if Path(p).is_dir():
            out += sorted(str(f) for f in Path(p).iterdir()
                          if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
        else:
            out.append(str(p))
    return out
