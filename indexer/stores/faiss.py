"""FAISS back-end: exact inner-product search, approximate (IVF) above a size; SQLite underneath.

Nothing is lost: the source of truth is a SQLite database in WAL mode (``store.sqlite``: payloads,
vectors, encoder spec and a generation counter bumped by every commit). Writers are serialised
by its write lock (across processes; a second writer waits, then lands), a kill or a write error
at any instant leaves the last committed transaction, and readers never write or delete. The
FAISS indexes are caches derived from it: files named by the store, the generation they hold and
a checksum of their bytes, written whole and renamed into place. A cache that fails its checksum
is reported and rebuilt from the database; one older than the database is brought up to date
from the rows changed since its generation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import numbers
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
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
    check_replace,
    check_upsert,
    dedup_last,
    payload_of,
    point_id,
)
from rhl_common import faults
from rhl_common.errors import StoreError

log = logging.getLogger(__name__)

FAISS_FORMAT_VERSION = 2
# A writer waits this long for another writer's transaction before giving up.
DEFAULT_BUSY_TIMEOUT_S = 600.0
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
# A writer rewrites the flat cache once this many points (or a quarter of the store, if more)
# changed since the cache's generation; below it, opening replays the changes from the database.
_CACHE_MIN_CHANGES = 2048
# Temp files older than this are left by a killed process (a live one renames sooner).
_STALE_TMP_S = 3600.0
_SQL_VARS = 900  # rows per "IN (...)" query, under SQLite's variable limit
# SQLite page cache: big inserts of random ids touch pages all over the table.
_SQL_CACHE_KIB = 256 * 1024
_CACHE_RE = re.compile(r"^(flat|ivf)-([0-9a-f]{8})-g(\d+)-t(\d+)-([0-9a-f]{16})\.faiss$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY, video_id TEXT NOT NULL, idx INTEGER NOT NULL, tags TEXT NOT NULL,
    payload TEXT NOT NULL, vector BLOB NOT NULL, gen INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS points_video ON points (video_id, idx);
CREATE INDEX IF NOT EXISTS points_gen ON points (gen);
CREATE TABLE IF NOT EXISTS deleted (id INTEGER PRIMARY KEY, gen INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deleted_gen ON deleted (gen);
"""


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


def file_checksum(path: str | os.PathLike[str]) -> str:
    """Sum of a file's 64-bit words (zero-padded) mod 2**64, plus its size, as 16 hex digits.

    Any single flipped bit changes it, and it runs at the speed of reading the file (a
    cryptographic hash is 4-8x slower here, too slow for the 2 GB cache of a 1e6-point store).
    """
    total = os.path.getsize(path)
    with open(path, "rb") as f:
        while chunk := f.read(64 << 20):
            if len(chunk) % 8:
                chunk += b"\0" * (8 - len(chunk) % 8)
            total = (total + int(np.frombuffer(chunk, dtype=np.uint64).sum(dtype=np.uint64)))
    return format(total % 2**64, "016x")


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


def _sql_chunks(ids: Sequence[int]) -> Iterator[tuple[str, list[int]]]:
    """``("?,?,...", ids)`` pieces of ``ids`` small enough for one SQL ``IN`` list."""
    for s in range(0, len(ids), _SQL_VARS):
        part = [int(i) for i in ids[s : s + _SQL_VARS]]
        yield ",".join("?" * len(part)), part


class FaissStore:
    """Cosine search with FAISS over a SQLite source of truth: exact up to a size, then IVF.

    Persisted in ``DIR/<collection>/``: ``store.sqlite`` holds every point (id = :func:`faiss_id`,
    payload JSON, float32 vector, the generation that last wrote it), the ids deleted and when,
    and the meta (format version, store id, encoder spec, dim, generation). Each ``upsert``,
    ``replace_video`` and ``delete_video`` is one transaction; concurrent writers queue on
    SQLite's write lock (for up to ``busy_timeout_s``) and each first catches up with what the
    others committed, so every writer's points land. Readers only read the database.

    In memory the store keeps an ``IndexIDMap2(IndexFlatIP(dim))`` (exact search) and, once a
    search needs it, an approximate ``IVF<nlist>,Flat`` index; both are caches. They are saved as
    ``flat-<store>-g<generation>-t0-<checksum>.faiss`` and ``ivf-<store>-g<generation>-
    t<trained points>-<checksum>.faiss``; opening loads the newest flat cache whose checksum holds
    (a bad one is reported and skipped), replays the points changed since its generation, and
    rebuilds from the database when no cache fits. Writers rewrite the caches once a quarter of
    the store (at least 2048 points) has changed since the last one, and prune older caches; any
    process may add a cache file (whole, by rename), none but a writer removes one.

    In a store of at most ``approx_threshold`` points every search is exact. Above that, searches
    go to the IVF index, except filtered searches whose filter is very selective (fewer than about
    ``2 * top_k * count / 1024`` passing points, e.g. one video), which run exactly on the passing
    points (:meth:`search_path` says which). The IVF index is built on the first search that
    needs it, patched in place by later changes, retrained when the store has grown or shrunk
    fourfold. A filtered approximate search keeps the passing points of a deeper unfiltered
    ranking. Queries the approximate index answers with fewer than ``top_k`` hits are re-run
    exactly, so hit counts never depend on the path taken. Payloads are read from the database
    for the hits only.

    Args:
        directory: The index directory; created if missing (unless ``create`` is False).
        collection: Subfolder of ``directory`` holding this collection.
        approx_threshold: Candidate count above which searches are approximate; ``None``:
            50 000. ``0`` makes every search approximate (tests, benchmarks).
        approx_nprobe: IVF lists scanned per query; ``None`` picks ``max(16, nlist // 32)``
            (about 3 % of the vectors). Higher is slower and closer to exact.
        create: Make the directory and database if missing; ``False`` (read commands) refuses
            a path that holds no store instead of creating one.
        busy_timeout_s: How long a writer waits for another writer's transaction.

    Raises:
        StoreError: The directory is not usable or holds no store (``create=False``), its
            database is corrupt or of another format, or a threshold or nprobe is invalid.

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
    # Why SQLite under the caches: transactions give serialised writers, atomic commits and
    # readers that never block or write, in one file, from the standard library; rewriting a
    # whole index file per commit (the previous format) lost data to every race and kill.

    name: ClassVar[str] = "faiss"
    DB_FILE: ClassVar[str] = "store.sqlite"
    LEGACY_FILES: ClassVar[tuple[str, str, str]] = ("meta.json", "index.faiss", "payloads.json")

    def __init__(
        self,
        directory: str | os.PathLike[str],
        collection: str = DEFAULT_COLLECTION,
        *,
        approx_threshold: int | None = None,
        approx_nprobe: int | None = None,
        create: bool = True,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
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
        self.busy_timeout_s = float(busy_timeout_s)
        self.encoder_spec: str | None = None
        self.dim: int | None = None
        self._store_id = ""
        self._gen = 0  # the database generation the in-memory indexes hold
        self._cache_gen = 0  # generation of the newest flat cache on disk that we know of
        self._index: Any = None
        self._keys: dict[int, tuple[str, tuple[str, ...]]] = {}  # id -> (video id, tags)
        self._by_video: dict[str, set[int]] = {}
        self._by_tag: dict[str, set[int]] = {}
        # The approximate index: None until a search needs it (or a change must patch it).
        self._approx: Any = None
        self._approx_trained_n = 0
        self._closed = False
        self._lock = threading.RLock()  # one transaction at a time on the shared connection
        self._db = self._connect(create)
        try:
            self._load()
        except BaseException:
            self._db.close()
            raise
        log.debug(
            "FAISS store %s: %d points (generation %d), encoder %s, approximate above %d",
            self.path,
            len(self._keys),
            self._gen,
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
        create: bool = True,
    ) -> FaissStore:
        """Open the index directory ``location`` (the constructor :func:`open_store` calls)."""
        return cls(location, collection, approx_threshold=approx_threshold, create=create)

    @property
    def approx_spec(self) -> str | None:
        """The approximate index in memory, e.g. ``"IVF4000,Flat nprobe=125"``, or None."""
        if self._approx is None:
            return None
        return f"IVF{self._approx.nlist},Flat nprobe={self._nprobe()}"

    @property
    def generation(self) -> int:
        """The database generation this store object has loaded (bumped by every commit)."""
        return self._gen

    # -- the database ------------------------------------------------------------------------

    def _sql_error(self, e: sqlite3.Error, what: str) -> StoreError:
        text = str(e)
        db = self.path / self.DB_FILE
        if "locked" in text or "busy" in text:
            return StoreError(
                f"FAISS store {self.path} is busy: another process has held its write lock for "
                f"over {self.busy_timeout_s:g} s; try again when it has finished"
            )
        if any(w in text for w in ("malformed", "not a database", "corrupt")):
            return StoreError(
                f"corrupt FAISS store database {db} ({text}); restore the directory from a "
                "backup, or index the videos again into a fresh directory"
            )
        if any(w in text for w in ("full", "disk I/O", "readonly", "read-only")):
            return StoreError(
                f"cannot {what} FAISS store {db}: {text}; nothing of this change was saved, the "
                "store keeps its last commit"
            )
        return StoreError(f"cannot {what} FAISS store {db}: {text}")

    def _connect(self, create: bool) -> sqlite3.Connection:
        db_path = self.path / self.DB_FILE
        legacy = (self.path / self.LEGACY_FILES[0]).is_file()
        if not db_path.exists() and not create and not legacy:
            raise StoreError(
                f"no FAISS store at {self.path}: check the path (a read never creates a store), "
                "or index videos into it first with `rhl index`"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create FAISS index directory {self.path}: {e}") from e
        fresh = not db_path.exists()
        try:
            con = sqlite3.connect(
                db_path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise self._sql_error(e, "open") from e
        try:
            if fresh:  # 16 KiB pages hold several 2 KiB vectors; set before the first table
                con.execute("PRAGMA page_size=16384")
                con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute(f"PRAGMA cache_size={-_SQL_CACHE_KIB}")
            if not con.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone():
                self._db = con
                self._create_schema()
        except sqlite3.Error as e:
            con.close()
            raise self._sql_error(e, "open") from e
        except BaseException:
            con.close()
            raise
        return con

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction: ``write`` takes the write lock at once (``BEGIN IMMEDIATE``)."""
        what = "write" if write else "read"
        with self._lock:
            yield from self._transaction_locked(write, what)

    def _transaction_locked(self, write: bool, what: str) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as e:
            raise self._sql_error(e, what) from e
        try:
            yield self._db
            if write:
                faults.reached("faiss.before-commit")
            self._db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._sql_error(exc, what) from exc
            if isinstance(exc, OSError):
                raise StoreError(
                    f"cannot {what} FAISS store {self.path}: {exc}; nothing of this change was "
                    "saved, the store keeps its last commit"
                ) from exc
            raise

    def _create_schema(self) -> None:
        with self._transaction(write=True) as db:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            if db.execute("SELECT 1 FROM meta WHERE key='version'").fetchone():
                return  # another process created it first
            meta = {
                "version": str(FAISS_FORMAT_VERSION),
                "store_id": uuid.uuid4().hex,
                "collection": self.collection,
                "generation": "0",
            }
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            if (self.path / self.LEGACY_FILES[0]).is_file():
                self._import_legacy(db)

    def _import_legacy(self, db: sqlite3.Connection) -> None:
        """Copy a format-1 store (index.faiss + payloads.json + meta.json) into the database.

        The old files are left in place; they are no longer read once the database exists.
        """
        meta_p, index_p, pay_p = (self.path / n for n in self.LEGACY_FILES)
        try:
            meta = json.loads(meta_p.read_text(encoding="utf-8"))
            if meta["dim"] is None:
                return
            index = faiss.read_index(str(index_p))
            raw = json.loads(pay_p.read_text(encoding="utf-8"))
            slices = {int(k): Slice.model_validate(v) for k, v in raw.items()}
            ids = faiss.vector_to_array(index.id_map)
            vecs = index.reconstruct_batch(ids)
            rows = [
                (int(pid), slices[int(pid)].video_id, slices[int(pid)].index,
                 json.dumps(list(slices[int(pid)].tags)), json.dumps(payload_of(slices[int(pid)])),
                 np.ascontiguousarray(v, dtype=np.float32).tobytes(), 1)
                for pid, v in zip(ids.tolist(), vecs, strict=True)
            ]
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as e:
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise StoreError(
                f"cannot import the old-format FAISS store {self.path} ({reason}); index the "
                "videos again into a fresh directory"
            ) from e
        db.executemany("INSERT INTO points VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        db.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [("encoder_spec", meta["encoder_spec"]), ("dim", str(int(meta["dim"]))),
             ("generation", "1")],
        )
        log.warning(
            "imported the old-format FAISS store %s (%d points) into %s; index.faiss, "
            "payloads.json and meta.json are no longer used and may be deleted",
            self.path, len(rows), self.DB_FILE,
        )

    def _read_meta(self, db: sqlite3.Connection) -> int:
        """Read the meta table into the attributes; return the database generation."""
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        try:
            version, gen = int(meta["version"]), int(meta["generation"])
        except (KeyError, ValueError) as e:
            raise StoreError(
                f"corrupt FAISS store database {self.path / self.DB_FILE}: bad meta ({e!r}); "
                "restore it from a backup, or index the videos again into a fresh directory"
            ) from e
        if version != FAISS_FORMAT_VERSION:
            raise StoreError(
                f"FAISS index {self.path} has format version {version}; this release reads "
                f"version {FAISS_FORMAT_VERSION}"
            )
        if meta.get("collection", self.collection) != self.collection:
            raise StoreError(
                f"FAISS index {self.path} belongs to collection {meta['collection']!r}, "
                f"not {self.collection!r}"
            )
        self._store_id = meta.get("store_id", "")
        self.encoder_spec = meta.get("encoder_spec")
        self.dim = int(meta["dim"]) if "dim" in meta else None
        return gen

    # -- loading and catching up -------------------------------------------------------------

    def _load(self) -> None:
        with self._transaction(write=False) as db:
            gen = self._read_meta(db)
            self._gen = gen
            if self.dim is None:
                return
            for pid, video_id, tags in db.execute("SELECT id, video_id, tags FROM points"):
                self._track(pid, video_id, tuple(json.loads(tags)))
            index, cache_gen, _ = self._load_cache("flat", gen)
            replayed = 0
            if index is not None:
                replayed = len(self._replay([index], db, cache_gen))
                if not self._matches_keys(index):
                    log.warning(
                        "the FAISS cache of %s (generation %d) does not match the database; "
                        "rebuilding it from the database", self.path, cache_gen,
                    )
                    index = None
            if index is None:
                index, cache_gen = self._index_from_db(db), 0
            self._index, self._cache_gen = index, cache_gen
        if (cache_gen == 0 and len(self._keys) >= _CACHE_MIN_CHANGES) or self._long_replay(
            replayed
        ):
            self.save_cache()

    def _long_replay(self, n_rows: int) -> bool:
        """Whether replaying ``n_rows`` changes was long enough to be worth a fresh cache."""
        return n_rows >= max(_CACHE_MIN_CHANGES, len(self._keys) // 4)

    def _matches_keys(self, index: Any) -> bool:
        ids = faiss.vector_to_array(index.id_map)
        if len(ids) != len(self._keys):
            return False
        want = np.fromiter(self._keys, dtype=np.int64, count=len(self._keys))
        return bool(np.array_equal(np.sort(ids), np.sort(want)))

    def _index_from_db(self, db: sqlite3.Connection) -> Any:
        """A flat index of every point in the database (no cache could be used)."""
        dim = int(self.dim or 0)
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        cur = db.execute("SELECT id, vector FROM points")
        while rows := cur.fetchmany(_APPROX_ADD_CHUNK):
            index.add_with_ids(*self._rows_to_arrays(rows))
        log.info("FAISS store %s: %d points loaded from the database", self.path, index.ntotal)
        return index

    def _rows_to_arrays(self, rows: Sequence[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray]:
        dim = int(self.dim or 0)
        blob = b"".join(r[1] for r in rows)
        if len(blob) != 4 * dim * len(rows):
            raise StoreError(
                f"corrupt FAISS store database {self.path / self.DB_FILE}: a vector is not "
                f"{dim} float32 values; restore it from a backup or index again"
            )
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dim), ids

    def _replay(self, indexes: Sequence[Any], db: sqlite3.Connection, since: int) -> list[tuple]:
        """Apply to ``indexes`` every change committed after generation ``since``.

        Returns:
            The changed rows ``(id, video_id, tags)``, and ids of deleted ones as ``(id,)``.

        """
        changed = db.execute(
            "SELECT id, video_id, tags, vector FROM points WHERE gen > ?", (since,)
        ).fetchall()
        gone = [r[0] for r in db.execute("SELECT id FROM deleted WHERE gen > ?", (since,))]
        stale = np.array(sorted({*gone, *(r[0] for r in changed)}), dtype=np.int64)
        if len(stale):
            for index in indexes:
                index.remove_ids(faiss.IDSelectorBatch(stale))
        if changed:
            vecs, ids = self._rows_to_arrays([(r[0], r[3]) for r in changed])
            for index in indexes:
                index.add_with_ids(vecs, ids)
        return [(r[0], r[1], r[2]) for r in changed] + [(g,) for g in gone]

    def _catch_up(self, db: sqlite3.Connection) -> None:
        """Bring the in-memory state to the database's generation (inside a transaction)."""
        gen = self._read_meta(db)
        if gen == self._gen:
            return
        if self._index is None and self.dim is not None:
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if self._index is not None:
            indexes = [self._index] if self._approx is None else [self._index, self._approx]
            for row in self._replay(indexes, db, self._gen):
                self._untrack(row[0])
                if len(row) == 3:
                    self._track(row[0], row[1], tuple(json.loads(row[2])))
            n = int(self._index.ntotal)
            if self._approx is not None and (
                n <= self.approx_threshold or self._approx_outgrown(n)
            ):
                self._approx = None
        self._gen = gen

    def refresh(self) -> None:
        """See what other processes committed since this store was opened or last refreshed.

        Searches and counts call it; it costs one small query when nothing changed.
        """
        self._check_open()
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        except sqlite3.Error as e:
            raise self._sql_error(e, "read") from e
        if row is not None and int(row[0]) != self._gen:
            with self._transaction(write=False) as db:
                self._catch_up(db)

    # -- caches ------------------------------------------------------------------------------

    def _cache_files(self, kind: str) -> list[tuple[int, int, str, Path]]:
        """``(generation, trained_n, checksum, path)`` of this store's caches, newest first."""
        out = []
        with contextlib.suppress(OSError):
            for p in self.path.iterdir():
                m = _CACHE_RE.match(p.name)
                if m and m.group(1) == kind and m.group(2) == self._store_id[:8]:
                    out.append((int(m.group(3)), int(m.group(4)), m.group(5), p))
        return sorted(out, key=lambda t: t[0], reverse=True)

    def _load_cache(self, kind: str, max_gen: int) -> tuple[Any, int, int]:
        """The newest readable cache of ``kind`` up to generation ``max_gen``.

        Returns:
            ``(index, generation, trained points)``, or ``(None, 0, 0)``.

        """
        for cgen, trained, checksum, p in self._cache_files(kind):
            if cgen > max_gen:
                continue
            try:
                actual = file_checksum(p)
            except FileNotFoundError:
                continue  # a writer replaced it by a newer one meanwhile
            except OSError as e:
                log.warning("cannot read FAISS cache %s (%s); not using it", p, e)
                continue
            if actual != checksum:
                log.warning(
                    "FAISS cache %s is corrupt (checksum %s, expected %s): not using it; it is "
                    "rebuilt from the database (the store itself is intact). If this repeats, "
                    "check the disk", p, actual, checksum,
                )
                continue
            try:
                index = faiss.read_index(str(p))
            except RuntimeError as e:
                log.warning("unreadable FAISS cache %s (%s); not using it", p, e)
                continue
            want = faiss.IndexIDMap2 if kind == "flat" else faiss.IndexIVF
            if not isinstance(index, want) or index.d != self.dim:
                log.warning("FAISS cache %s holds %s of dim %d; not using it",
                            p, type(index).__name__, index.d)
                continue
            log.debug("loaded FAISS cache %s", p.name)
            return index, cgen, trained
        return None, 0, 0

    def _write_cache(self, kind: str, index: Any, trained_n: int = 0) -> Path:
        """Write ``index`` whole under a temp name, then rename it to its stamped name."""
        tmp = self.path / f".{kind}-{uuid.uuid4().hex[:12]}.tmp"
        try:
            faiss.write_index(index, str(tmp))
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            checksum = file_checksum(tmp)
            faults.reached(f"faiss.{kind}-cache-written")
            final = self.path / (
                f"{kind}-{self._store_id[:8]}-g{self._gen}-t{trained_n}-{checksum}.faiss"
            )
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return final

    def save_cache(self) -> None:
        """Save the in-memory indexes as caches of the current generation (best effort).

        A failure (disk full, read-only directory) costs only a slower next open: it is logged.
        """
        self._check_open()
        if self._index is None:
            return
        try:
            self._write_cache("flat", self._index)
            if self._approx is not None:
                self._write_cache("ivf", self._approx, self._approx_trained_n)
        except (OSError, RuntimeError) as e:
            log.warning("cannot save the FAISS caches of %s (%s); the next open replays or "
                        "rebuilds them from the database", self.path, str(e).strip()[-200:])
            return
        self._cache_gen = self._gen

    def _checkpoint(self) -> None:
        """After a commit: rewrite the caches if much changed since the last; prune old files.

        Only writers call it, so only writers remove files: caches older than the newest one,
        and temp files a killed process left (older than an hour).
        """
        changed = self._db.execute(
            "SELECT (SELECT count(*) FROM points WHERE gen > ?) + "
            "(SELECT count(*) FROM deleted WHERE gen > ?)", (self._cache_gen, self._cache_gen),
        ).fetchone()[0]
        if self._long_replay(changed):
            self.save_cache()
        now = time.time()
        for kind in ("flat", "ivf"):
            for _, _, _, p in self._cache_files(kind)[1:]:
                with contextlib.suppress(OSError):
                    p.unlink()
        for p in self.path.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime > _STALE_TMP_S:
                    p.unlink()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"FAISS store {self.path} is closed")

    def _track(self, pid: int, video_id: str, tags: tuple[str, ...]) -> None:
        self._keys[pid] = (video_id, tags)
        self._by_video.setdefault(video_id, set()).add(pid)
        for t in set(tags):
            self._by_tag.setdefault(t, set()).add(pid)

    def _untrack(self, pid: int) -> None:
        key = self._keys.pop(pid, None)
        if key is None:
            return
        _discard(self._by_video, key[0], pid)
        for t in set(key[1]):
            _discard(self._by_tag, t, pid)

    # -- approximate index -----------------------------------------------------------------------

    def _nprobe(self) -> int:
        nlist = int(self._approx.nlist)
        return min(nlist, self.approx_nprobe or approx_nprobe(nlist))

    def _flat_vectors(self) -> np.ndarray:
        """The flat vectors in storage order, as a view (no copy) valid until the index changes."""
        flat = faiss.downcast_index(self._index.index)
        n, d = int(flat.ntotal), int(flat.d)
        return faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)

    def _approx_outgrown(self, n: int) -> bool:
        """Whether ``n`` points have drifted too far from the size the IVF lists were sized for."""
        trained = self._approx_trained_n
        return n > _APPROX_RETRAIN_FACTOR * trained or n * _APPROX_RETRAIN_FACTOR < trained

    def _load_approx(self) -> bool:
        """Load the newest IVF cache and replay the changes since it (with the flat index's)."""
        with self._transaction(write=False) as db:
            self._catch_up(db)
            index, cgen, trained = self._load_cache("ivf", self._gen)
            if index is None:
                return False
            replayed = len(self._replay([index], db, cgen))
        if index.ntotal != self._index.ntotal:
            log.warning(
                "the IVF cache of %s (generation %d) does not match the database; rebuilding it",
                self.path, cgen,
            )
            return False
        self._approx, self._approx_trained_n = index, trained
        if self._long_replay(replayed):
            self.save_cache()
        log.debug("loaded the approximate FAISS index of %s (%s)", self.path, self.approx_spec)
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
        self._approx, self._approx_trained_n = index, n
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
            self.save_cache()
        return self._approx

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
        """Insert or replace slices and their vectors, in one transaction.

        Args:
            slices: The slices, one per vector row.
            vectors: float32 (n, dim) embeddings; L2-normalised here if they are not already.
            encoder_spec: The encoder that produced ``vectors``.

        Returns:
            How many points were new (re-upserted ones are replaced and not counted).

        Raises:
            StoreError: Wrong shape, non-finite values, another encoder or dim than the store's,
                or the transaction failed (the store then keeps its last commit).

        """
        return self._write(slices, vectors, encoder_spec, None)

    def replace_video(
        self, video_id: str, slices: Sequence[Slice], vectors: np.ndarray, encoder_spec: str
    ) -> int:
        """Make ``slices`` the whole of ``video_id`` in one transaction: its points that are not
        among them go, theirs are upserted. A kill or error leaves the old slices or the new ones.

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
        return self._write(slices, vectors, encoder_spec, video_id)

    def _write(
        self,
        slices: Sequence[Slice],
        vectors: np.ndarray,
        encoder_spec: str,
        replace: str | None,
    ) -> int:
        """One transaction upserting ``slices`` and, with ``replace``, dropping that video's
        other points; then the same change in memory.
        """
        self._check_open()
        check_upsert(self, slices, vectors, encoder_spec)
        if len(slices) == 0 and replace is None:
            return 0
        ids = [faiss_id(point_id(encoder_spec, s.video_id, s.index)) for s in slices]
        keep = dedup_last(ids)
        ids_arr = np.array([ids[k] for k in keep], dtype=np.int64)
        with self._transaction(write=True) as db:
            self._catch_up(db)  # what other writers committed meanwhile
            arr = check_upsert(self, slices, vectors, encoder_spec)
            stale = set() if replace is None else self._by_video.get(replace, set())
            gone = np.array(sorted(stale.difference(ids_arr.tolist())), dtype=np.int64)
            if not len(ids_arr) and not len(gone):
                return 0
            # Qdrant's cosine distance normalises on insert; doing the same keeps the back-ends'
            # scores and get_video vectors identical.
            vecs = np.ascontiguousarray(arr[keep])
            faiss.normalize_L2(vecs)
            gen = self._gen + 1
            if self.dim is None:
                db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [("encoder_spec", encoder_spec), ("dim", str(vecs.shape[1]))],
                )
            for marks, part in _sql_chunks(gone):
                db.execute(f"DELETE FROM points WHERE id IN ({marks})", part)
            db.executemany(
                "INSERT OR REPLACE INTO deleted VALUES (?, ?)", ((p, gen) for p in gone.tolist())
            )
            faults.reached("faiss.replace-deleted")
            db.executemany(
                "INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (pid, slices[k].video_id, slices[k].index, json.dumps(list(slices[k].tags)),
                     slices[k].model_dump_json(), vecs[row].tobytes(), gen)
                    for row, k, pid in sorted(
                        zip(range(len(keep)), keep, ids_arr.tolist(), strict=True),
                        key=lambda t: t[2],
                    )
                ),  # in id order: appends to the b-tree instead of splitting pages all over
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(gen),))
        faults.reached("faiss.committed")
        if self._index is None:
            self.dim = int(vecs.shape[1])
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if len(ids_arr):
            self.encoder_spec = encoder_spec
        self._gen = gen
        existing = np.array([i for i in ids_arr.tolist() if i in self._keys], dtype=np.int64)
        removed = np.concatenate([existing, gone])
        if len(removed):
            self._index.remove_ids(faiss.IDSelectorBatch(removed))
        if len(ids_arr):
            self._index.add_with_ids(vecs, ids_arr)
        self._approx_after_change(removed, vecs, ids_arr)
        for pid in gone.tolist():
            self._untrack(pid)
        for k, pid in zip(keep, ids_arr.tolist(), strict=True):
            self._untrack(pid)
            self._track(pid, slices[k].video_id, tuple(slices[k].tags))
        self._checkpoint()
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
        self.refresh()
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
        self.refresh()
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
        payloads = self._payloads(np.unique(labels[labels >= 0]).tolist())
        # A point another writer deleted after our index was refreshed has no payload: skipped.
        return [
            [
                SearchHit(slice=payloads[int(lab)], score_raw=float(sc))
                for sc, lab in zip(srow, lrow, strict=True)
                if lab >= 0 and int(lab) in payloads
            ]
            for srow, lrow in zip(scores, labels, strict=True)
        ]

    def _payloads(self, ids: Sequence[int]) -> dict[int, Slice]:
        out: dict[int, Slice] = {}
        try:
            for marks, part in _sql_chunks(ids):
                sql = f"SELECT id, payload FROM points WHERE id IN ({marks})"
                for pid, payload in self._db.execute(sql, part):
                    out[pid] = Slice.model_validate_json(payload)
        except sqlite3.Error as e:
            raise self._sql_error(e, "read") from e
        return out


    def get_video(self, video_id: str) -> tuple[list[Slice], np.ndarray]:
        """All slices of a video sorted by slice index, and their (normalised) vectors.

        Args:
            video_id: The video.

        Returns:
            The slices and a float32 (n, dim) array; ``([], zeros((0, dim)))`` for an unknown id.

        """
        self._check_open()
        try:
            rows = self._db.execute(
                "SELECT id, vector, payload FROM points WHERE video_id = ? ORDER BY idx",
                (video_id,),
            ).fetchall()
        except sqlite3.Error as e:
            raise self._sql_error(e, "read") from e
        if not rows:
            return [], np.zeros((0, self.dim or 0), dtype=np.float32)
        vecs, _ = self._rows_to_arrays([(r[0], r[1]) for r in rows])
        return [Slice.model_validate_json(r[2]) for r in rows], vecs.copy()

    def count(self, video_id: str | None = None) -> int:
        """Count the points in the store, or in one video."""
        self.refresh()
        if video_id is None:
            return len(self._keys)
        return len(self._by_video.get(video_id, ()))

    def video_ids(self) -> list[str]:
        """Sorted ids of the videos that have at least one slice."""
        self.refresh()
        return sorted(v for v, pids in self._by_video.items() if pids)

    def delete_video(self, video_id: str) -> int:
        """Remove every slice of a video, in one transaction.

        Args:
            video_id: The video.

        Returns:
            How many points were removed (0 for an unknown id).

        """
        self._check_open()
        with self._transaction(write=True) as db:
            self._catch_up(db)
            pids = np.array(sorted(self._by_video.get(video_id, ())), dtype=np.int64)
            if not len(pids):
                return 0
            gen = self._gen + 1
            db.execute("DELETE FROM points WHERE video_id = ?", (video_id,))
            db.executemany(
                "INSERT OR REPLACE INTO deleted VALUES (?, ?)", ((p, gen) for p in pids.tolist())
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(gen),))
        self._gen = gen
        removed = self._index.remove_ids(faiss.IDSelectorBatch(pids))
        self._approx_after_change(pids)
        for p in pids.tolist():
            self._untrack(p)
        self._checkpoint()
        return int(removed)

    def close(self) -> None:
        """Close the database and drop the in-memory indexes; every commit is already on disk."""
        if not self._closed:
            self._db.close()
        self._closed = True
        self._index = None
        self._approx = None
        self._keys.clear()
        self._by_video.clear()
        self._by_tag.clear()

    def __enter__(self) -> FaissStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
