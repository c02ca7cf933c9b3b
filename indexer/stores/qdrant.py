"""Qdrant back-end: embedded local mode (``:memory:`` or a path) or a server (``http(s)://``)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from indexer.models import Slice
from indexer.stores.base import (
    DEFAULT_COLLECTION,
    SearchHit,
    check_queries,
    check_replace,
    check_upsert,
    dedup_last,
    payload_of,
    point_id,
)
from rhl_common import faults
from rhl_common.errors import StoreError

log = logging.getLogger(__name__)

_QDRANT_BATCH = 256


def qdrant_cluster_layout(shards: int | None = None, replicas: int | None = None) -> dict[str, int]:
    """Sharding and replication for new collections on a Qdrant server.

    ``shards`` (shard_number) and ``replicas`` (replication_factor), e.g. 3 and 2 on the
    three-node cluster of docker-compose.yml; None leaves the server's default.

    Raises:
        StoreError: a value is not a positive integer.
    """
    out = {}
    for value, key in ((shards, "shard_number"), (replicas, "replication_factor")):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise StoreError(f"{key} must be a positive integer, got {value!r}")
        out[key] = value
    return out


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
        shards: Shard count of a new collection on a server (None: the server's default).
        replicas: Replication factor of a new collection on a server (None: the server's).

    Raises:
        StoreError: The client cannot reach the collection, or the collection is not a single
            cosine vector (so not one retrieval-hl made).

    """

    name: ClassVar[str] = "qdrant"

    def __init__(
        self,
        client: QdrantClient,
        collection: str = DEFAULT_COLLECTION,
        *,
        shards: int | None = None,
        replicas: int | None = None,
    ):
        self.client = client
        self.collection = collection
        self._layout = qdrant_cluster_layout(shards, replicas)
        self.encoder_spec: str | None = None
        self.dim: int | None = None
        opts = getattr(client, "init_options", {}) or {}
        self._local = opts.get("location") == ":memory:" or opts.get("path") is not None
        self._load()

    @classmethod
    def from_location(
        cls,
        location: str,
        collection: str = DEFAULT_COLLECTION,
        *,
        api_key: str | None = None,
        shards: int | None = None,
        replicas: int | None = None,
        create: bool = True,
    ) -> QdrantStore:
        """Open ``:memory:``, a local storage path, or an ``http(s)://`` server URL.

        Args:
            location: Where the points live.
            collection: Collection name.
            api_key: The server's API key, if it wants one.
            shards: Shard count of a new collection on a server.
            replicas: Replication factor of a new collection on a server.
            create: Create a local storage path that does not exist yet (``False``: refuse).

        Returns:
            The store.

        Raises:
            StoreError: The location cannot be opened (locked path, unreachable server, missing
                path with ``create=False``, ...).

        """
        local = location != ":memory:" and not location.startswith(("http://", "https://"))
        if local and not create and not os.path.isdir(location):
            raise StoreError(
                f"no Qdrant store at {location}: check the path (a read never creates a store), "
                "or index videos into it first with `rhl index`"
            )
        with _qdrant_errors(f"open {location!r}"):
            if location == ":memory:":
                client = QdrantClient(location=":memory:")
            elif location.startswith(("http://", "https://")):
                client = QdrantClient(url=location, api_key=api_key)
            else:
                client = QdrantClient(path=location)
        try:
            return cls(client, collection, shards=shards, replicas=replicas)
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
        layout = {} if self._local else self._layout
        with _qdrant_errors(f"create collection {self.collection!r}"):
            try:
                self.client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                    metadata=metadata,
                    **layout,
                )
            except (ValueError, UnexpectedResponse):
                # Another writer (a worker on another machine) created it since we looked:
                # adopt it; its encoder and dim are then checked like any existing collection's.
                if not self.client.collection_exists(self.collection):
                    raise
                log.info("Qdrant collection %r was created by another writer", self.collection)
                self._load()
                return
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
        arr = check_upsert(self, slices, vectors, encoder_spec)
        if len(slices) == 0:
            return 0
        if self.dim is None:
            self._load()  # another client may have created it since we opened
            if self.dim is None:
                self._create(encoder_spec, arr.shape[1])
            if self.dim is None:  # we created it
                self.dim, self.encoder_spec = arr.shape[1], encoder_spec
            arr = check_upsert(self, slices, arr, encoder_spec)
        if self.encoder_spec is None:
            with _qdrant_errors(f"update collection {self.collection!r}"):
                self.client.update_collection(
                    self.collection, metadata={"encoder_spec": encoder_spec, "dim": self.dim}
                )
        self.encoder_spec = encoder_spec
        ids = [str(point_id(encoder_spec, s.video_id, s.index)) for s in slices]
        keep = dedup_last(ids)
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
                            id=ids[k], vector=arr[k].tolist(), payload=payload_of(slices[k])
                        )
                        for k in chunk
                    ],
                    wait=True,
                )
        return new

    def replace_video(
        self, video_id: str, slices: Sequence[Slice], vectors: np.ndarray, encoder_spec: str
    ) -> int:
        """Make ``slices`` the whole of ``video_id``: upsert them, then delete the video's points
        that are not among them.

        Qdrant has no transaction across the two steps. Point ids are deterministic, so a kill
        or error between them leaves the new slices plus the old ones they did not overwrite,
        never nothing; the next ``replace_video`` of the video removes the leftovers.

        Args:
            video_id: The video; every slice must belong to it.
            slices: Its new slices, one per vector row (none: the video is removed).
            vectors: float32 (n, dim) embeddings.
            encoder_spec: The encoder that produced ``vectors``.

        Returns:
            How many points were new.

        Raises:
            StoreError: As :meth:`upsert`, or a slice of another video.

        """
        check_replace(video_id, slices)
        new = self.upsert(slices, vectors, encoder_spec)
        faults.reached("qdrant.replace-upserted")
        if self.dim is None:
            return new
        keep = {str(point_id(encoder_spec, s.video_id, s.index)) for s in slices}
        stale = [
            r.id for r in self._scroll(self._filter(video_id, ()), False, False)
            if str(r.id) not in keep
        ]
        with _qdrant_errors(f"delete from {self.collection!r}"):
            for start in range(0, len(stale), _QDRANT_BATCH):
                batch = stale[start : start + _QDRANT_BATCH]
                self.client.delete(
                    self.collection, points_selector=models.PointIdsList(points=batch), wait=True
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
        q = check_queries(self, queries, top_k)
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


