"""A local OpenAI-compatible chat server that answers from annotations: an honest stand-in for a
VLM that tests chunking, time mapping, merging, dedup and fusion (not a model).

The video is named by the request's ``model`` (callers set ``vlm_model`` to the video id); the
chunk by the prompt's "the part from A s to B s" line; the frames by the "Frame k/n at T s" lines.
An annotated event is *visible* when at least one frame sent falls inside it (a model cannot
report what it was not shown); a visible event is answered with its true range clipped to the
chunk, in chunk time. Options degrade the answers:

- ``jitter_s``: each end moved by a uniform draw in [-jitter_s, jitter_s];
- ``miss``: each visible event left out with this probability;
- ``junk``: a reply replaced with this probability by junk, in turn prose, an HTML page, an
  HTTP 500, and JSON with times outside the chunk;
- ``delay_s``: every reply waits this long.

Draws are seeded by (seed, video, chunk start, attempt), so a run is repeatable whatever the
order the requests arrive in.
"""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

_SPAN = re.compile(r"the part from\s+([\d.]+)\s*s\s+to\s+([\d.]+)\s*s")
_FRAME = re.compile(r"^Frame \d+/\d+ at ([\d.]+) s:")
JUNK_KINDS = ("prose", "html", "500", "outside")


class ChatServer:
    """A local OpenAI-compatible chat server on a free port; a subclass's ``answer`` says what
    each request gets.

    ``received`` holds every request as {"path", "headers", "json"}; every reply waits
    ``delay_s``; ``max_in_flight`` is the most requests handled at once.
    """

    delay_s: float = 0.0

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.received.append(
                        {"path": self.path, "headers": dict(self.headers), "json": body})
                    outer._in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer._in_flight)
                try:
                    status, ctype, data = outer.answer(body)
                    time.sleep(outer.delay_s)
                    try:
                        self.send_response(status)
                        self.send_header("Content-Type", ctype)
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                    except OSError:
                        pass  # the client gave up
                finally:
                    with outer._lock:
                        outer._in_flight -= 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def answer(self, body: dict) -> tuple[int, str, bytes]:
        """(status, content type, body) for one chat request."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


class AnnotatedVLM(ChatServer):
    """The annotation-answering server; ``events`` maps a video id to its (start_s, end_s,
    description) events.

    Counters besides ``ChatServer``'s: ``requests`` (every POST, retries included), ``images``
    (image parts received), ``junk_sent``; ``prompts`` holds every prompt's first text part.
    """

    def __init__(
        self,
        events: dict[str, list[tuple[float, float, str]]],
        *,
        jitter_s: float = 0.0,
        miss: float = 0.0,
        junk: float = 0.0,
        delay_s: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.events = events
        self.jitter_s, self.miss, self.junk, self.delay_s, self.seed = (
            jitter_s, miss, junk, delay_s, seed)  # fmt: skip
        self.requests = 0
        self.images = 0
        self.junk_sent = 0
        self.prompts: list[str] = []
        self._attempts: dict[tuple[str, float], int] = {}
        super().__init__()

    def answer(self, body: dict) -> tuple[int, str, bytes]:
        """(status, content type, body) for one chat request."""
        parts = body["messages"][-1]["content"]
        texts = [p["text"] for p in parts if p.get("type") == "text"]
        n_images = sum(p.get("type") == "image_url" for p in parts)
        frames = [float(m.group(1)) for t in texts if (m := _FRAME.match(t))]
        span = _SPAN.search(" ".join(texts[0].split()))
        if span is None:
            return 400, "text/plain", b"no chunk span in the prompt"
        a, b = float(span.group(1)), float(span.group(2))
        video = body["model"]
        with self._lock:
            self.requests += 1
            self.images += n_images
            self.prompts.append(texts[0])
            attempt = self._attempts.get((video, a), 0)
            self._attempts[(video, a)] = attempt + 1
        rng = np.random.default_rng([self.seed, zlib.crc32(video.encode()), int(a * 1000), attempt])
        if rng.random() < self.junk:
            with self._lock:
                kind = JUNK_KINDS[self.junk_sent % len(JUNK_KINDS)]
                self.junk_sent += 1
            if kind == "500":
                return 500, "text/plain", b"internal server error"
            if kind == "html":
                return 200, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            content = (
                "I'm sorry, I cannot determine the highlights from these frames."
                if kind == "prose"
                else json.dumps({"highlights": [{"description": "nothing", "priority": 1,
                                                 "start_s": b + 500, "end_s": b + 510}]})
            )
            return 200, "application/json", completion(content)
        items = []
        for start, end, text in self.events.get(video, []):
            seen = [t for t in frames if start <= a + t < end]
            if not seen or rng.random() < self.miss:
                continue
            lo, hi = max(start, a) - a, min(end, b) - a
            if self.jitter_s:
                lo += rng.uniform(-self.jitter_s, self.jitter_s)
                hi += rng.uniform(-self.jitter_s, self.jitter_s)
            lo, hi = max(lo, 0.0), min(hi, b - a)
            if hi - lo < 0.2:
                hi = min(lo + 0.2, b - a)
            items.append({"description": text, "priority": 1, "start_s": round(lo, 2),
                          "end_s": round(hi, 2)})
        return 200, "application/json", completion(json.dumps({"highlights": items}))


def completion(content: str) -> bytes:
    """An OpenAI chat-completion body whose one choice says ``content``."""
    return json.dumps({
        "id": "chatcmpl-annotated", "object": "chat.completion", "model": "annotated",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
    }).encode()  # fmt: skip
