"""The user's own words as descriptions: vague or precise, one event or several, en/zh."""

from __future__ import annotations

import logging
import re

from indexer.encoders import MULTILINGUAL_ENCODER, Encoder
from indexer.pipeline import IndexedVideo
from retrieval_hl.describe.vocab import VocabDescriber, load_vocabulary
from retrieval_hl.models import Description
from rhl_common.models import Frozen

log = logging.getLogger(__name__)

_SPLIT = re.compile(r"[\n;；,，、。.!！?？]+|\s+(?:and then|then)\s+|然后|接着")
_CJK = re.compile(r"[\u3400-\u9fff]")
# Requests that name no content: they get the vocabulary's picks (or the VLM's judgement).
_VAGUE = re.compile(
    r"\b(highlights?|best|fun|funny|interesting|cool|exciting|good|great|nice|awesome|epic|"
    r"something|anything|moments?|parts?|bits?|shots?|stuff|things?|recap|summary|montage|"
    r"reel|supercut|memorable|important|key|top|action|boring|dull|unnecessary|"
    r"worth\s+(?:watching|keeping))\b|"
    r"精彩|好玩|有趣|有意思|高光|亮点|搞笑|好看|集锦|精华|最佳|重要|值得|关键",
    re.IGNORECASE,
)
_FILLER = re.compile(
    r"\b(the|a|an|some|few|any|of|me|show|find|give|pick|get|please|all|most|video|videos|"
    r"clips?|just|only|make|cut|create|edit|put|together|into|out|from|this|that|it|its|my|"
    r"can|could|would|you|i|want|need|like|keep|with|and|for|to|in|is|are|be|bunch|couple|"
    r"short|quick|little|footage|compile|grab|whatever|really|very|super|version|one|ones)\b|"
    r"挑|几个|一些|镜头|片段|找|给我|请|的|视频|部分|把|剪|出来|帮我|帮忙|个|一下|做|剪辑|弄|成|"
    r"只要|就|吧|呢|啊|最|些|里|中|所有|都|给|我|要|来|段|出|一个|点|内容|素材|时刻|瞬间|画面|"
    r"短视频",
    re.IGNORECASE,
)

# --- durations and counts said in words ------------------------------------------------------

_ZH_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}  # fmt: skip
_EN_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "forty": 40, "forty-five": 45, "fifty": 50, "sixty": 60, "ninety": 90,
    "a couple of": 2, "a couple": 2, "couple of": 2, "half a": 0.5, "a half": 0.5,
}  # fmt: skip
_NUM_EN = r"(\d+(?:\.\d+)?|" + "|".join(
    sorted((re.escape(k) for k in _EN_NUMBERS), key=len, reverse=True)
) + r")"
_NUM_COUNT = r"(\d+|" + "|".join(
    sorted((re.escape(k) for k, v in _EN_NUMBERS.items() if v >= 2), key=len, reverse=True)
) + r")"
_NUM_ZH = r"(\d+(?:\.\d+)?|[零一二两三四五六七八九十百半]+)"
_UNIT_EN = r"(seconds?|secs?|s|minutes?|mins?|m)\b"
_COUNTABLE_EN = r"(?:clips?|segments?|moments?|highlights?|shots?|parts?|bits?|scenes?|cuts?)"
_LIMIT_EN = (
    r"(?:under|within|below|less\s+than|no\s+(?:more|longer)\s+than|not\s+(?:more|longer)\s+"
    r"than|at\s+most|max(?:imum)?|up\s+to|shorter\s+than|in|of|about|around|total(?:ling)?|"
    r"keep\s+it\s+(?:under|to)|fit\s+(?:in|into))"
)
_PER_CLIP_EN = re.compile(
    rf"\b(?:each|every|per)\s+(?:clip|segment|one|shot|part)?\s*(?:{_LIMIT_EN}\s+)?"
    rf"{_NUM_EN}[\s-]*{_UNIT_EN}(?:\s+(?:long|max))?"
    rf"|\b{_NUM_EN}[\s-]*{_UNIT_EN}\s+(?:each|apiece|per\s+(?:clip|segment|shot))",
    re.IGNORECASE,
)
_TOTAL_EN = re.compile(
    rf"\b(?:{_LIMIT_EN}\s+)?{_NUM_EN}[\s-]*{_UNIT_EN}(?:\s+(?:long|max|or\s+(?:less|so)|"
    rf"total|in\s+total|tops))?",
    re.IGNORECASE,
)
_COUNT_EN = re.compile(
    rf"\b(?:top|best|only|just)?\s*{_NUM_COUNT}\s+(?:(?:short|best|good|great|top|key|"
    rf"separate|quick|highlight|different)\s+)*{_COUNTABLE_EN}\b|\btop\s+{_NUM_COUNT}\b",
    re.IGNORECASE,
)
_PER_CLIP_ZH = re.compile(
    rf"每(?:段|个|条|个片段|个镜头)?(?:都)?(?:不超过|不要超过|控制在|在)?{_NUM_ZH}\s*(秒|分钟|分)(?:钟)?"
    rf"(?:以内|之内|内|左右)?"
)
_TOTAL_ZH = re.compile(
    rf"(?:总共|一共|总长|总时长|时长)?(?:不超过|不要超过|控制在|压缩到|剪成|剪到|做成|在)?"
    rf"{_NUM_ZH}\s*(秒|分钟|分)(?:钟)?(?:以内|之内|内|左右|以下)?"
)
_COUNT_ZH = re.compile(
    rf"(?:前|剪|挑|选|找|要|剪成|分成|做)?{_NUM_ZH}\s*"
    r"(?:(?:段|条|处)|个[^，,。；;\s\d]{0,6}?(?:片段|镜头|段落|画面|瞬间|时刻|集锦|高光|亮点))"
)


def _number(word: str) -> float | None:
    """A number written in digits, English words or Chinese numerals."""
    w = word.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", w):
        return float(w)
    if w in _EN_NUMBERS:
        return float(_EN_NUMBERS[w])
    if w == "半":
        return 0.5
    if not w or any(c not in _ZH_DIGITS and c not in "十百半" for c in w):
        return None
    total, current = 0, 0
    for c in w.rstrip("半"):
        if c == "百":
            total += (current or 1) * 100
            current = 0
        elif c == "十":
            total += (current or 1) * 10
            current = 0
        else:
            current = _ZH_DIGITS[c]
    value = float(total + current)
    return value + 0.5 if w.endswith("半") and len(w) > 1 else value


def _seconds(value: float, unit: str) -> float:
    return value * 60 if unit.lower().startswith(("m", "分")) else value


class ParsedRequest(Frozen):
    """A request split into what to look for and how much to keep.

    ``parts`` name content (each one a query); ``vague`` is true when some part only asks for
    "the good bits" (answered by the vocabulary or the VLM, never as a literal query);
    ``budget_s`` (total length), ``max_clips`` and ``clip_len_s`` (longest clip) come from
    phrases such as "under 20 seconds", "3 clips", "5 seconds each", "30秒以内", "剪三段".
    """

    text: str
    parts: tuple[str, ...] = ()
    vague: bool = False
    budget_s: float | None = None
    max_clips: int | None = None
    clip_len_s: float | None = None

    @property
    def query(self) -> str | None:
        """The request when it names content, else ``None`` (a vague or amounts-only request)."""
        return self.text if self.parts else None


def parse_request(text: str) -> ParsedRequest:
    """Read durations and counts out of ``text``, then split the rest into content parts and
    vague parts. English and Chinese.
    """
    rest = text
    clip_len = budget = None
    count = None
    for pattern in (_PER_CLIP_EN, _PER_CLIP_ZH):
        m = pattern.search(rest)
        if m:
            groups = [g for g in m.groups() if g]
            value = _number(groups[0])
            if value is not None:
                clip_len = _seconds(value, groups[1])
                rest = rest[: m.start()] + " " + rest[m.end():]
    for pattern in (_TOTAL_EN, _TOTAL_ZH):
        m = pattern.search(rest)
        if m:
            value = _number(m.group(1))
            if value is not None and value > 0:
                budget = _seconds(value, m.group(2))
                rest = rest[: m.start()] + " " + rest[m.end():]
    for pattern in (_COUNT_EN, _COUNT_ZH):
        m = pattern.search(rest)
        if m:
            word = next(g for g in m.groups() if g)
            value = _number(word)
            if value is not None and value >= 1 and value == int(value):
                count = int(value)
                rest = rest[: m.start()] + " " + rest[m.end():]
    parts, vague = [], False
    for part in split_request(rest):
        if is_vague(part):
            vague = True
        elif re.search(r"\w", _FILLER.sub(" ", part)):
            parts.append(_clean(part))
    return ParsedRequest(text=text, parts=tuple(parts), vague=vague or not parts,
                         budget_s=budget, max_clips=count, clip_len_s=clip_len)


_LEAD_WORDS = frozenset(
    "highlight highlights best fun funny interesting cool exciting good great nice awesome epic "
    "moment moments part parts bit bits shot shots stuff thing things recap summary montage reel "
    "supercut memorable key top action clip clips of from with showing featuring about where "
    "when on just only me give show find pick get please cut make a an the all some".split()
)
_ARTICLES = frozenset({"a", "an", "the"})


def _clean(part: str) -> str:
    """A content part without the vague words and connectors in front ("a highlight reel of the
    kids" -> "the kids") and the "的片段" behind.
    """
    words = part.split()
    k, last = 0, ""
    while k < len(words) - 1 and words[k].lower() in _LEAD_WORDS:
        last = words[k]
        k += 1
    if last.lower() in _ARTICLES:
        k -= 1
    out = " ".join(words[k:])
    out = re.sub(r"^(?:的|把|给我|帮我|我要|找出|找|挑出|挑|剪出|剪|先是|再是|最后是|先|再|是)+",
                 "", out)
    out = re.sub(r"(?:找出来|剪出来|挑出来|出来|找到)$", "", out)
    out = re.sub(r"(?:的)?(?:片段|镜头|画面|部分|瞬间|时刻)$", "", out).strip()
    return out or part.strip()


def split_request(text: str) -> list[str]:
    """The request cut into events at line breaks, semicolons, commas and 'then'."""
    return [p.strip(" .。!！?？") for p in _SPLIT.split(text) if p and p.strip(" .。!！?？")]


def is_vague(part: str) -> bool:
    """True when ``part`` only asks for 'good bits' without naming any content."""
    rest = _FILLER.sub(" ", _VAGUE.sub(" ", part))
    return bool(_VAGUE.search(part)) and not re.search(r"\w", rest)


def _bigrams(text: str) -> set[str]:
    chars = "".join(_CJK.findall(text))
    return {chars[i : i + 2] for i in range(len(chars) - 1)}


class RequestDescriber:
    """Turns ``request`` into descriptions, in the order the user gave them (earlier = higher
    priority). Vague parts are answered with the vocabulary's best items for this video.

    With an English-only encoder, Chinese parts are also matched to the vocabulary's Chinese
    phrasings, and the matching items' English phrasings join as descriptions.
    """

    name = "request"

    def __init__(self, request: str, max_items: int = 5) -> None:
        self.request = parse_request(request)
        self.max_items = max_items

    def describe(self, video: IndexedVideo, encoder: Encoder) -> list[Description]:
        """See ``Describer.describe``."""
        out: list[Description] = []
        vague = self.request.vague
        for n, part in enumerate(self.request.parts):
            prio = 1 if n == 0 else 2
            out.append(Description(text=part, priority=prio, source="user"))
            if _CJK.search(part) and not encoder.multilingual:
                log.warning(
                    "request %r is not English but encoder %s is English-only; "
                    "use --encoder %s for multilingual queries",
                    part,
                    encoder.spec,
                    MULTILINGUAL_ENCODER,
                )
                out.extend(self._vocab_translations(part, prio))
        if vague or not out:
            picks = VocabDescriber(max_items=self.max_items).describe(video, encoder)
            out.extend(p.model_copy(update={"priority": min(3, p.priority + 1)}) for p in picks)
        return out

    @staticmethod
    def _vocab_translations(part: str, priority: int) -> list[Description]:
        grams = _bigrams(part)
        found = []
        for it in load_vocabulary():
            shared = grams & _bigrams(it.zh)
            if len(shared) >= 2 or (shared and len(_bigrams(it.zh)) <= 2):
                found.append(
                    Description(text=it.en, priority=priority, source="user", domain=it.domain)
                )
        return found[:3]
