"""retrieval-hl: long raw video in, highlights out.

The API: ``highlight_video`` (the main job for one file, signals only when no encoder weights
are at hand), ``index_video`` and ``find_highlights`` (by meaning over an index; they need the
weights), and ``export_highlights``. They load lazily so that ``import retrieval_hl`` (and
``rhl --help``) stays fast.
"""

from rhl_common.errors import (
    ConfigError,
    EncoderError,
    RenderError,
    RHLError,
    StoreError,
    VideoOpenError,
    VLMResponseError,
)

__all__ = [
    "ConfigError",
    "EncoderError",
    "RHLError",
    "RenderError",
    "StoreError",
    "VLMResponseError",
    "VideoOpenError",
    "export_highlights",
    "find_highlights",
    "highlight_video",
    "index_video",
]
__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202
    if name in ("highlight_video", "index_video", "find_highlights", "export_highlights"):
        from retrieval_hl import pipeline as api

        return getattr(api, name)
    raise AttributeError(f"module 'retrieval_hl' has no attribute {name!r}")
