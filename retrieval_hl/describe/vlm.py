"""Describe a video with a vision-language model behind an OpenAI-compatible chat endpoint.

Works with anything that serves ``POST {base_url}/chat/completions`` with image parts: vLLM,
SGLang, Ollama (``http://localhost:11434/v1``), LM Studio (``http://localhost:1234/v1``) and
hosted APIs. The video is asked about in chunks; each chunk's frames are sampled uniformly, sent
as JPEG data URLs each preceded by its time within the chunk, and the reply is parsed tolerantly
by ``vlm_parse.parse_highlights``; ``select.ranges`` maps, validates and merges the times.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from prompts import load_text
from retrieval_hl.describe.vlm_cache import ResponseCache, file_digest
from retrieval_hl.describe.vlm_local import LOCAL_PREFIX, LocalChatClient
from retrieval_hl.describe.vlm_parse import parse_highlights
from retrieval_hl.models import Description
from retrieval_hl.select.ranges import (
    Candidate,
    Chunk,
    merge_candidates,
    plan_chunks,
    to_candidates,
)
from rhl_common.errors import ConfigError, VideoOpenError, VLMResponseError
from rhl_common.models import Frozen

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
        timeout_s: the longest one attempt may take: a socket timeout while connecting, and a
            deadline while the reply arrives (a trickling reply is cut after about that long).
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
            raise ConfigError(
                f"VLM URL must start with http:// or https:// (or be local:MODEL_ID for a "
                f"transformers model), got {base_url!r}"
            )
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
                deadline = time.monotonic() + self.timeout_s
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return _read_until(response, deadline, self.timeout_s)
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


def _read_until(response: Any, deadline: float, timeout_s: float) -> bytes:
    """The whole body, or ``TimeoutError`` once ``deadline`` passes: a server that trickles its
    reply (a slow stream) is cut off like one that never answers.
    """
    parts = []
    while True:
        part = response.read1(1 << 16)
        if not part:
            return b"".join(parts)
        parts.append(part)
        if time.monotonic() > deadline:
            raise TimeoutError(f"reply still arriving after {timeout_s:g} s")


def sample_frame_indices(
    info: VideoInfo, n_frames: int, start_s: float = 0.0, end_s: float | None = None
) -> np.ndarray:
    """Pick ``n_frames`` frame indices spread uniformly over ``[start_s, end_s)`` (the whole
    video by default), at the centres of equal parts.

    Args:
        info: the probed video.
        n_frames: how many frames to pick; fewer come back when the span is shorter.
        start_s: start of the span in seconds.
        end_s: end of the span in seconds (the video's end when ``None``).

    Returns:
        Sorted, unique frame indices.

    Raises:
        ConfigError: ``n_frames`` is below 1.

    """
    if n_frames < 1:
        raise ConfigError(f"VLM frame count must be at least 1, got {n_frames}")
    first = min(max(int(round(start_s * info.fps)), 0), info.n_frames - 1)
    last = info.n_frames if end_s is None else int(round(end_s * info.fps))
    span = max(1, min(last, info.n_frames) - first)
    n = min(n_frames, span)
    idx = first + np.floor((np.arange(n) + 0.5) * span / n).astype(np.int64)
    return np.unique(np.clip(idx, 0, info.n_frames - 1))


def frame_to_data_url(frame: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    """Encode an RGB uint8 frame (h, w, 3) as a ``data:image/jpeg;base64,...`` URL."""
    from PIL import Image

    buf = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    image.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class VLMAnswer(Frozen):
    """What the VLM said about one video, after merging its chunk answers.

    ``descriptions`` are the merged events (time hints in video seconds), most important first,
    each backed by ``support[k]`` chunk candidates; ``untimed`` are items given without a usable
    time (still good retrieval queries). ``failures`` name what went wrong per chunk.
    """

    descriptions: tuple[Description, ...] = ()
    support: tuple[int, ...] = ()
    untimed: tuple[Description, ...] = ()
    n_chunks: int = 0
    n_requests: int = 0
    n_frames_sent: int = 0
    n_cached: int = 0
    n_invalid: int = 0
    failures: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the VLM gave nothing usable."""
        return not self.descriptions and not self.untimed


class VLMDescriber:
    """Describer that asks a vision-language model for the highlights of a video, chunk by chunk
    (seed method 1: timestamps from the VLM).

    The video is cut into chunks of ``chunk_s`` seconds sharing ``overlap_s``; each chunk's
    ``frames_per_chunk`` frames go in one request, with their times within the chunk and the
    chunk's true duration stated in the prompt. Requests run in parallel, at most
    ``concurrency`` at a time. Replies are parsed tolerantly, times mapped back to the video and
    validated, and candidates merged across chunk borders and deduplicated by priority.

    Args:
        base_url: the OpenAI-compatible API root, e.g. ``http://localhost:8000/v1``, or
            ``local:MODEL_ID`` / ``local:/folder`` for a transformers model run in this process
            (one request at a time; see ``vlm_local``).
        model: the model name the endpoint serves (e.g. ``Qwen/Qwen2.5-VL-7B-Instruct``).
        api_key: bearer token, if the endpoint wants one (``Settings.vlm_api_key``: env
            ``RHL_VLM_API_KEY``, then ``OPENAI_API_KEY``).
        frames_per_chunk: frames sampled uniformly over each chunk and sent as images.
        chunk_s: the longest chunk in seconds (a shorter video is one chunk).
        overlap_s: seconds neighbouring chunks share.
        concurrency: requests in flight at once.
        max_items: the most highlights asked for per chunk.
        timeout_s: the longest one HTTP attempt may take, reading included.
        retries: extra attempts after a 5xx, a 429 or a timeout.
        max_tokens: reply length cap sent with each request.
        max_len_s: the longest event kept (longer merged events are trimmed around the middle).
        user_request: the user's own words on what to keep, passed to the model.
        strict: any failed chunk, junk reply or an empty result raises instead of warning.
        cache: where replies are kept for reruns; ``None`` asks every time.

    Raises:
        ConfigError: a bad URL, an empty model name, or counts below 1.

    """

    name = "vlm"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        frames_per_chunk: int = 8,
        chunk_s: float = 30.0,
        overlap_s: float = 2.0,
        concurrency: int = 4,
        max_items: int = 6,
        timeout_s: float = 60.0,
        retries: int = 1,
        max_tokens: int | None = 1024,
        max_len_s: float = 20.0,
        user_request: str | None = None,
        strict: bool = False,
        cache: ResponseCache | None = None,
    ) -> None:
        if frames_per_chunk < 1 or max_items < 1 or concurrency < 1:
            raise ConfigError(
                "VLM frames_per_chunk, max_items and concurrency must be at least 1, got "
                f"{frames_per_chunk}, {max_items} and {concurrency}"
            )
        if not 0 <= 2 * overlap_s < chunk_s:
            raise ConfigError(
                f"VLM overlap_s {overlap_s:g} must be at least 0 and under half of chunk_s "
                f"{chunk_s:g}"
            )
        if base_url.startswith(LOCAL_PREFIX):  # a transformers model in this process
            self.client: ChatClient | LocalChatClient = LocalChatClient(
                base_url.removeprefix(LOCAL_PREFIX))
            concurrency = 1
        else:
            self.client = ChatClient(
                base_url, model, api_key=api_key, timeout_s=timeout_s, retries=retries
            )
        self.frames_per_chunk = frames_per_chunk
        self.chunk_s = chunk_s
        self.overlap_s = overlap_s
        self.concurrency = concurrency
        self.max_items = max_items
        self.max_tokens = max_tokens
        self.max_len_s = max_len_s
        self.user_request = user_request
        self.strict = strict
        self.cache = cache

    def describe(self, video: IndexedVideo, encoder: Encoder | None = None) -> list[Description]:
        """The merged events (with time hints) and then the untimed items; ``encoder`` is not
        used. See ``ask``.
        """
        answer = self.ask(video.info)
        return [*answer.descriptions, *answer.untimed]

    def ask(self, info: VideoInfo) -> VLMAnswer:
        """Ask the model about every chunk of the video and merge the answers.

        Returns:
            The merged answer; chunks that failed are named in ``failures`` (and logged).

        Raises:
            VLMResponseError: with ``strict``, any chunk failed or nothing usable came back.
            VideoOpenError: no frame of the video could be decoded.

        """
        from indexer.decode import proxy_size

        chunks = plan_chunks(info.duration_s, self.chunk_s, self.overlap_s)
        plans = [(c, sample_frame_indices(info, self.frames_per_chunk, c.start_s, c.end_s))
                 for c in chunks]
        size = proxy_size(info, FRAME_SHORT_SIDE_PX)
        keys = {c.index: self._cache_key(info, c, idx, size) for c, idx in plans}
        replies: dict[int, str] = {}
        if self.cache is not None:
            for c, _ in plans:
                hit = self.cache.get(keys[c.index])
                if hit is not None:
                    replies[c.index] = hit
        todo = [(c, idx) for c, idx in plans if c.index not in replies]
        n_cached = len(replies)
        asked = {c.index for c, _ in todo}
        frames = _decode(info, np.unique(np.concatenate([i for _, i in todo]))) if todo else {}
        log.info(
            "asking %s (%s) about %s: %d chunks of <= %.0f s, %d frames each (%d cached), "
            "%d at a time",
            self.client.model, self.client.url, info.video_id, len(chunks), self.chunk_s,
            self.frames_per_chunk, n_cached, self.concurrency,
        )  # fmt: skip
        failures: list[str] = []
        candidates: list[Candidate] = []
        untimed: list[Description] = []
        n_invalid = 0
        n_frames_sent = 0

        def run(plan: tuple[Chunk, np.ndarray]) -> str:
            chunk, idx = plan
            messages = self.build_messages(info, chunk, idx, [frames[int(i)] for i in idx])
            return self.client.chat(messages, temperature=0.0, max_tokens=self.max_tokens)

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(run, plan): plan for plan in todo}
            for future, (chunk, idx) in futures.items():
                n_frames_sent += len(idx)
                try:
                    replies[chunk.index] = future.result()
                except VLMResponseError as exc:
                    failures.append(f"{_span(chunk)}: {exc}")
        for chunk, _ in plans:
            if chunk.index not in replies:
                continue
            reply = replies[chunk.index]
            try:
                items = parse_highlights(reply, math.inf, strict=True)[: self.max_items]
            except VLMResponseError as exc:
                failures.append(f"{_span(chunk)}: {exc}")
                continue
            if self.cache is not None and chunk.index in asked:
                self.cache.put(keys[chunk.index], reply)
            found, dropped = to_candidates(items, chunk, info.duration_s)
            candidates += found
            n_invalid += dropped
            untimed += [d for d in items if d.start_hint_s is None and d.end_hint_s is None]
        events = merge_candidates(candidates, max_len_s=self.max_len_s)
        unique: dict[str, Description] = {}
        for d in untimed:
            unique.setdefault(d.text.casefold(), d)
        untimed = list(unique.values())
        answer = VLMAnswer(
            descriptions=tuple(d for d, _ in events),
            support=tuple(n for _, n in events),
            untimed=tuple(untimed),
            n_chunks=len(chunks),
            n_requests=len(todo),
            n_frames_sent=n_frames_sent,
            n_cached=n_cached,
            n_invalid=n_invalid,
            failures=tuple(failures),
        )
        log.info(
            "%s: VLM gave %d candidates in %d chunks (%d invalid times dropped, %d failed) -> "
            "%d events, %d untimed",
            info.video_id, len(candidates), len(chunks), n_invalid, len(failures),
            len(answer.descriptions), len(answer.untimed),
        )  # fmt: skip
        self._judge(answer)
        return answer

    def _judge(self, answer: VLMAnswer) -> None:
        if answer.failures:
            message = (
                f"{len(answer.failures)} of {answer.n_chunks} VLM chunk answers failed; first: "
                f"{answer.failures[0]}"
            )
            if self.strict or len(answer.failures) == answer.n_chunks:
                raise VLMResponseError(message)
            log.warning("%s (the other chunks are used)", message)
        if answer.empty and self.strict:
            raise VLMResponseError(
                f"VLM {self.client.model} at {self.client.url} found no highlights "
                f"in {answer.n_chunks} chunks"
            )

    def _cache_key(
        self, info: VideoInfo, chunk: Chunk, indices: np.ndarray, size: tuple[int, int]
    ) -> str:
        if self.cache is None:
            return ""
        fields = self._fields(info, chunk, indices)
        return ResponseCache.key(
            file=file_digest(info.path),
            span=[round(chunk.start_s, 3), round(chunk.end_s, 3)],
            frames=[int(i) for i in indices],
            size=list(size),
            prompt=[load_text("vlm/system.txt").format(**fields),
                    load_text("vlm/describe.txt").format(**fields), JPEG_QUALITY],
            model=self.client.model,
            max_tokens=self.max_tokens,
        )

    def _fields(self, info: VideoInfo, chunk: Chunk, indices: np.ndarray) -> dict[str, Any]:
        times = [info.time_of(int(i)) - chunk.start_s for i in indices]
        return {
            "duration_s": chunk.duration_s,
            "chunk_start_s": chunk.start_s,
            "chunk_end_s": chunk.end_s,
            "video_duration_s": info.duration_s,
            "n_frames": len(times),
            "frame_times": ", ".join(f"{max(t, 0.0):.1f}" for t in times),
            "max_items": self.max_items,
            "user_request": (self.user_request or "").strip() or NO_REQUEST,
        }

    def build_messages(
        self, info: VideoInfo, chunk: Chunk, indices: np.ndarray, frames: Sequence[np.ndarray]
    ) -> list[dict[str, Any]]:
        """Build one chunk's chat messages: system prompt, task text, then each frame after its
        time within the chunk.

        Args:
            info: the probed video.
            chunk: the stretch these frames come from (its duration is stated in the prompt).
            indices: source frame index of each frame.
            frames: RGB uint8 frames (h, w, 3).

        Returns:
            OpenAI-format messages.

        """
        fields = self._fields(info, chunk, indices)
        times = fields["frame_times"].split(", ")
        parts: list[dict[str, Any]] = [
            {"type": "text", "text": load_text("vlm/describe.txt").format(**fields)}
        ]
        for k, (t, frame) in enumerate(zip(times, frames, strict=True)):
            parts.append({"type": "text", "text": f"Frame {k + 1}/{len(times)} at {t} s:"})
            parts.append({"type": "image_url", "image_url": {"url": frame_to_data_url(frame)}})
        return [
            {"role": "system", "content": load_text("vlm/system.txt").format(**fields).strip()},
            {"role": "user", "content": parts},
        ]


def _span(chunk: Chunk) -> str:
    return f"chunk {chunk.start_s:.1f}-{chunk.end_s:.1f} s"


def _decode(info: VideoInfo, wanted: np.ndarray) -> dict[int, np.ndarray]:
    """The frames at ``wanted`` indices, decoded in one pass, keyed by index."""
    from indexer.decode import open_reader, proxy_size

    size = proxy_size(info, FRAME_SHORT_SIDE_PX)
    got: dict[int, np.ndarray] = {}
    for part in open_reader(info).iter_chunks(info, wanted, size, 16):
        got.update(zip((int(i) for i in part.indices), part.frames, strict=True))
    if not got:
        raise VideoOpenError(f"no frame could be decoded from {info.path!r} for the VLM")
    missing = [int(i) for i in wanted if int(i) not in got]
    for i in missing:  # a frame the decoder skipped: its nearest decoded neighbour stands in
        got[i] = got[min(got, key=lambda j: abs(j - i))]
    return got
