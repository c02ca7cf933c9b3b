"""How well library clips match a query, on a scale that means the same for every query. Pure numpy.

Raw CLIP cosines are small (about 0.15-0.35) and their level differs from one query to the next,
so no threshold can work on them. Every clip is scored instead against the rest of the library:

``score_norm(c) = (raw(c) - mean of the other clips) / max(std of the other clips, MIN_STD_COS)``

a leave-one-out z-score over *all* clips of the library (not only those an event's category or
tags allow, so a narrow filter cannot make junk look good). Leaving the clip out keeps one real
match from inflating its own reference, which matters in small libraries. ``MIN_STD_COS`` is a
noise floor in cosine units: when every clip is about equally (un)like the query, z stays small.

A clip *matches* when ``score_norm >= min_z``. The default, :func:`default_min_z`, is
``max(DEFAULT_MIN_Z, Φ⁻¹(1 - 1/n))`` for a library of ``n`` clips: the best of ``n`` unrelated
clips reaches about ``Φ⁻¹(1 - 1/n)`` by chance, so bigger libraries ask for a clearer standout.
Together with the floor this is a margin rule: a match must beat the other clips' mean by at
least ``min_z * MIN_STD_COS`` (0.04 cosine at the default) *and* by ``min_z`` standard deviations.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

MIN_STD_COS = 0.02
DEFAULT_MIN_Z = 2.0


def normalise_scores(raw: np.ndarray) -> np.ndarray:
    """Leave-one-out z-scores of ``raw`` (queries x clips), row by row.

    Args:
        raw: Cosine similarities; NaN marks a clip missing for that query (it is left out of the
            statistics and stays NaN).

    Returns:
        float64 array of the same shape; 0 where a row has a single valid clip.

    """
    raw = np.atleast_2d(np.asarray(raw, dtype=np.float64))
    valid = ~np.isnan(raw)
    x = np.where(valid, raw, 0.0)
    others = valid.sum(axis=1, keepdims=True) - 1
    denom = np.maximum(others, 1)
    s1 = x.sum(axis=1, keepdims=True) - x
    s2 = (x * x).sum(axis=1, keepdims=True) - x * x
    mean = s1 / denom
    std = np.sqrt(np.maximum(s2 / denom - mean * mean, 0.0))
    z = (x - mean) / np.maximum(std, MIN_STD_COS)
    z = np.where(others >= 1, z, 0.0)
    return np.where(valid, z, np.nan)


def default_min_z(n_clips: int) -> float:
    """The match threshold for a library of ``n_clips`` clips (see the module docstring)."""
    if n_clips < 2:
        return DEFAULT_MIN_Z
    return max(DEFAULT_MIN_Z, NormalDist().inv_cdf(1.0 - 1.0 / n_clips))
