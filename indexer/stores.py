"""Vector stores behind one interface: slice embeddings in, nearest slices out.

Two back-ends, picked by :func:`open_store` from a URI:

- ``faiss:DIR`` or a plain directory path: :class:`FaissStore`, an exact inner-product index kept in
  ``DIR/<collection>/`` as ``index.faiss`` + ``payloads.json`` + ``meta.json``;
- ``qdrant::memory:``, ``qdrant:PATH`` (qdrant-client's embedded local mode) or ``http(s)://HOST``
  (a Qdrant server; ``QDRANT_API_KEY`` from the environment): :class:`QdrantStore`.

Point ids are deterministic (:func:`point_id`), so indexing the same slices twice adds nothing.
A store records the encoder spec and vector size it was first given and refuses any other, so a
collection never mixes embedding spaces. Scores are cosine similarities: both back-ends L2-normalise
stored and query vectors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import faiss
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from indexer.errors import StoreError
from indexer.models import Frozen, Slice

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "slices"
FAISS_FORMAT_VERSION = 1
URI_FORMS = "faiss:DIR, a directory path, qdrant::memory:, qdrant:PATH, http(s)://HOST[:PORT]"

# Fixed namespace so ids are stable across machines and releases; changing it re-keys every store.
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/retrieval-hl/slices")
_COLLECTION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_QDRANT_BATCH = 256


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


def faiss_id(uid: uuid.UUID) -> int:
    """Give the FAISS int64 label of a point: the top 63 bits of its uuid (never negative)."""
    return uid.int >> 65


def _payload(s: Slice) -> dict[str, Any]:
    return s.model_dump(mode="json")


def _check_upsert(
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


def _check_queries(store: VectorStore, queries: np.ndarray, top_k: int) -> np.ndarray:
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


def _dedup_last(ids: Sequence[Any]) -> list[int]:
    """Positions to keep so each id appears once, the last occurrence winning (as a replace)."""
    last = {pid: pos for pos, pid in enumerate(ids)}
    return sorted(last.values())


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class FaissStore:
    """Exact cosine search with FAISS, persisted in ``DIR/<collection>/``.

    The index is an ``IndexIDMap2(IndexFlatIP(dim))`` labelled by :func:`faiss_id`; payloads live
    in a JSON sidecar and the encoder spec, dim and format version in ``meta.json``. Every upsert or
    delete rewrites the three files atomically. One writer per directory at a time.

    Args:
        directory: The index directory; created if missing.
        collection: Subfolder of ``directory`` holding this collection.

    Raises:
        StoreError: The directory is not usable or its files are corrupt or disagree.

    """

    name: ClassVar[str] = "faiss"
    INDEX_FILE: ClassVar[str] = "index.faiss"
    PAYLOADS_FILE: ClassVar[str] = "payloads.json"
    META_FILE: ClassVar[str] = "meta.json"

    def __init__(self, directory: str | os.PathLike[str], collection: str = DEFAULT_COLLECTION):
        if not _COLLECTION_RE.match(collection):
            raise StoreError(
                f"bad collection name {collection!r}: use letters, digits, '_', '-' and '.'"
            )
        self.collection = collection
        self.path = Path(directory) / collection
        self.encoder_spec: str | None = None
        self.dim: int | None = None
        self._index: Any = None
        self._slices: dict[int, Slice] = {}
        self._by_video: dict[str, set[int]] = {}
        self._closed = False
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create FAISS index directory {self.path}: {e}") from e
        self._load()
        log.debug(
            "FAISS store %s: %d points, encoder %s", self.path, len(self._slices), self.encoder_spec
        )

    @classmethod
    def from_location(cls, location: str, collection: str = DEFAULT_COLLECTION) -> FaissStore:
        """Open the index directory ``location`` (the constructor :func:`open_store` calls)."""
        return cls(location, collection)

    # -- persistence -------------------------------------------------------------------------

    def _load(self) -> None:
        meta_p, index_p, pay_p = (
            self.path / n for n in (self.META_FILE, self.INDEX_FILE, self.PAYLOADS_FILE)
        )
        # Temp files left by a crash mid-write; the real files are always whole.
        for stale in self.path.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
        if not meta_p.exists():
            if index_p.exists() or pay_p.exists():
                raise StoreError(f"corrupt FAISS index directory {self.path}: meta.json missing")
            return
        try:
            meta = json.loads(meta_p.read_text(encoding="utf-8"))
            version, dim, spec = meta["version"], meta["dim"], meta["encoder_spec"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"corrupt FAISS meta file {meta_p}: {e!r}") from e
        if version != FAISS_FORMAT_VERSION:
            raise StoreError(
                f"FAISS index {self.path} has format version {version!r}; this release reads "
                f"version {FAISS_FORMAT_VERSION}"
            )
        if meta.get("collection", self.collection) != self.collection:
            raise StoreError(
                f"FAISS index {self.path} belongs to collection {meta['collection']!r}, "
                f"not {self.collection!r}"
            )
        if dim is None:
            return
        try:
            index = faiss.read_index(str(index_p))
        except RuntimeError as e:
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
            raise StoreError(f"corrupt FAISS index {index_p}: {reason}") from e
        if not isinstance(index, faiss.IndexIDMap2) or index.d != dim:
            raise StoreError(
                f"corrupt FAISS index {index_p}: expected IndexIDMap2 of dim {dim}, "
                f"got {type(index).__name__} of dim {index.d}"
            )
        try:
            raw = json.loads(pay_p.read_text(encoding="utf-8"))
            slices = {int(k): Slice.model_validate(v) for k, v in raw.items()}
        except (OSError, ValueError, TypeError, AttributeError) as e:
            reason = str(e).splitlines()[0]
            raise StoreError(f"corrupt FAISS payload file {pay_p}: {reason}") from e
        ids = faiss.vector_to_array(index.id_map)
        if len(ids) != len(slices) or not all(int(i) in slices for i in ids):
            raise StoreError(
                f"corrupt FAISS index directory {self.path}: index.faiss has {len(ids)} points, "
                f"payloads.json {len(slices)}, and they disagree; re-index into a fresh directory"
            )
        self.encoder_spec, self.dim, self._index, self._slices = spec, int(dim), index, slices
        for pid, s in slices.items():
            self._by_video.setdefault(s.video_id, set()).add(pid)

    def flush(self) -> None:
        """Write index, payloads and meta to disk, each file atomically (temp file + rename)."""
        self._check_open()
        if self._index is not None:
            _atomic_write(self.path / self.INDEX_FILE, faiss.serialize_index(self._index).tobytes())
        payloads = {str(pid): _payload(s) for pid, s in self._slices.items()}
        _atomic_write(self.path / self.PAYLOADS_FILE, json.dumps(payloads).encode("utf-8"))
        meta = {
            "encoder_spec": self.encoder_spec,
            "dim": self.dim,
            "collection": self.collection,
            "version": FAISS_FORMAT_VERSION,
        }
        _atomic_write(self.path / self.META_FILE, json.dumps(meta, indent=2).encode("utf-8"))

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"FAISS store {self.path} is closed")

    # -- VectorStore ---------------------------------------------------------------------------

    def upsert(self, slices: Sequence[Slice], vectors: np.ndarray, encoder_spec: str) -> int:
        """Insert or replace slices and their vectors.

        Args:
            slices: The slices, one per vector row.
            vectors: float32 (n, dim) embeddings; L2-normalised here if they are not already.
            encoder_spec: The encoder that produced ``vectors``.

        Returns:
            How many points were new (re-upserted ones are replaced and not counted).

        Raises:
            StoreError: Wrong shape, non-finite values, or another encoder or dim than the store's.

        """
        self._check_open()
        arr = _check_upsert(self, slices, vectors, encoder_spec)
        if len(slices) == 0:
            return 0
        ids = [faiss_id(point_id(encoder_spec, s.video_id, s.index)) for s in slices]
        keep = _dedup_last(ids)
        ids_arr = np.array([ids[k] for k in keep], dtype=np.int64)
        # Qdrant's cosine distance normalises on insert; doing the same keeps the back-ends'
        # scores and get_video vectors identical.
        vecs = np.ascontiguousarray(arr[keep])
        faiss.normalize_L2(vecs)
        if self._index is None:
            self.dim = arr.shape[1]
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self.encoder_spec = encoder_spec
        existing = np.array([i for i in ids_arr if int(i) in self._slices], dtype=np.int64)
        if len(existing):
            self._index.remove_ids(faiss.IDSelectorBatch(existing))
        self._index.add_with_ids(vecs, ids_arr)
        for k, pid in zip(keep, ids_arr.tolist(), strict=True):
            old = self._slices.get(pid)
            if old is not None:
                self._by_video[old.video_id].discard(pid)
            self._slices[pid] = slices[k]
            self._by_video.setdefault(slices[k].video_id, set()).add(pid)
        self.flush()
        return len(ids_arr) - len(existing)

    def _allowed(self, video_id: str | None, tags: Sequence[str]) -> np.ndarray | None:
        """Labels passing the filters, or None when there is no filter."""
        if video_id is None and not tags:
            return None
        pool = self._by_video.get(video_id, set()) if video_id is not None else self._slices.keys()
        want = set(tags)
        return np.array(
            sorted(p for p in pool if want <= set(self._slices[p].tags)), dtype=np.int64
        )

    def search(
        self,
        queries: np.ndarray,
        top_k: int = 10,
        video_id: str | None = None,
        tags: Sequence[str] = (),
    ) -> list[list[SearchHit]]:
        """Nearest slices per query by cosine similarity.

        Args:
            queries: float32 (q, dim) or (dim,) query vectors.
            top_k: At most this many hits per query.
            video_id: Only slices of this video.
            tags: Only slices carrying every one of these tags.

        Returns:
            One list of hits per query, best first; empty lists when nothing matches.

        Raises:
            StoreError: Bad query shape or dim, or ``top_k`` below 1.

        """
        self._check_open()
        q = _check_queries(self, queries, top_k)
        if self._index is None or self._index.ntotal == 0:
            return [[] for _ in range(len(q))]
        allowed = self._allowed(video_id, tags)
        n = self._index.ntotal if allowed is None else len(allowed)
        if n == 0:
            return [[] for _ in range(len(q))]
        q = np.ascontiguousarray(q)
        faiss.normalize_L2(q)
        k = min(top_k, n)
        if allowed is None:
            scores, labels = self._index.search(q, k)
        else:
            sel = faiss.IDSelectorBatch(allowed)  # must outlive the search call
            scores, labels = self._index.search(q, k, params=faiss.SearchParameters(sel=sel))
        return [
            [
                SearchHit(slice=self._slices[int(lab)], score_raw=float(sc))
                for sc, lab in zip(srow, lrow, strict=True)
                if lab >= 0
            ]
            for srow, lrow in zip(scores, labels, strict=True)
        ]

    def get_video(self, video_id: str) -> tuple[list[Slice], np.ndarray]:
        """All slices of a video sorted by slice index, and their (normalised) vectors.

        Args:
            video_id: The video.

        Returns:
            The slices and a float32 (n, dim) array; ``([], zeros((0, dim)))`` for an unknown id.

        """
        self._check_open()
        pids = sorted(self._by_video.get(video_id, ()), key=lambda p: self._slices[p].index)
        if not pids:
            return [], np.zeros((0, self.dim or 0), dtype=np.float32)
        vecs = self._index.reconstruct_batch(np.array(pids, dtype=np.int64))
        return [self._slices[p] for p in pids], np.asarray(vecs, dtype=np.float32)

    def count(self, video_id: str | None = None) -> int:
        """Count the points in the store, or in one video."""
        self._check_open()
        if video_id is None:
            return len(self._slices)
        return len(self._by_video.get(video_id, ()))

    def video_ids(self) -> list[str]:
        """Sorted ids of the videos that have at least one slice."""
        self._check_open()
        return sorted(v for v, pids in self._by_video.items() if pids)

    def delete_video(self, video_id: str) -> int:
        """Remove every slice of a video and flush.

        Args:
            video_id: The video.

        Returns:
            How many points were removed (0 for an unknown id).

        """
        self._check_open()
        pids = self._by_video.pop(video_id, set())
        if not pids:
            return 0
        removed = self._index.remove_ids(
            faiss.IDSelectorBatch(np.array(sorted(pids), dtype=np.int64))
        )
        for p in pids:
            del self._slices[p]
        self.flush()
        return int(removed)

    def close(self) -> None:
        """Drop the in-memory index; everything is already on disk."""
        self._closed = True
        self._index = None
        self._slices.clear()
        self._by_video.clear()

    def __enter__(self) -> FaissStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _qdrant_errors(what: str) -> Iterator[None]:
    """Turn qdrant-client's transport and storage errors into a one-line StoreError."""
    try:
        yield
    except (UnexpectedResponse, ResponseHandlingException, OSError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StoreError(f"Qdrant {what} failed: {reason}") from e


class QdrantStore:
    """Cosine search with Qdrant: embedded local mode (``:memory:`` or a path) or a server.

    The collection is created on the first upsert (Qdrant needs the vector size), with the encoder
    spec and dim in the collection's ``metadata``, which both local mode and the server keep and
    return from ``get_collection``. A collection without that metadata (made by other tools or an
    old server) adopts the encoder of its first upsert.

    Args:
        client: An open qdrant-client.
        collection: Collection name.

    Raises:
        StoreError: The client cannot reach the collection, or the collection is not a single
            cosine vector (so not one retrieval-hl made).

    """

    name: ClassVar[str] = "qdrant"

    def __init__(self, client: QdrantClient, collection: str = DEFAULT_COLLECTION):
        self.client = client
        self.collection = collection
        self.encoder_spec: str | None = None
        self.dim: int | None = None
        opts = getattr(client, "init_options", {}) or {}
        self._local = opts.get("location") == ":memory:" or opts.get("path") is not None
        self._load()

    @classmethod
    def from_location(cls, location: str, collection: str = DEFAULT_COLLECTION) -> QdrantStore:
        """Open ``:memory:``, a local storage path, or an ``http(s)://`` server URL.

        Args:
            location: Where the points live.
            collection: Collection name.

        Returns:
            The store.

        Raises:
            StoreError: The location cannot be opened (locked path, unreachable server, ...).

        """
        with _qdrant_errors(f"open {location!r}"):
            if location == ":memory:":
                client = QdrantClient(location=":memory:")
            elif location.startswith(("http://", "https://")):
                client = QdrantClient(url=location, api_key=os.environ.get("QDRANT_API_KEY"))
            else:
                client = QdrantClient(path=location)
        try:
            return cls(client, collection)
        except BaseException:
            client.close()
            raise

    def _load(self) -> None:
        with _qdrant_errors(f"open collection {self.collection!r}"):
            if not self.client.collection_exists(self.collection):
                return
            config = self.client.get_collection(self.collection).config
        vectors = config.params.vectors
        cosine = isinstance(vectors, models.VectorParams) and (
            vectors.distance == models.Distance.COSINE
        )
        if not cosine:
            raise StoreError(
                f"Qdrant collection {self.collection!r} is not a single cosine vector "
                f"({vectors!r}); use another collection name"
            )
        meta = config.metadata or {}
        self.dim = int(vectors.size)
        self.encoder_spec = meta.get("encoder_spec")
        if self.encoder_spec is None:
            log.warning(
                "Qdrant collection %r records no encoder spec; the next upsert sets it",
                self.collection,
            )

    def _create(self, encoder_spec: str, dim: int) -> None:
        metadata = {"encoder_spec": encoder_spec, "dim": dim}
        with _qdrant_errors(f"create collection {self.collection!r}"):
            self.client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                metadata=metadata,
            )
            if not self._local:  # local mode ignores payload indexes and warns about them
                for key in ("video_id", "tags"):
                    self.client.create_payload_index(
                        self.collection, key, field_schema=models.PayloadSchemaType.KEYWORD
                    )
        log.info(
            "created Qdrant collection %r (%d-d, encoder %s)", self.collection, dim, encoder_spec
        )

    @staticmethod
    def _filter(video_id: str | None, tags: Sequence[str]) -> models.Filter | None:
        must: list[models.Condition] = []
        if video_id is not None:
            must.append(
                models.FieldCondition(key="video_id", match=models.MatchValue(value=video_id))
            )
        # On an array field MatchValue means "contains"; one condition per tag means "has all".
        must.extend(
            models.FieldCondition(key="tags", match=models.MatchValue(value=t)) for t in tags
        )
        return models.Filter(must=must) if must else None

    def upsert(self, slices: Sequence[Slice], vectors: np.ndarray, encoder_spec: str) -> int:
        """Insert or replace slices and their vectors.

        Args:
            slices: The slices, one per vector row.
            vectors: float32 (n, dim) embeddings; Qdrant's cosine distance normalises them.
            encoder_spec: The encoder that produced ``vectors``.

        Returns:
            How many points were new (re-upserted ones are replaced and not counted).

        Raises:
            StoreError: Wrong shape, non-finite values, another encoder or dim than the
                collection's, or a Qdrant failure.

        """
        arr = _check_upsert(self, slices, vectors, encoder_spec)
        if len(slices) == 0:
            return 0
        if self.dim is None:
            self._load()  # another client may have created it since we opened
            if self.dim is None:
                self._create(encoder_spec, arr.shape[1])
                self.dim, self.encoder_spec = arr.shape[1], encoder_spec
            arr = _check_upsert(self, slices, arr, encoder_spec)
        if self.encoder_spec is None:
            with _qdrant_errors(f"update collection {self.collection!r}"):
                self.client.update_collection(
                    self.collection, metadata={"encoder_spec": encoder_spec, "dim": self.dim}
                )
        self.encoder_spec = encoder_spec
        ids = [str(point_id(encoder_spec, s.video_id, s.index)) for s in slices]
        keep = _dedup_last(ids)
        new = 0
        with _qdrant_errors(f"upsert into {self.collection!r}"):
            for start in range(0, len(keep), _QDRANT_BATCH):
                chunk = keep[start : start + _QDRANT_BATCH]
                chunk_ids = [ids[k] for k in chunk]
                found = self.client.retrieve(
                    self.collection, ids=chunk_ids, with_payload=False, with_vectors=False
                )
                new += len(chunk) - len(found)
                self.client.upsert(
                    self.collection,
                    points=[
                        models.PointStruct(
                            id=ids[k], vector=arr[k].tolist(), payload=_payload(slices[k])
                        )
                        for k in chunk
                    ],
                    wait=True,
                )
        return new

    def search(
        self,
        queries: np.ndarray,
        top_k: int = 10,
        video_id: str | None = None,
        tags: Sequence[str] = (),
    ) -> list[list[SearchHit]]:
        """Nearest slices per query by cosine similarity.

        Args:
            queries: float32 (q, dim) or (dim,) query vectors.
            top_k: At most this many hits per query.
            video_id: Only slices of this video.
            tags: Only slices carrying every one of these tags.

        Returns:
            One list of hits per query, best first; empty lists when nothing matches.

        Raises:
            StoreError: Bad query shape or dim, ``top_k`` below 1, or a Qdrant failure.

        """
        q = _check_queries(self, queries, top_k)
        if self.dim is None or len(q) == 0:
            return [[] for _ in range(len(q))]
        flt = self._filter(video_id, tags)
        # One round trip for all queries; each request is what query_points would send.
        requests = [
            models.QueryRequest(query=row.tolist(), filter=flt, limit=top_k, with_payload=True)
            for row in q
        ]
        with _qdrant_errors(f"search {self.collection!r}"):
            responses = self.client.query_batch_points(self.collection, requests=requests)
        return [
            [
                SearchHit(slice=Slice.model_validate(p.payload), score_raw=float(p.score))
                for p in resp.points
            ]
            for resp in responses
        ]

    def _scroll(
        self, flt: models.Filter | None, with_payload: Any, with_vectors: bool
    ) -> Iterator[models.Record]:
        offset = None
        with _qdrant_errors(f"scroll {self.collection!r}"):
            while True:
                records, offset = self.client.scroll(
                    self.collection,
                    scroll_filter=flt,
                    limit=1024,
                    offset=offset,
                    with_payload=with_payload,
                    with_vectors=with_vectors,
                )
                yield from records
                if offset is None:
                    return

    def get_video(self, video_id: str) -> tuple[list[Slice], np.ndarray]:
        """All slices of a video sorted by slice index, and their (normalised) vectors.

        Args:
            video_id: The video.

        Returns:
            The slices and a float32 (n, dim) array; ``([], zeros((0, dim)))`` for an unknown id.

        """
        if self.dim is None:
            return [], np.zeros((0, 0), dtype=np.float32)
        pairs = [
            (Slice.model_validate(r.payload), r.vector)
            for r in self._scroll(self._filter(video_id, ()), True, True)
        ]
        if not pairs:
            return [], np.zeros((0, self.dim), dtype=np.float32)
        pairs.sort(key=lambda p: p[0].index)
        return [p[0] for p in pairs], np.asarray([p[1] for p in pairs], dtype=np.float32)

    def count(self, video_id: str | None = None) -> int:
        """Count the points in the collection, or in one video."""
        if self.dim is None:
            return 0
        with _qdrant_errors(f"count {self.collection!r}"):
            return self.client.count(
                self.collection, count_filter=self._filter(video_id, ()), exact=True
            ).count

    def video_ids(self) -> list[str]:
        """Sorted ids of the videos that have at least one slice (a full scroll of the payloads)."""
        if self.dim is None:
            return []
        return sorted({r.payload["video_id"] for r in self._scroll(None, ["video_id"], False)})

    def delete_video(self, video_id: str) -> int:
        """Remove every slice of a video.

        Args:
            video_id: The video.

        Returns:
            How many points were removed (0 for an unknown id).

        """
        n = self.count(video_id)
        if n:
            with _qdrant_errors(f"delete from {self.collection!r}"):
                self.client.delete(
                    self.collection,
                    points_selector=models.FilterSelector(filter=self._filter(video_id, ())),
                    wait=True,
                )
        return n

    def close(self) -> None:
        """Close the client (releases a local storage folder's lock)."""
        self.client.close()

    def __enter__(self) -> QdrantStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


STORES: dict[str, type[FaissStore] | type[QdrantStore]] = {
    "faiss": FaissStore,
    "qdrant": QdrantStore,
}


def open_store(uri: str, collection: str = DEFAULT_COLLECTION) -> VectorStore:
    """Open a vector store from a URI.

    Args:
        uri: ``faiss:DIR`` or a plain directory path (FAISS in DIR, created if missing);
            ``qdrant::memory:``; ``qdrant:PATH`` (Qdrant local mode); ``http(s)://HOST[:PORT]``
            (Qdrant server, API key from ``QDRANT_API_KEY``).
        collection: Collection name (a subfolder for FAISS).

    Returns:
        The store.

    Raises:
        StoreError: The URI has none of the forms above, or the store cannot be opened.

    """
    uri = uri.strip()
    m = _SCHEME_RE.match(uri)
    scheme = m.group(1).lower() if m else None
    if scheme in ("http", "https"):
        backend, target = "qdrant", uri
    elif scheme in STORES:
        backend, target = scheme, uri[len(scheme) + 1 :]
    elif scheme is None and uri:
        backend, target = "faiss", uri
    else:
        raise StoreError(f"unknown store URI {uri!r}; valid forms: {URI_FORMS}")
    if not target:
        raise StoreError(f"store URI {uri!r} names no location; valid forms: {URI_FORMS}")
    store: VectorStore = STORES[backend].from_location(target, collection)
    log.info(
        "opened %s store %s (collection %r, %d points)", backend, target, collection, store.count()
    )
    return store
