"""FAISS back-end: exact inner-product search on disk, approximate (IVF) above a size."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import numbers
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np

from indexer.models import Slice
from indexer.stores.base import (
    COLLECTION_RE,
    DEFAULT_APPROX_THRESHOLD,
    DEFAULT_COLLECTION,
    SearchHit,
    check_queries,
    check_upsert,
    dedup_last,
    payload_of,
    point_id,
)
from rhl_common.atomic import atomic_path, write_atomic
from rhl_common.errors import StoreError

log = logging.getLogger(__name__)

FAISS_FORMAT_VERSION = 1
APPROX_FORMAT_VERSION = 1
# Retrain the IVF index once the store is 4x larger or smaller than when it was trained: its list
# count was sized for that size, and lists grow long or run empty.
_APPROX_RETRAIN_FACTOR = 4
# k-means asks for at least 39 training points per centroid; more buys little and costs time.
_APPROX_TRAIN_PER_LIST = 40
_APPROX_ADD_CHUNK = 65_536
# A filtered approximate search reads this many times the depth at which k passing points are
# expected (k * all / passing) from the unfiltered ranking, then keeps the passing ones...
_APPROX_FILTER_DEPTH = 2
# ...unless that depth exceeds this; then the filter is selective enough for exact search on the
# passing points to be the better deal (at 1e6 points: ~10 ms for 1000 passing).
_APPROX_FILTER_MAX_DEPTH = 1024
# Exact search on a subset copies the passing vectors out when they are at most this fraction of
# the store; beyond it, scanning the whole flat index with a selector is cheaper. Measured at 1e6
# points: 1000 passing, copy ~3 ms vs scan ~8-20 ms; 50 000 passing, copy ~75 ms vs scan ~50 ms.
_EXACT_GATHER_FRACTION = 1 / 64


def faiss_id(uid: uuid.UUID) -> int:
    """Give the FAISS int64 label of a point: the top 63 bits of its uuid (never negative)."""
    return uid.int >> 65


def approx_nlist(n: int) -> int:
    """IVF list count for ``n`` points: ``4 * sqrt(n)``, the low end of FAISS's usual range.

    At most ``n / 40``, so that k-means gets the training points per centroid it asks for.
    """
    return max(1, min(int(4 * math.sqrt(n)), n // _APPROX_TRAIN_PER_LIST))


def approx_nprobe(nlist: int) -> int:
    """Default IVF lists scanned per query: about 3 % of them, at least 16 (at most all)."""
    return min(nlist, max(16, nlist // 32))


def _resolve_approx_threshold(value: int | None) -> int:
    """The approximate-search threshold: ``value``, else the default."""
    if value is None:
        return DEFAULT_APPROX_THRESHOLD
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise StoreError(f"approx_threshold must be an integer >= 0 (a point count), got {value!r}")
    return int(value)


def _discard(groups: dict[str, set[int]], key: str, pid: int) -> None:
    """Remove ``pid`` from ``groups[key]``, and the key once its set is empty."""
    members = groups.get(key)
    if members is not None:
        members.discard(pid)
        if not members:
            del groups[key]


def _atomic_write_index(index: Any, path: Path) -> None:
    """Write a FAISS index atomically, streamed to disk (no in-memory serialised copy)."""
    with atomic_path(path) as tmp:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as e:
            lines = str(e).strip().splitlines()
            raise StoreError(f"cannot write FAISS index {path}: {lines[-1] if lines else e}") from e
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class FaissStore:
    """Cosine search with FAISS: exact up to a size threshold, approximate above it.

    Persisted in ``DIR/<collection>/``. The source of truth is an ``IndexIDMap2(IndexFlatIP(dim))``
    labelled by :func:`faiss_id` (``index.faiss``); payloads live in a JSON sidecar and the encoder
    spec, dim and format version in ``meta.json``. Every upsert or delete rewrites these files
    atomically. One writer per directory at a time.

    In a store of at most ``approx_threshold`` points every search is exact. Above that, searches
    go to an approximate inverted-file index (``IVF<nlist>,Flat``, inner product) derived from the
    flat vectors, except filtered searches whose filter is very selective (fewer than about
    ``2 * top_k * count / 1024`` passing points, e.g. one video), which run exactly on the passing
    points (:meth:`search_path` says which). The IVF index is built on the first search
    that needs it, updated in place by later upserts and deletes, retrained when the store has
    grown or shrunk fourfold, and saved as ``approx.faiss`` + ``approx.json`` so that reopening
    loads it instead of rebuilding it. Memory holds at most two copies of the vectors: the flat
    index and the IVF index. A filtered approximate search keeps the passing points of a deeper
    unfiltered ranking. Queries the approximate index answers with fewer than ``top_k`` hits are
    re-run exactly, so hit counts never depend on the path taken.

    Args:
        directory: The index directory; created if missing.
        collection: Subfolder of ``directory`` holding this collection.
        approx_threshold: Candidate count above which searches are approximate; ``None`` reads
            ``RHL_FAISS_APPROX_THRESHOLD`` from the environment, else 50 000. ``0`` makes every
            search approximate (tests, benchmarks).
        approx_nprobe: IVF lists scanned per query; ``None`` picks ``max(16, nlist // 32)``
            (about 3 % of the vectors). Higher is slower and closer to exact.

    Raises:
        StoreError: The directory is not usable, its files are corrupt or disagree, or a
            threshold or nprobe is invalid.

    """

    # Why IVF and not HNSW (both measured here with faiss 1.15, 512-d, 2 cores): IndexHNSWFlat
    # (M=32, efConstruction=80) took ~99 s to build for 1e5 points, so ~20 min for 1e6, and HNSW
    # cannot remove points: every delete or re-upserted video would mean a full rebuild.
    # IVF-Flat builds 1e6 points in ~1 min (spherical k-means on a sample + assignment) and has
    # add_with_ids/remove_ids, so adding or deleting a video patches it in milliseconds. Its
    # latency at matching recall is in the same few-ms range (IVF4000 nprobe=64: ~5 ms at 1e6;
    # HNSW efSearch=128: ~2.5 ms at 1e5).
    # Filters: both honour an IDSelector in SearchParameters, and both starve of candidates under
    # a restrictive one; hence exact search on the passing points when the filter is selective.
    # Otherwise the IVF ranking is post-filtered instead of given a selector: at 1e6 points with
    # 1e5 passing, building the IDSelectorBatch alone costs ~45 ms a call and the selector search
    # needs ~10x nprobe (~40 ms), while post-filtering the top 2*k*n/m at sqrt(10)x nprobe costs
    # ~10-20 ms for the same recall. Its hits are exactly the top-k passing points of that
    # approximate ranking; a query with fewer than k of them is re-run exactly. Exact search on
    # a subset scans the whole flat index with a selector (O(count)) or, for small subsets, copies
    # the passing vectors out; it is kept for filters too selective for a ranking.

    name: ClassVar[str] = "faiss"
    INDEX_FILE: ClassVar[str] = "index.faiss"
    PAYLOADS_FILE: ClassVar[str] = "payloads.json"
    META_FILE: ClassVar[str] = "meta.json"
    APPROX_FILE: ClassVar[str] = "approx.faiss"
    APPROX_META_FILE: ClassVar[str] = "approx.json"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        collection: str = DEFAULT_COLLECTION,
        *,
        approx_threshold: int | None = None,
        approx_nprobe: int | None = None,
    ):
        if not COLLECTION_RE.match(collection):
            raise StoreError(
                f"bad collection name {collection!r}: use letters, digits, '_', '-' and '.'"
            )
        if approx_nprobe is not None and (
            isinstance(approx_nprobe, bool)
            or not isinstance(approx_nprobe, int)
            or approx_nprobe < 1
        ):
            raise StoreError(
                f"approx_nprobe must be an integer >= 1 or None, got {approx_nprobe!r}"
            )
        self.collection = collection
        self.path = Path(directory) / collection
        self.approx_threshold = _resolve_approx_threshold(approx_threshold)
        self.approx_nprobe = approx_nprobe
        self.encoder_spec: str | None = None
        self.dim: int | None = None
        self._index: Any = None
        self._slices: dict[int, Slice] = {}
        self._by_video: dict[str, set[int]] = {}
        self._by_tag: dict[str, set[int]] = {}
        # The approximate index: None until a search needs it (or a change must patch it).
        self._approx: Any = None
        self._approx_trained_n = 0
        # True while the approx files on disk (if any) match the flat index on disk.
        self._approx_saved = True
        self._closed = False
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create FAISS index directory {self.path}: {e}") from e
        self._load()
        log.debug(
            "FAISS store %s: %d points, encoder %s, approximate above %d",
            self.path,
            len(self._slices),
            self.encoder_spec,
            self.approx_threshold,
        )

    @classmethod
    def from_location(
        cls,
        location: str,
        collection: str = DEFAULT_COLLECTION,
        *,
        approx_threshold: int | None = None,
    ) -> FaissStore:
        """Open the index directory ``location`` (the constructor :func:`open_store` calls)."""
        return cls(location, collection, approx_threshold=approx_threshold)

    @property
    def approx_spec(self) -> str | None:
        """The approximate index in memory, e.g. ``"IVF4000,Flat nprobe=125"``, or None."""
        if self._approx is None:
            return None
        return f"IVF{self._approx.nlist},Flat nprobe={self._nprobe()}"

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
        self.encoder_spec, self.dim, self._index = spec, int(dim), index
        for pid, s in slices.items():
            self._track(pid, s)

    def flush(self) -> None:
        """Write index, payloads and meta to disk, each file atomically (temp file + rename).

        The approximate index, when it has changed since it was last saved, is written after
        them; its stale copy is removed before them, so a crash never pairs it with newer data.
        """
        self._check_open()
        if not self._approx_saved:
            self._remove_approx_files(strict=True)
        if self._index is not None:
            _atomic_write_index(self._index, self.path / self.INDEX_FILE)
        payloads = {str(pid): payload_of(s) for pid, s in self._slices.items()}
        write_atomic(self.path / self.PAYLOADS_FILE, json.dumps(payloads).encode("utf-8"))
        meta = {
            "encoder_spec": self.encoder_spec,
            "dim": self.dim,
            "collection": self.collection,
            "version": FAISS_FORMAT_VERSION,
        }
        write_atomic(self.path / self.META_FILE, json.dumps(meta, indent=2).encode("utf-8"))
        if self._approx is None:
            self._approx_saved = True  # nothing on disk, nothing in memory: they agree
        elif not self._approx_saved:
            self._save_approx()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"FAISS store {self.path} is closed")

    def _track(self, pid: int, s: Slice) -> None:
        self._slices[pid] = s
        self._by_video.setdefault(s.video_id, set()).add(pid)
        for t in set(s.tags):
            self._by_tag.setdefault(t, set()).add(pid)

    def _untrack(self, pid: int) -> None:
        s = self._slices.pop(pid, None)
        if s is None:
            return
        _discard(self._by_video, s.video_id, pid)
        for t in set(s.tags):
            _discard(self._by_tag, t, pid)

    # -- approximate index -----------------------------------------------------------------------

    def _nprobe(self) -> int:
        nlist = int(self._approx.nlist)
        return min(nlist, self.approx_nprobe or approx_nprobe(nlist))

    def _ids_digest(self) -> str:
        """Fingerprint of the flat index's labels in storage order (8 MB hashed at 1e6 points)."""
        ids = faiss.vector_to_array(self._index.id_map)
        return hashlib.blake2b(ids.tobytes(), digest_size=16).hexdigest()

    def _flat_vectors(self) -> np.ndarray:
        """The flat vectors in storage order, as a view (no copy) valid until the index changes."""
        flat = faiss.downcast_index(self._index.index)
        n, d = int(flat.ntotal), int(flat.d)
        return faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)

    def _approx_outgrown(self, n: int) -> bool:
        """Whether ``n`` points have drifted too far from the size the IVF lists were sized for."""
        trained = self._approx_trained_n
        return n > _APPROX_RETRAIN_FACTOR * trained or n * _APPROX_RETRAIN_FACTOR < trained

    def _remove_approx_files(self, strict: bool = False) -> None:
        # approx.json first: without it approx.faiss is never used.
        for name in (self.APPROX_META_FILE, self.APPROX_FILE):
            try:
                (self.path / name).unlink()
            except FileNotFoundError:
                pass
            except OSError:
                if strict:
                    raise
                log.warning("cannot remove %s", self.path / name, exc_info=True)

    def _save_approx(self) -> None:
        """Write approx.faiss, then approx.json; on failure keep it in memory only and say so."""
        meta = {
            "version": APPROX_FORMAT_VERSION,
            "factory": f"IVF{self._approx.nlist},Flat",
            "trained_n": self._approx_trained_n,
            "ntotal": int(self._index.ntotal),
            "ids_digest": self._ids_digest(),
        }
        try:
            _atomic_write_index(self._approx, self.path / self.APPROX_FILE)
            write_atomic(self.path / self.APPROX_META_FILE, json.dumps(meta, indent=2).encode())
        except (OSError, StoreError) as e:
            log.warning(
                "cannot save the approximate FAISS index in %s (%s); it will be rebuilt when the "
                "store is next opened",
                self.path,
                e,
            )
            self._remove_approx_files()
            return
        self._approx_saved = True

    def _load_approx(self) -> bool:
        """Load the saved approximate index if it matches the flat index; remove it otherwise."""
        meta_p, index_p = self.path / self.APPROX_META_FILE, self.path / self.APPROX_FILE
        if not meta_p.exists():
            if index_p.exists():  # a crash between the two writes of _save_approx
                self._remove_approx_files()
            return False
        problem = None
        try:
            meta = json.loads(meta_p.read_text(encoding="utf-8"))
            trained_n = int(meta["trained_n"])
            if meta["version"] != APPROX_FORMAT_VERSION:
                problem = f"format version {meta['version']!r}"
            elif meta["ntotal"] != self._index.ntotal or meta["ids_digest"] != self._ids_digest():
                problem = "it does not match index.faiss"
        except (OSError, ValueError, KeyError, TypeError) as e:
            problem = f"unreadable {meta_p.name}: {e!r}"
        index = None
        if problem is None:
            try:
                index = faiss.read_index(str(index_p))
            except RuntimeError as e:
                lines = str(e).strip().splitlines()
                problem = f"unreadable {index_p.name}: {lines[-1] if lines else 'error'}"
        if problem is None and (
            not isinstance(index, faiss.IndexIVF)
            or index.d != self.dim
            or index.ntotal != self._index.ntotal
        ):
            problem = f"{index_p.name} holds {type(index).__name__} with {index.ntotal} points"
        if problem is not None:
            log.warning(
                "discarding the saved approximate FAISS index in %s (%s); it will be rebuilt",
                self.path,
                problem,
            )
            self._remove_approx_files()
            return False
        self._approx, self._approx_trained_n, self._approx_saved = index, trained_n, True
        log.debug("loaded the approximate FAISS index %s (%s)", index_p, self.approx_spec)
        return True

    def _build_approx(self) -> None:
        """Train and fill an IVF index from the flat vectors, without copying them."""
        n, dim = int(self._index.ntotal), int(self.dim or 0)
        nlist = approx_nlist(n)
        start = time.perf_counter()
        log.info(
            "building the approximate FAISS index for %s: IVF%d,Flat over %d points",
            self.path,
            nlist,
            n,
        )
        index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        index.cp.spherical = True  # unit-length vectors under inner product: unit centroids
        index.cp.min_points_per_centroid = 1  # tiny stores (threshold 0) train on < 39 points
        xb = self._flat_vectors()
        ids = faiss.vector_to_array(self._index.id_map)
        n_train = min(n, _APPROX_TRAIN_PER_LIST * nlist)
        if n_train < n:
            rows = np.sort(np.random.default_rng(0).choice(n, n_train, replace=False))
            index.train(xb[rows])  # a copy of the sample only
        else:
            index.train(xb)
        for s in range(0, n, _APPROX_ADD_CHUNK):
            index.add_with_ids(xb[s : s + _APPROX_ADD_CHUNK], ids[s : s + _APPROX_ADD_CHUNK])
        self._approx, self._approx_trained_n, self._approx_saved = index, n, False
        log.info(
            "built the approximate FAISS index (%s) in %.1f s",
            self.approx_spec,
            time.perf_counter() - start,
        )

    def _ensure_approx(self) -> Any:
        """The approximate index, loaded or (re)built and saved as needed."""
        if self._approx is None:
            self._load_approx()
        if self._approx is not None and self._approx_outgrown(int(self._index.ntotal)):
            self._approx = None
        if self._approx is None:
            self._build_approx()
            self._save_approx()
        return self._approx

    def _approx_before_change(self, n_after: int) -> None:
        """Bring a saved approximate index into memory so the coming change can patch it."""
        if self._approx is None and n_after > self.approx_threshold and self._index is not None:
            self._load_approx()
        self._approx_saved = False

    def _approx_after_change(
        self, removed: np.ndarray, vectors: np.ndarray | None = None, ids: np.ndarray | None = None
    ) -> None:
        """Apply a change of the flat index to the approximate one; drop it if it no longer fits."""
        if self._approx is None:
            return
        n = int(self._index.ntotal)
        if n <= self.approx_threshold or self._approx_outgrown(n):
            log.info(
                "dropping the approximate FAISS index of %s (%d points, trained at %d)",
                self.path,
                n,
                self._approx_trained_n,
            )
            self._approx = None
            return
        if len(removed):
            self._approx.remove_ids(faiss.IDSelectorBatch(removed))
        if vectors is not None and ids is not None and len(ids):
            self._approx.add_with_ids(vectors, ids)

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
        arr = check_upsert(self, slices, vectors, encoder_spec)
        if len(slices) == 0:
            return 0
        ids = [faiss_id(point_id(encoder_spec, s.video_id, s.index)) for s in slices]
        keep = dedup_last(ids)
        ids_arr = np.array([ids[k] for k in keep], dtype=np.int64)
        # Qdrant's cosine distance normalises on insert; doing the same keeps the back-ends'
        # scores and get_video vectors identical.
        vecs = np.ascontiguousarray(arr[keep])
        faiss.normalize_L2(vecs)
        if self._index is None:
            self.dim = arr.shape[1]
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self.encoder_spec = encoder_spec
        existing = np.array([i for i in ids_arr.tolist() if i in self._slices], dtype=np.int64)
        self._approx_before_change(int(self._index.ntotal) + len(ids_arr) - len(existing))
        if len(existing):
            self._index.remove_ids(faiss.IDSelectorBatch(existing))
        self._index.add_with_ids(vecs, ids_arr)
        self._approx_after_change(existing, vecs, ids_arr)
        for k, pid in zip(keep, ids_arr.tolist(), strict=True):
            self._untrack(pid)
            self._track(pid, slices[k])
        self.flush()
        return len(ids_arr) - len(existing)

    def _allowed(self, video_id: str | None, tags: Sequence[str]) -> set[int] | None:
        """Labels passing the filters, or None when there is no filter.

        The set may be one of the store's own groups: read it, never change or keep it.
        """
        if video_id is None and not tags:
            return None
        pools = [self._by_tag.get(t, set()) for t in set(tags)]
        if video_id is not None:
            pools.append(self._by_video.get(video_id, set()))
        pools.sort(key=len)
        return pools[0] if len(pools) == 1 else pools[0].intersection(*pools[1:])

    def _search_exact(
        self, q: np.ndarray, k: int, allowed: set[int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is None:
            return self._index.search(q, k)
        ids = np.fromiter(allowed, dtype=np.int64, count=len(allowed))
        if len(ids) <= _EXACT_GATHER_FRACTION * self._index.ntotal:
            vecs = self._index.reconstruct_batch(ids)
            scores, pos = faiss.knn(q, vecs, k, metric=faiss.METRIC_INNER_PRODUCT)
            return scores, np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)
        sel = faiss.IDSelectorBatch(ids)  # must outlive the search call
        return self._index.search(q, k, params=faiss.SearchParameters(sel=sel))

    def _search_approx(
        self, q: np.ndarray, k: int, allowed: set[int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        index = self._ensure_approx()
        params = faiss.SearchParametersIVF()
        params.nprobe = self._nprobe()
        if allowed is None:
            scores, labels = index.search(q, k, params=params)
        else:
            depth = self._filter_depth(k, len(allowed))
            # A deeper ranking reaches into more lists. sqrt(n/m) more probes measured: 60k
            # clustered points, 1/10 passing: recall@10 0.82 -> 0.94 for 1.4 -> 2.4 ms a query.
            ratio = self._index.ntotal / len(allowed)
            params.nprobe = min(int(index.nlist), math.ceil(params.nprobe * math.sqrt(ratio)))
            deep_scores, deep_labels = index.search(q, depth, params=params)
            scores = np.full((len(q), k), -np.inf, dtype=np.float32)
            labels = np.full((len(q), k), -1, dtype=np.int64)
            for i, lrow in enumerate(deep_labels.tolist()):
                keep = [j for j, lab in enumerate(lrow) if lab in allowed][:k]
                scores[i, : len(keep)] = deep_scores[i, keep]
                labels[i, : len(keep)] = deep_labels[i, keep]
        short = np.flatnonzero((labels < 0).any(axis=1))
        if len(short):  # fewer than k (passing) points in the probed lists or ranking depth
            log.debug(
                "%d of %d queries re-run exactly: too few approximate hits", len(short), len(q)
            )
            scores[short], labels[short] = self._search_exact(q[short], k, allowed)
        return scores, labels

    def _filter_depth(self, k: int, n_passing: int) -> int:
        n = int(self._index.ntotal)
        return min(n, math.ceil(_APPROX_FILTER_DEPTH * k * n / n_passing))

    def _use_approx(self, k: int, allowed: set[int] | None) -> bool:
        if self._index.ntotal <= self.approx_threshold:
            return False
        return allowed is None or self._filter_depth(k, len(allowed)) <= _APPROX_FILTER_MAX_DEPTH

    def search_path(
        self, top_k: int = 10, video_id: str | None = None, tags: Sequence[str] = ()
    ) -> str:
        """Which way :meth:`search` answers a query with these arguments (for logs and benches).

        Returns:
            ``"exact"`` (whole flat index), ``"exact-subset"`` (flat index restricted to the
            passing points), ``"approx"`` or ``"approx-postfilter"`` (IVF ranking, filtered
            afterwards), or ``"empty"``. Approximate queries that find fewer than ``top_k`` hits
            are re-run exactly.

        """
        self._check_open()
        allowed = None if self._index is None else self._allowed(video_id, tags)
        n = 0 if self._index is None else self._index.ntotal if allowed is None else len(allowed)
        if n == 0:
            return "empty"
        if self._use_approx(min(top_k, n), allowed):
            return "approx" if allowed is None else "approx-postfilter"
        return "exact" if allowed is None else "exact-subset"

    def search(
        self,
        queries: np.ndarray,
        top_k: int = 10,
        video_id: str | None = None,
        tags: Sequence[str] = (),
    ) -> list[list[SearchHit]]:
        """Nearest slices per query by cosine similarity.

        Exact up to ``approx_threshold`` points, approximate (IVF) above it except for very
        selective filters; :meth:`search_path` tells which, the class docstring why.

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
        q = check_queries(self, queries, top_k)
        if self._index is None or self._index.ntotal == 0:
            return [[] for _ in range(len(q))]
        allowed = self._allowed(video_id, tags)
        n = self._index.ntotal if allowed is None else len(allowed)
        if n == 0:
            return [[] for _ in range(len(q))]
        q = np.array(q, dtype=np.float32, order="C")  # a copy: normalised in place below
        faiss.normalize_L2(q)
        k = min(top_k, n)
        if self._use_approx(k, allowed):
            scores, labels = self._search_approx(q, k, allowed)
        else:
            scores, labels = self._search_exact(q, k, allowed)
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
        pids = np.array(sorted(self._by_video.get(video_id, ())), dtype=np.int64)
        if not len(pids):
            return 0
        self._approx_before_change(int(self._index.ntotal) - len(pids))
        removed = self._index.remove_ids(faiss.IDSelectorBatch(pids))
        self._approx_after_change(pids)
        for p in pids.tolist():
            self._untrack(p)
        self.flush()
        return int(removed)

    def close(self) -> None:
        """Drop the in-memory indexes; everything is already on disk."""
        self._closed = True
        self._index = None
        self._approx = None
        self._slices.clear()
        self._by_video.clear()
        self._by_tag.clear()

    def __enter__(self) -> FaissStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


