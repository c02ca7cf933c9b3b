"""Locate and run the ffmpeg binary. Every call is an argument list; no shell.

Every run is watched: ffmpeg reports its progress (``-progress``) and is killed when that stops
moving for ``STALL_TIMEOUT_S``, so no caller ever waits on a stalled ffmpeg forever.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence

from rhl_common.errors import RenderError

log = logging.getLogger(__name__)

# A run whose progress report (frames, output time, bytes written) has not moved for this long
# is stalled: ffmpeg 9 has been seen to deadlock at 0 % CPU, forever. Generous, because a legit
# run can go quiet for a while: opening a long file, seeking far into a long GOP, x264's
# lookahead before its first frame, the +faststart rewrite of a big output on a busy machine
# all take seconds, never minutes.
STALL_TIMEOUT_S = 120.0
# The progress fields that move while ffmpeg works (``speed`` and ``fps`` change when stalled).
_PROGRESS_KEYS = (b"frame", b"out_time_us", b"total_size", b"progress")


@functools.lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    """Path of the system ``ffmpeg`` if there is one, else the binary ``imageio-ffmpeg`` ships."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    log.info("no system ffmpeg on PATH; using the imageio-ffmpeg binary %s", exe)
    return exe


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGKILL it when its parent dies (even by SIGKILL)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# ``preexec_fn`` for every ffmpeg child: it dies with our process (Linux; elsewhere nothing).
DIE_WITH_PARENT = _die_with_parent if sys.platform.startswith("linux") else None


def run_ffmpeg(
    args: Sequence[str],
    *,
    what: str,
    stall_timeout_s: float = STALL_TIMEOUT_S,
    cancel: threading.Event | None = None,
) -> None:
    """Run ffmpeg with ``args``; raise ``RenderError`` naming ``what`` on failure.

    On Linux the ffmpeg process dies with ours, so a killed run leaves no encoder running.
    Setting ``cancel`` kills it (runs side by side stop when one of them fails).

    Raises:
        RenderError: ffmpeg failed, was cancelled, or made no progress for ``stall_timeout_s``
            and was killed.
    """
    with ffmpeg_process(args, what=what, stall_timeout_s=stall_timeout_s, cancel=cancel):
        pass


@contextlib.contextmanager
def ffmpeg_process(
    args: Sequence[str],
    *,
    what: str,
    stall_timeout_s: float = STALL_TIMEOUT_S,
    stdin: bool = False,
    cancel: threading.Event | None = None,
) -> Iterator[subprocess.Popen]:
    """Start ffmpeg with ``args`` under a stall watchdog; yield the process; wait for it on exit.

    With ``stdin`` the caller writes the input to ``proc.stdin`` inside the block (closed on
    exit); a write that fails because the watchdog killed ffmpeg is reported as the stall.
    ffmpeg's stdout carries its progress report, so no output may go to ``pipe:1``. Setting
    ``cancel`` kills ffmpeg (within a second).

    Raises:
        RenderError: ffmpeg failed, was cancelled, or made no progress for ``stall_timeout_s``
            and was killed.
    """
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats",
           "-progress", "pipe:1", "-y", *args]
    log.debug("ffmpeg: %s", cmd)
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=DIE_WITH_PARENT,  # noqa: PLW1509
    )
    watch = _Watchdog(proc, stall_timeout_s, cancel)
    watch.start()
    try:
        try:
            yield proc
        except BrokenPipeError:
            pass  # ffmpeg is gone (failed or killed); its exit says why
        finally:
            if proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
        watch.join()
    finally:
        if proc.poll() is None:  # the block raised: do not leave ffmpeg running
            proc.kill()
            watch.join()
    if watch.cancelled:
        raise RenderError(f"ffmpeg cancelled while {what}")
    if watch.stalled:
        raise RenderError(f"ffmpeg stalled while {what}: no progress for {stall_timeout_s:g} s, "
                          "killed")
    if proc.returncode != 0:
        tail = watch.stderr.strip().splitlines()[-1:] or ["no message"]
        raise RenderError(f"ffmpeg failed while {what}: {tail[0]}")


class _Watchdog(threading.Thread):
    """Reads ffmpeg's progress report and its errors; kills it when the report stops moving or
    ``cancel`` is set.
    """

    def __init__(
        self, proc: subprocess.Popen, timeout_s: float, cancel: threading.Event | None
    ) -> None:
        super().__init__(name="ffmpeg-watchdog", daemon=True)
        self.proc, self.timeout_s, self.cancel = proc, timeout_s, cancel
        self.stalled = self.cancelled = False
        self.stderr = ""

    def run(self) -> None:
        """Until ffmpeg closes its pipes: collect stderr, note progress, kill it if stalled or
        cancelled.
        """
        err, report = bytearray(), bytearray()
        seen: dict[bytes, bytes] = {}
        last_progress = time.monotonic()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            sel.register(self.proc.stderr, selectors.EVENT_READ)
            while sel.get_map():
                for key, _ in sel.select(timeout=min(1.0, self.timeout_s / 4)):
                    data = os.read(key.fd, 65536)
                    if not data:
                        sel.unregister(key.fileobj)
                    elif key.fileobj is self.proc.stderr:
                        err += data
                    else:
                        report += data
                        lines, _, rest = bytes(report).rpartition(b"\n")
                        report[:] = rest
                        if _moved(lines, seen):
                            last_progress = time.monotonic()
                if time.monotonic() - last_progress > self.timeout_s and not self.stalled:
                    log.warning("ffmpeg made no progress for %g s; killing it", self.timeout_s)
                    self.stalled = True
                    self.proc.kill()
                if self.cancel is not None and self.cancel.is_set() and not self.cancelled:
                    self.cancelled = True
                    self.proc.kill()
        self.proc.wait()
        self.stderr = err.decode(errors="replace")


def _moved(report: bytes, seen: dict[bytes, bytes]) -> bool:
    """Whether whole lines of ``-progress`` output change a field that moves while ffmpeg works
    (``seen`` holds the last value of each).
    """
    moved = False
    for line in report.splitlines():
        key, _, value = line.partition(b"=")
        if key in _PROGRESS_KEYS and seen.get(key) != value:
            seen[key] = value
            moved = True
    return moved
