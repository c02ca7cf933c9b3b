"""The ``Describer`` interface: something that says, in prioritized words, what is worth keeping."""

from __future__ import annotations

from typing import Protocol

from indexer.encoders import Encoder
from indexer.pipeline import IndexedVideo
from retrieval_hl.models import Description


class Describer(Protocol):
    """Writes prioritized ``Description``s of what is worth keeping in one video."""

    name: str

    def describe(self, video: IndexedVideo, encoder: Encoder) -> list[Description]:
        """Descriptions for ``video``, most important first; an empty list when nothing fits."""
        ...


class StaticDescriber:
    """Gives the same descriptions for any video: ones already written (e.g. by a VLM)."""

    name = "static"

    def __init__(self, descriptions: list[Description], name: str = "static") -> None:
        self.descriptions = list(descriptions)
        self.name = name

    def describe(self, video: IndexedVideo, encoder: Encoder) -> list[Description]:
        """See ``Describer.describe``."""
        return list(self.descriptions)
