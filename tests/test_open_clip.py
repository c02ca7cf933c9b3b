"""The open_clip encoder's torch runtimes: bf16 weights resident (cast once at build) or fp32, the
same vectors either way, and text vectors cached per runtime (the int8 image tower:
``test_onnx_image.py``).

The tiny seeded random-weight model checks the runtime, not trained accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from indexer.encoders.base import EncoderSpec, TextEmbeddingCache
from indexer.encoders.open_clip import OpenClipEncoder
from tests.conftest import TINY

TEXTS = ["a dog runs on the beach", "a goal is scored", "people dance at a party", "a car"]


@pytest.fixture(scope="module")
def towers() -> dict[str, OpenClipEncoder]:
    spec = EncoderSpec.parse(TINY)
    return {"bf16": OpenClipEncoder(spec, bf16=True, int8_images=False),
            "fp32": OpenClipEncoder(spec, bf16=False, int8_images=False)}


def frames(n: int = 12, size: int = 48) -> np.ndarray:
    """Smooth colour gradients with a moving bright square: varied, image-like uint8 frames."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        a, b, c = rng.uniform(0, 1, 3)
        img = np.stack([a * xx + (1 - a) * yy, b * yy, c * (1 - xx)], axis=-1) * 200
        y, x = rng.integers(0, size - 12, 2)
        img[y : y + 12, x : x + 12] = 255
        out[i] = img.astype(np.uint8)
    return out


def weight_dtypes(model: torch.nn.Module, kind: type) -> set[torch.dtype]:
    return {p.dtype for m in model.modules() if isinstance(m, kind) for p in m.parameters()}


def test_bf16_keeps_matmul_weights_in_bf16_and_norms_in_fp32(towers):
    bf16, fp32 = towers["bf16"].model, towers["fp32"].model
    assert weight_dtypes(bf16, torch.nn.Linear) == {torch.bfloat16}
    assert bf16.visual.conv1.weight.dtype == torch.bfloat16
    assert weight_dtypes(bf16, torch.nn.LayerNorm) == {torch.float32}
    assert {p.dtype for p in fp32.parameters()} == {torch.float32}

    def nbytes(model: torch.nn.Module) -> int:
        return sum(p.numel() * p.element_size() for p in model.visual.parameters())

    assert nbytes(bf16) < 0.6 * nbytes(fp32)


def test_bf16_vectors_match_fp32(towers):
    x = frames()
    img = {name: enc.encode_images(x) for name, enc in towers.items()}
    txt = {name: enc._encode_texts(TEXTS) for name, enc in towers.items()}
    for vec in (*img.values(), *txt.values()):
        assert vec.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(img["bf16"] * img["fp32"], axis=1)) >= 0.99
    assert np.min(np.sum(txt["bf16"] * txt["fp32"], axis=1)) >= 0.99
    # The frames differ from each other far more than the runtimes do.
    off_diagonal = (img["fp32"] @ img["fp32"].T)[~np.eye(len(x), dtype=bool)]
    assert np.min(np.sum(img["bf16"] * img["fp32"], axis=1)) > np.max(off_diagonal)


def test_bf16_relevance_maps_match_fp32(towers):
    x = frames(4)
    q = towers["fp32"]._encode_texts(TEXTS[:1])[0]
    maps = {name: enc.relevance_maps(x, q) for name, enc in towers.items()}
    assert maps["bf16"].shape == maps["fp32"].shape == (4, 4, 4)
    np.testing.assert_allclose(maps["bf16"], maps["fp32"], atol=0.05)


def test_text_cache_key_names_the_runtime(towers, tmp_path, monkeypatch):
    keys = {name: enc._texts._key for name, enc in towers.items()}
    assert keys["bf16"] != keys["fp32"]
    # Vectors cached by the runtime before the weights were kept in bf16 ("bf16": autocast over
    # fp32 weights) are not reused: its text tower summed its residual stream in fp32.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    stale_key = keys["bf16"].replace("|bf16-weights|", "|bf16|")
    assert stale_key != keys["bf16"]
    stale = TextEmbeddingCache(stale_key, 32)
    stale.encode(TEXTS[:1], lambda texts: np.ones((len(texts), 32), dtype=np.float32))
    assert stale.path.is_file()
    fresh = OpenClipEncoder(EncoderSpec.parse(TINY), bf16=True, int8_images=False)
    got = fresh.encode_texts(TEXTS[:1])
    np.testing.assert_allclose(got, towers["bf16"]._encode_texts(TEXTS[:1]), atol=1e-6)
    assert fresh._texts.path != stale.path and fresh._texts.path.parent == stale.path.parent
