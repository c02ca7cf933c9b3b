"""X-CLIP, the video-level encoder: a tiny random model built in code, run through indexing and
a prompt-led highlight; a missing hub model fails with one clear line.
"""

from __future__ import annotations

import numpy as np
import pytest

from indexer.encoders import create_encoder
from retrieval_hl.config import Settings
from retrieval_hl.pipeline import highlight_video
from rhl_common.errors import EncoderError
from tests.conftest import make_video

SPEC = "xclip:rhl-tiny-xclip:random"


def test_clip_vectors_shared_by_each_group_of_frames():
    enc = create_encoder(SPEC)
    assert (enc.dim, enc.clip_frames, enc.patch_relevance) == (32, 4, False)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (10, 48, 64, 3), dtype=np.uint8)
    z = enc.encode_images(frames)
    assert z.shape == (10, 32) and np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    assert np.allclose(z[0], z[3]) and np.allclose(z[4], z[7]) and np.allclose(z[8], z[9])
    assert not np.allclose(z[0], z[4])
    t = enc.encode_texts(["a dog runs", "a red car", "Unknown words here"])
    assert t.shape == (3, 32) and not np.allclose(t[0], t[1])
    assert enc.encode_images(frames[:0]).shape == (0, 32)


def test_xclip_indexes_and_answers_a_prompt(tmp_path):
    video = make_video(tmp_path / "v.mp4", seconds=8, size="64x48", fps=5, audio=False)
    s = Settings(encoder=SPEC, store=str(tmp_path / "store"), render=False)
    hl = highlight_video(video, prompt="a dog runs", settings=s)
    assert hl.encoder == SPEC and hl.slices and hl.segments
    assert hl.descriptions[0].text == "a dog runs"


@pytest.mark.parametrize(
    ("spec", "match"),
    [("xclip:microsoft/xclip-base-patch32:hub", "cannot load X-CLIP"),
     ("xclip:microsoft/xclip-base-patch32:random", "random weights exist only"),
     ("xclip:microsoft/xclip-base-patch32:latest", "bad X-CLIP weights")],
)
def test_missing_or_bad_xclip_is_one_line(spec, match, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError, match=match) as err:
        create_encoder(spec)
    assert "\n" not in str(err.value)
