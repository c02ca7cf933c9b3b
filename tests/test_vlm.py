"""VLM describer: the tolerant reply parser, and the client against a real local HTTP server."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from indexer.pipeline import IndexedVideo
from indexer.probe import probe_video
from prompts import load_text
from retrieval_hl.describe.vlm import ChatClient, VLMDescriber, sample_frame_indices
from retrieval_hl.describe.vlm_parse import parse_highlights
from rhl_common.errors import ConfigError, VLMResponseError
from tests.conftest import ffmpeg
from tests.vlm_server import ChatServer, completion

# --- parser -----------------------------------------------------------------------------------

GOOD = {
    "highlights": [
        {"description": "a dog catches a frisbee", "priority": 1, "start_s": 2.0, "end_s": 4.5},
        {"description": "a crowd claps", "priority": 3, "start_s": 6.0, "end_s": 7.0},
    ]
}


def test_parse_plain_json():
    out = parse_highlights(json.dumps(GOOD), 10.0)
    assert [d.text for d in out] == ["a dog catches a frisbee", "a crowd claps"]
    assert [d.priority for d in out] == [1, 3]
    assert (out[0].start_hint_s, out[0].end_hint_s) == (2.0, 4.5)
    assert all(d.source == "vlm" for d in out)


def test_parse_fenced_with_prose():
    reply = f"Sure! Here are the highlights:\n```json\n{json.dumps(GOOD, indent=2)}\n```\nEnjoy."
    assert [d.text for d in parse_highlights(reply, 10.0)] == [
        "a dog catches a frisbee",
        "a crowd claps",
    ]


def test_parse_prose_without_fence():
    reply = f"After watching the frames, {json.dumps(GOOD)} -- these are the best moments."
    assert len(parse_highlights(reply, 10.0)) == 2


def test_parse_prose_with_brackets_before_json():
    reply = f"[Note] see frame [3] first. {json.dumps(GOOD)}"
    assert len(parse_highlights(reply, 10.0)) == 2


def test_parse_bare_list_sorted_by_priority():
    reply = json.dumps([{"description": "b", "priority": 3}, {"description": "a", "priority": 1}])
    assert [d.text for d in parse_highlights(reply, 10.0)] == ["a", "b"]


def test_parse_list_of_strings():
    out = parse_highlights('["a man jumps into a pool", "  a child   laughs "]', 10.0)
    assert [d.text for d in out] == ["a man jumps into a pool", "a child laughs"]
    assert {d.priority for d in out} == {2}


def test_parse_single_object():
    out = parse_highlights('{"description": "a car drifts", "priority": 1}', 10.0)
    assert [(d.text, d.priority) for d in out] == [("a car drifts", 1)]


def test_parse_truncated_keeps_complete_items():
    full = json.dumps(
        {"highlights": [{"description": f"event {i}", "priority": 1} for i in range(3)]}
    )
    cut = full[: full.index("event 2") + 3]
    assert [d.text for d in parse_highlights(cut, 10.0)] == ["event 0", "event 1"]
    fenced_cut = "```json\n" + full[: full.index("event 1") + 3]
    assert [d.text for d in parse_highlights(fenced_cut, 10.0)] == ["event 0"]


def test_parse_truncated_before_any_item_is_empty():
    assert parse_highlights('{"highlights": [{"description": "a do', 10.0) == []


def test_parse_alternative_keys():
    reply = json.dumps(
        [
            {"text": "a", "start": 1, "end": 2},
            {"caption": "b", "timestamp": [3, 4]},
            {"event": "c", "time_range": "00:05 - 00:06.5"},
            {"Description": "d", "start_time": "7s", "end_time": "8.5 s"},
        ]
    )
    out = {d.text: (d.start_hint_s, d.end_hint_s) for d in parse_highlights(reply, 10.0)}
    assert out == {"a": (1, 2), "b": (3, 4), "c": (5, 6.5), "d": (7, 8.5)}


def test_parse_single_quotes_and_trailing_commas():
    reply = "{'highlights': [{'description': 'a goal', 'priority': 1, 'ok': true},],}"
    assert [d.text for d in parse_highlights(reply, 10.0)] == ["a goal"]
    assert [d.text for d in parse_highlights('[{"description": "x",},]', 10.0)] == ["x"]


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (1, 1), (3, 3), (0, 1), (-2, 1), (7, 3), (2.4, 2), ("1", 1), (" 3 ", 3), ("P1", 1),
        ("high", 1), ("low", 3), ("medium", 2), ("very high", 1), ("whatever", 2), (None, 2),
        (True, 2), ([1], 2), ("nan", 2),
    ],
)  # fmt: skip
def test_parse_priority_clamped(raw, want):
    reply = json.dumps([{"description": "a", "priority": raw}])
    assert parse_highlights(reply, 10.0)[0].priority == want


def test_parse_priority_missing_defaults_to_2():
    assert parse_highlights('[{"description": "a"}]', 10.0)[0].priority == 2


@pytest.mark.parametrize(
    ("start", "end", "want"),
    [
        (2, 4, (2, 4)),
        (-3, 4, (0, 4)),  # clamped at 0
        (8, 25, (8, 10)),  # clamped at the duration
        (5, 5, (None, None)),  # empty
        (6, 4, (None, None)),  # reversed
        (12, 15, (None, None)),  # wholly after the end
        (-5, -1, (None, None)),  # wholly before the start
        ("abc", 4, (None, 4)),  # unreadable start
        (None, None, (None, None)),
    ],
)
def test_parse_times_clamped_or_dropped(start, end, want):
    reply = json.dumps([{"description": "a", "start_s": start, "end_s": end}])
    (d,) = parse_highlights(reply, 10.0)
    assert (d.start_hint_s, d.end_hint_s) == want
    assert d.text == "a"  # a bad time drops the hint, never the description


def test_parse_skips_items_without_text_and_dedups():
    reply = json.dumps(
        [
            {"priority": 1},
            {"description": "   "},
            {"description": 42},
            7,
            {"description": "A goal", "priority": 3},
            {"description": "a goal", "priority": 1},
        ]
    )
    out = parse_highlights(reply, 10.0)
    assert [(d.text, d.priority) for d in out] == [("a goal", 1)]
    two_goals = [{"description": "a goal", "start_s": 1, "end_s": 3},
                 {"description": "a goal", "start_s": 6, "end_s": 8}]  # fmt: skip
    out = parse_highlights(json.dumps(two_goals), 10.0)
    assert [(d.start_hint_s, d.end_hint_s) for d in out] == [(1, 3), (6, 8)]  # two events


def test_parse_empty_highlights():
    assert parse_highlights('{"highlights": []}', 10.0) == []
    assert parse_highlights('```json\n{"highlights": null}\n```', 10.0) == []


def test_parse_strips_thinking():
    reply = '<think>maybe {"highlights": [{"description": "no"}]}</think>\n' + json.dumps(GOOD)
    assert len(parse_highlights(reply, 10.0)) == 2


@pytest.mark.parametrize(
    "junk", ["", "   ", "Sorry, I can't help with that.", "The video shows 3 dogs.", "```\n```"]
)
def test_parse_junk_gives_empty_and_warns(junk, caplog):
    with caplog.at_level(logging.WARNING, logger="retrieval_hl.describe.vlm_parse"):
        assert parse_highlights(junk, 10.0) == []
    assert "no JSON" in caplog.text


@pytest.mark.parametrize(
    "wrong",
    [
        "42",
        '"a dog jumps"',
        "null",
        "true",
        "```json\n3.5\n```",
        "[1, 2, 3]",
        '{"highlights": "none"}',
        '{"highlights": 3}',
        '{"error": "model overloaded"}',
    ],
)
def test_parse_wrong_type_raises(wrong):
    with pytest.raises(VLMResponseError):
        parse_highlights(wrong, 10.0)


def test_parse_non_string_raises():
    with pytest.raises(VLMResponseError):
        parse_highlights(None, 10.0)  # type: ignore[arg-type]


# --- prompts ----------------------------------------------------------------------------------

FIELDS = {
    "duration_s": 93.25,
    "chunk_start_s": 30.0,
    "chunk_end_s": 123.25,
    "video_duration_s": 200.0,
    "n_frames": 8,
    "frame_times": "1.0, 2.0",
    "max_items": 6,
    "user_request": "the goals",
}


def test_templates_format_and_state_the_contract():
    system = load_text("vlm/system.txt").format(**FIELDS)
    text = load_text("vlm/describe.txt").format(**FIELDS)
    assert "JSON" in system
    for needle in ("93.2", "8 frames", "1.0, 2.0", "at most 6", "the goals", '"priority": 1',
                   "30.0 s to 123.2 s", "200.0 s"):
        assert needle in text
    example = text[text.index('{"highlights"') :].splitlines()[0]
    assert parse_highlights(example, 20.0)[0].priority == 1


# --- HTTP client against a real local server ---------------------------------------------------


class FakeOpenAI(ChatServer):
    """The chat server with queued replies (status, body, delay_s); an empty queue gives 500."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, str, float]] = []
        super().__init__()

    def reply(self, content: str, status: int = 200, delay_s: float = 0.0) -> None:
        body = completion(content).decode() if status == 200 else content
        self.replies.append((status, body, delay_s))

    def answer(self, body: dict) -> tuple[int, str, bytes]:
        status, text, delay = self.replies.pop(0) if self.replies else (500, "empty", 0)
        time.sleep(delay)
        return status, "application/json", text.encode()


@pytest.fixture
def server():
    srv = FakeOpenAI()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vlm") / "x.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=3",
           "-pix_fmt", "yuv420p", str(path))
    info = probe_video(path)
    return IndexedVideo(info, (), np.zeros((0, 32), np.float32), "test")


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("RHL_VLM_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


FENCED = "```json\n" + json.dumps(GOOD) + "\n```"


def test_describe_end_to_end(server, video):
    server.reply(FENCED)
    vlm = VLMDescriber(server.url, "test-vlm", api_key="sk-test", frames_per_chunk=4,
                       user_request="dogs")
    out = vlm.describe(video, encoder=None)

    # the 3 s video is one chunk: 2-4.5 s is clamped to its end, 6-7 s lies after it: dropped
    assert [d.text for d in out] == ["a dog catches a frisbee"]
    assert (out[0].start_hint_s, out[0].end_hint_s) == (2.0, video.info.duration_s)
    (req,) = server.received
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    payload = req["json"]
    assert payload["model"] == "test-vlm"
    assert payload["temperature"] == 0
    system, user = payload["messages"]
    assert system["role"] == "system" and isinstance(system["content"], str)
    parts = user["content"]
    texts = [p["text"] for p in parts if p["type"] == "text"]
    images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(images) == 4
    assert f"{video.info.duration_s:.1f} seconds" in texts[0]
    assert "dogs" in texts[0]
    # every image comes right after its timestamp line
    for k, part in enumerate(parts[1:]):
        assert part["type"] == ("text" if k % 2 == 0 else "image_url")
    assert texts[1].startswith("Frame 1/4 at ")
    head, b64 = images[0].split(",", 1)
    assert head == "data:image/jpeg;base64"
    assert base64.b64decode(b64)[:2] == b"\xff\xd8"  # a JPEG


def test_describe_clamps_times_to_video(server, video):
    reply = [{"description": "late", "start_s": 2.0, "end_s": 9.0}, {"description": "after",
             "start_s": 5.0, "end_s": 6.0}, {"description": "untimed"}]  # fmt: skip
    server.reply(json.dumps(reply))
    answer = VLMDescriber(server.url, "m", frames_per_chunk=2).ask(video.info)
    by_text = {d.text: (d.start_hint_s, d.end_hint_s) for d in answer.descriptions}
    assert by_text == {"late": (2.0, video.info.duration_s)}
    assert [d.text for d in answer.untimed] == ["untimed"]
    assert answer.n_invalid == 1 and answer.n_requests == 1 and answer.n_frames_sent == 2


def test_describe_keeps_max_items(server, video):
    server.reply(json.dumps([{"description": f"e{i}", "priority": 3 - i % 3} for i in range(9)]))
    out = VLMDescriber(server.url, "m", frames_per_chunk=2, max_items=3).describe(video, None)
    assert [d.priority for d in out] == [1, 1, 1]


def test_api_key_from_env(server, video, monkeypatch):
    from retrieval_hl.config import load_settings
    from retrieval_hl.pipeline import default_describer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("RHL_VLM_API_KEY", "sk-rhl")
    server.reply("[]")
    server.reply("[]")
    def ask() -> None:
        s = load_settings(vlm_url=server.url, vlm_cache=False)
        default_describer(s, None).describe(video, None)

    ask()
    monkeypatch.delenv("RHL_VLM_API_KEY")
    ask()
    auth = [r["headers"]["Authorization"] for r in server.received]
    assert auth == ["Bearer sk-rhl", "Bearer sk-openai"]


def test_no_key_no_authorization_header(server):
    server.reply("[]")
    ChatClient(server.url, "m").chat([{"role": "user", "content": "hi"}])
    assert "Authorization" not in server.received[0]["headers"]


def test_retry_after_500(server):
    server.reply("overloaded", status=500)
    server.reply(FENCED)
    client = ChatClient(server.url, "m", retry_wait_s=0)
    assert client.chat([{"role": "user", "content": "hi"}]) == FENCED
    assert len(server.received) == 2


def test_two_500s_raise(server):
    server.reply("overloaded", status=503)
    server.reply("still overloaded", status=503)
    with pytest.raises(VLMResponseError, match="503"):
        ChatClient(server.url, "m", retry_wait_s=0).chat([{"role": "user", "content": "hi"}])


def test_401_raises_without_retry(server):
    server.reply('{"error": {"message": "Invalid API key"}}', status=401)
    with pytest.raises(VLMResponseError) as err:
        ChatClient(server.url, "m", api_key="bad").chat([{"role": "user", "content": "hi"}])
    message = str(err.value)
    assert "401" in message and server.url in message and "Invalid API key" in message
    assert "\n" not in message and "bad" not in message.replace("Invalid", "")
    assert len(server.received) == 1


def test_error_body_cut_to_200_chars(server):
    server.reply("x" * 5000, status=400)
    with pytest.raises(VLMResponseError) as err:
        ChatClient(server.url, "m").chat([{"role": "user", "content": "hi"}])
    assert 200 <= str(err.value).count("x") <= 201


def test_timeout_retried_then_raises(server):
    server.reply("[]", delay_s=1.0)
    server.reply("[]", delay_s=1.0)
    t0 = time.perf_counter()
    with pytest.raises(VLMResponseError, match="timed out"):
        ChatClient(server.url, "m", timeout_s=0.2, retry_wait_s=0).chat(
            [{"role": "user", "content": "hi"}]
        )
    assert len(server.received) == 2
    assert time.perf_counter() - t0 < 2.0


def test_timeout_then_success(server):
    server.reply("[]", delay_s=1.0)
    server.reply("ok")
    client = ChatClient(server.url, "m", timeout_s=0.3, retry_wait_s=0)
    assert client.chat([{"role": "user", "content": "hi"}]) == "ok"


def test_connection_refused_is_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(VLMResponseError, match="cannot reach"):
        ChatClient(f"http://127.0.0.1:{port}/v1", "m", retry_wait_s=5).chat(
            [{"role": "user", "content": "hi"}]
        )
    assert time.perf_counter() - t0 < 1.0


def test_not_a_chat_completion_raises(server):
    server.replies.append((200, '{"object": "list", "data": []}', 0.0))
    with pytest.raises(VLMResponseError, match="chat completion"):
        ChatClient(server.url, "m").chat([{"role": "user", "content": "hi"}])


def test_content_parts_are_joined(server):
    body = {"choices": [{"message": {"content": [{"type": "text", "text": "a"},
                                                 {"type": "text", "text": "b"}]}}]}  # fmt: skip
    server.replies.append((200, json.dumps(body), 0.0))
    assert ChatClient(server.url, "m").chat([{"role": "user", "content": "hi"}]) == "ab"


def test_wrong_type_reply_raises(server, video):
    server.reply("42")
    with pytest.raises(VLMResponseError):  # the only chunk failed
        VLMDescriber(server.url, "m", frames_per_chunk=1).describe(video, None)


def test_url_forms():
    assert ChatClient("http://h:1/v1/", "m").url == "http://h:1/v1/chat/completions"
    assert ChatClient("http://h:1/v1/chat/completions", "m").url == "http://h:1/v1/chat/completions"
    assert "sk-" not in repr(ChatClient("http://h/v1", "m", api_key="sk-secret"))


@pytest.mark.parametrize(
    "kwargs",
    [{"base_url": "localhost:8000"}, {"base_url": "ftp://x"}, {"model": ""},
     {"frames_per_chunk": 0}, {"max_items": 0}, {"concurrency": 0},
     {"chunk_s": 10, "overlap_s": 5}, {"overlap_s": -1}],
)
def test_bad_config_raises(kwargs):
    args = {"base_url": "http://h/v1", "model": "m", **kwargs}
    with pytest.raises(ConfigError):
        VLMDescriber(**args)


def test_sample_frame_indices(video):
    info = video.info
    idx = sample_frame_indices(info, 4)
    assert len(idx) == 4 and idx[0] > 0 and idx[-1] < info.n_frames
    assert np.all(np.diff(idx) > 0)
    assert len(sample_frame_indices(info.model_copy(update={"n_frames": 2}), 8)) == 2


def test_trickling_reply_times_out():
    """A server that sends its reply a byte at a time is cut off like one that never answers."""

    class Trickle(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            data = b'{"choices": [{"message": {"content": "[]"}}]}' + b" " * 200
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for k in range(len(data)):
                    self.wfile.write(data[k : k + 1])
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    srv.daemon_threads = True
    srv.block_on_close = False
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        with pytest.raises(VLMResponseError, match="timed out"):
            ChatClient(url, "m", timeout_s=0.5, retries=0).chat([{"role": "user", "content": "x"}])
    finally:
        srv.shutdown()
        srv.server_close()
