"""A local transformers VLM behind the same describer: a tiny random-initialised Qwen2-VL, built
from a config in code (no download), saved to a folder and run through the whole path.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from indexer.probe import probe_video
from retrieval_hl.config import Settings
from retrieval_hl.describe.vlm import VLMDescriber, frame_to_data_url
from retrieval_hl.pipeline import highlight_video
from rhl_common.errors import ConfigError, VLMResponseError
from tests.conftest import make_video

SPECIAL = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
WORDS = [*'{}[]":,.0123456789', "highlights", "description", "priority", "start_s", "end_s", "a",
         "dog", "jumps", "Frame", "at", "s"]  # fmt: skip
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    """A folder holding a 2-layer random Qwen2-VL and its processor (word-level tokenizer)."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="<|im_end|>", additional_special_tokens=SPECIAL[2:])
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
        tokenizer=fast, video_processor=Qwen2VLVideoProcessor(), chat_template=TEMPLATE,
    )  # fmt: skip
    ids = {k: vocab[f"<|{k}|>"] for k in ("image_pad", "video_pad", "vision_start", "vision_end")}
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "bos_token_id": vocab["<|im_start|>"], "eos_token_id": vocab["<|im_end|>"],
                     "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2,
                       "mlp_ratio": 2, "patch_size": 14, "spatial_merge_size": 2},
        image_token_id=ids["image_pad"], video_token_id=ids["video_pad"],
        vision_start_token_id=ids["vision_start"], vision_end_token_id=ids["vision_end"],
        bos_token_id=vocab["<|im_start|>"], eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<pad>"],
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_qwen2_vl")
    Qwen2VLForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("vlml") / "short.mp4", seconds=8, size="64x48",
                      fps=5, audio=False)  # fmt: skip


def test_local_client_generates_from_openai_messages(tiny_vlm):
    from retrieval_hl.describe.vlm_local import LocalChatClient

    client = LocalChatClient(str(tiny_vlm))
    image = frame_to_data_url(np.full((48, 64, 3), 128, np.uint8))
    reply = client.chat([
        {"role": "system", "content": "system"},
        {"role": "user", "content": [{"type": "text", "text": "Frame 1/1 at 0.0 s:"},
                                     {"type": "image_url", "image_url": {"url": image}}]},
    ], max_tokens=8)  # fmt: skip
    assert isinstance(reply, str) and 0 < len(reply.split()) <= 8


def test_local_vlm_whole_path(tiny_vlm, short, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    vlm = VLMDescriber(f"local:{tiny_vlm}", "ignored", frames_per_chunk=2, chunk_s=5.0,
                       overlap_s=1.0, concurrency=4, max_tokens=12)  # fmt: skip
    assert vlm.concurrency == 1  # one model in this process: one request at a time
    with pytest.raises(VLMResponseError, match="2 of 2 VLM chunk answers failed"):
        vlm.ask(probe_video(short))  # random weights write no JSON
    s = Settings(vlm_url=f"local:{tiny_vlm}", vlm_max_tokens=16, vlm_frames_per_chunk=2,
                 semantic="off", render=False)  # fmt: skip
    with caplog.at_level(logging.WARNING):
        hl = highlight_video(short, settings=s)
    assert "VLM unusable" in caplog.text and "signals only" in caplog.text
    assert hl.segments and hl.encoder == "none"


def test_local_vlm_missing_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot be loaded") as err:
        VLMDescriber(f"local:{tmp_path / 'nothing'}", "m")
    assert "\n" not in str(err.value)
