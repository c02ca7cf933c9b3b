"""Vector stores behind one interface (:class:`VectorStore`), slice embeddings in and nearest
slices out; :func:`open_store` picks a back-end from a URI and imports only that one.

- ``faiss:DIR`` or a plain directory path: :class:`indexer.stores.faiss.FaissStore`, exact
  inner-product search on disk, approximate (IVF) above a size threshold;
- ``qdrant::memory:``, ``qdrant:PATH`` (qdrant-client's embedded local mode) or ``http(s)://HOST``
  (a Qdrant server):
  :class:`indexer.stores.qdrant.QdrantStore`.
"""

from __future__ import annotations

import importlib
import logging
import re

from indexer.stores.base import (
    DEFAULT_COLLECTION,
    URI_FORMS,
    SearchHit,
    VectorStore,
    point_id,
)
from rhl_common.errors import StoreError

__all__ = [
    "DEFAULT_COLLECTION",
    "STORES",
    "SearchHit",
    "VectorStore",
    "check_store_uri",
    "open_store",
    "point_id",
]

log = logging.getLogger(__name__)

# Back-end name -> "module:class", imported when a store of that kind is opened.
STORES: dict[str, str] = {
    "faiss": "indexer.stores.faiss:FaissStore",
    "qdrant": "indexer.stores.qdrant:QdrantStore",
}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def check_store_uri(uri: str) -> None:
    """Check the form of a store URI without opening it (for runs that may never open it).

    Raises:
        StoreError: The URI has none of the forms :func:`open_store` takes.

    """
    _parse(uri)


def _parse(uri: str) -> tuple[str, str]:
    """(backend, target) of a store URI."""
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
    return backend, target


def store_class(backend: str) -> type:
    """The class of back-end ``backend`` (a key of :data:`STORES`), imported on demand."""
    module, name = STORES[backend].split(":")
    return getattr(importlib.import_module(module), name)


def open_store(
    uri: str,
    collection: str = DEFAULT_COLLECTION,
    *,
    approx_threshold: int | None = None,
    api_key: str | None = None,
    shards: int | None = None,
    replicas: int | None = None,
    create: bool = True,
) -> VectorStore:
    """Open a vector store from a URI.

    Args:
        uri: ``faiss:DIR`` or a plain directory path (FAISS in DIR, created if missing);
            ``qdrant::memory:``; ``qdrant:PATH`` (Qdrant local mode); ``http(s)://HOST[:PORT]``
            (Qdrant server).
        collection: Collection name (a subfolder for FAISS).
        approx_threshold: FAISS only: candidate count above which searches are approximate
            (``None``: 50 000). Qdrant ignores it: a server has its own HNSW index, local mode
            always scans.
        api_key: Qdrant server only: its API key.
        shards: Qdrant server only: shard count of a new collection (None: the server's).
        replicas: Qdrant server only: replication factor of a new collection.
        create: Create a local store (FAISS directory, Qdrant local folder) that does not exist
            yet. Read commands pass ``False``, so a mistyped path is an error, not a new store.

    ``retrieval_hl.config.Settings.store_options()`` gives these from the settings (env vars
    ``RHL_FAISS_APPROX_THRESHOLD``, ``QDRANT_API_KEY``, ``RHL_QDRANT_SHARDS``, ...).

    Returns:
        The store.

    Raises:
        StoreError: The URI has none of the forms above, the store cannot be opened, or
            (``create=False``) a local store does not exist.

    """
    backend, target = _parse(uri)
    store: VectorStore
    if backend == "faiss":
        store = store_class("faiss").from_location(
            target, collection, approx_threshold=approx_threshold, create=create
        )
    else:
        if approx_threshold is not None:
            log.debug("approx_threshold applies to FAISS stores only; ignored for %s", uri)
        store = store_class(backend).from_location(
            target, collection, api_key=api_key, shards=shards, replicas=replicas, create=create
        )
    log.info(
        "opened %s store %s (collection %r, %d points)", backend, target, collection, store.count()
    )
    return store
