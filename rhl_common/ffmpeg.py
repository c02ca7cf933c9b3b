"""Locate and run the ffmpeg binary. Every call is an argument list; no shell."""

from __future__ import annotations

import ctypes
import functools
import logging
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence

from rhl_common.errors import RenderError

log = logging.getLogger(__name__)


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


def run_ffmpeg(args: Sequence[str], *, what: str) -> None:
    """Run ffmpeg with ``args``; raise ``RenderError`` naming ``what`` on failure.

    On Linux the ffmpeg process dies with ours, so a killed run leaves no encoder running.
    """
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    log.debug("ffmpeg: %s", cmd)
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=DIE_WITH_PARENT,  # noqa: PLW1509
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no message"]
        raise RenderError(f"ffmpeg failed while {what}: {tail[0]}")
