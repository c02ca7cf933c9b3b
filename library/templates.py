"""Highlight scripts per category (``prompts/scripts/<category>.yaml``) and category queries.

A template is a script in the YAML format of ``library.script``: the events a good highlight of
that kind of video shows, each with a priority (1 = must have) and a typical duration. It serves
twice: as a script for ``rhl assemble``, and, through :func:`category_queries`, as the text
queries of ``rhl highlight --category`` together with image queries taken from the library's own
clips of that category (past highlights are examples of what to look for).
"""

from __future__ import annotations

import logging

import numpy as np

import prompts
from library.catalog import Library
from library.models import Script
from library.script import normalise_label, script_from_data
from retrieval_hl.models import Description
from rhl_common.errors import ConfigError

log = logging.getLogger(__name__)

TEMPLATE_KIND = "scripts"


def list_templates() -> list[str]:
    """Sorted categories that have a script template."""
    return sorted(prompts.load_yaml_dir(TEMPLATE_KIND))


def load_script_template(category: str) -> Script:
    """The script template of ``category``.

    Raises:
        ConfigError: no template for that category (the message lists those there are), or a
            malformed template file.

    """
    name = normalise_label(category)
    files = prompts.load_yaml_dir(TEMPLATE_KIND)
    if name not in files:
        raise ConfigError(
            f"no script template for category {category!r}; choose {', '.join(sorted(files))}"
        )
    script = script_from_data(files[name], source=f"prompts/{TEMPLATE_KIND}/{name}.yaml")
    return script.model_copy(update={"category": name})


def category_queries(
    category: str, library: Library | None = None
) -> tuple[list[Description], np.ndarray]:
    """Text and image queries for highlighting a video of ``category``.

    Args:
        category: e.g. ``basketball``.
        library: Where to take image queries from: the clip vectors of its clips of this
            category. ``None`` for text only.

    Returns:
        The template's events as descriptions (``source="template"``, the event's priority,
        ``domain=category``), most important first, and the image query vectors, float32
        (n_clips, dim) in the library's embedding space (0 rows when there are none). The
        descriptions are empty when there is no template but the library has clips of the
        category.

    Raises:
        ConfigError: neither a template nor library clips exist for ``category``.

    """
    name = normalise_label(category)
    clips = library.list(category=name) if library is not None else []
    if name in list_templates():
        script = load_script_template(name)
        descriptions = [
            Description(text=s.text, priority=s.priority, source="template", domain=name)
            for s in sorted(script.steps, key=lambda s: s.priority)
        ]
    elif clips:
        log.info("no script template for %r; using %d library clips only", name, len(clips))
        descriptions = []
    else:
        where = f" nor clips in library {library.name}" if library is not None else ""
        raise ConfigError(
            f"category {category!r} has no script template{where}; templates: "
            f"{', '.join(list_templates())}"
        )
    if library is None:
        return descriptions, np.zeros((0, 0), dtype=np.float32)
    searchable = [c.clip_id for c in clips if library.store.count(c.clip_id)]
    vectors = library.clip_vectors(searchable)
    log.info("category %s: %d text queries, %d image queries from the library",
             name, len(descriptions), len(vectors))
    return descriptions, vectors
