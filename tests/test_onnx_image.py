"""The image tower on ONNX Runtime int8: the same vectors as torch's, exported once per model and
cached, checked once on first use (a rejected export is not tried again), torch when it cannot be
had.

The tiny seeded random-weight model checks the runtime, not trained accuracy.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from indexer.encoders import onnx_image
from indexer.encoders.base import EncoderSpec
from indexer.encoders.open_clip import OpenClipEncoder
from tests.conftest import TINY
from tests.test_open_clip import frames

INT8 = "onnxruntime int8"


@pytest.fixture
def exports(tmp_path, monkeypatch) -> list:
    """A fresh cache; the calls of ``export_int8`` made while the test runs."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    real = onnx_image.export_int8

    def spy(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_image, "export_int8", spy)
    return calls


def encoder(int8_images: bool = True, **kwargs) -> OpenClipEncoder:
    return OpenClipEncoder(EncoderSpec.parse(TINY), int8_images=int8_images, **kwargs)


def test_the_environment_can_turn_int8_off(exports, monkeypatch):
    monkeypatch.setenv("RHL_INT8_IMAGES", "1")
    assert OpenClipEncoder(EncoderSpec.parse(TINY)).image_runtime == INT8
    monkeypatch.setenv("RHL_INT8_IMAGES", "0")
    assert OpenClipEncoder(EncoderSpec.parse(TINY)).image_runtime == "torch bf16"


def test_int8_vectors_match_torch_and_depend_on_their_frame_alone(exports):
    enc, torch_enc = encoder(), encoder(int8_images=False)
    assert enc.image_runtime == INT8 and torch_enc.image_runtime == "torch bf16"
    assert enc._int8._session.get_session_options().intra_op_num_threads == enc.threads
    x = frames()
    z, ref = enc.encode_images(x), torch_enc.encode_images(x)
    assert enc.image_runtime == INT8  # not rejected
    assert z.dtype == np.float32 and z.shape == ref.shape
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    cos = np.sum(z * ref, axis=1)
    assert np.min(cos) >= onnx_image.MIN_COSINE
    # The frames differ from each other far more than the runtimes do.
    off_diagonal = (ref @ ref.T)[~np.eye(len(x), dtype=bool)]
    assert np.min(cos) > np.max(off_diagonal)
    # A frame's vector does not depend on the frames encoded with it.
    np.testing.assert_allclose(enc.encode_images(x[3:5]), z[3:5], atol=1e-6)
    assert enc.encode_images(x[:0]).shape == (0, enc.dim)


def test_the_export_quantizes_the_matmuls_and_the_patch_embedding_is_one(exports):
    import onnx

    enc = encoder()
    ops = [node.op_type for node in onnx.load(str(exports[0])).graph.node]
    assert "DynamicQuantizeLinear" in ops
    assert not {"Conv", "ConvInteger"} & set(ops)
    # Patches, in-projection, out-projection, two MLP layers, final projection.
    assert ops.count("MatMulInteger") == 1 + 4 * len(enc.model.visual.transformer.resblocks) + 1
    # The torch tower is left as it was.
    assert type(enc.model.visual.conv1) is torch.nn.Conv2d and not enc.model.visual.output_tokens


def test_the_patch_embedding_as_a_matmul_gives_the_conv_numbers():
    conv = encoder(bf16=False, int8_images=False).model.visual.conv1
    patch = onnx_image.PatchMatMul.of(conv)
    ph, pw = conv.kernel_size
    x = torch.randn(3, conv.in_channels, 4 * ph, 2 * pw)  # a 4 x 2 grid of patches
    with torch.no_grad():
        torch.testing.assert_close(patch(x), conv(x), atol=1e-5, rtol=1e-4)
    assert onnx_image.PatchMatMul.of(torch.nn.Conv2d(3, 8, 3, stride=2)) is None
    assert onnx_image.PatchMatMul.of(torch.nn.Conv2d(3, 8, 4, stride=4, bias=True)) is None
    assert onnx_image.PatchMatMul.of(None) is None


def test_export_is_cached_and_its_verdict_kept(exports):
    first = encoder()
    assert len(exports) == 1 and exports[0].is_file()
    assert onnx_image.read_status(exports[0]) == {}
    z = first.encode_images(frames())
    assert len(z) < onnx_image.CHECK_FRAMES and onnx_image.read_status(exports[0]) == {}
    first.encode_images(frames(onnx_image.CHECK_FRAMES - len(z)))  # checked till enough frames
    status = onnx_image.read_status(exports[0])
    assert status["status"] == "accepted" and status["min_cosine"] >= onnx_image.MIN_COSINE
    assert first.model.visual is None  # freed once accepted
    second = encoder()
    assert len(exports) == 1  # not exported again
    assert second.image_runtime == INT8 and second._int8.accepted  # not checked again
    assert second.model.visual is None
    np.testing.assert_allclose(second.encode_images(frames()), z, atol=1e-6)
    # Keyed by the fp32 weights: other weights, another export.
    visual = encoder(bf16=False, int8_images=False).model.visual
    assert onnx_image.model_path(onnx_image.cache_key(TINY, visual)) == exports[0]
    with torch.no_grad():
        visual.proj[0, 0] += 1e-3
    new_key = onnx_image.cache_key(TINY, visual)
    assert onnx_image.model_path(new_key) != exports[0]
    # The new export of the spec replaces the old one and its verdict.
    new_path = onnx_image.prepare(visual, new_key, second.image_size)
    assert new_path.is_file() and onnx_image.read_status(new_path) == {}
    assert sorted(p.name for p in new_path.parent.iterdir()) == [new_path.name]


def test_rejected_export_falls_back_to_torch_for_good(exports, monkeypatch, caplog):
    monkeypatch.setattr(onnx_image, "MIN_COSINE", 1.0)  # int8 never reaches it
    enc, torch_enc = encoder(), encoder(int8_images=False)
    assert enc.image_runtime == INT8
    x = frames()
    with caplog.at_level(logging.WARNING):
        z = enc.encode_images(x)
    assert any("int8 image tower rejected" in r.getMessage() for r in caplog.records)
    assert enc.image_runtime == "torch bf16"
    np.testing.assert_allclose(z, torch_enc.encode_images(x), atol=1e-6)  # torch's vectors
    assert onnx_image.read_status(exports[0])["status"] == "rejected"  # at the first batch
    again = encoder()
    assert again.image_runtime == "torch bf16" and len(exports) == 1  # not tried again


def test_without_onnx_torch_runs_the_image_tower(exports, monkeypatch, caplog, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError here
    fake = tmp_path / "no-onnx" / "onnx"  # and in the export's child process
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named onnx')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    with caplog.at_level(logging.WARNING):
        enc = encoder()
    assert enc.image_runtime == "torch bf16"
    assert any("int8 image tower unavailable" in r.getMessage() for r in caplog.records)
    assert not exports[0].exists()
    x = frames(4)
    np.testing.assert_allclose(enc.encode_images(x), encoder(int8_images=False).encode_images(x),
                               atol=1e-6)


def test_a_failing_session_falls_back_to_torch(exports, monkeypatch, caplog):
    enc = encoder()

    def broken(x):
        raise RuntimeError("session died")

    monkeypatch.setattr(enc._int8, "run", broken)
    x = frames(4)
    with caplog.at_level(logging.WARNING):
        z = enc.encode_images(x)
    assert "session died" in caplog.text and enc.image_runtime == "torch bf16"
    np.testing.assert_allclose(z, encoder(int8_images=False).encode_images(x), atol=1e-6)


def test_relevance_maps_from_the_int8_tower_match_torch(exports):
    enc, torch_enc = encoder(), encoder(int8_images=False)
    enc.encode_images(frames(onnx_image.CHECK_FRAMES))
    assert enc._int8.accepted and enc.model.visual is None
    x = frames(4)
    q = torch_enc.encode_texts(["a dog runs on the beach"])[0]
    maps, ref = enc.relevance_maps(x, q), torch_enc.relevance_maps(x, q)
    assert maps.shape == ref.shape == (4, 4, 4)
    np.testing.assert_allclose(maps, ref, atol=0.05)
    assert np.ptp(ref) > 0.2  # the maps vary far more than the runtimes differ
