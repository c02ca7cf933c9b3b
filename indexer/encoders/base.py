"""Encoders turn proxy frames and texts into unit vectors in one space.

An encoder is named by a spec string ``<family>:<arch>:<weights>``:

- ``open_clip:ViT-B-32:laion2b_s34b_b79k`` (default): a pretrained tag, from the Hugging Face hub
  cache or a download;
- ``open_clip:ViT-B-32:/path/to/open_clip_pytorch_model.bin``: a local weights file;
- ``open_clip:<arch>:random``: seeded random weights. Results are meaningless; for speed runs
  and tests only, and said so loudly in the log;
- ``xclip:microsoft/xclip-base-patch32:hub``: a video-level encoder (X-CLIP), see
  :mod:`indexer.encoders.xclip`.

Back-ends are imported when an encoder of their family is built (:data:`ENCODERS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from rhl_common.errors import EncoderError

DEFAULT_ENCODER = "open_clip:ViT-B-32:laion2b_s34b_b79k"
MULTILINGUAL_ENCODER = "open_clip:xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k"
RANDOM_SEED = 0

WEIGHTS_HELP = (
    "supply the weights one of three ways: (1) run once where huggingface.co is reachable so they "
    "land in the hub cache (HF_HOME, default ~/.cache/huggingface), then copy that cache here; "
    "(2) set HF_ENDPOINT to a reachable hub mirror; (3) give a local file, e.g. "
    "--encoder open_clip:ViT-B-32:/path/to/open_clip_pytorch_model.bin (or RHL_ENCODER=...)"
)


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed encoder spec string."""

    family: str
    arch: str
    weights: str

    @classmethod
    def parse(cls, spec: str) -> EncoderSpec:
        """Parse ``family:arch:weights``; the weights part may itself contain colons (paths).

        Raises:
            EncoderError: the spec is malformed or names an unknown family.

        """
        parts = spec.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise EncoderError(
                f"bad encoder spec {spec!r}; expected family:arch:weights, e.g. {DEFAULT_ENCODER}"
            )
        if parts[0] not in ENCODERS:
            raise EncoderError(f"unknown encoder family {parts[0]!r}; choose {', '.join(ENCODERS)}")
        return cls(*parts)

    @property
    def is_random(self) -> bool:
        """True when the weights are seeded random ones."""
        return self.weights == "random"

    @property
    def is_path(self) -> bool:
        """True when the weights part names a local file."""
        return "/" in self.weights or Path(self.weights).suffix in (".bin", ".pt", ".safetensors")

    def __str__(self) -> str:
        return f"{self.family}:{self.arch}:{self.weights}"


class Encoder(Protocol):
    """Maps images and texts to L2-normalised float32 vectors of length ``dim``."""

    name: str
    spec: str
    dim: int
    multilingual: bool
    #: Whether ``relevance_maps(frames, query)`` gives meaningful per-patch text relevance
    #: (trained weights of a patch-based model); grounding uses it as a cue only then.
    patch_relevance: bool

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        """Encode RGB uint8 frames (n, h, w, 3) into (n, dim) unit vectors."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts into (n, dim) unit vectors."""
        ...



# Family -> "module:class", imported when an encoder of that family is built.
ENCODERS: dict[str, str] = {
    "open_clip": "indexer.encoders.open_clip:OpenClipEncoder",
    "xclip": "indexer.encoders.xclip:XClipEncoder",
}
_CACHE: dict[str, Encoder] = {}


def create_encoder(spec: str = DEFAULT_ENCODER) -> Encoder:
    """Build (or reuse, within this process) the encoder named by ``spec``.

    Raises:
        EncoderError: bad spec, unknown architecture or tag, or weights that cannot be had.

    """
    parsed = EncoderSpec.parse(spec)
    key = str(parsed)
    if key not in _CACHE:
        module, name = ENCODERS[parsed.family].split(":")
        _CACHE[key] = getattr(importlib.import_module(module), name)(parsed)
    return _CACHE[key]
