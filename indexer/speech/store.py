"""What is said, embedded per slice and stored beside the visual vectors.

Speech vectors live in a sibling collection, ``<collection>__speech``, of the same store URI,
opened through :func:`indexer.stores.open_store` like the visual one: FAISS and Qdrant alike,
deterministic point ids (encoder spec + video id + slice index), so indexing twice adds nothing.
Only slices where someone speaks get a point; a slice inside one sentence embeds that whole
sentence (:func:`indexer.speech.windows.slice_texts`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from indexer.encoders.text import TextEncoder
from indexer.models import Slice
from indexer.speech.models import Transcript
from indexer.speech.windows import sentences_of, slice_texts
from indexer.stores import DEFAULT_COLLECTION, VectorStore, open_store, store_class

log = logging.getLogger(__name__)

SPEECH_SUFFIX = "__speech"


def speech_collection(collection: str = DEFAULT_COLLECTION) -> str:
    """The sibling collection that holds ``collection``'s speech vectors."""
    return f"{collection}{SPEECH_SUFFIX}"


def open_speech_store(
    uri: str, collection: str = DEFAULT_COLLECTION, **options: Any
) -> VectorStore:
    """The speech collection beside ``collection`` in the store at ``uri``; ``options`` go to
    :func:`indexer.stores.open_store` as for the visual collection.

    Raises:
        StoreError: as :func:`indexer.stores.open_store`.
    """
    return open_store(uri, speech_collection(collection), **options)


def open_speech_store_beside(
    store: VectorStore, uri: str, collection: str = DEFAULT_COLLECTION, **options: Any
) -> VectorStore:
    """The speech collection beside an open visual ``store`` (``uri``, ``collection``), for a
    holder that keeps both open: a Qdrant store lends its client (a local folder admits one
    client at a time), any other store opens its own as :func:`open_speech_store` does.

    Raises:
        StoreError: as :func:`indexer.stores.open_store`.
    """
    if store.name == "qdrant":
        return store_class("qdrant")(
            store.client,  # type: ignore[attr-defined]
            speech_collection(collection),
            shards=options.get("shards"),
            replicas=options.get("replicas"),
        )
    return open_speech_store(uri, collection, **options)


@dataclass(frozen=True)
class SpeechVectors:
    """The spoken slices of one video: ``vectors[i]`` embeds ``texts[i]``, said over
    ``slices[i]``. Slices where nobody speaks are absent.
    """

    slices: tuple[Slice, ...]
    texts: tuple[str, ...]
    vectors: np.ndarray
    encoder_spec: str


def embed_speech(
    slices: Sequence[Slice], transcript: Transcript, encoder: TextEncoder
) -> SpeechVectors:
    """Lay the transcript's sentences on ``slices`` and embed each distinct text once."""
    texts = slice_texts(slices, sentences_of(transcript))
    keep = [k for k, t in enumerate(texts) if t]
    unique = sorted({texts[k] for k in keep})
    vecs = encoder.encode_texts(unique) if unique else np.zeros((0, encoder.dim), np.float32)
    row = {t: i for i, t in enumerate(unique)}
    return SpeechVectors(
        slices=tuple(slices[k] for k in keep),
        texts=tuple(texts[k] for k in keep),
        vectors=vecs[[row[texts[k]] for k in keep]].reshape(len(keep), encoder.dim),
        encoder_spec=encoder.spec,
    )


def store_speech(store: VectorStore, speech: SpeechVectors, video_id: str) -> int:
    """Put a video's speech vectors into ``store`` (its speech collection), replacing what an
    earlier slicing or transcript left there in one step (:meth:`VectorStore.replace_video`);
    returns how many points are new.

    The speech collection is a store of its own, written after the visual one (the transcript
    comes later), so the two are two commits: a kill between them leaves the video's new visual
    slices beside its previous speech points, never without either; indexing the video again
    (it is then reused, and its speech laid on the new slices) brings them back in step.
    """
    return store.replace_video(video_id, speech.slices, speech.vectors, speech.encoder_spec)
