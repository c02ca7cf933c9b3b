"""The vector-store protocol and what every back-end shares: ids, payloads, input checks.

Back-ends live one per module (``faiss``, ``qdrant``) and are imported only when opened
(:func:`indexer.stores.open_store`). Point ids are deterministic (:func:`point_id`), so indexing
the same slices twice adds nothing. A store records the encoder spec and vector size it was first
given and refuses any other, so a collection never mixes embedding spaces. Scores are cosine
similarities: every back-end L2-normalises stored and query vectors.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from indexer.models import Slice
from rhl_common.errors import StoreError
from rhl_common.models import Frozen

DEFAULT_COLLECTION = "slices"
# FAISS searches go approximate (IVF) above this many points (retrieval_hl's Settings default).
DEFAULT_APPROX_THRESHOLD = 50_000
URI_FORMS = "faiss:DIR, a directory path, qdrant::memory:, qdrant:PATH, http(s)://HOST[:PORT]"

# Fixed namespace so ids are stable across machines and releases; changing it re-keys every store.
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/retrieval-hl/slices")
COLLECTION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class SearchHit(Frozen):
    """One retrieved slice and its cosine similarity to the query."""

    slice: Slice
    score_raw: float


@runtime_checkable
class VectorStore(Protocol):
    """Slice embeddings keyed by (encoder, video, slice index), searchable by cosine similarity."""

    name: str
    encoder_spec: str | None
    dim: int | None

    def upsert(self, slices: Sequence[Slice], vectors: np.ndarray, encoder_spec: str) -> int:
        """Insert or replace slices and their vectors; return how many points were new."""
        ...

    def replace_video(
        self, video_id: str, slices: Sequence[Slice], vectors: np.ndarray, encoder_spec: str
    ) -> int:
        """Make ``slices`` the whole of ``video_id`` (its other points go); return new points.

        Never leaves the video with nothing: a kill or error midway keeps its old slices or
        lands the new ones (each back-end's docstring says which it can promise).
        """
        ...

    def search(
        self,
        queries: np.ndarray,
        top_k: int = 10,
        video_id: str | None = None,
        tags: Sequence[str] = (),
    ) -> list[list[SearchHit]]:
        """Nearest slices per query, best first, optionally within one video and with all tags."""
        ...

    def get_video(self, video_id: str) -> tuple[list[Slice], np.ndarray]:
        """All slices of a video in index order and their vectors, float32 (n, dim)."""
        ...

    def count(self, video_id: str | None = None) -> int:
        """Count the points in the whole store or in one video."""
        ...

    def video_ids(self) -> list[str]:
        """Sorted ids of the videos that have at least one slice."""
        ...

    def delete_video(self, video_id: str) -> int:
        """Remove every slice of a video; return how many were removed."""
        ...

    def close(self) -> None:
        """Release files, locks and connections."""
        ...


def point_id(encoder_spec: str, video_id: str, index: int) -> uuid.UUID:
    """Deterministic id of one slice embedded by one encoder.

    Args:
        encoder_spec: The encoder spec string the vector came from.
        video_id: The slice's video.
        index: The slice's index in its video.

    Returns:
        A uuid5; JSON-encoding the triple keeps names unambiguous whatever characters they hold.

    """
    return uuid.uuid5(_ID_NAMESPACE, json.dumps([encoder_spec, video_id, int(index)]))



def payload_of(s: Slice) -> dict[str, Any]:
    """The JSON payload stored with a slice's vector."""
    return s.model_dump(mode="json")


def check_upsert(
    store: VectorStore, slices: Sequence[Slice], vectors: np.ndarray, encoder_spec: str
) -> np.ndarray:
    """Validate an upsert against the store's recorded encoder and dim; return float32 (n, dim)."""
    if not encoder_spec:
        raise StoreError("encoder_spec must be a non-empty string")
    arr = np.asarray(vectors, dtype=np.float32)
    if len(slices) == 0 and arr.size == 0:
        return arr.reshape(0, store.dim or 0)
    if arr.ndim != 2 or arr.shape[0] != len(slices) or arr.shape[1] == 0:
        raise StoreError(
            f"vectors must be float32 (n, dim) with n = {len(slices)} slices, got shape {arr.shape}"
        )
    if store.encoder_spec is not None and encoder_spec != store.encoder_spec:
        raise StoreError(
            f"{store.name} store holds vectors from encoder {store.encoder_spec!r}, "
            f"refusing vectors from {encoder_spec!r}; use another collection or index directory"
        )
    if store.dim is not None and arr.shape[1] != store.dim:
        raise StoreError(
            f"{store.name} store holds {store.dim}-d vectors, refusing {arr.shape[1]}-d vectors "
            f"(encoder {encoder_spec!r})"
        )
    if not np.isfinite(arr).all():
        raise StoreError("vectors contain NaN or infinite values")
    return arr


def check_replace(video_id: str, slices: Sequence[Slice]) -> None:
    """Refuse a ``replace_video`` whose slices are not all of ``video_id``."""
    other = next((s.video_id for s in slices if s.video_id != video_id), None)
    if other is not None:
        raise StoreError(
            f"replace_video({video_id!r}) was given a slice of video {other!r}; "
            "replace one video at a time"
        )


def check_queries(store: VectorStore, queries: np.ndarray, top_k: int) -> np.ndarray:
    """Validate search input; return float32 (q, dim)."""
    if top_k < 1:
        raise StoreError(f"top_k must be at least 1, got {top_k}")
    arr = np.asarray(queries, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise StoreError(f"queries must be (q, dim) or (dim,), got shape {arr.shape}")
    if store.dim is not None and arr.shape[1] != store.dim:
        raise StoreError(
            f"queries are {arr.shape[1]}-d but the {store.name} store holds {store.dim}-d vectors "
            f"(encoder {store.encoder_spec!r})"
        )
    return arr


def dedup_last(ids: Sequence[Any]) -> list[int]:
    """Positions to keep so each id appears once, the last occurrence winning (as a replace)."""
    last = {pid: pos for pos, pid in enumerate(ids)}
    return sorted(last.values())

