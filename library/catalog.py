"""The clip library: a catalog file of ``LibraryClip``s plus their vectors in one store collection.

Layout of a library directory ``L``::

    L/library.json      the catalog (clips, encoder, store, collection), written atomically
    L/library/          FAISS collection "library" (the default store)

or, opened as ``qdrant:L``, the vectors in Qdrant's embedded local mode in ``L``; with
``store="http://host:6333"`` on a Qdrant server (the catalog still in ``L``; give libraries that
share a server their own ``collection``); ``qdrant::memory:`` keeps nothing on disk.

What a clip is depends on how it comes in:

- a clip file (``add_clip_file``; ``add_path`` picks it for files up to ``CLIP_MAX_S``): the whole
  file is one clip;
- a longer video (``add_video``): it is indexed into slices, and runs of slices inside one shot
  become clips of at most ``VIDEO_CLIP_MAX_S`` seconds, so an event gets a shot, not a whole
  video;
- a highlight run (``add_from_run``): each segment of ``highlights.json`` is a clip, with its
  description as summary and its normalised score.

Each clip has point 0 (tag ``rhl:clip``): the L2-normalised mean of its slice vectors, used to
rank clips; and points 1..n (tag ``rhl:slice``): its slices, used to pick the best stretch of a
clip when an event asks for less than the whole clip. The store's video id is the clip id, so
removing a clip removes all its points. Clip ids are deterministic (the source file's content id
plus the frame range), so adding the same clip twice changes nothing.

Vectors are written before the catalog, and the catalog before vectors are removed; opening a
library deletes vectors that no catalog entry owns (left by an interrupted add) from a store
inside its directory, and only warns about them in a shared one. One writer at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from indexer.decode import decode_proxy
from indexer.encoders import Encoder, create_encoder
from indexer.models import Slice, VideoInfo
from indexer.pipeline import FrameEmbedder, embed_video
from indexer.probe import probe_video
from indexer.slicing import pool_by_slice
from indexer.stores import VectorStore, open_store
from library.models import Catalog, ClipOrigin, LibraryClip, LibraryHit
from library.scoring import normalise_scores
from library.script import normalise_label, normalise_labels
from retrieval_hl.config import Settings
from rhl_common.atomic import write_atomic
from rhl_common.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

CATALOG_NAME = "library.json"
LIBRARY_COLLECTION = "library"
CLIP_TAG = "rhl:clip"
SLICE_TAG = "rhl:slice"
CLIP_MAX_S = 30.0
VIDEO_CLIP_MAX_S = 10.0
CATALOG_VERSION = 1
_CJK = re.compile(r"[\u3400-\u9fff]")


def clip_id_for(source_video_id: str, start_frame: int, end_frame: int) -> str:
    """Deterministic clip id: readable source name plus a hash of content id and frame range."""
    digest = hashlib.sha1(
        json.dumps([source_video_id, int(start_frame), int(end_frame)]).encode()
    ).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", source_video_id.rsplit("-", 1)[0])[:32].strip("_.")
    return f"{stem or 'clip'}-{digest}"


def group_slices(
    slices: Sequence[Slice], cuts: Iterable[int], max_clip_s: float
) -> list[list[Slice]]:
    """Runs of consecutive slices that stay inside one shot and last at most ``max_clip_s``.

    A single slice longer than ``max_clip_s`` is a run of its own.
    """
    cut_set = set(cuts)
    groups: list[list[Slice]] = []
    for s in slices:
        if (
            groups
            and s.start_frame not in cut_set
            and s.end_s - groups[-1][0].start_s <= max_clip_s + 1e-6
        ):
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def _range_slices(
    info: VideoInfo, clip_id: str, start: int, end: int, window_s: float
) -> list[Slice]:
    win = max(1, int(round(window_s * info.fps)))
    starts = list(range(start, end, win))
    if len(starts) > 1 and end - starts[-1] < win / 2:
        starts.pop()
    edges = [*starts, end]
    return [
        Slice(
            video_id=clip_id,
            index=i + 1,
            start_frame=a,
            end_frame=b,
            start_s=info.time_of(a),
            end_s=min(info.time_of(b), info.duration_s) if b == info.n_frames else info.time_of(b),
        )
        for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True))
    ]


def embed_ranges(
    info: VideoInfo,
    encoder: Encoder,
    ranges: Sequence[tuple[str, int, int]],
    *,
    window_s: float = 2.0,
    sample_fps: float = 2.0,
    reader: str = "auto",
) -> dict[str, tuple[list[Slice], np.ndarray]]:
    """Embed only the frame ranges ``(clip_id, start_frame, end_frame)`` of a video, in one pass.

    Each range is cut into slices of about ``window_s`` (indices from 1, ``video_id`` = clip id);
    a slice vector is the normalised mean of its sampled frames.

    Returns:
        Per clip id, its slices and their (n, dim) vectors; ranges where no frame could be
        decoded are left out (and logged).

    """
    step = max(info.fps / sample_fps, 1.0)
    wanted: dict[str, np.ndarray] = {}
    for cid, a, b in ranges:
        idx = np.unique(np.clip(np.round(np.arange(a + step / 2, b, step)), a, b - 1))
        wanted[cid] = idx.astype(np.int64) if len(idx) else np.array([(a + b - 1) // 2])
    union = np.unique(np.concatenate(list(wanted.values()))) if wanted else np.zeros(0, np.int64)
    frame_idx, frame_vec = _embed_frames(info, encoder, union, reader)
    if len(frame_idx) < len(union) and reader != "pyav":
        # decord2 gives up on some frame sizes (e.g. 96 px wide); PyAV decodes what it can't.
        log.info("%s: decoded %d of %d frames with the %s reader; retrying with PyAV",
                 info.path, len(frame_idx), len(union), reader)
        frame_idx, frame_vec = _embed_frames(info, encoder, union, "pyav")
    if not len(frame_idx):
        return {}
    out: dict[str, tuple[list[Slice], np.ndarray]] = {}
    for cid, a, b in ranges:
        inside = (frame_idx >= a) & (frame_idx < b)
        if not inside.any():
            log.warning("no frame decoded in frames %d-%d of %s; skipped", a, b, info.path)
            continue
        slices = _range_slices(info, cid, a, b, window_s)
        out[cid] = (slices, pool_by_slice(slices, frame_idx[inside], frame_vec[inside]))
    return out


def _embed_frames(
    info: VideoInfo, encoder: Encoder, indices: np.ndarray, reader: str
) -> tuple[np.ndarray, np.ndarray]:
    embedder = FrameEmbedder(indices, encoder)
    decode_proxy(info, [embedder], reader)
    return embedder.embeddings()


def _unit_mean(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _matches(clip: LibraryClip, category: str | None, tags: Sequence[str]) -> bool:
    return (category is None or clip.category == category) and set(tags) <= set(clip.tags)


def _canonical_store(uri: str) -> tuple[str, str]:
    """(backend, location) with local paths made absolute, to compare store URIs."""
    uri = uri.strip()
    if uri.startswith(("http://", "https://")):
        return "url", uri.rstrip("/")
    if uri == "qdrant::memory:":
        return "qdrant", ":memory:"
    for scheme in ("qdrant", "faiss"):
        if uri.startswith(f"{scheme}:"):
            return scheme, os.path.abspath(os.path.expanduser(uri[len(scheme) + 1 :]))
    return "faiss", os.path.abspath(os.path.expanduser(uri))


class Library:
    """A catalog of clips with their embeddings; search across videos, add, remove, export.

    Open one with :meth:`open`; use it as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        root: Path | None,
        store: VectorStore,
        catalog: Catalog,
        store_uri: str,
        encoder: str | Encoder | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.root = root
        self.store = store
        self.store_uri = store_uri
        self.collection = getattr(store, "collection", catalog.collection)
        self.settings = settings or Settings()
        self._clips: dict[str, LibraryClip] = {c.clip_id: c for c in catalog.clips}
        self._recorded_store = catalog.store
        self._encoder: Encoder | None = None
        spec = encoder if isinstance(encoder, str) or encoder is None else encoder.spec
        if not isinstance(encoder, str) and encoder is not None:
            self._encoder = encoder
        if catalog.encoder and spec and spec != catalog.encoder:
            raise ConfigError(
                f"library {self.name} holds vectors of encoder {catalog.encoder}, not {spec}; "
                "omit --encoder or use another library"
            )
        if store.encoder_spec and catalog.encoder and store.encoder_spec != catalog.encoder:
            raise StoreError(
                f"store {store_uri} holds vectors of {store.encoder_spec} but the catalog of "
                f"library {self.name} says {catalog.encoder}"
            )
        self.encoder_spec: str = catalog.encoder or store.encoder_spec or spec or (
            self.settings.encoder
        )

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str],
        *,
        store: str | None = None,
        collection: str | None = None,
        encoder: str | Encoder | None = None,
        settings: Settings | None = None,
    ) -> Library:
        """Open (or start) a library.

        Args:
            location: The library directory (``DIR`` or ``faiss:DIR``: catalog and FAISS vectors
                in DIR), ``qdrant:PATH`` (catalog in PATH, vectors in Qdrant local mode there) or
                ``qdrant::memory:`` (nothing kept on disk, for tests and trials).
            store: Another vector store for the clips' vectors, e.g. a Qdrant server URL; it is
                recorded in the catalog, so later opens need not repeat it.
            collection: Collection name for the vectors (default ``library``); give libraries
                that share one Qdrant server different names. Recorded in the catalog.
            encoder: Encoder spec (or encoder) for a new library; an existing library keeps the
                one its vectors came from, and a different one is refused.
            settings: Slicing settings (window, sample fps, reader) and the default encoder.

        Returns:
            The library.

        Raises:
            ConfigError: Unreadable catalog, a server URL as location, or a store or encoder
                other than the library's.
            StoreError: The store cannot be opened.

        """
        loc = str(location).strip()
        if loc.startswith(("http://", "https://")):
            raise ConfigError(
                f"a library needs a local directory for its catalog; give one and put the "
                f"Qdrant server in store=..., e.g. --library ./mylib --store {loc}"
            )
        if loc == "qdrant::memory:":
            root, implied = None, loc
        elif loc.startswith("qdrant:"):
            root, implied = Path(loc[len("qdrant:") :]).expanduser(), loc
        else:
            path = loc[len("faiss:") :] if loc.startswith("faiss:") else loc
            root = Path(path).expanduser()
            implied = loc if loc.startswith("faiss:") else None
        catalog = cls._read_catalog(root)
        recorded = catalog.store
        if recorded is not None and recorded.endswith(":.") and root is not None:
            recorded = f"{recorded[:-1]}{root}"  # "faiss:." = in the library directory
        requested = store or implied
        if recorded and requested and _canonical_store(recorded) != _canonical_store(requested):
            raise ConfigError(
                f"library {root} keeps its vectors in {recorded}, not {requested}; "
                "open it without --store"
            )
        uri = recorded or requested or f"faiss:{root}"
        if collection and catalog.clips and collection != catalog.collection:
            raise ConfigError(
                f"library {root} keeps its vectors in collection {catalog.collection!r}, "
                f"not {collection!r}"
            )
        coll = collection or catalog.collection
        vs = open_store(uri, collection=coll, **(settings or Settings()).store_options())
        try:
            lib = cls(root, vs, catalog, uri, encoder, settings)
            lib._reconcile()
        except BaseException:
            vs.close()
            raise
        log.info("library %s: %d clips, vectors in %s", lib.name, len(lib), uri)
        return lib

    @staticmethod
    def _read_catalog(root: Path | None) -> Catalog:
        if root is None or not (root / CATALOG_NAME).exists():
            return Catalog()
        path = root / CATALOG_NAME
        try:
            catalog = Catalog.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"not a readable library catalog {str(path)!r}: {first}") from None
        if catalog.format_version != CATALOG_VERSION:
            raise ConfigError(
                f"library catalog {str(path)!r} has format version {catalog.format_version}; "
                f"this release reads version {CATALOG_VERSION}"
            )
        return catalog

    def _owns_store(self) -> bool:
        """True when the vectors live inside the library directory (or in memory)."""
        backend, where = _canonical_store(self.store_uri)
        if self.root is None or where == ":memory:":
            return True
        root = os.path.abspath(self.root)
        return backend != "url" and (where == root or where.startswith(root + os.sep))

    def _reconcile(self) -> None:
        """Drop vectors no catalog entry owns; warn about clips whose vectors are missing.

        Stray vectors are only deleted from a store inside the library directory: a shared
        store (a server) may hold another library's collection of the same name.
        """
        in_store = set(self.store.video_ids())
        orphans = sorted(in_store - self._clips.keys())
        if orphans and self._owns_store():
            for orphan in orphans:
                log.warning("removing vectors of %s: not in the catalog (interrupted add?)", orphan)
                self.store.delete_video(orphan)
        elif orphans:
            log.warning(
                "%s collection %r holds %d clip(s) this library's catalog does not list; they are "
                "ignored (another library sharing the collection?)",
                self.store_uri, self.collection, len(orphans),
            )
        missing = self._clips.keys() - in_store
        if missing:
            log.warning(
                "%d clip(s) of library %s have no vectors in %s and cannot be found by search; "
                "remove and add them again: %s",
                len(missing), self.name, self.store_uri, ", ".join(sorted(missing)[:5]),
            )

    def _store_record(self) -> str | None:
        if self.root is None:
            return None
        backend, where = _canonical_store(self.store_uri)
        if backend != "url" and where == os.path.abspath(self.root):
            return f"{backend}:."
        return self.store_uri if backend == "url" else f"{backend}:{where}"

    def _save(self) -> None:
        if self.root is None:
            return
        catalog = Catalog(
            format_version=CATALOG_VERSION,
            encoder=self.encoder_spec,
            store=self._store_record(),
            collection=self.collection,
            clips=tuple(self._clips.values()),
        )
        write_atomic(self.root / CATALOG_NAME, catalog.model_dump_json(indent=2))

    # -- basics ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The library directory, or ``:memory:``."""
        return str(self.root) if self.root is not None else ":memory:"

    @property
    def encoder(self) -> Encoder:
        """The library's encoder, loaded on first use."""
        if self._encoder is None:
            self._encoder = create_encoder(self.encoder_spec)
        return self._encoder

    def __len__(self) -> int:
        return len(self._clips)

    def __contains__(self, clip_id: object) -> bool:
        return clip_id in self._clips

    def get(self, clip_id: str) -> LibraryClip:
        """The clip ``clip_id``.

        Raises:
            ConfigError: no such clip.

        """
        try:
            return self._clips[clip_id]
        except KeyError:
            raise ConfigError(f"no clip {clip_id!r} in library {self.name}") from None

    def list(self, category: str | None = None, tags: Sequence[str] = ()) -> list[LibraryClip]:
        """Clips in the order they were added, optionally of one category and with all ``tags``."""
        cat = normalise_label(category) if category else None
        want = normalise_labels(tags)
        return [c for c in self._clips.values() if _matches(c, cat, want)]

    def close(self) -> None:
        """Close the vector store (releases a Qdrant local folder's lock)."""
        self.store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- adding ------------------------------------------------------------------------------

    def add_path(
        self,
        path: str | os.PathLike[str],
        *,
        mode: str = "auto",
        tags: Sequence[str] = (),
        category: str | None = None,
    ) -> list[LibraryClip]:
        """Add a file as one clip (``mode="clip"``) or as a video cut into shot clips (``"video"``).

        ``auto`` treats files up to ``CLIP_MAX_S`` seconds as clips and longer ones as videos.

        Returns:
            The clips that were new (none when the file was already in the library).

        Raises:
            ConfigError: unknown mode or bad tags.
            VideoOpenError: the file is missing or not a decodable video.

        """
        if mode not in ("auto", "clip", "video"):
            raise ConfigError(f"unknown add mode {mode!r}; choose auto, clip or video")
        if mode == "auto":
            mode = "clip" if probe_video(path).duration_s <= CLIP_MAX_S else "video"
        if mode == "clip":
            return self.add_clip_file(path, tags=tags, category=category)
        return self.add_video(path, tags=tags, category=category)

    def add_clip_file(
        self,
        path: str | os.PathLike[str],
        *,
        tags: Sequence[str] = (),
        category: str | None = None,
        summary: str = "",
    ) -> list[LibraryClip]:
        """Add a whole file as one clip.

        Returns:
            ``[clip]``, or ``[]`` when it was already in the library.

        Raises:
            VideoOpenError: the file is missing or not a decodable video.

        """
        info = probe_video(path)
        return self._add_ranges(
            info, [(0, info.n_frames)], "clip", tags, category, lambda _: (summary, None)
        )

    def add_video(
        self,
        path: str | os.PathLike[str],
        *,
        tags: Sequence[str] = (),
        category: str | None = None,
        max_clip_s: float = VIDEO_CLIP_MAX_S,
    ) -> list[LibraryClip]:
        """Index a video into slices and add runs of slices inside one shot as clips.

        A video already added this way is not decoded again.

        Returns:
            The new clips.

        Raises:
            VideoOpenError: the file is missing or not a decodable video.

        """
        info = probe_video(path)
        tags_n, cat = normalise_labels(tags), normalise_label(category) if category else None
        if any(c.source_video_id == info.video_id and c.origin == "video" for c in self.list()):
            log.info("%s is already in library %s; nothing added", info.path, self.name)
            return []
        s = self.settings
        video = embed_video(
            info, self.encoder, window_s=s.window_s, sample_fps=s.sample_fps,
            snap_to_shots=True, reader=s.reader,
        )
        entries = []
        for group in group_slices(video.slices, video.cuts, max_clip_s):
            rows = np.array([sl.index for sl in group])
            a, b = group[0].start_frame, group[-1].end_frame
            cid = clip_id_for(info.video_id, a, b)
            slices = [
                sl.model_copy(update={"video_id": cid, "index": k, "tags": ()})
                for k, sl in enumerate(group, 1)
            ]
            clip = self._new_clip(video.info, cid, slices, "video", tags_n, cat, "", None)
            entries.append((clip, slices, video.vectors[rows]))
        return self._commit(entries)

    def add_from_run(
        self,
        run: str | os.PathLike[str],
        *,
        tags: Sequence[str] = (),
        category: str | None = None,
    ) -> list[LibraryClip]:
        """Add the segments of a ``rhl highlight`` run as clips.

        Args:
            run: The run directory (holding ``highlights.json``) or the JSON file itself.
            tags: Tags for every clip.
            category: Category for every clip; default: the domain of each segment's
                description, when it has one.

        Returns:
            The new clips, one per segment not yet in the library.

        Raises:
            ConfigError: no readable ``highlights.json``.
            VideoOpenError: the run's source video is gone or unreadable.

        """
        from retrieval_hl.render.export import JSON_NAME, load_highlight

        p = Path(run)
        hl = load_highlight(p / JSON_NAME if p.is_dir() else p)
        info = probe_video(hl.video.path)
        if info.n_frames != hl.video.n_frames:
            log.warning(
                "%s has %d frames but the run saw %d: the file changed since the run",
                info.path, info.n_frames, hl.video.n_frames,
            )
        ranges, meta = [], {}
        for seg in hl.segments:
            a, b = min(seg.start_frame, info.n_frames - 1), min(seg.end_frame, info.n_frames)
            if b <= a:
                log.warning("segment %d-%d lies past the end of %s; skipped",
                            seg.start_frame, seg.end_frame, info.path)
                continue
            desc = hl.descriptions[seg.description_index]
            ranges.append((a, b))
            meta[(a, b)] = (desc.text, seg.score_norm, desc.domain)

        def describe(ab: tuple[int, int]) -> tuple[str, float | None]:
            return meta[ab][0], meta[ab][1]

        cat = category
        if cat is None:
            domains = {m[2] for m in meta.values()}
            cat = domains.pop() if len(domains) == 1 else None
        return self._add_ranges(info, ranges, "run", tags, cat, describe)

    def _add_ranges(
        self, info, ranges, origin: ClipOrigin, tags, category, describe  # noqa: ANN001
    ) -> list[LibraryClip]:
        tags_n, cat = normalise_labels(tags), normalise_label(category) if category else None
        todo = []
        for a, b in ranges:
            cid = clip_id_for(info.video_id, a, b)
            if cid in self._clips or any(t[0] == cid for t in todo):
                log.info("%s (%s frames %d-%d) is already in the library", cid, info.path, a, b)
            else:
                todo.append((cid, a, b))
        if not todo:
            return []
        s = self.settings
        embedded = embed_ranges(
            info, self.encoder, todo, window_s=s.window_s, sample_fps=s.sample_fps,
            reader=s.reader,
        )
        entries = []
        for cid, a, b in todo:
            if cid not in embedded:
                continue
            slices, vectors = embedded[cid]
            summary, score = describe((a, b))
            clip = self._new_clip(info, cid, slices, origin, tags_n, cat, summary, score)
            entries.append((clip, slices, vectors))
        return self._commit(entries)

    @staticmethod
    def _new_clip(
        info: VideoInfo,
        cid: str,
        slices: Sequence[Slice],
        origin: ClipOrigin,
        tags: tuple[str, ...],
        category: str | None,
        summary: str,
        score: float | None,
    ) -> LibraryClip:
        return LibraryClip(
            clip_id=cid,
            source_path=info.path,
            source_video_id=info.video_id,
            start_frame=slices[0].start_frame,
            end_frame=slices[-1].end_frame,
            start_s=slices[0].start_s,
            end_s=slices[-1].end_s,
            fps=info.fps,
            width_px=info.width_px,
            height_px=info.height_px,
            has_audio=info.has_audio,
            n_slices=len(slices),
            tags=tags,
            category=category,
            summary=summary,
            score_norm=score,
            origin=origin,
            created_utc=datetime.now(timezone.utc),
        )

    def _commit(
        self, entries: Sequence[tuple[LibraryClip, Sequence[Slice], np.ndarray]]
    ) -> list[LibraryClip]:
        """Upsert the clips' points (clip vector + slices), then record them in the catalog."""
        entries = [e for e in entries if e[0].clip_id not in self._clips]
        if not entries:
            return []
        points: list[Slice] = []
        vectors: list[np.ndarray] = []
        for clip, slices, vecs in entries:
            points.append(
                Slice(
                    video_id=clip.clip_id, index=0, start_frame=clip.start_frame,
                    end_frame=clip.end_frame, start_s=clip.start_s, end_s=clip.end_s,
                    tags=(CLIP_TAG, *clip.tags),
                )
            )
            vectors.append(_unit_mean(vecs)[None, :])
            points.extend(sl.model_copy(update={"tags": (SLICE_TAG, *clip.tags)}) for sl in slices)
            vectors.append(np.asarray(vecs, dtype=np.float32))
        self.store.upsert(points, np.concatenate(vectors), self.encoder.spec)
        self.encoder_spec = self.encoder.spec
        for clip, _, _ in entries:
            self._clips[clip.clip_id] = clip
        self._save()
        log.info("library %s: added %d clip(s), %d in all", self.name, len(entries), len(self))
        return [e[0] for e in entries]

    # -- removing and exporting --------------------------------------------------------------

    def remove(self, clip_ids: Sequence[str]) -> int:
        """Remove clips and all their vectors.

        Returns:
            How many clips were removed.

        Raises:
            ConfigError: an id is not in the library (nothing is removed then).

        """
        unknown = [c for c in clip_ids if c not in self._clips]
        if unknown:
            raise ConfigError(
                f"no clip {unknown[0]!r} in library {self.name}; `rhl library list` shows the ids"
            )
        ids = list(dict.fromkeys(clip_ids))
        for cid in ids:
            del self._clips[cid]
        self._save()
        for cid in ids:
            self.store.delete_video(cid)
        log.info("library %s: removed %d clip(s), %d left", self.name, len(ids), len(self))
        return len(ids)

    def export(self, path: str | os.PathLike[str] | None = None) -> str:
        """The catalog as JSON (a ``Catalog``; readable with ``Catalog.model_validate_json``).

        Args:
            path: Also write it there, atomically.

        Returns:
            The JSON text.

        """
        text = Catalog(
            format_version=CATALOG_VERSION,
            encoder=self.encoder_spec,
            store=self.store_uri,
            collection=self.collection,
            clips=tuple(self._clips.values()),
        ).model_dump_json(indent=2)
        if path is not None:
            write_atomic(path, text)
        return text

    # -- vectors and search ------------------------------------------------------------------

    def clip_vectors(self, clip_ids: Sequence[str]) -> np.ndarray:
        """The clip-level vectors of ``clip_ids``, float32 (n, dim); a missing one is an error.

        Raises:
            StoreError: a clip has no vectors in the store.

        """
        rows = []
        for cid in clip_ids:
            points, vecs = self.store.get_video(cid)
            if not points or points[0].index != 0:
                raise StoreError(f"clip {cid!r} has no vectors in {self.store_uri}")
            rows.append(vecs[0])
        if not rows:
            return np.zeros((0, self.store.dim or 0), dtype=np.float32)
        return np.asarray(rows, dtype=np.float32)

    def slice_vectors(self, clip_id: str) -> tuple[list[Slice], np.ndarray]:
        """A clip's slices (source frames and times) and their vectors, float32 (n, dim)."""
        points, vecs = self.store.get_video(clip_id)
        keep = [k for k, p in enumerate(points) if p.index > 0]
        return [points[k] for k in keep], np.asarray(vecs, dtype=np.float32)[keep]

    def score_clips(self, queries: np.ndarray) -> tuple[list[LibraryClip], np.ndarray]:
        """Cosine of every query with every clip that has vectors, via the store's search.

        Returns:
            The clips (catalog order) and raw scores (queries x clips); NaN where the store
            returned no score (a clip without vectors, or cut off by an approximate index).

        """
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        clips = list(self._clips.values())
        raw = np.full((len(q), len(clips)), np.nan)
        if not clips or len(q) == 0:
            return clips, raw
        col = {c.clip_id: k for k, c in enumerate(clips)}
        for i, hits in enumerate(self.store.search(q, top_k=len(clips), tags=(CLIP_TAG,))):
            for h in hits:
                k = col.get(h.slice.video_id)
                if k is not None:
                    raw[i, k] = h.score_raw
        return clips, raw

    def search_vectors(
        self,
        queries: np.ndarray,
        *,
        category: str | None = None,
        tags: Sequence[str] = (),
        top_k: int = 10,
    ) -> list[list[LibraryHit]]:
        """Best clips per query vector (text or image embeddings), by normalised score.

        ``score_norm`` is computed against the whole library (see ``library.scoring``); the
        category and tag filters then pick which clips are listed.
        """
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        clips, raw = self.score_clips(queries)
        z = normalise_scores(raw) if raw.size else raw
        cat = normalise_label(category) if category else None
        want = normalise_labels(tags)
        allowed = np.array([_matches(c, cat, want) for c in clips], dtype=bool)
        out = []
        for i in range(len(raw)):
            ok = np.flatnonzero(allowed & ~np.isnan(raw[i]))
            order = ok[np.lexsort((-raw[i, ok], -z[i, ok]))][:top_k]
            out.append([
                LibraryHit(clip=clips[k], score_raw=float(raw[i, k]), score_norm=float(z[i, k]))
                for k in order
            ])
        return out

    def search(
        self,
        text: str,
        *,
        category: str | None = None,
        tags: Sequence[str] = (),
        top_k: int = 10,
    ) -> list[LibraryHit]:
        """Best clips for a text query across every video in the library.

        Raises:
            ConfigError: empty text or bad ``top_k``.
            EncoderError: the library's encoder cannot be loaded.

        """
        if not text.strip():
            raise ConfigError("empty search text")
        if not self._clips:
            return []
        warn_if_not_multilingual([text], self.encoder)
        vec = self.encoder.encode_texts([text])
        return self.search_vectors(vec, category=category, tags=tags, top_k=top_k)[0]


def warn_if_not_multilingual(texts: Sequence[str], encoder: Encoder) -> None:
    """Log a warning when Chinese text meets an English-only encoder."""
    if not encoder.multilingual and any(_CJK.search(t) for t in texts):
        from indexer.encoders import MULTILINGUAL_ENCODER

        log.warning(
            "some queries are not English but encoder %s is English-only; build the library "
            "with --encoder %s for multilingual queries", encoder.spec, MULTILINGUAL_ENCODER,
        )
