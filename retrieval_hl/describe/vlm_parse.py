"""Tolerant parsing of a vision-language model's highlight reply into ``Description``s. Pure.

Models wrap JSON in markdown fences, add prose around it, return a bare list instead of the
requested object, use other key names, write priorities as strings, give times outside the video
or stop mid-reply when they hit their token limit. All of that is repaired here. Two failure modes
stay apart:

- no JSON at all (a refusal, an apology, free prose): an empty result and a warning;
- JSON of the wrong type (a number, a string, an object without any list of highlights): a
  ``VLMResponseError``, because the endpoint or the prompt is broken, not the one reply.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
from typing import Any

from retrieval_hl.models import Description
from rhl_common.errors import VLMResponseError

log = logging.getLogger(__name__)

DEFAULT_PRIORITY = 2

TEXT_KEYS = ("description", "text", "caption", "event", "desc", "label", "summary", "title")
PRIORITY_KEYS = ("priority", "importance", "rank", "level")
START_KEYS = ("start_s", "start", "start_time", "start_sec", "begin", "begin_s", "from", "t0")
END_KEYS = ("end_s", "end", "end_time", "end_sec", "stop", "finish", "to", "t1")
RANGE_KEYS = ("timestamp", "timestamps", "time", "time_range", "range", "span", "interval")
LIST_KEYS = ("highlights", "highlight", "items", "events", "moments", "results", "clips", "data")
_PRIORITY_WORDS = {
    "highest": 1, "critical": 1, "high": 1, "top": 1, "must": 1,
    "medium": 2, "mid": 2, "normal": 2, "moderate": 2,
    "low": 3, "lowest": 3, "minor": 3, "optional": 3,
}  # fmt: skip

_FENCE = re.compile(r"```[ \t]*(?:json5?|JSON|javascript|js)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")
_MAX_CANDIDATES = 64
_DECODER = json.JSONDecoder()


def parse_highlights(reply: str, duration_s: float, *, strict: bool = False) -> list[Description]:
    """Turn a model's reply into ``Description``s with ``source="vlm"``, most important first.

    Accepted: ``{"highlights": [...]}`` or a bare list of items, in a ```json fence or with prose
    around it, single-quoted Python-style literals, trailing commas, and JSON cut off mid-reply
    (the complete items before the cut are kept). An item is an object or a plain string. Its
    text comes from ``description`` (or ``text``, ``caption``, ``event``...); its priority from
    ``priority`` as a number or a string (``"1"``, ``"P2"``, ``"high"``), clamped to 1..3,
    default 2; its time hint from ``start_s``/``end_s`` (or ``start``/``end``...) or a pair
    ``timestamp: [a, b]`` (numbers, ``"12.5s"`` or ``"mm:ss"``). Times are clamped to
    ``[0, duration_s]``; a hint whose end is not after its start after clamping is dropped
    (the description itself is kept). Items without text are skipped; an item repeated (same
    text and times) is kept once, with the better priority; the same text at other times is
    another event.

    Args:
        reply: the model's raw message text.
        duration_s: the video's real duration in seconds (``math.inf`` keeps times unclamped
            but for negative values, for a caller that validates them itself).
        strict: a reply without any JSON (prose, HTML, a refusal) raises instead of giving
            ``[]``.

    Returns:
        The descriptions, sorted by priority (stable), or ``[]`` when the reply holds no JSON.

    Raises:
        VLMResponseError: the reply is JSON of the wrong type (a number, a string, an object
            without a list of highlights, a list of numbers), or, with ``strict``, no JSON.

    """
    if not isinstance(reply, str):
        raise VLMResponseError(f"VLM reply must be text, got {type(reply).__name__}")
    value, found = _extract_json(reply)
    if not found:
        if strict:
            raise VLMResponseError(f"VLM reply holds no JSON: {_snippet(reply)}")
        log.warning("VLM reply holds no JSON, no highlights taken: %s", _snippet(reply))
        return []
    items = _items_of(value)
    out: dict[tuple, Description] = {}
    for item in items:
        desc = _description_of(item, duration_s)
        if desc is None:
            continue
        key = (desc.text.casefold(), desc.start_hint_s, desc.end_hint_s)
        if key not in out or desc.priority < out[key].priority:
            out[key] = desc
    if items and not out:
        log.warning("VLM reply had %d items but none with a description", len(items))
    return sorted(out.values(), key=lambda d: d.priority)


# --- finding the JSON -------------------------------------------------------------------------


def _extract_json(reply: str) -> tuple[Any, bool]:
    """Return the JSON value in ``reply`` and whether one was found at all."""
    text = _THINK.sub("", reply).strip()
    fenced = [m.group(1).strip() for m in _FENCE.finditer(text)]
    bodies = [b for b in fenced if b] or [text]
    # A body that is exactly JSON is taken as is, whatever its type: a wrong type must raise.
    for body in bodies:
        value = _loads_whole(body)
        if value is not _MISSING:
            return value, True
    for body in bodies:
        value = _scan(body)
        if value is not _MISSING:
            return value, True
    if fenced:  # prose outside the fence may still hold the JSON
        value = _scan(text)
        if value is not _MISSING:
            return value, True
    return None, False


class _Missing:
    pass


_MISSING: Any = _Missing()


def _loads_whole(body: str) -> Any:
    for candidate in (body, _TRAILING_COMMA.sub(r"\1", body)):
        try:
            return json.loads(candidate)
        except ValueError:
            pass
    if body[:1] in "[{":
        return _literal(body)
    return _MISSING


def _scan(text: str) -> Any:
    """First object or list embedded in ``text``, repaired or salvaged from a truncated tail."""
    positions = [m.start() for m in re.finditer(r"[\[{]", text)][:_MAX_CANDIDATES]
    covered_to = -1
    for pos in positions:
        if pos < covered_to:
            continue  # inside a structure already decoded: its parts are not candidates
        value, end = _decode_at(text, pos)
        if value is not _MISSING:
            if _looks_like_highlights(value):
                return value
            covered_to = end
            continue
        salvaged = _salvage(text, pos)
        if salvaged:
            log.warning("VLM reply looks truncated; kept the %d complete items", len(salvaged))
            return salvaged
    # JSON found only as odd fragments inside prose (e.g. "see [1]"): no highlights there.
    return _MISSING


def _decode_at(text: str, pos: int) -> tuple[Any, int]:
    try:
        value, end = _DECODER.raw_decode(text, pos)
        return value, end
    except ValueError:
        pass
    end = _balanced_end(text, pos)
    if end is None:
        return _MISSING, pos
    snippet = text[pos:end]
    try:
        return json.loads(_TRAILING_COMMA.sub(r"\1", snippet)), end
    except ValueError:
        pass
    return _literal(snippet), end


def _literal(snippet: str) -> Any:
    """Python-style literal (single quotes, True/None) or JSON words in it; else missing."""
    py = re.sub(r"\btrue\b", "True", snippet)
    py = re.sub(r"\bfalse\b", "False", py)
    py = re.sub(r"\bnull\b", "None", py)
    for candidate in (snippet, py):
        try:
            value = ast.literal_eval(candidate)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, dict | list):
            return value
    return _MISSING


def _balanced_end(text: str, pos: int) -> int | None:
    """End index (exclusive) of the bracketed structure opening at ``pos``; None if unclosed."""
    depth = 0
    quote: str | None = None
    escaped = False
    for i in range(pos, len(text)):
        c = text[i]
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _salvage(text: str, pos: int) -> list[Any]:
    """Complete items of the first list of objects/strings at or after ``pos`` (cut-off JSON)."""
    m = re.compile(r"\[\s*(?=[{\"])").search(text, pos)
    if m is None or (text[pos] == "[" and m.start() != pos):
        return []
    items: list[Any] = []
    i = m.end()
    while i < len(text):
        try:
            item, i = _DECODER.raw_decode(text, i)
        except ValueError:
            break
        items.append(item)
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i < len(text) and text[i] == "]":
            break
    return items


def _looks_like_highlights(value: Any) -> bool:
    if isinstance(value, dict):
        return _list_in(value) is not None or _first(value, TEXT_KEYS) is not None
    if isinstance(value, list):
        return not value or any(isinstance(v, dict | str) for v in value)
    return False


# --- turning JSON into items ------------------------------------------------------------------


def _items_of(value: Any) -> list[Any]:
    if isinstance(value, list):
        if value and not any(isinstance(v, dict | str) for v in value):
            raise VLMResponseError(
                f"VLM reply is a list of {type(value[0]).__name__}, expected highlight objects: "
                f"{_snippet(json.dumps(value, default=str))}"
            )
        return value
    if isinstance(value, dict):
        items = _list_in(value)
        if items is not None:
            return items
        if _first(value, TEXT_KEYS) is not None:
            return [value]
        for key in LIST_KEYS:
            if key in value and value[key] is not None:
                raise VLMResponseError(
                    f"VLM reply has {key!r} of type {type(value[key]).__name__}, expected a list"
                )
        if any(key in value for key in LIST_KEYS):
            return []  # {"highlights": null}: the model found nothing
        raise VLMResponseError(
            f"VLM reply is a JSON object without a list of highlights (keys: "
            f'{", ".join(map(str, value)) or "none"}); expected {{"highlights": [...]}}'
        )
    raise VLMResponseError(
        f"VLM reply is JSON of type {type(value).__name__}, expected an object or a list: "
        f"{_snippet(json.dumps(value, default=str))}"
    )


def _list_in(value: dict) -> list | None:
    for key in LIST_KEYS:
        if isinstance(value.get(key), list):
            return value[key]
    lists = [
        v for v in value.values() if isinstance(v, list) and any(isinstance(x, dict) for x in v)
    ]
    return lists[0] if len(lists) == 1 else None


def _description_of(item: Any, duration_s: float) -> Description | None:
    if isinstance(item, str):
        text = " ".join(item.split())
        return Description(text=text, priority=DEFAULT_PRIORITY, source="vlm") if text else None
    if not isinstance(item, dict):
        log.debug("skipping VLM item of type %s", type(item).__name__)
        return None
    raw_text = _first(item, TEXT_KEYS)
    text = " ".join(raw_text.split()) if isinstance(raw_text, str) else ""
    if not text:
        log.debug("skipping VLM item without a description: %s", _snippet(str(item)))
        return None
    start, end = _times_of(item, duration_s)
    return Description(
        text=text,
        priority=_priority_of(_first(item, PRIORITY_KEYS)),
        source="vlm",
        start_hint_s=start,
        end_hint_s=end,
    )


def _first(item: dict, keys: tuple[str, ...]) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in item.items()}
    for key in keys:
        if lowered.get(key) is not None:
            return lowered[key]
    return None


def _priority_of(raw: Any) -> int:
    if isinstance(raw, bool) or raw is None:
        return DEFAULT_PRIORITY
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        word = raw.strip().lower()
        m = _NUMBER.search(word)
        if m is None:
            named = [p for w, p in _PRIORITY_WORDS.items() if re.search(rf"\b{w}\b", word)]
            return named[0] if named else DEFAULT_PRIORITY
        value = float(m.group())
    else:
        return DEFAULT_PRIORITY
    if not math.isfinite(value):
        return DEFAULT_PRIORITY
    return int(min(max(round(value), 1), 3))


def _times_of(item: dict, duration_s: float) -> tuple[float | None, float | None]:
    start = _seconds(_first(item, START_KEYS))
    end = _seconds(_first(item, END_KEYS))
    if start is None and end is None:
        pair = _first(item, RANGE_KEYS)
        if isinstance(pair, list | tuple) and pair:
            start = _seconds(pair[0])
            end = _seconds(pair[1]) if len(pair) > 1 else None
        elif isinstance(pair, str) and re.search(r"\d\s*(?:-|–|to)\s*\d", pair):
            a, b = re.split(r"\s*(?:-|–|\bto\b)\s*", pair.strip(), maxsplit=1)
            start, end = _seconds(a), _seconds(b)
        else:
            start = _seconds(pair)
    if start is not None:
        if start >= duration_s:
            return None, None
        start = min(max(start, 0.0), duration_s)
    if end is not None:
        end = min(max(end, 0.0), duration_s)
    if start is not None and end is not None and end <= start:
        log.debug("dropping VLM time hint %.2f-%.2f (duration %.2f)", start, end, duration_s)
        return None, None
    if start is None and end is not None and end <= 0:
        return None, None
    return start, end


def _seconds(raw: Any) -> float | None:
    """Seconds from a number, ``"12.5"``, ``"12.5s"``, ``"01:02.5"`` or ``"1:02:03"``."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        s = raw.strip().lower().removesuffix("seconds").removesuffix("sec").removesuffix("s")
        s = s.strip()
        clock = _CLOCK.match(s)
        if clock:
            h, m, sec = clock.groups()
            value = int(h or 0) * 3600 + int(m) * 60 + float(sec)
        else:
            try:
                value = float(s)
            except ValueError:
                return None
    else:
        return None
    return value if math.isfinite(value) else None


def _snippet(text: str, n: int = 200) -> str:
    one_line = " ".join(text.split())
    return one_line[:n] + ("..." if len(one_line) > n else "")
