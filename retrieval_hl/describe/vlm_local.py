"""A local vision-language model (transformers) behind the same ``chat`` call as ``ChatClient``.

``VLMDescriber("local:Qwen/Qwen2.5-VL-3B-Instruct", ...)`` (CLI ``--vlm local:MODEL_ID`` or a
folder) runs any image-text-to-text model that ``AutoModelForImageTextToText`` and
``AutoProcessor`` load and whose processor has a chat template (Qwen2-VL / Qwen2.5-VL / Qwen3-VL,
SmolVLM, Idefics3 ...). Weights come only from the Hugging Face hub cache (``HF_HOME``) or a
local folder; nothing is downloaded.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
from pathlib import Path
from typing import Any

from rhl_common.errors import ConfigError, VLMResponseError

log = logging.getLogger(__name__)

LOCAL_PREFIX = "local:"


class LocalChatClient:
    """Runs a transformers VLM in this process; ``chat`` takes OpenAI-format messages.

    Args:
        model_id: a hub model id present in the hub cache, or a folder with the model and its
            processor.
        device: torch device (``cpu`` by default).

    Raises:
        ConfigError: the model is not in the cache or the folder, or cannot be loaded.

    """

    def __init__(self, model_id: str, device: str = "cpu") -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not model_id:
            raise ConfigError("local VLM model id is empty; use local:MODEL_ID or local:/folder")
        self.model = model_id
        self.url = f"{LOCAL_PREFIX}{model_id}"
        try:
            self.processor = AutoProcessor.from_pretrained(model_id, local_files_only=True)
            self._net = AutoModelForImageTextToText.from_pretrained(
                model_id, local_files_only=True
            ).to(device).eval()
        except (OSError, ValueError, KeyError) as exc:
            where = "folder" if Path(model_id).is_dir() else "Hugging Face hub cache (HF_HOME)"
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc)
            raise ConfigError(
                f"local VLM {model_id!r} cannot be loaded from the {where}: {first}; download it "
                "where the hub is reachable and copy the cache, or give a folder"
            ) from None
        self._device = device
        self._lock = threading.Lock()  # one generation at a time: the model is not re-entrant

    def __repr__(self) -> str:
        return f"LocalChatClient(model={self.model!r})"

    def chat(
        self,
        messages: list[dict[str, Any]],
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> str:
        """Generate the reply to ``messages`` (greedy when ``temperature`` is 0).

        Raises:
            VLMResponseError: generation failed (e.g. the prompt does not fit the model).

        """
        import torch

        converted = [_convert(m) for m in messages]
        try:
            inputs = self.processor.apply_chat_template(
                converted, add_generation_prompt=True, tokenize=True, return_dict=True,
                return_tensors="pt",
            ).to(self._device)  # fmt: skip
            sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {
                "do_sample": False}
            with self._lock, torch.inference_mode():
                out = self._net.generate(**inputs, max_new_tokens=max_tokens or 1024, **sampling)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise VLMResponseError(f"local VLM {self.model} failed: {exc}") from None
        new = out[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new, skip_special_tokens=True)[0]


def _convert(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI message as a transformers chat message (data-URL images as PIL images)."""
    from PIL import Image

    content = message["content"]
    if isinstance(content, str):
        return {"role": message["role"], "content": [{"type": "text", "text": content}]}
    parts = []
    for part in content:
        if part.get("type") == "image_url":
            data = part["image_url"]["url"].split(",", 1)[1]
            image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
            parts.append({"type": "image", "image": image})
        else:
            parts.append({"type": "text", "text": part.get("text", "")})
    return {"role": message["role"], "content": parts}
