"""Read assembly scripts: plain text (one event per line) or YAML (events with options).

Plain text, English or Chinese::

    # comments and blank lines are skipped; list markers (-, *, 1., 1、) are stripped
    the tip-off at centre court
    a dunk (4s)
    观众欢呼 [3秒]

A trailing ``(4s)``/``[3 sec]``/``（3秒）`` gives the event's duration. A text that is one single
line is split into events like a request (at ``;``, commas, "then", 然后...).

YAML, either a list of events or a mapping with ``events``; top-level ``category`` and ``tags``
are defaults for every event, an event may be a bare string::

    title: Saturday game
    category: basketball
    events:
      - text: the tip-off
        duration: 3          # seconds; also "3s" or duration_s
        priority: 1          # 1 picks its clip first
        tags: [team-a]
      - a dunk

Files over ``MAX_SCRIPT_BYTES`` or with more than ``MAX_EVENTS`` events, empty, binary or
malformed files raise ``ConfigError`` naming the problem.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from library.models import Script, ScriptStep
from retrieval_hl.describe.request import split_request
from rhl_common.errors import ConfigError

log = logging.getLogger(__name__)

MAX_SCRIPT_BYTES = 1 << 20
MAX_EVENTS = 500
ScriptFormat = Literal["auto", "text", "yaml"]

# "- ", "* ", "1. ", "2) ", "(3) " need a space after them; "1、", "（2）" do not.
_MARKER = re.compile(
    r"^\s*(?:(?:[-*•·]|\d{1,3}[.):]|[(]\d{1,3}[)])\s+|(?:\d{1,3}[、：]|（\d{1,3}）)\s*)"
)
_DURATION = re.compile(
    r"\s*[\[(（【]\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|秒)\s*[\])）】]\s*$", re.IGNORECASE
)
_DURATION_VALUE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|秒)?\s*$", re.IGNORECASE)
_STRIP = " \t.。!！?？"
_STEP_KEYS = {"text", "duration", "duration_s", "tags", "category", "priority"}


def normalise_label(value: str) -> str:
    """A tag or category as stored: trimmed, lower case, inner spaces as ``_``.

    Raises:
        ConfigError: empty, or using the reserved ``rhl:`` prefix.

    """
    out = re.sub(r"\s+", "_", str(value).strip().lower())
    if not out:
        raise ConfigError("empty tag or category name")
    if out.startswith("rhl:"):
        raise ConfigError(f"tag {value!r} uses the reserved prefix 'rhl:'")
    return out


def normalise_labels(values: Any) -> tuple[str, ...]:
    """Tags from a list or a comma-separated string, normalised, deduplicated, in order.

    Raises:
        ConfigError: not a string or list of strings, or a bad tag.

    """
    if values is None:
        return ()
    if isinstance(values, str):
        values = values.split(",")
    if not isinstance(values, (list, tuple)) or not all(
        isinstance(v, (str, int, float)) for v in values
    ):
        raise ConfigError(f"tags must be a list of strings or 'a,b,c', got {values!r}")
    out: list[str] = []
    for v in values:
        if str(v).strip():
            t = normalise_label(str(v))
            if t not in out:
                out.append(t)
    return tuple(out)


def parse_duration(value: Any, where: str) -> float | None:
    """Seconds from ``4``, ``4.5``, ``"4s"``, ``"4 sec"`` or ``"4秒"``; ``None`` stays ``None``.

    Raises:
        ConfigError: anything else, or not positive (``where`` names the event).

    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{where}: bad duration {value!r}; use seconds like 4 or '4s'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION_VALUE.match(str(value))
        if not m:
            raise ConfigError(f"{where}: bad duration {value!r}; use seconds like 4 or '4s'")
        seconds = float(m.group(1))
    if not 0 < seconds < 3600:
        raise ConfigError(f"{where}: duration must be between 0 and 3600 s, got {value!r}")
    return seconds


def _decode(raw: bytes, name: str) -> str:
    if len(raw) > MAX_SCRIPT_BYTES:
        raise ConfigError(
            f"script {name} is {len(raw)} bytes; the limit is {MAX_SCRIPT_BYTES} bytes (1 MiB)"
        )
    if b"\x00" in raw:
        raise ConfigError(f"script {name} is a binary file, not text or YAML")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"script {name} is not UTF-8 text (bad byte at offset {exc.start})"
        ) from None


def _text_steps(text: str) -> list[ScriptStep]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) == 1:
        lines = split_request(lines[0]) if not _DURATION.search(lines[0]) else lines
    return [step for line in lines if (step := _text_line(line)) is not None]


def _text_line(line: str) -> ScriptStep | None:
    """One plain-text event: list marker stripped, a trailing ``(4s)`` read as its duration."""
    body = _MARKER.sub("", line, count=1)
    duration = None
    if m := _DURATION.search(body):
        duration = float(m.group(1))
        body = body[: m.start()]
    body = body.strip(_STRIP)
    return ScriptStep(text=body, duration_s=duration or None) if body else None


def _yaml_step(item: Any, n: int, defaults: dict[str, Any]) -> ScriptStep:
    where = f"event {n}"
    if isinstance(item, (str, int, float)) and not isinstance(item, bool):
        step = _text_line(str(item))
        if step is None:
            raise ConfigError(f"{where}: empty text")
        item = {"text": step.text, "duration": step.duration_s}
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a text or a mapping with 'text', got {item!r:.80}")
    unknown = set(item) - _STEP_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
            f"valid keys: {', '.join(sorted(_STEP_KEYS))}"
        )
    text = item.get("text")
    if not isinstance(text, (str, int, float)) or not str(text).strip():
        raise ConfigError(f"{where}: 'text' is missing or empty")
    duration = parse_duration(item.get("duration", item.get("duration_s")), where)
    tags = normalise_labels(item["tags"]) if "tags" in item else defaults["tags"]
    category = item.get("category", defaults["category"])
    priority = item.get("priority", 2)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 3:
        raise ConfigError(f"{where}: priority must be 1, 2 or 3, got {priority!r}")
    return ScriptStep(
        text=str(text).strip(),
        duration_s=duration,
        tags=tags,
        category=normalise_label(category) if category is not None else None,
        priority=priority,
    )


def script_from_data(data: Any, source: str | None = None) -> Script:
    """Build a ``Script`` from parsed YAML: a list of events or a mapping with ``events``.

    Raises:
        ConfigError: wrong structure or values (the message names the event), no events, or more
            than ``MAX_EVENTS``.

    """
    name = source or "<yaml>"
    if not isinstance(data, (dict, list)) and data is not None:
        raise ConfigError(
            f"script {name}: a YAML script is a list of events or a mapping with 'events', "
            f"got a {type(data).__name__}"
        )
    title = category = None
    defaults: dict[str, Any] = {"tags": (), "category": None}
    if isinstance(data, dict):
        if "events" not in data:
            raise ConfigError(f"script {name}: a YAML mapping needs an 'events' list")
        extra = set(data) - {"events", "title", "category", "tags", "description"}
        if extra:
            raise ConfigError(
                f"script {name}: unknown key(s) {', '.join(sorted(map(str, extra)))}; "
                "valid: events, title, category, tags, description"
            )
        title = str(data["title"]) if data.get("title") is not None else None
        if data.get("category") is not None:
            category = normalise_label(data["category"])
        defaults = {"tags": normalise_labels(data.get("tags")), "category": category}
        data = data["events"]
    if data is None:
        data = []
    if not isinstance(data, list):
        raise ConfigError(f"script {name}: 'events' must be a list, got {type(data).__name__}")
    if len(data) > MAX_EVENTS:
        raise ConfigError(f"script {name} has {len(data)} events; the limit is {MAX_EVENTS}")
    steps = [_yaml_step(item, n, defaults) for n, item in enumerate(data, 1)]
    if not steps:
        raise ConfigError(f"script {name} has no events")
    return Script(steps=tuple(steps), title=title, category=category, source=source)


def parse_script(text: str, fmt: ScriptFormat = "auto", source: str | None = None) -> Script:
    """Parse a script from its text.

    Args:
        text: The script.
        fmt: ``text`` (one event per line), ``yaml``, or ``auto``: YAML when the text parses as a
            list of events or a mapping with ``events``, plain text otherwise.
        source: Where it came from, for messages and ``Script.source``.

    Returns:
        The script.

    Raises:
        ConfigError: empty, too long, malformed YAML, or bad event values.

    """
    name = source or "<text>"
    if len(text.encode("utf-8")) > MAX_SCRIPT_BYTES:
        raise ConfigError(f"script {name} is over the {MAX_SCRIPT_BYTES}-byte limit")
    if not text.strip():
        raise ConfigError(f"script {name} is empty")
    if fmt != "text":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            if fmt == "yaml":
                mark = getattr(exc, "problem_mark", None)
                at = f" at line {mark.line + 1}" if mark is not None else ""
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                raise ConfigError(f"script {name} is not valid YAML{at}: {problem}") from None
            data = None
        if fmt == "yaml" or isinstance(data, list) or (isinstance(data, dict) and "events" in data):
            return script_from_data(data, source)
    steps = _text_steps(text)
    if not steps:
        raise ConfigError(f"script {name} has no events (only blank or comment lines)")
    if len(steps) > MAX_EVENTS:
        raise ConfigError(f"script {name} has {len(steps)} events; the limit is {MAX_EVENTS}")
    try:
        return Script(steps=tuple(steps), source=source)
    except ValidationError as exc:  # pragma: no cover - steps are built valid above
        raise ConfigError(f"script {name}: {exc.errors()[0]['msg']}") from None


def load_script(path: str | Path, fmt: ScriptFormat = "auto") -> Script:
    """Read a script file: ``.yaml``/``.yml`` files are YAML, others are sniffed (``parse_script``).

    Raises:
        ConfigError: missing, unreadable, binary, over 1 MiB, empty, or malformed.

    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no such script file: {str(p)!r}")
    if p.stat().st_size > MAX_SCRIPT_BYTES:
        raise ConfigError(
            f"script {str(p)!r} is {p.stat().st_size} bytes; the limit is {MAX_SCRIPT_BYTES} "
            "bytes (1 MiB)"
        )
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read script {str(p)!r}: {exc.strerror}") from None
    text = _decode(raw, repr(str(p)))
    if fmt == "auto" and p.suffix.lower() in (".yaml", ".yml"):
        fmt = "yaml"
    script = parse_script(text, fmt, source=str(p))
    log.info("script %s: %d events", p, len(script.steps))
    return script
