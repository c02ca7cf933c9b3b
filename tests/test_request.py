"""Natural-language requests, English and Chinese: what to look for, and how much to keep."""

from __future__ import annotations

import pytest

from retrieval_hl.config import Settings, load_settings
from retrieval_hl.describe.request import parse_request
from retrieval_hl.pipeline import apply_request

# (request, content parts, vague, total budget s, clip count, longest clip s)
CORPUS = [
    ("just the best bits, under 20 seconds", (), True, 20.0, None, None),
    (
        "the goals and the celebrations",
        ("the goals and the celebrations",),
        False,
        None,
        None,
        None,
    ),
    ("3 clips of the dog", ("the dog",), False, None, 3, None),
    ("give me the highlights", (), True, None, None, None),
    ("make a 30-second highlight reel of the kids", ("the kids",), False, 30.0, None, None),
    ("top 5 moments, 10 seconds each", (), True, None, 5, 10.0),
    (
        "Find the part where he lands the kickflip",
        ("he lands the kickflip",),
        False,
        None,
        None,
        None,
    ),
    ("show me the moments where the dog jumps", ("the dog jumps",), False, None, None, None),
    ("I want a quick recap", (), True, None, None, None),
    ("cut the boring parts out and keep it under 1 minute", (), True, 60.0, None, None),
    ("two clips under a minute", (), True, 60.0, 2, None),
    ("half a minute of the best action", (), True, 30.0, None, None),
    (
        "the bride walking down the aisle, then the first kiss",
        ("the bride walking down the aisle", "the first kiss"),
        False,
        None,
        None,
        None,
    ),
    (
        "the cake cutting; the speeches",
        ("the cake cutting", "the speeches"),
        False,
        None,
        None,
        None,
    ),
    ("anything funny", (), True, None, None, None),
    ("the crash at the end", ("the crash at the end",), False, None, None, None),
    (
        "3 short clips of the surfing, no more than 45 seconds total",
        ("the surfing",),
        False,
        45.0,
        3,
        None,
    ),
    ("best 4 shots of the sunset, 8 s each", ("the sunset",), False, None, 4, 8.0),
    (
        "the drone shot over the mountains",
        ("the drone shot over the mountains",),
        False,
        None,
        None,
        None,
    ),
    ("just the exciting stuff please", (), True, None, None, None),
    ("a couple of clips of the cat", ("the cat",), False, None, 2, None),
    ("keep it to 90 seconds", (), True, 90.0, None, None),
    ("every goal, max 2 minutes", ("every goal",), False, 120.0, None, None),
    ("cool moments", (), True, None, None, None),
    ("the part where everyone cheers", ("everyone cheers",), False, None, None, None),
    ("把精彩的部分剪出来", (), True, None, None, None),
    ("帮我剪个集锦", (), True, None, None, None),
    ("30秒以内", (), True, 30.0, None, None),
    ("剪三段", (), True, None, 3, None),
    ("挑几个好玩的镜头", (), True, None, None, None),
    ("进球和庆祝", ("进球和庆祝",), False, None, None, None),
    ("小狗接飞盘的瞬间", ("小狗接飞盘",), False, None, None, None),
    ("一分钟以内的精彩集锦", (), True, 60.0, None, None),
    ("每段5秒，剪三段小狗玩球", ("小狗玩球",), False, None, 3, 5.0),
    ("找出新娘入场的片段", ("新娘入场",), False, None, None, None),
    ("先是切蛋糕然后是吹蜡烛", ("切蛋糕", "吹蜡烛"), False, None, None, None),
    ("把婚礼上最感人的部分剪成一分钟", ("婚礼上最感人",), False, 60.0, None, None),
    ("给我剪两个最搞笑的片段", (), True, None, 2, None),
    ("高光时刻，不超过15秒", (), True, 15.0, None, None),
    ("猫咪跳上桌子", ("猫咪跳上桌子",), False, None, None, None),
    ("剪一个20秒的短视频", (), True, 20.0, None, None),
    ("前五个精彩瞬间", (), True, None, 5, None),
    ("烟花绽放的画面，每段不超过10秒", ("烟花绽放",), False, None, None, 10.0),
    ("帮我把孩子吹蜡烛的镜头找出来", ("孩子吹蜡烛",), False, None, None, None),
]


def test_corpus_is_big_and_bilingual():
    zh = [c for c in CORPUS if any("\u4e00" <= ch <= "\u9fff" for ch in c[0])]
    assert len(CORPUS) >= 40 and 15 <= len(zh) <= len(CORPUS) - 15


@pytest.mark.parametrize(("text", "parts", "vague", "budget", "count", "clip_len"), CORPUS)
def test_parse_request(text, parts, vague, budget, count, clip_len):
    r = parse_request(text)
    assert (r.parts, r.vague, r.budget_s, r.max_clips, r.clip_len_s) == (
        parts,
        vague,
        budget,
        count,
        clip_len,
    )
    assert r.query == (text if parts else None)  # vague requests never become literal queries


def test_request_becomes_settings_unless_set_explicitly():
    s = apply_request(Settings(), parse_request("3 clips of the dog, under 20 seconds, 5 s each"))
    assert (s.budget, s.max_clips, s.max_len_s, s.min_clip_s) == ("20s", 3, 5.0, 3.0)
    explicit = load_settings(budget="60s", max_clips=2)
    s = apply_request(explicit, parse_request("3 clips, under 20 seconds"))
    assert (s.budget, s.max_clips) == ("60s", 2)
    assert apply_request(Settings(), None) == Settings()
