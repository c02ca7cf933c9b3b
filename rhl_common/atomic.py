"""Atomic file writes: a temp file in the same directory, fsync, then rename over the target.

While a temp file is being written its writer holds a ``flock`` on it; a temp file nobody holds
was left by a killed process, and the next write of the same target removes it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rhl_common import faults


def _remove_stale_temps(target: Path) -> None:
    """Remove temp files of ``target`` whose writer is gone (no lock held on them)."""
    for p in target.parent.glob(f".{glob.escape(target.name)}.*{glob.escape(target.suffix)}"):
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            p.unlink()
        except OSError:
            pass  # a live writer holds it, or it is gone already
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to ``target``; on clean exit it replaces ``target``, else vanishes.

    For writers that want a path (ffmpeg, faiss). Readers never see a half-written file, and
    the temp file of a killed writer is removed by the next write of ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    while True:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent
        )
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:  # not removed as stale between mkstemp and flock
            break
        os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
    try:
        yield Path(tmp)
        faults.reached("atomic.before-rename")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.close(fd)


def write_atomic(target: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``target`` atomically; returns the target path."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
    return Path(target)


def check_writable(
    path: str | os.PathLike[str], *, directory: bool = False, what: str = "--out"
) -> Path:
    """Check, before any work and without creating anything, that ``path`` can be written: a
    file (or with ``directory`` a directory) whose nearest existing folder accepts a new file.

    Raises:
        ConfigError: ``path`` is of the wrong kind, or its folder cannot be made or written.

    """
    from rhl_common.errors import ConfigError

    p = Path(path)
    if directory and p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {str(p)!r} is a file; give a directory for the run's outputs")
    if not directory and p.is_dir():
        raise ConfigError(f"{what} {str(p)!r} is a directory; give a file name")
    folder = p if directory else p.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(
            f"{what} {str(p)!r} cannot be written: {e.strerror or e} ({str(folder)!r})"
        ) from None
    return p
