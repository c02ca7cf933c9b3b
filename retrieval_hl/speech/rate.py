"""Speech as a query-free signal: how much is said in each slice. Pure numpy."""

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
