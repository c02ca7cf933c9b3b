"""Pure text-side helpers: words grouped into sentences, sentences laid onto slices."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from indexer.models import Slice
from indexer.speech.models import Sentence, SpeechSegment, Transcript, Word

_END = re.compile(r"[.!?。！？…]['\"”’)]*$")
MAX_PAUSE_S = 0.8
MAX_SENTENCE_S = 15.0


def join_words(words: Sequence[Word]) -> str:
    """The words as one string (English words carry their own leading spaces)."""
    return "".join(w.text for w in words).strip()


def sentences_of(
    transcript: Transcript, max_pause_s: float = MAX_PAUSE_S, max_len_s: float = MAX_SENTENCE_S
) -> list[Sentence]:
    """Split the transcript's words into sentences.

    A sentence ends at end punctuation, at a pause longer than ``max_pause_s``, at the end of a
    recogniser segment, or once it is ``max_len_s`` long (run-on speech without punctuation).
    """
    out: list[Sentence] = []
    base = 0
    for seg in transcript.segments:
        words = seg.words
        start = 0
        for k, w in enumerate(words):
            last = k == len(words) - 1
            pause = not last and words[k + 1].start_s - w.end_s > max_pause_s
            too_long = w.end_s - words[start].start_s >= max_len_s
            if last or pause or too_long or _END.search(w.text.strip()):
                part = words[start : k + 1]
                out.append(
                    Sentence(
                        start_s=part[0].start_s,
                        end_s=max(part[-1].end_s, part[0].start_s),
                        text=join_words(part),
                        first_word=base + start,
                        n_words=len(part),
                    )
                )
                start = k + 1
        base += len(words)
    return [s for s in out if s.text]


def cut_transcript(
    transcript: Transcript, start_s: float, end_s: float, video_id: str, *, retime: bool = False
) -> Transcript:
    """The words of ``transcript`` said within ``[start_s, end_s)`` (a word belongs to the span
    holding its middle), as the transcript of ``video_id``; with ``retime``, on a time line that
    starts at ``start_s`` (times clamped to the span).
    """
    shift = start_s if retime else 0.0
    top = end_s - shift

    def moved(w: Word) -> Word:
        a = min(max(w.start_s - shift, 0.0), top)
        return w.model_copy(update={"start_s": a, "end_s": min(max(w.end_s - shift, a), top)})

    segments = []
    for seg in transcript.segments:
        words = [moved(w) for w in seg.words if start_s <= (w.start_s + w.end_s) / 2 < end_s]
        if words:
            segments.append(SpeechSegment(start_s=words[0].start_s, end_s=words[-1].end_s,
                                          text=join_words(words), words=tuple(words)))
    duration = max(end_s - start_s, 0.0) if retime else transcript.audio_duration_s
    return transcript.model_copy(update={"video_id": video_id, "audio_duration_s": duration,
                                         "segments": tuple(segments)})


def slice_texts(
    slices: Sequence[Slice], sentences: Sequence[Sentence], min_overlap_s: float = 0.2
) -> list[str]:
    """What is said over each slice: the sentences that overlap it by at least ``min_overlap_s``
    (or by half the sentence, for very short ones), joined; ``""`` where nobody speaks.

    A slice inside one sentence gets that whole sentence, so every slice of a sentence embeds
    the same words and a query finds the sentence's full span.
    """
    if not sentences:
        return ["" for _ in slices]
    s0 = np.array([s.start_s for s in sentences])
    s1 = np.array([s.end_s for s in sentences])
    need = np.minimum(min_overlap_s, 0.5 * (s1 - s0))
    texts = []
    for sl in slices:
        overlap = np.minimum(s1, sl.end_s) - np.maximum(s0, sl.start_s)
        keep = np.flatnonzero((overlap > 0) & (overlap >= need))
        texts.append(" ".join(sentences[k].text for k in keep))
    return texts
