"""The clip library: a catalog file of ``LibraryClip``s plus their vectors in one store collection.

Layout of a library directory ``L``::

    L/library.json      the catalog (clips, encoder, store, collection), written atomically
    L/library/          FAISS collection "library" (the default store; SQLite underneath)
    L/media/            each clip's own media: a stream copy of its span (no re-encode), so the
                        library outlives its sources; ``--link`` keeps only a reference instead
    L/library.lock      held by the one writer at a time

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
removing a clip removes all its points. Clip ids are deterministic (the source file's content
id plus the frame range), so adding the same clip twice changes nothing.

What is said in a clip is kept too: its words (cut from the source's transcript, cached per
file by ``indexer.speech``, retimed to the clip) in the catalog entry, and the MiniLM vectors of
its sentences, laid on its slices (same indices, tag ``rhl:slice``), in the sibling collection
``<collection>__speech`` of the same store. A clip's speech score for a text is its best
sentence's cosine; ``search`` fuses both channels by reciprocal rank
(``retrieval_hl.speech.search``), ``library.assemble`` by the larger normalised score
(``retrieval_hl.speech.hybrid``). Adding, removing and the pending protocol below treat both
collections alike.

Nothing is lost. Writers (add, remove) take ``L/library.lock`` and re-read the catalog under it,
so two
processes adding at once both land. A commit first records the clips it touches as ``pending``
in the catalog, then writes media and vectors (or removes them), then the catalog without them
pending: a kill at any step leaves the last catalog, whose pending clips' stray vectors and media
the next writer removes. Readers (list, search, export, assemble) never write or delete: vectors
no catalog entry owns are ignored, and clips whose media is gone are marked, not fatal.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from indexer.decode import decode_proxy
from indexer.encoders import Encoder, create_encoder
from indexer.encoders.text import DEFAULT_TEXT_ENCODER, TextEncoder, create_text_encoder
from indexer.models import Slice, VideoInfo
from indexer.pipeline import FrameEmbedder, IndexedVideo, embed_video
from indexer.probe import probe_video
from indexer.slicing import pool_by_slice
from indexer.speech.models import Transcript
from indexer.speech.store import SpeechVectors, embed_speech, open_speech_store_beside
from indexer.speech.windows import cut_transcript
from indexer.stores import VectorStore, open_store
from library.models import Catalog, Channel, ClipOrigin, LibraryClip, LibraryHit
from library.scoring import normalise_scores
from library.script import normalise_label, normalise_labels
from retrieval_hl.config import Settings
from retrieval_hl.speech.channel import listen
from retrieval_hl.speech.hybrid import SPEECH_MIN_COSINE
from retrieval_hl.speech.search import fuse_ranks
from rhl_common import faults
from rhl_common.atomic import atomic_path, write_atomic
from rhl_common.errors import ConfigError, EncoderError, StoreError, VideoOpenError
from rhl_common.ffmpeg import run_ffmpeg

log = logging.getLogger(__name__)

CATALOG_NAME = "library.json"
LOCK_NAME = "library.lock"
MEDIA_DIR = "media"
# A writer waits this long for another writer to finish its commit.
LOCK_TIMEOUT_S = 600.0
LIBRARY_COLLECTION = "library"
CLIP_TAG = "rhl:clip"
SLICE_TAG = "rhl:slice"
CLIP_MAX_S = 30.0
VIDEO_CLIP_MAX_S = 10.0
CATALOG_VERSION = 1
_CJK = re.compile(r"[\u3400-\u9fff]")
# A clip on its way in: the entry, its slices and their visual vectors, what is said on them.
Entry = tuple[LibraryClip, Sequence[Slice], np.ndarray, SpeechVectors | None]


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


def _keyframe_at_or_before(path: str, t_s: float) -> float:
    """Time (from the first video frame) of the last keyframe at or before ``t_s``; 0 if unsure."""
    import av

    with av.open(path) as c:
        v = c.streams.video[0]
        start = v.start_time or 0
        if t_s <= 0 or v.time_base is None:
            return 0.0
        c.seek(int(start + t_s / v.time_base), stream=v, backward=True, any_frame=False)
        for pkt in c.demux(v):
            if pkt.pts is None:
                continue
            k = float((pkt.pts - start) * v.time_base)
            return k if pkt.is_keyframe and 0 <= k <= t_s + 1e-6 else 0.0
    return 0.0


def copy_clip_media(clip: LibraryClip, dest: Path) -> float:
    """Copy ``clip``'s span of its source into ``dest`` without re-encoding; atomically.

    A whole-file clip is copied as is. Otherwise the copy starts at the keyframe at or before
    the clip's start (a stream copy can start nowhere else) and runs to its end.

    Returns:
        The source time at which the copy starts (``LibraryClip.media_start_s``).

    Raises:
        VideoOpenError: the source cannot be read or copied.

    """
    from retrieval_hl.render.renderer import ffmpeg_file

    src = clip.source_path
    if clip.origin == "clip" and clip.start_frame == 0:
        try:
            with atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
        except OSError as e:
            raise VideoOpenError(f"cannot copy {src!r} into the library: {e}") from e
        return 0.0
    try:
        k = _keyframe_at_or_before(src, clip.start_s)
        import av

        with av.open(src) as c:  # ffmpeg's -ss counts from the container's start, not the video's
            v = c.streams.video[0]
            lead = float(((v.start_time or 0) * v.time_base) - (c.start_time or 0) / 1e6)
    except (OSError, ValueError, IndexError) as e:
        raise VideoOpenError(f"cannot read {src!r} to copy clip {clip.clip_id}: {e}") from e
    with atomic_path(dest) as tmp:
        run_ffmpeg(
            ["-ss", f"{max(0.0, k + lead) + 1e-3:.6f}", "-i", ffmpeg_file(src),
             "-t", f"{clip.end_s - k + 0.05:.6f}", "-map", "0:v:0", "-map", "0:a:0?",
             "-c", "copy", "-avoid_negative_ts", "make_zero", "-f", "mp4", ffmpeg_file(tmp)],
            what=f"copying clip {clip.clip_id} into the library",
        )
    return k


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
        speech_store: VectorStore | None = None,
    ) -> None:
        self.root = root
        self.store = store
        self.speech_store = speech_store
        self.store_uri = store_uri
        self.collection = getattr(store, "collection", catalog.collection)
        self.settings = settings or Settings()
        self._clips: dict[str, LibraryClip] = self._resolve(catalog)
        self._pending: tuple[str, ...] = catalog.pending
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
        create: bool = True,
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
            create: Start a new library if there is none at ``location``; read commands pass
                ``False``, so a mistyped path is an error instead of a new, empty library.

        Returns:
            The library.

        Raises:
            ConfigError: Unreadable catalog, a server URL as location, no library there
                (``create=False``), or a store or encoder other than the library's.
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
        if not create and root is not None and not root.is_dir():
            raise ConfigError(
                f"no library at {root}: check the path (a read never creates a library), or "
                "add clips to it first with `rhl library add`"
            )
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
        options = (settings or Settings()).store_options()
        vs = open_store(uri, collection=coll, create=create, **options)
        speech = None
        try:
            try:
                speech = open_speech_store_beside(vs, uri, coll, create=create, **options)
            except StoreError:
                if create:
                    raise
                # a read creates nothing: a library that never heard anything has no collection
            lib = cls(root, vs, catalog, uri, encoder, settings, speech)
            lib._reconcile()
        except BaseException:
            if speech is not None:
                speech.close()
            vs.close()
            raise
        log.info("library %s: %d clips, vectors in %s", lib.name, len(lib), uri)
        return lib

    @staticmethod
    def _read_catalog(root: Path | None) -> Catalog:
        if root is None or not (root / CATALOG_NAME).exists():
            return Catalog()
        path = root / CATALOG_NAME
        catalog = Catalog.from_json_file(path, "library catalog")
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

    def _resolve(self, catalog: Catalog) -> dict[str, LibraryClip]:
        """The catalog's clips by id, media paths made absolute (they are stored relative)."""
        out = {}
        for c in catalog.clips:
            if c.media_path is not None and self.root is not None:
                c = c.model_copy(update={"media_path": str(self.root / c.media_path)})
            out[c.clip_id] = c
        return out

    def _reconcile(self) -> None:
        """Warn about vectors no catalog entry owns and clips without vectors; change nothing.

        Vectors of clips a killed writer left ``pending`` are removed by the next writer; any
        others (a lost or older ``library.json``) are kept: deleting them could lose a library.
        """
        in_store = set(self.store.video_ids())
        orphans = sorted(in_store - self._clips.keys() - set(self._pending))
        if orphans:
            log.warning(
                "%s collection %r holds %d clip(s) the catalog of library %s does not list; "
                "they are ignored (library.json lost or replaced? restore it from a backup; or "
                "another library sharing the collection)",
                self.store_uri, self.collection, len(orphans), self.name,
            )
        missing = self._clips.keys() - in_store
        if missing:
            log.warning(
                "%d clip(s) of library %s have no vectors in %s and cannot be found by search; "
                "remove and add them again: %s",
                len(missing), self.name, self.store_uri, ", ".join(sorted(missing)[:5]),
            )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the library's writer lock, with the catalog re-read under it.

        Another process's commit since this library was opened is seen; clips a killed writer
        left pending lose their stray vectors and media here.
        """
        if self.root is None:
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ConfigError(
                            f"library {self.name} is busy: another process has been writing to "
                            f"it for over {LOCK_TIMEOUT_S:g} s; try again when it has finished"
                        ) from None
                    time.sleep(0.05)
            catalog = self._read_catalog(self.root)
            self._clips, self._pending = self._resolve(catalog), catalog.pending
            if catalog.encoder:
                self.encoder_spec = catalog.encoder
            if self._pending:
                self._drop_pending()
            yield
        finally:
            os.close(fd)  # releases the lock

    def _drop_pending(self) -> None:
        """Remove vectors and media of pending clips the catalog does not list (a killed writer)."""
        stray = [c for c in self._pending if c not in self._clips]
        for cid in stray:
            log.warning("library %s: removing what an interrupted writer left of %s",
                        self.name, cid)
            self._delete_points(cid)
            self._remove_media(cid)
        self._save(pending=())

    def _delete_points(self, clip_id: str) -> None:
        """Remove a clip's vectors from both collections."""
        self.store.delete_video(clip_id)
        if self.speech_store is not None:
            self.speech_store.delete_video(clip_id)

    def _media_file(self, clip_id: str) -> Path:
        assert self.root is not None
        return self.root / MEDIA_DIR / f"{clip_id}.mp4"

    def _remove_media(self, clip_id: str) -> None:
        if self.root is not None:
            with contextlib.suppress(FileNotFoundError):
                self._media_file(clip_id).unlink()

    def media_missing(self, clip: LibraryClip) -> bool:
        """Whether neither the library's copy nor the source of ``clip`` can be found."""
        paths = [clip.media_path] if clip.media_path else []
        return not any(os.path.isfile(p) for p in [*paths, clip.source_path])

    def _store_record(self) -> str | None:
        if self.root is None:
            return None
        backend, where = _canonical_store(self.store_uri)
        if backend != "url" and where == os.path.abspath(self.root):
            return f"{backend}:."
        return self.store_uri if backend == "url" else f"{backend}:{where}"

    def _save(self, pending: Sequence[str] = ()) -> None:
        if self.root is None:
            return
        clips = []
        for c in self._clips.values():
            if c.media_path is not None:
                c = c.model_copy(update={"media_path": os.path.relpath(c.media_path, self.root)})
            clips.append(c)
        catalog = Catalog(
            format_version=CATALOG_VERSION,
            encoder=self.encoder_spec,
            store=self._store_record(),
            collection=self.collection,
            clips=tuple(clips),
            pending=tuple(pending),
        )
        write_atomic(self.root / CATALOG_NAME, catalog.model_dump_json(indent=2))
        self._pending = tuple(pending)

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
        """Close the vector stores (releases a Qdrant local folder's lock)."""
        if self.speech_store is not None:
            self.speech_store.close()
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
        link: bool = False,
    ) -> list[LibraryClip]:
        """Add a file as one clip (``mode="clip"``) or as a video cut into shot clips (``"video"``).

        ``auto`` treats files up to ``CLIP_MAX_S`` seconds as clips and longer ones as videos.
        Each clip's media is copied into the library unless ``link`` (then moving or deleting
        the source breaks the clip).

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
            return self.add_clip_file(path, tags=tags, category=category, link=link)
        return self.add_video(path, tags=tags, category=category, link=link)

    def add_clip_file(
        self,
        path: str | os.PathLike[str],
        *,
        tags: Sequence[str] = (),
        category: str | None = None,
        summary: str = "",
        link: bool = False,
        embedded: tuple[VideoInfo, dict[str, tuple[list[Slice], np.ndarray]]] | None = None,
        transcript: Transcript | None = None,
    ) -> list[LibraryClip]:
        """Add a whole file as one clip (its media copied in unless ``link``), with what is said
        in it (module docstring).

        ``embedded`` is the file's probe and its ``embed_ranges`` over all its frames, and
        ``transcript`` its transcript, when a worker has already computed them
        (``library.bulk``); else they are computed here.

        Returns:
            ``[clip]``, or ``[]`` when it was already in the library.

        Raises:
            VideoOpenError: the file is missing or not a decodable video.

        """
        info = embedded[0] if embedded is not None else probe_video(path)
        return self._add_ranges(
            info, [(0, info.n_frames)], "clip", tags, category, lambda _: (summary, None), link,
            embedded=embedded[1] if embedded is not None else None, transcript=transcript,
        )

    def add_video(
        self,
        path: str | os.PathLike[str],
        *,
        tags: Sequence[str] = (),
        category: str | None = None,
        max_clip_s: float = VIDEO_CLIP_MAX_S,
        link: bool = False,
        video: IndexedVideo | None = None,
        transcript: Transcript | None = None,
    ) -> list[LibraryClip]:
        """Index a video into slices and add runs of slices inside one shot as clips.

        Each clip's span is copied into the library unless ``link``; what is said in it is kept
        (module docstring).

        A video already added this way is not decoded again. ``video`` is its ``embed_video``
        result, ``transcript`` its transcript, when a worker has already computed them
        (``library.bulk``).

        Returns:
            The new clips.

        Raises:
            VideoOpenError: the file is missing or not a decodable video.

        """
        info = video.info if video is not None else probe_video(path)
        tags_n, cat = normalise_labels(tags), normalise_label(category) if category else None
        if any(c.source_video_id == info.video_id and c.origin == "video" for c in self.list()):
            log.info("%s is already in library %s; nothing added", info.path, self.name)
            return []
        s = self.settings
        if video is None:
            video = embed_video(
                info, self.encoder, window_s=s.window_s, sample_fps=s.sample_fps,
                snap_to_shots=True, reader=s.reader,
            )
        entries = []
        for group in group_slices(video.slices, video.cuts or (), max_clip_s):
            rows = np.array([sl.index for sl in group])
            a, b = group[0].start_frame, group[-1].end_frame
            cid = clip_id_for(info.video_id, a, b)
            slices = [
                sl.model_copy(update={"video_id": cid, "index": k, "tags": ()})
                for k, sl in enumerate(group, 1)
            ]
            clip = self._new_clip(video.info, cid, slices, "video", tags_n, cat, "", None)
            entries.append((clip, slices, video.vectors[rows]))
        return self._commit(self._with_speech(video.info, entries, transcript), link)

    def add_from_run(
        self,
        run: str | os.PathLike[str],
        *,
        tags: Sequence[str] = (),
        category: str | None = None,
        link: bool = False,
    ) -> list[LibraryClip]:
        """Add the segments of a ``rhl highlight`` run as clips (spans copied in unless ``link``),
        with what is said in them (from the run's transcript when it kept one).

        Args:
            run: The run directory (holding ``highlights.json``) or the JSON file itself.
            tags: Tags for every clip.
            category: Category for every clip; default: the domain of each segment's
                description, when it has one.
            link: Keep references to the run's source video instead of copies of the spans.

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
        return self._add_ranges(info, ranges, "run", tags, cat, describe, link,
                                transcript=hl.transcript)

    def _add_ranges(
        self, info, ranges, origin: ClipOrigin, tags, category, describe, link,  # noqa: ANN001
        embedded: dict[str, tuple[list[Slice], np.ndarray]] | None = None,
        transcript: Transcript | None = None,
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
        if embedded is None:
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
        return self._commit(self._with_speech(info, entries, transcript), link)

    def _with_speech(
        self,
        info: VideoInfo,
        entries: Sequence[tuple[LibraryClip, Sequence[Slice], np.ndarray]],
        transcript: Transcript | None = None,
    ) -> list[Entry]:
        """Each entry with what is said in its clip: the clip's words (from ``transcript``, else
        the source's transcript as ``retrieval_hl.speech.channel.listen`` gives it: cached, or
        transcribed now) and their sentence vectors on its slices; ``None`` where nobody speaks.
        """
        if not entries:
            return []
        heard: tuple[Transcript, TextEncoder] | None = None
        if transcript is not None and self.settings.speech != "off":
            heard = transcript, create_text_encoder(DEFAULT_TEXT_ENCODER)
        elif transcript is None:
            heard = listen(info, self.settings)
        if heard is None or not heard[0].has_speech:
            return [(*e, None) for e in entries]
        full, encoder = heard
        out: list[Entry] = []
        for clip, slices, vectors in entries:
            said = cut_transcript(full, clip.start_s, clip.end_s, clip.clip_id)
            if not said.has_speech:
                out.append((clip, slices, vectors, None))
                continue
            own = cut_transcript(said, clip.start_s, clip.end_s, clip.clip_id, retime=True)
            out.append((clip.model_copy(update={"transcript": own}), slices, vectors,
                        embed_speech(slices, said, encoder)))
        return out

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

    def _commit(self, entries: Sequence[Entry], link: bool) -> list[LibraryClip]:
        """Under the writer lock: mark the clips pending, copy their media (unless ``link``),
        upsert their points (clip vector + slices; their speech vectors), then record them in
        the catalog.
        """
        with self._writing():
            entries = [e for e in entries if e[0].clip_id not in self._clips]
            if not entries:
                return []
            ids = [e[0].clip_id for e in entries]
            self._save(pending=ids)
            faults.reached("library.pending-saved")
            clips = [self._with_media(e[0], link) for e in entries]
            faults.reached("library.media-copied")
            points: list[Slice] = []
            vectors: list[np.ndarray] = []
            for clip, (_, slices, vecs, _) in zip(clips, entries, strict=True):
                points.append(
                    Slice(
                        video_id=clip.clip_id, index=0, start_frame=clip.start_frame,
                        end_frame=clip.end_frame, start_s=clip.start_s, end_s=clip.end_s,
                        tags=(CLIP_TAG, *clip.tags),
                    )
                )
                vectors.append(_unit_mean(vecs)[None, :])
                points.extend(
                    sl.model_copy(update={"tags": (SLICE_TAG, *clip.tags)}) for sl in slices
                )
                vectors.append(np.asarray(vecs, dtype=np.float32))
            self.store.upsert(points, np.concatenate(vectors), self.encoder.spec)
            self._upsert_speech([(clip, e[3]) for clip, e in zip(clips, entries, strict=True)])
            faults.reached("library.vectors-upserted")
            self.encoder_spec = self.encoder.spec
            for clip in clips:
                self._clips[clip.clip_id] = clip
            self._save(pending=())
        log.info("library %s: added %d clip(s), %d in all", self.name, len(clips), len(self))
        return clips

    def _upsert_speech(self, said: Sequence[tuple[LibraryClip, SpeechVectors | None]]) -> None:
        """Put the clips' sentence vectors into the speech collection (opened on first need)."""
        said = [(c, sv) for c, sv in said if sv is not None and sv.slices]
        if not said:
            return
        if self.speech_store is None:
            self.speech_store = open_speech_store_beside(
                self.store, self.store_uri, self.collection, **self.settings.store_options())
        points = [sl.model_copy(update={"tags": (SLICE_TAG, *clip.tags)})
                  for clip, sv in said for sl in sv.slices]
        self.speech_store.upsert(points, np.concatenate([sv.vectors for _, sv in said]),
                                 said[0][1].encoder_spec)

    def _with_media(self, clip: LibraryClip, link: bool) -> LibraryClip:
        """``clip`` with its media copied into the library (``link``: as it is, a reference)."""
        if link or self.root is None:
            if link:
                log.info("%s: linked, not copied: moving or deleting %s breaks it",
                         clip.clip_id, clip.source_path)
            return clip
        dest = self._media_file(clip.clip_id)
        start = copy_clip_media(clip, dest)
        return clip.model_copy(update={"media_path": str(dest), "media_start_s": start})

    # -- removing and exporting --------------------------------------------------------------

    def remove(self, clip_ids: Sequence[str]) -> int:
        """Remove clips, their vectors and their media copies.

        Returns:
            How many clips were removed.

        Raises:
            ConfigError: an id is not in the library (nothing is removed then).

        """
        with self._writing():
            unknown = [c for c in clip_ids if c not in self._clips]
            if unknown:
                raise ConfigError(
                    f"no clip {unknown[0]!r} in library {self.name}; `rhl library list` shows "
                    "the ids"
                )
            ids = list(dict.fromkeys(clip_ids))
            for cid in ids:
                del self._clips[cid]
            self._save(pending=ids)  # gone from the catalog; vectors and media follow
            faults.reached("library.removal-saved")
            for cid in ids:
                self._delete_points(cid)
                self._remove_media(cid)
            self._save(pending=())
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

    def slice_vectors(
        self, clip_id: str, channel: Channel = "visual"
    ) -> tuple[list[Slice], np.ndarray]:
        """A clip's slices (source frames and times) and their vectors, float32 (n, dim): the
        visual ones, or (``channel="speech"``) those of what is said on them (only slices where
        someone speaks; none without a speech collection).
        """
        store = self.store if channel == "visual" else self.speech_store
        if store is None:
            return [], np.zeros((0, 0), dtype=np.float32)
        points, vecs = store.get_video(clip_id)
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
        # Clips the catalog does not list (a killed writer's) must not crowd out listed ones.
        stray = len(set(self.store.video_ids()) - col.keys())
        hits_per_query = self.store.search(q, top_k=len(clips) + stray, tags=(CLIP_TAG,))
        for i, hits in enumerate(hits_per_query):
            for h in hits:
                k = col.get(h.slice.video_id)
                if k is not None:
                    raw[i, k] = h.score_raw
        return clips, raw

    def speech_encoder(self) -> TextEncoder | None:
        """The text encoder of the speech collection, or ``None`` (with a warning when it has
        vectors) when the library holds nothing said or the encoder is not installed.
        """
        if self.speech_store is None or self.speech_store.count() == 0:
            return None
        try:
            return create_text_encoder(self.speech_store.encoder_spec or DEFAULT_TEXT_ENCODER)
        except EncoderError as exc:
            log.warning("library %s: search by what is said is off: %s", self.name, exc)
            return None

    def score_speech(
        self, queries: np.ndarray, *, silent_as_zero: bool = False
    ) -> tuple[list[LibraryClip], np.ndarray]:
        """Best cosine of every query (unit vectors of :meth:`speech_encoder`) with one of each
        clip's sentences.

        Returns:
            The clips (catalog order) and raw scores (queries x clips); NaN where nothing is
            said in the clip (0 with ``silent_as_zero``, as the speech channel scores silence).
        """
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        clips = list(self._clips.values())
        raw = np.full((len(q), len(clips)), np.nan)
        store = self.speech_store
        if clips and len(q) and store is not None and (n := store.count()):
            col = {c.clip_id: k for k, c in enumerate(clips)}
            for i, hits in enumerate(store.search(q, top_k=n)):
                for h in hits:  # best first: a clip's first hit is its best sentence
                    k = col.get(h.slice.video_id)
                    if k is not None and np.isnan(raw[i, k]):
                        raw[i, k] = h.score_raw
        return clips, np.nan_to_num(raw, nan=0.0) if silent_as_zero else raw

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
        allowed = self._allowed(clips, category, tags)
        return [
            [LibraryHit(clip=clips[k], score_raw=float(raw[i, k]), score_norm=float(z[i, k]))
             for k in _best(z[i], raw[i], allowed, top_k)]
            for i in range(len(raw))
        ]

    def _allowed(
        self, clips: Sequence[LibraryClip], category: str | None, tags: Sequence[str]
    ) -> np.ndarray:
        cat = normalise_label(category) if category else None
        want = normalise_labels(tags)
        return np.array([_matches(c, cat, want) for c in clips], dtype=bool)

    def search(
        self,
        text: str,
        *,
        category: str | None = None,
        tags: Sequence[str] = (),
        top_k: int = 10,
    ) -> list[LibraryHit]:
        """Best clips for a text query across every video in the library, by what is shown
        and by what is said.

        Each channel ranks the clips the filters allow (visual: by normalised score; speech:
        by best sentence cosine, those below the speech floor left out), and the two lists are
        fused by reciprocal rank, the rule of ``rhl search`` (``retrieval_hl.speech.search``);
        each hit names the channels that found it. Without a usable visual encoder the speech
        channel answers alone (with a warning).

        Raises:
            ConfigError: empty text or bad ``top_k``.
            EncoderError: the library's encoder cannot be loaded and nothing said is searchable.

        """
        if not text.strip():
            raise ConfigError("empty search text")
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        if not self._clips:
            return []
        clips = list(self._clips.values())
        allowed = self._allowed(clips, category, tags)
        spoken = np.full(len(clips), np.nan)
        if (tenc := self.speech_encoder()) is not None:
            spoken = self.score_speech(tenc.encode_texts([text]))[1][0]
        try:
            warn_if_not_multilingual([text], self.encoder)
            raw = self.score_clips(self.encoder.encode_texts([text]))[1][0]
        except EncoderError as exc:
            if tenc is None:
                raise
            log.warning("visual search off, searching what is said only: %s", exc)
            raw = np.full(len(clips), np.nan)
        z = normalise_scores(raw[None, :])[0]
        heard = np.where(spoken >= SPEECH_MIN_COSINE, spoken, np.nan)
        ranked: dict[Channel, list[int]] = {
            "visual": [int(k) for k in _best(z, raw, allowed, top_k)],
            "speech": [int(k) for k in _best(heard, heard, allowed, top_k)],
        }

        def score(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return [
            LibraryHit(clip=clips[k], score_raw=score(raw[k]), score_norm=score(z[k]),
                       score_speech=score(spoken[k]), score_fused=fused, channels=channels)
            for k, fused, channels in fuse_ranks(ranked)[:top_k]
        ]


def _best(z: np.ndarray, raw: np.ndarray, allowed: np.ndarray, top_k: int) -> np.ndarray:
    """Positions of the ``top_k`` allowed, scored entries by ``z`` (ties by ``raw``), best first."""
    ok = np.flatnonzero(allowed & ~np.isnan(raw))
    return ok[np.lexsort((-raw[ok], -z[ok]))][:top_k]


def warn_if_not_multilingual(texts: Sequence[str], encoder: Encoder) -> None:
    """Log a warning when Chinese text meets an English-only encoder."""
    if not encoder.multilingual and any(_CJK.search(t) for t in texts):
        from indexer.encoders import MULTILINGUAL_ENCODER

        log.warning(
            "some queries are not English but encoder %s is English-only; build the library "
            "with --encoder %s for multilingual queries", encoder.spec, MULTILINGUAL_ENCODER,
        )
