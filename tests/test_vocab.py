"""Highlight vocabularies in prompts/vocab: schema, priorities, bilingual phrasings."""

from __future__ import annotations

import re

import pytest

from prompts import load_yaml_dir

REQUIRED_DOMAINS = {
    "sports",
    "vlog_travel",
    "performance_event",
    "lecture_meeting",
    "pets_animals",
    "games_screen",
}
CJK = re.compile(r"[\u4e00-\u9fff]")
VOCAB = load_yaml_dir("vocab")


def test_required_domains_present():
    assert len(VOCAB) >= 6
    assert REQUIRED_DOMAINS <= set(VOCAB)


@pytest.mark.parametrize("stem", sorted(VOCAB))
def test_domain_schema(stem):
    data = VOCAB[stem]
    assert isinstance(data, dict)
    assert set(data) == {"domain", "name_en", "name_zh", "items"}
    assert data["domain"] == stem
    assert isinstance(data["name_en"], str) and data["name_en"].strip()
    assert isinstance(data["name_zh"], str) and CJK.search(data["name_zh"])
    items = data["items"]
    assert isinstance(items, list) and 12 <= len(items) <= 20
    for item in items:
        assert set(item) == {"en", "zh", "priority"}, item
        assert isinstance(item["en"], str) and item["en"].strip() == item["en"] != ""
        assert isinstance(item["zh"], str) and item["zh"].strip() == item["zh"] != ""
        assert CJK.search(item["zh"]), item
        assert not CJK.search(item["en"]), item
        assert type(item["priority"]) is int and 1 <= item["priority"] <= 3, item
    en = [item["en"].casefold() for item in items]
    assert len(en) == len(set(en)), "duplicate English phrasings"
    zh = [item["zh"] for item in items]
    assert len(zh) == len(set(zh)), "duplicate Chinese phrasings"
    assert {item["priority"] for item in items} == {1, 2, 3}, "use the whole priority range"
