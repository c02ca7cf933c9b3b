"""A disk cache of VLM replies, so that a rerun over the same file asks nothing again.

A reply is stored under the hash of everything that decides it: the video file's content hash,
the chunk's span, the frames sent (indices and size), the full prompt text and the model name.
Only replies that parsed are stored: a failure or a junk answer is asked again next time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path

from rhl_common.atomic import write_atomic

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the file's bytes (remembered per path, size and mtime within the process)."""
    st = os.stat(path)
    return _file_digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


class ResponseCache:
    """Replies stored one file each under ``root``, named by the hash of their key.

    Args:
        root: the cache folder (made on first write).

    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @staticmethod
    def key(**parts: object) -> str:
        """A stable hash of ``parts`` (JSON-serialisable values)."""
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.txt"

    def get(self, key: str) -> str | None:
        """The stored reply for ``key``, or ``None``."""
        try:
            return self._path(key).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            log.warning("cannot read VLM cache entry %s: %s", self._path(key), exc)
            return None

    def put(self, key: str, reply: str) -> None:
        """Store ``reply`` under ``key`` atomically; a write failure is only a warning."""
        try:
            write_atomic(self._path(key), reply)
        except OSError as exc:
            log.warning("cannot write VLM cache entry under %s: %s", self.root, exc)
