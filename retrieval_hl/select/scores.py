"""Score slices against description vectors. Pure numpy.

CLIP cosines are small and differ per query, so every threshold works on a per-query z-score
within the searched set of slices; the raw cosine is kept for reporting.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexer.models import Slice
from retrieval_hl.models import Description, Hit

HINT_BONUS_Z = 1.0
MIN_STD = 1e-4


def normalize_scores(raw: np.ndarray) -> np.ndarray:
    """Column-wise z-scores of ``raw`` (slices x queries); a flat column scores 0 everywhere."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.shape[0] == 0:
        return raw.copy()
    std = raw.std(axis=0, keepdims=True)
    z = (raw - raw.mean(axis=0, keepdims=True)) / np.maximum(std, MIN_STD)
    return np.where(std > MIN_STD, z, 0.0)


def hint_mask(slices: Sequence[Slice], descriptions: Sequence[Description]) -> np.ndarray:
    """(slices x descriptions) True where a slice overlaps the description's time hint."""
    starts = np.array([s.start_s for s in slices])[:, None]
    ends = np.array([s.end_s for s in slices])[:, None]
    lo = np.array([d.start_hint_s if d.start_hint_s is not None else np.nan for d in descriptions])
    hi = np.array([d.end_hint_s if d.end_hint_s is not None else np.nan for d in descriptions])
    has = ~(np.isnan(lo) | np.isnan(hi))
    return (
        has[None, :] & (starts < np.nan_to_num(hi)[None, :]) & (ends > np.nan_to_num(lo)[None, :])
    )


def retrieve(
    slices: Sequence[Slice],
    slice_vectors: np.ndarray,
    descriptions: Sequence[Description],
    text_vectors: np.ndarray,
) -> list[Hit]:
    """Every slice x description pair as a ``Hit``.

    ``score_norm`` is the per-description z-score of the cosine over these slices, raised by
    ``HINT_BONUS_Z`` where a description's time hint (from a VLM) covers the slice.
    """
    if len(slices) == 0 or len(descriptions) == 0:
        return []
    raw = np.asarray(slice_vectors, dtype=np.float32) @ np.asarray(text_vectors, np.float32).T
    norm = normalize_scores(raw) + HINT_BONUS_Z * hint_mask(slices, descriptions)
    return [
        Hit(
            slice_index=s.index,
            description_index=j,
            score_raw=float(raw[i, j]),
            score_norm=float(norm[i, j]),
        )
        for i, s in enumerate(slices)
        for j in range(len(descriptions))
    ]
