"""Prompt templates, vocabularies and highlight scripts: data files and one small loader."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

ROOT = Path(__file__).parent


def load_text(name: str) -> str:
    """A text template by relative path, e.g. ``vlm/system.txt``.

    Raises:
        FileNotFoundError: no such template (the message lists the ones there are).

    """
    path = ROOT / name
    if not path.is_file():
        have = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.txt"))
        raise FileNotFoundError(f"no prompt template {name!r}; have {', '.join(have)}")
    return path.read_text(encoding="utf-8")


@functools.cache
def load_yaml_dir(kind: str) -> dict[str, dict]:
    """Every ``<kind>/*.yaml`` file parsed, keyed by file stem (e.g. ``vocab`` -> domains)."""
    return {
        p.stem: yaml.safe_load(p.read_text(encoding="utf-8"))
        for p in sorted((ROOT / kind).glob("*.yaml"))
    }
