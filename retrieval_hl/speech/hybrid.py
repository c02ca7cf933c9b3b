"""Score slices by what is said and fuse that with the visual channel. Pure numpy.

Fusion rule (per slice and description): each channel gives a per-description z-score over the
video's slices (:func:`retrieval_hl.select.scores.normalize_scores`); the fused hit is the
channel with the larger z-score, and it says which one matched (``Hit.channel``). Max, not sum:
a spoken sentence that answers the prompt is a match even over unremarkable pictures, and
vice versa. Speech z-scores are computed with silent slices at cosine 0, and a speech cosine
is never a match (its z-score is capped at 0) below :data:`SPEECH_MIN_COSINE`, nor more than
:data:`SPEECH_MARGIN` below the query's best cosine in the video. MiniLM cosines, unlike CLIP's,
mean much the same across queries: the floor keeps a video's best but unrelated sentence from
claiming a prompt, the margin keeps a sentence on a neighbouring theme (cosine ~0.25 where the
answer has ~0.5) from joining the answer, which the silent slices' zeros would otherwise lift
above the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexer.models import Slice
from retrieval_hl.models import Hit
from retrieval_hl.select.scores import normalize_scores

SPEECH_MIN_COSINE = 0.2
SPEECH_MARGIN = 0.15


def speech_hits(
    grid: Sequence[Slice],
    spoken: Sequence[Slice],
    spoken_vectors: np.ndarray,
    query_vectors: np.ndarray,
) -> list[Hit]:
    """Every slice of ``grid`` x query as a speech ``Hit``.

    Args:
        grid: All slices of the video, in order.
        spoken: The slices of ``grid`` where someone speaks (a subset, by index).
        spoken_vectors: Their text embeddings, one row per slice of ``spoken``.
        query_vectors: (q, dim) unit vectors of the descriptions, same text encoder.

    Returns:
        ``len(grid) * q`` hits, ``channel="speech"``.
    """
    q = np.asarray(query_vectors, dtype=np.float32)
    if not grid or q.shape[0] == 0:
        return []
    pos = {sl.index: k for k, sl in enumerate(grid)}
    raw = np.zeros((len(grid), q.shape[0]), dtype=np.float64)
    if spoken:
        rows = [pos[sl.index] for sl in spoken]
        raw[rows] = np.asarray(spoken_vectors, dtype=np.float32) @ q.T
    norm = cap_unmatched_speech(raw, normalize_scores(raw))
    return [
        Hit(slice_index=sl.index, description_index=j, score_raw=float(raw[i, j]),
            score_norm=float(norm[i, j]), channel="speech")
        for i, sl in enumerate(grid)
        for j in range(q.shape[0])
    ]


def cap_unmatched_speech(raw: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``z`` with every speech score that is no match capped at 0: a cosine in ``raw`` below
    :data:`SPEECH_MIN_COSINE`, or more than :data:`SPEECH_MARGIN` below its query's best.

    Args:
        raw: Speech cosines, (items, queries); NaN = not scored (stays as it is).
        z: Their normalised scores, same shape.
    """
    raw = np.asarray(raw, dtype=np.float64)
    best = np.max(np.where(np.isnan(raw), -np.inf, raw), axis=0, keepdims=True)
    floor = np.maximum(SPEECH_MIN_COSINE, best - SPEECH_MARGIN)
    return np.where(raw < floor, np.minimum(z, 0.0), z)


def fuse_scores(visual: np.ndarray, speech: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rule of :func:`fuse_hits` on score arrays of one shape: the larger normalised score
    of the two channels (NaN = that channel did not score it), and where speech gave it.
    """
    visual, speech = np.asarray(visual, np.float64), np.asarray(speech, np.float64)
    by_speech = ~np.isnan(speech) & (np.isnan(visual) | (speech > visual))
    return np.where(by_speech, speech, visual), by_speech


def fuse_hits(visual: Sequence[Hit], speech: Sequence[Hit]) -> list[Hit]:
    """Per (slice, description), the hit of the channel with the larger ``score_norm`` (see the
    module docstring); pairs only one channel scored keep that channel's hit. Visual order first.
    """
    best: dict[tuple[int, int], Hit] = {}
    for h in [*visual, *speech]:
        key = (h.slice_index, h.description_index)
        cur = best.get(key)
        if cur is None or h.score_norm > cur.score_norm:
            best[key] = h
    return list(best.values())
