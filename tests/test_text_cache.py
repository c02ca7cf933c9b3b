"""Text embeddings cached per encoder on disk: fixed texts are embedded once, not per process."""

from __future__ import annotations

import logging

import numpy as np

from indexer.encoders.base import TextEmbeddingCache


class Counting:
    def __init__(self, dim=4):
        self.calls: list[list[str]] = []
        self.dim = dim

    def __call__(self, texts):
        self.calls.append(list(texts))
        rng = np.random.default_rng(len(texts))
        return rng.normal(size=(len(texts), self.dim)).astype(np.float32)


def test_cache_embeds_each_text_once_and_survives_the_process(tmp_path):
    embed = Counting()
    cache = TextEmbeddingCache("enc-a", 4, tmp_path)
    first = cache.encode(["goal", "crowd", "goal"], embed)
    assert embed.calls == [["goal", "crowd"]] and first.shape == (3, 4)
    np.testing.assert_array_equal(first[0], first[2])
    again = TextEmbeddingCache("enc-a", 4, tmp_path)  # a new process, the same encoder
    np.testing.assert_array_equal(again.encode(["crowd", "goal"], embed), first[[1, 0]])
    assert len(embed.calls) == 1
    other = TextEmbeddingCache("enc-b", 4, tmp_path)  # another encoder never sees them
    assert len(other) == 0 and other.path != cache.path
    assert cache.encode([], embed).shape == (0, 4)


def test_unreadable_cache_is_ignored_with_a_warning(tmp_path, caplog):
    cache = TextEmbeddingCache("enc", 4, tmp_path)
    cache.encode(["a"], Counting())
    cache.path.write_bytes(b"not an npz")
    with caplog.at_level(logging.WARNING):
        fresh = TextEmbeddingCache("enc", 4, tmp_path)
    assert len(fresh) == 0 and "unreadable" in caplog.text
    embed = Counting()
    fresh.encode(["a"], embed)
    assert embed.calls == [["a"]] and len(TextEmbeddingCache("enc", 4, tmp_path)) == 1


def test_encoder_texts_come_back_identical_from_the_cache(tiny_encoder):
    a = tiny_encoder.encode_texts(["a dog runs", "a goal"])
    b = tiny_encoder.encode_texts(["a goal", "a dog runs"])
    np.testing.assert_array_equal(a, b[[1, 0]])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
