"""Describe a video with a vision-language model behind an OpenAI-compatible chat endpoint.

Works with anything that serves ``POST {base_url}/chat/completions`` with image parts: vLLM,
SGLang, Ollama (``http://localhost:11434/v1``), LM Studio (``http://localhost:1234/v1``) and
hosted APIs. Frames are sampled uniformly, sent as JPEG data URLs each preceded by its timestamp,
and the reply is parsed tolerantly by ``vlm_parse.parse_highlights``.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import numpy as np

from prompts import load_text
from retrieval_hl.describe.vlm_parse import parse_highlights
from retrieval_hl.models import Description
from rhl_common.errors import ConfigError, VLMResponseError

if TYPE_CHECKING:
    from indexer.encoders import Encoder
    from indexer.models import VideoInfo
    from indexer.pipeline import IndexedVideo

log = logging.getLogger(__name__)

FRAME_SHORT_SIDE_PX = 336
JPEG_QUALITY = 85
NO_REQUEST = "none; pick the moments most worth keeping"


def _one_line(text: str, n: int = 200) -> str:
    return " ".join(text.split())[:n]


class ChatClient:
    """Minimal client for the OpenAI chat-completions protocol, stdlib only.

    Args:
        base_url: the API root, e.g. ``http://localhost:8000/v1``; ``/chat/completions`` is
            appended unless already there.
        model: the model name the server expects.
        api_key: sent as ``Authorization: Bearer ...`` when given.
        timeout_s: socket timeout of one attempt.
        retries: extra attempts after a 5xx status, a 429 or a timeout (never after a 4xx or
            a refused connection).
        retry_wait_s: pause before each retry.

    Raises:
        ConfigError: ``base_url`` is not an http(s) URL or ``model`` is empty.

    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 1,
        retry_wait_s: float = 1.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"VLM base URL must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ConfigError("VLM model name is empty; give the name the endpoint serves")
        root = base_url.rstrip("/")
        self.url = root if root.endswith("/chat/completions") else f"{root}/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self.retry_wait_s = retry_wait_s

    def __repr__(self) -> str:
        return f"ChatClient(url={self.url!r}, model={self.model!r})"  # never shows the key

    def chat(
        self,
        messages: list[dict[str, Any]],
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> str:
        """Send ``messages`` and return the first choice's text.

        Args:
            messages: OpenAI-format messages (``content`` a string or a list of parts).
            temperature: sampling temperature; 0 for repeatable answers.
            max_tokens: reply length cap, sent only when given.

        Returns:
            The assistant message text (text parts joined when the server returns parts).

        Raises:
            VLMResponseError: HTTP error status, unreachable endpoint, timeout after the retries,
                or a response body that is not a chat completion.

        """
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "stream": False,
        }
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        body = self._post(json.dumps(payload).encode("utf-8"))
        return self._content_of(body)

    def _post(self, data: bytes) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return response.read()
            except urllib.error.HTTPError as exc:
                text = exc.read().decode("utf-8", "replace") if exc.fp else ""
                message = f"VLM endpoint {self.url} returned HTTP {exc.code}: {_one_line(text)}"
                if (exc.code >= 500 or exc.code == 429) and not last:
                    log.warning("%s; retrying", message)
                else:
                    raise VLMResponseError(message) from None
            except TimeoutError as exc:
                message = f"VLM endpoint {self.url} timed out after {self.timeout_s:g} s ({exc})"
                if last:
                    raise VLMResponseError(message) from None
                log.warning("%s; retrying", message)
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, TimeoutError) and not last:
                    log.warning("VLM endpoint %s timed out; retrying", self.url)
                else:
                    raise VLMResponseError(
                        f"cannot reach VLM endpoint {self.url}: {exc.reason}"
                    ) from None
            except OSError as exc:  # connection reset mid-response and the like
                raise VLMResponseError(f"cannot reach VLM endpoint {self.url}: {exc}") from None
            time.sleep(self.retry_wait_s)
        raise AssertionError("unreachable")  # pragma: no cover

    def _content_of(self, body: bytes) -> str:
        text = body.decode("utf-8", "replace")
        try:
            reply = json.loads(text)
            choice = reply["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise VLMResponseError(
                f"VLM endpoint {self.url} did not return a chat completion: {_one_line(text)}"
            ) from None
        if choice.get("finish_reason") == "length":
            log.warning("VLM reply was cut at the token limit; salvaging the complete items")
        if isinstance(content, list):  # some servers return content parts
            texts = [p.get("text") for p in content if isinstance(p, dict)]
            content = "".join(t for t in texts if isinstance(t, str))
        if not isinstance(content, str):
            raise VLMResponseError(
                f"VLM endpoint {self.url} returned message content of type "
                f"{type(content).__name__}: {_one_line(text)}"
            )
        return content


def sample_frame_indices(info: VideoInfo, n_frames: int) -> np.ndarray:
    """Pick ``n_frames`` frame indices spread uniformly over the video (centres of equal parts).

    Args:
        info: the probed video.
        n_frames: how many frames to pick; fewer come back when the video is shorter.

    Returns:
        Sorted, unique frame indices.

    Raises:
        ConfigError: ``n_frames`` is below 1.

    """
    if n_frames < 1:
        raise ConfigError(f"VLM frame count must be at least 1, got {n_frames}")
    n = min(n_frames, info.n_frames)
    idx = np.floor((np.arange(n) + 0.5) * info.n_frames / n).astype(np.int64)
    return np.unique(np.clip(idx, 0, info.n_frames - 1))


def frame_to_data_url(frame: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    """Encode an RGB uint8 frame (h, w, 3) as a ``data:image/jpeg;base64,...`` URL."""
    from PIL import Image

    buf = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    image.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class VLMDescriber:
    """Describer that asks a vision-language model for the highlights of a video.

    Args:
        base_url: the OpenAI-compatible API root, e.g. ``http://localhost:8000/v1``.
        model: the model name the endpoint serves (e.g. ``Qwen/Qwen2.5-VL-7B-Instruct``).
        api_key: bearer token, if the endpoint wants one (``Settings.vlm_api_key``: env
            ``RHL_VLM_API_KEY``, then ``OPENAI_API_KEY``).
        n_frames: frames sampled uniformly over the video and sent as images.
        max_items: the most highlights asked for and kept.
        timeout_s: timeout of one HTTP attempt.
        user_request: the user's own words on what to keep, passed to the model.

    Raises:
        ConfigError: a bad URL, an empty model name, or counts below 1.

    """

    name = "vlm"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        n_frames: int = 8,
        max_items: int = 6,
        timeout_s: float = 60,
        user_request: str | None = None,
    ) -> None:
        if n_frames < 1 or max_items < 1:
            raise ConfigError(
                f"VLM n_frames and max_items must be at least 1, got {n_frames} and {max_items}"
            )
        self.client = ChatClient(base_url, model, api_key=api_key, timeout_s=timeout_s)
        self.n_frames = n_frames
        self.max_items = max_items
        self.user_request = user_request

    def describe(self, video: IndexedVideo, encoder: Encoder | None = None) -> list[Description]:
        """Ask the model for ``video``'s highlights; ``encoder`` is not used.

        Returns:
            At most ``max_items`` descriptions with ``source="vlm"``, most important first.

        Raises:
            VLMResponseError: the endpoint failed or replied with JSON of the wrong type.
            VideoOpenError: no frame of the video could be decoded.

        """
        info = video.info
        indices, frames = self._frames(info)
        messages = self.build_messages(info, indices, frames)
        log.info(
            "asking %s (%s) about %s with %d frames",
            self.client.model,
            self.client.url,
            info.video_id,
            len(indices),
        )
        t0 = time.perf_counter()
        reply = self.client.chat(messages, temperature=0.0)
        log.debug("VLM reply in %.1f s: %s", time.perf_counter() - t0, _one_line(reply, 2000))
        descriptions = parse_highlights(reply, info.duration_s)[: self.max_items]
        log.info("%s: VLM gave %d highlight descriptions", info.video_id, len(descriptions))
        return descriptions

    def build_messages(
        self, info: VideoInfo, indices: np.ndarray, frames: np.ndarray
    ) -> list[dict[str, Any]]:
        """Build the chat messages: system prompt, task text, then each frame after its time.

        Args:
            info: the probed video (its duration is stated in the prompt).
            indices: source frame index of each frame.
            frames: RGB uint8 frames (n, h, w, 3).

        Returns:
            OpenAI-format messages.

        """
        times = [info.time_of(int(i)) for i in indices]
        fields = {
            "duration_s": info.duration_s,
            "n_frames": len(times),
            "frame_times": ", ".join(f"{t:.1f}" for t in times),
            "max_items": self.max_items,
            "user_request": (self.user_request or "").strip() or NO_REQUEST,
        }
        parts: list[dict[str, Any]] = [
            {"type": "text", "text": load_text("vlm/describe.txt").format(**fields)}
        ]
        for k, (t, frame) in enumerate(zip(times, frames, strict=True)):
            parts.append({"type": "text", "text": f"Frame {k + 1}/{len(times)} at {t:.1f} s:"})
            parts.append({"type": "image_url", "image_url": {"url": frame_to_data_url(frame)}})
        return [
            {"role": "system", "content": load_text("vlm/system.txt").format(**fields).strip()},
            {"role": "user", "content": parts},
        ]

    def _frames(self, info: VideoInfo) -> tuple[np.ndarray, np.ndarray]:
        from indexer.decode import open_reader, proxy_size
        from rhl_common.errors import VideoOpenError

        wanted = sample_frame_indices(info, self.n_frames)
        size = proxy_size(info, FRAME_SHORT_SIDE_PX)
        got_idx: list[np.ndarray] = []
        got: list[np.ndarray] = []
        for chunk in open_reader(info).iter_chunks(info, wanted, size, len(wanted)):
            got_idx.append(chunk.indices)
            got.append(chunk.frames)
        if not got:
            raise VideoOpenError(f"no frame could be decoded from {info.path!r} for the VLM")
        return np.concatenate(got_idx), np.concatenate(got)
