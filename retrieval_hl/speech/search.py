"""Search every indexed slice for a text by what is shown and by what is said.

Fusion rule across videos: reciprocal-rank fusion. CLIP and MiniLM cosines live on different
scales, so each channel's ranked list contributes ``1 / (RRF_K + rank)`` to a slice (rank from
1, ``RRF_K = 60`` as in Cormack et al. 2009); a slice both channels find ranks above one only
one finds. Each result names the channels that found it. A speech cosine below
:data:`~retrieval_hl.speech.hybrid.SPEECH_MIN_COSINE` is no match (the rule of
:mod:`retrieval_hl.speech.hybrid`) and is not listed. ``rhl library search`` ranks clips by the
same rule (:func:`fuse_ranks`).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Literal, TypeVar

from indexer.encoders import create_encoder
from indexer.encoders.text import DEFAULT_TEXT_ENCODER, create_text_encoder
from indexer.models import Slice
from indexer.speech.store import open_speech_store
from indexer.stores import SearchHit, open_store
from retrieval_hl.config import Settings
from retrieval_hl.speech.hybrid import SPEECH_MIN_COSINE
from rhl_common.errors import EncoderError, StoreError
from rhl_common.models import Frozen

log = logging.getLogger(__name__)

RRF_K = 60
Channel = Literal["visual", "speech"]
K = TypeVar("K", bound=Hashable)


def fuse_ranks(ranked: Mapping[Channel, Sequence[K]]) -> list[tuple[K, float, tuple[Channel, ...]]]:
    """Reciprocal-rank fusion (module docstring) of each channel's best-first list of keys.

    Returns:
        Every key with its fused score and the channels that list it, best first (ties keep
        the order of first appearance).
    """
    found: dict[K, tuple[float, tuple[Channel, ...]]] = {}
    for channel, keys in ranked.items():
        for rank, key in enumerate(keys, 1):
            score, channels = found.get(key, (0.0, ()))
            found[key] = (score + 1.0 / (RRF_K + rank), (*channels, channel))
    return sorted(((k, sc, ch) for k, (sc, ch) in found.items()), key=lambda r: -r[1])


class SearchResult(Frozen):
    """One slice found for a text: fused score, the channels that found it, their cosines."""

    slice: Slice
    score_fused: float
    channels: tuple[Channel, ...]
    score_visual: float | None = None
    score_speech: float | None = None


def _visual(text: str, s: Settings, encoder: str | None, top_k: int, video_id: str | None,
            tags: Sequence[str]) -> list[SearchHit]:
    db = open_store(s.store, create=False, **s.store_options())  # a read: creates nothing
    try:
        if db.count() == 0:
            return []
        try:
            enc = create_encoder(encoder or db.encoder_spec or s.encoder)
        except EncoderError as exc:
            log.warning("visual search off: %s", exc)
            return []
        return db.search(enc.encode_texts([text]), top_k=top_k, video_id=video_id, tags=tags)[0]
    finally:
        db.close()


def _speech(text: str, s: Settings, top_k: int, video_id: str | None,
            tags: Sequence[str]) -> list[SearchHit] | None:
    if s.speech == "off":
        return []
    try:
        db = open_speech_store(s.store, create=False, **s.store_options())
    except StoreError:  # no speech collection: nothing was heard here yet
        return None
    try:
        if db.count() == 0:
            return []
        try:
            enc = create_text_encoder(db.encoder_spec or DEFAULT_TEXT_ENCODER)
        except EncoderError as exc:
            log.warning("speech search off: %s", exc)
            return []
        hits = db.search(enc.encode_texts([text]), top_k=top_k, video_id=video_id, tags=tags)[0]
        return [h for h in hits if h.score_raw >= SPEECH_MIN_COSINE]
    finally:
        db.close()


def search_text(
    text: str,
    settings: Settings | None = None,
    *,
    encoder: str | None = None,
    top_k: int = 10,
    video_id: str | None = None,
    tags: Sequence[str] = (),
) -> list[SearchResult]:
    """The ``top_k`` slices of the store that best match ``text``, by either channel, fused.

    A channel whose collection does not exist contributes nothing.

    Raises:
        StoreError: the store cannot be opened, or neither collection exists.
    """
    s = settings or Settings()
    spoken = _speech(text, s, top_k, video_id, tags)
    try:
        shown = _visual(text, s, encoder, top_k, video_id, tags)
    except StoreError:  # no visual collection: fine if speech was indexed (offline), else say so
        if spoken is None:
            raise
        shown = []
    lists: dict[Channel, list[SearchHit]] = {"visual": shown, "speech": spoken or []}

    def key(h: SearchHit) -> tuple[str, int, int]:
        return h.slice.video_id, h.slice.start_frame, h.slice.end_frame

    found = {(c, key(h)): h for c, hits in lists.items() for h in hits}
    out = []
    for k, fused, channels in fuse_ranks({c: [key(h) for h in hits]
                                          for c, hits in lists.items()})[:top_k]:
        scores = {c: found[c, k].score_raw for c in channels}
        out.append(SearchResult(
            slice=found[channels[0], k].slice, score_fused=fused, channels=channels,
            score_visual=scores.get("visual"), score_speech=scores.get("speech"),
        ))
    return out
