"""Speech as a query-free signal: how much is said in each slice, and how emphatically. Pure
numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexer.models import Slice
from indexer.speech.models import Word


def words_per_second(words: Sequence[Word], slices: Sequence[Slice]) -> np.ndarray:
    """Per slice, the words whose middle falls in it, per second of slice (0 where nobody
    speaks): speech presence and pace, the ``speech_rate`` signal of
    :class:`retrieval_hl.signals.meter.SliceSignals`.
    """
    if not slices:
        return np.zeros(0)
    starts = np.array([s.start_s for s in slices], dtype=np.float64)
    ends = np.array([s.end_s for s in slices], dtype=np.float64)
    mids = np.array([(w.start_s + w.end_s) / 2 for w in words], dtype=np.float64)
    k = np.searchsorted(starts, mids, side="right") - 1
    inside = (k >= 0) & (mids < ends[np.clip(k, 0, None)])
    counts = np.bincount(k[inside], minlength=len(slices)).astype(np.float64)
    return counts / np.maximum(ends - starts, 1e-6)


def emphasis_db(voice_loudness_db: np.ndarray, speaking: np.ndarray) -> np.ndarray:
    """Per slice, how many dB louder the voice is than the speaker's ordinary level: the
    ``speech_emphasis_db`` signal of :class:`retrieval_hl.signals.meter.SliceSignals`.

    What a viewer calls "the speaker got excited" or "shouted" is a voice raised above its own
    usual level, not a loud slice: loudness (``audio_loudness``) is also traffic, music or a
    door, and a speaker close to the microphone is loud all along. So only the *voiced* audio
    counts (``voice_loudness_db``: hops periodic at a voice's pitch, which noise and impacts are
    not), only in slices where the transcript has words (``speaking``), and it is measured
    against the median voiced level of all speaking slices of this video (the speaker's own
    level; with several speakers, their common level). A voice at or under that level is 0, like
    silence: quiet speech is not less of a highlight than no speech.

    Args:
        voice_loudness_db: Per slice, the level of the voiced audio in dBFS (NaN: none voiced).
        speaking: Per slice, True where the transcript has a word.

    Returns:
        dB above the speaker's ordinary level per slice, at least 0; all zeros when nobody
        speaks.
    """
    level = np.asarray(voice_loudness_db, dtype=np.float64)
    heard = np.asarray(speaking, dtype=bool) & np.isfinite(level)
    if not heard.any():
        return np.zeros(len(level))
    rise = level - float(np.median(level[heard]))
    return np.where(heard, np.maximum(rise, 0.0), 0.0)
