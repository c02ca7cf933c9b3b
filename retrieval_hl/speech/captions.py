"""Captions of what is said, timed to the rendered highlight video. Pure.

Each kept stretch's words become cues on the output time line (a few words each, broken at
sentence ends and pauses); a stretch where nobody speaks gets its description for its length.
Highlights (``caption_cues``) and assembled edits (``library.assemble.plan_srt``) both place
their stretches with :func:`stretch_cues`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from indexer.speech.models import Word
from indexer.speech.windows import join_words
from retrieval_hl.models import Highlight

MAX_WORDS = 7
MAX_CUE_S = 3.5
PAUSE_S = 0.6
_END = re.compile(r"[.!?。！？,，;；:：]['\"”’)]*$")


class Cue(NamedTuple):
    """One caption on the output time line."""

    start_s: float
    end_s: float
    text: str


def group_words(
    words: Sequence[Word], max_words: int = MAX_WORDS, max_cue_s: float = MAX_CUE_S
) -> list[list[Word]]:
    """Consecutive words in groups of at most ``max_words`` and ``max_cue_s``, broken after
    punctuation and at pauses longer than ``PAUSE_S``.
    """
    groups: list[list[Word]] = []
    cur: list[Word] = []
    for k, w in enumerate(words):
        if cur and (len(cur) >= max_words or w.end_s - cur[0].start_s > max_cue_s
                    or w.start_s - cur[-1].end_s > PAUSE_S):
            groups.append(cur)
            cur = []
        cur.append(w)
        if _END.search(w.text.strip()) and k < len(words) - 1:
            groups.append(cur)
            cur = []
    if cur:
        groups.append(cur)
    return groups


def caption_cues(
    highlight: Highlight,
    timeline: Sequence[tuple[float, float]],
    max_words: int = MAX_WORDS,
    describe_silence: bool = True,
) -> list[Cue]:
    """Cues for the rendered video whose segment k occupies ``timeline[k]`` (output seconds).

    Each segment's cues come from :func:`stretch_cues`; a segment without words gets its
    description (``describe_silence``) or nothing.
    """
    words = highlight.transcript.words if highlight.transcript is not None else ()
    descs = highlight.descriptions  # may be empty (e.g. a VLM that found nothing)
    cues: list[Cue] = []
    for seg, out in zip(highlight.segments, timeline, strict=True):
        silent = (descs[seg.description_index].text if seg.description_index < len(descs)
                  else "highlight") if describe_silence else None
        cues += stretch_cues(words, (seg.start_s, seg.end_s), out, silent, max_words)
    return cues


def stretch_cues(
    words: Sequence[Word],
    span_s: tuple[float, float],
    out_s: tuple[float, float],
    silent_text: str | None = None,
    max_words: int = MAX_WORDS,
) -> list[Cue]:
    """Cues for one stretch ``span_s`` of a source shown at ``out_s`` (output seconds).

    A word belongs to the stretch holding its middle; its cue runs from its group's first word
    (:func:`group_words`) to the next group (or its last word), clipped to ``out_s``. Without a
    word in the stretch: one cue of ``silent_text`` over all of ``out_s``, or none if ``None``.

    Args:
        words: Words on the source's time line (any order of stretches; only those inside count).
        span_s: (start, end) of the stretch in source seconds.
        out_s: (start, end) where the stretch plays in the output, in seconds.
        silent_text: What to show where nobody speaks.
        max_words: Most words per cue.
    """
    (s0, s1), (a, b) = span_s, out_s
    mine = [w for w in words if s0 <= (w.start_s + w.end_s) / 2 < s1]
    if not mine:
        return [Cue(a, b, silent_text)] if silent_text is not None else []
    cues: list[Cue] = []
    groups = group_words(mine, max_words)
    for k, g in enumerate(groups):
        t0 = a + g[0].start_s - s0
        t1 = a + (groups[k + 1][0].start_s if k + 1 < len(groups) else g[-1].end_s) - s0
        t0, t1 = max(a, t0), min(b, t1)
        if t1 > t0:
            cues.append(Cue(t0, t1, join_words(g)))
    return cues
