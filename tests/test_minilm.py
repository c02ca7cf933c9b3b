"""The packaged MiniLM text encoder: batches of similar length, each vector in its own row."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.encoders import minilm


@pytest.mark.skipif(minilm.minilm_dir() is None, reason="the MiniLM model wheel is not installed")
def test_rows_follow_the_texts_whatever_the_batching():
    enc = minilm.MiniLMTextEncoder()
    words = "a goal is scored after a long run down the left wing by the young striker".split()
    texts = [" ".join(words[: 1 + (7 * k) % len(words)]) for k in range(minilm.BATCH + 5)]
    together = enc.encode_texts(texts)
    alone = np.concatenate([enc.encode_texts([t]) for t in texts])
    assert together.shape == (len(texts), enc.dim)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert len({tuple(np.round(v, 4)) for v in together}) == len(set(texts))  # rows differ
