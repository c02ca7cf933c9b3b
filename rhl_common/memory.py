"""Give the memory a finished stage freed back to the system."""

from __future__ import annotations

import ctypes
import functools
import logging

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _malloc_trim():  # noqa: ANN202
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (AttributeError, OSError):
        return None


def release_free_memory() -> None:
    """Return the heap pages freed so far to the system (glibc's ``malloc_trim``; elsewhere
    nothing). Called before a stage that needs much for a moment: memory the earlier stages
    freed (decoded frames, the image encoder's activations, the detectors' buffers) otherwise
    stays resident under its peak (about 180 MiB after the image encoder and the detectors).
    Called now and then inside a long stage too (the index pass, the transcription), whose
    freed memory otherwise stays resident and grows with the video.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
