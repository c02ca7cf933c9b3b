"""The user's own words as descriptions: vague or precise, one event or several, en/zh."""

from __future__ import annotations

import logging
import re

from indexer.encoders import MULTILINGUAL_ENCODER, Encoder
from indexer.pipeline import IndexedVideo
from retrieval_hl.describe.vocab import VocabDescriber, load_vocabulary
from retrieval_hl.models import Description

log = logging.getLogger(__name__)

_SPLIT = re.compile(r"[\n;；,，、]+|\s+(?:and then|then)\s+|然后|接着")
_CJK = re.compile(r"[\u3400-\u9fff]")
# Requests that name no content: they get the vocabulary's picks added.
_VAGUE = re.compile(
    r"\b(highlights?|best|fun|funny|interesting|cool|exciting|good|great|nice|awesome|"
    r"something|anything|moments?|parts?|bits?|shots?)\b|精彩|好玩|有趣|有意思|高光|亮点|搞笑|好看",
    re.IGNORECASE,
)
_FILLER = re.compile(
    r"\b(the|a|an|some|few|any|of|me|show|find|give|pick|get|please|all|most|video|clips?)\b|"
    r"挑|几个|一些|镜头|片段|找|给我|请|的|视频|部分",
    re.IGNORECASE,
)


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
        self.parts = split_request(request)
        self.max_items = max_items

    def describe(self, video: IndexedVideo, encoder: Encoder) -> list[Description]:
        """See ``Describer.describe``."""
        out: list[Description] = []
        vague = False
        for n, part in enumerate(self.parts):
            if is_vague(part):
                vague = True
                continue
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
