"""The speech channel of one video: its transcript, sentences and per-slice text vectors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from indexer.encoders.text import DEFAULT_TEXT_ENCODER, TextEncoder, create_text_encoder
from indexer.models import Slice, VideoInfo
from indexer.speech.models import Sentence, Transcript
from indexer.speech.store import SpeechVectors, embed_speech, open_speech_store, store_speech
from indexer.speech.transcribe import speech_unavailable, transcribe_video
from indexer.speech.windows import sentences_of
from retrieval_hl.config import Settings
from retrieval_hl.describe.request import is_vague, split_request
from retrieval_hl.models import Description, Hit, Segment
from retrieval_hl.speech.hybrid import speech_hits
from retrieval_hl.speech.snap import MIN_KEEP_S, snap_segments
from rhl_common.errors import EncoderError, SpeechError, StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeechChannel:
    """What is said in one video, laid on its slice ``grid`` and embedded."""

    transcript: Transcript
    sentences: tuple[Sentence, ...]
    grid: tuple[Slice, ...]
    spoken: SpeechVectors
    encoder: TextEncoder

    def hits(self, descriptions: Sequence[Description]) -> list[Hit]:
        """Every grid slice x description scored by what is said (``channel="speech"``)."""
        queries = self.encoder.encode_texts([d.text for d in descriptions])
        return speech_hits(self.grid, self.spoken.slices, self.spoken.vectors, queries)

    def snap(
        self, segments: Sequence[Segment], info: VideoInfo, hits: Sequence[Hit] = (),
        min_keep_s: float = MIN_KEEP_S,
    ) -> list[Segment]:
        """``segments`` with no end inside a word (:mod:`retrieval_hl.speech.snap`); those whose
        best hit in ``hits`` came from the speech channel are tightened to their words; a
        sentence's tail or head is left out only where ``min_keep_s`` remains.
        """
        return snap_segments(segments, self.transcript.words, self.sentences, info,
                             tighten=[led_by_speech(seg, hits) for seg in segments],
                             min_keep_s=min_keep_s)


def led_by_speech(segment: Segment, hits: Sequence[Hit]) -> bool:
    """True when the best hit of ``segment``'s description on its slices is a speech hit."""
    mine = [h for h in hits if h.description_index == segment.description_index
            and h.slice_index in segment.slice_indices]
    return bool(mine) and max(mine, key=lambda h: h.score_norm).channel == "speech"


def prompt_descriptions(prompt: str) -> list[Description]:
    """The user's request as descriptions for the speech channel alone (no visual encoder to
    answer vague parts with): its content-bearing parts, else the whole request.
    """
    parts = [p for p in split_request(prompt) if not is_vague(p)]
    if not parts:
        parts = [prompt.strip()]
    return [Description(text=p, priority=1 if n == 0 else 2, source="user")
            for n, p in enumerate(parts)]


def listen(
    info: VideoInfo,
    settings: Settings,
    *,
    progress: Callable[[float], None] | None = None,
) -> tuple[Transcript, TextEncoder] | None:
    """What is said in ``info`` (its cached transcript, or transcribed now) and the text encoder
    that embeds it, as ``settings.speech`` asks.

    Returns ``None`` when speech is off, when nobody speaks, or (``speech="auto"``) when the
    models are not installed, which is said in one warning line.

    Raises:
        SpeechError: ``speech="on"`` and the whisper model is unavailable.
        EncoderError: ``speech="on"`` and the MiniLM weights are not installed.
    """
    if settings.speech == "off":
        return None
    if settings.speech == "auto" and not info.has_audio:
        log.info("%s has no audio track: speech channel off", info.video_id)
        return None
    if (why := speech_unavailable()) is not None:
        if settings.speech == "on":
            raise SpeechError(f"speech recognition is unavailable: {why}")
        log.warning("speech channel off: %s", why)
        return None
    try:
        transcript = transcribe_video(info, language=settings.language, progress=progress)
        if not transcript.has_speech:
            log.info("%s: nobody speaks; speech channel off", info.video_id)
            return None
        return transcript, create_text_encoder(DEFAULT_TEXT_ENCODER)
    except (SpeechError, EncoderError) as exc:
        if settings.speech == "on":
            raise
        log.warning("speech channel off: %s", exc)
        return None


def open_speech_channel(
    info: VideoInfo,
    grid: Sequence[Slice],
    settings: Settings,
    *,
    progress: Callable[[float], None] | None = None,
) -> SpeechChannel | None:
    """Transcribe ``info`` (or take its cached transcript, see :func:`listen`), embed what is
    said on ``grid`` and store it beside the visual vectors (the store's ``__speech``
    collection). ``None`` where :func:`listen` gives nothing.

    Raises:
        SpeechError: ``speech="on"`` and the whisper model is unavailable.
        EncoderError: ``speech="on"`` and the MiniLM weights are not installed.
    """
    heard = listen(info, settings, progress=progress)
    return None if heard is None else speech_channel(info, grid, settings, *heard)


def speech_channel(
    info: VideoInfo,
    grid: Sequence[Slice],
    settings: Settings,
    transcript: Transcript,
    encoder: TextEncoder,
) -> SpeechChannel:
    """What :func:`listen` heard in ``info``, embedded on ``grid`` by ``encoder`` and stored
    beside the visual vectors (the store's ``__speech`` collection; a store that refuses is
    a warning, not an error: this run still listens).
    """
    spoken = embed_speech(grid, transcript, encoder)
    try:
        store = open_speech_store(settings.store, **settings.store_options())
        try:
            added = store_speech(store, spoken, info.video_id)
        finally:
            store.close()
        log.info("%s: speech on %d of %d slices (%d new points)", info.video_id,
                 len(spoken.slices), len(grid), added)
    except StoreError as exc:  # e.g. a Qdrant folder another client holds: this run still listens
        log.warning("speech vectors of %s not stored: %s", info.video_id, exc)
    return SpeechChannel(transcript, tuple(sentences_of(transcript)), tuple(grid), spoken,
                         encoder)
