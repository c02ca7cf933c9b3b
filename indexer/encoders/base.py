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

import contextlib
import hashlib
import importlib
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from rhl_common.atomic import write_atomic
from rhl_common.errors import EncoderError
from rhl_common.paths import cache_dir

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_root_logger(level: int = logging.CRITICAL) -> Iterator[None]:
    """The root logger at ``level`` inside the block (a library's chatter on it), restored after."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(old)

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
    #: Whether each frame's vector depends on that frame alone (an image encoder), so the indexer
    #: may skip near-duplicate frames and reuse a neighbour's vector (coarse to fine); a
    #: video-level encoder, which embeds runs of consecutive frames, says False.
    per_frame: bool
    #: Whether ``relevance_maps(frames, query)`` gives meaningful per-patch text relevance
    #: (trained weights of a patch-based model); grounding uses it as a cue only then.
    patch_relevance: bool

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        """Encode RGB uint8 frames (n, h, w, 3) into (n, dim) unit vectors."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts into (n, dim) unit vectors."""
        ...



TEXT_CACHE_MAX = 50_000


class TextEmbeddingCache:
    """Text -> unit vector, kept on disk per encoder so fixed texts (the vocabulary, repeated
    queries) are embedded once, not in every process.

    ``key`` names everything the vectors depend on (spec, weights file, precision); one file per
    key, rewritten atomically when new texts arrive (at most ``TEXT_CACHE_MAX`` are kept). An
    unreadable file is ignored (and replaced on the next write).
    """

    def __init__(self, key: str, dim: int, directory: Path | None = None) -> None:
        """Load the cache for ``key`` (vectors of length ``dim``) from ``directory`` (default
        ``$XDG_CACHE_HOME/retrieval-hl/text-embeddings``), if it holds one.
        """
        directory = directory or cache_dir("text-embeddings")
        self.dim = dim
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        self.path = directory / f"{digest}.npz"
        self._vec: dict[str, np.ndarray] = {}
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    if z["vectors"].shape[1:] == (dim,) and str(z["key"]) == key:
                        self._vec = dict(zip(z["texts"].tolist(), z["vectors"], strict=True))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring unreadable text-embedding cache %s: %s", self.path, exc)
        self._key = key

    def __len__(self) -> int:
        return len(self._vec)

    def encode(self, texts: Sequence[str], embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Vectors of ``texts``; ``embed`` is called once, on the texts not cached yet."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._vec]
        if missing:
            self._vec.update(zip(missing, embed(missing), strict=True))
            self._save()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vec[t] for t in texts]).astype(np.float32)

    def _save(self) -> None:
        if len(self._vec) > TEXT_CACHE_MAX:
            return
        buf = io.BytesIO()
        texts = list(self._vec)
        np.savez(buf, key=np.array(self._key), texts=np.array(texts, dtype=str),
                 vectors=np.stack([self._vec[t] for t in texts]).astype(np.float32))
        try:
            write_atomic(self.path, buf.getvalue())
        except OSError as exc:
            log.warning("cannot write the text-embedding cache %s: %s", self.path, exc)


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
