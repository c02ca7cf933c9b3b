"""The offline default describer: a highlight vocabulary ranked by what the video actually shows."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import prompts
from indexer.encoders import Encoder
from indexer.pipeline import IndexedVideo
from retrieval_hl.models import Description
from rhl_common.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VocabItem:
    """One vocabulary entry."""

    domain: str
    en: str
    zh: str
    priority: int


def load_vocabulary(domains: Sequence[str] = ()) -> list[VocabItem]:
    """Items of the named domains (all when empty) from ``prompts/vocab/*.yaml``.

    Raises:
        ConfigError: a named domain does not exist (the message lists those that do).

    """
    files = prompts.load_yaml_dir("vocab")
    unknown = [d for d in domains if d not in files]
    if unknown:
        raise ConfigError(f"unknown vocabulary domain {unknown[0]!r}; choose {', '.join(files)}")
    items = [
        VocabItem(name, it["en"], it["zh"], int(it["priority"]))
        for name, data in files.items()
        if not domains or name in domains
        for it in data["items"]
    ]
    if not items:
        raise ConfigError(f"no vocabulary items found in {prompts.ROOT / 'vocab'}")
    return items


def item_evidence(
    slice_vectors: np.ndarray, item_vectors: np.ndarray, top_frac: float = 0.1
) -> np.ndarray:
    """How strongly the video shows each item: z-score across items of the mean cosine of the
    item's best ``top_frac`` slices. Comparing items with each other cancels the per-text offset
    that raw CLIP cosines carry only partly, so the ranking, not the value, is what is used.
    """
    sims = slice_vectors @ item_vectors.T  # slices x items
    k = max(1, int(round(top_frac * len(slice_vectors))))
    top = -np.sort(-sims, axis=0)[:k].mean(axis=0) - np.median(sims, axis=0)
    return (top - top.mean()) / max(float(top.std()), 1e-6)


class VocabDescriber:
    """Ranks vocabulary items against the video's slices and keeps the best domain's top items."""

    name = "vocab"

    def __init__(self, domains: Sequence[str] = (), max_items: int = 5) -> None:
        self.items = load_vocabulary(domains)
        self.max_items = max_items

    def describe(self, video: IndexedVideo, encoder: Encoder) -> list[Description]:
        """See ``Describer.describe``."""
        if len(video.slices) == 0:
            return []
        vectors = encoder.encode_texts([it.en for it in self.items])
        ev = item_evidence(video.vectors, vectors)
        domains = sorted({it.domain for it in self.items})
        dom_ev = {
            d: float(
                np.mean(
                    sorted(
                        (ev[i] for i, it in enumerate(self.items) if it.domain == d), reverse=True
                    )[:3]
                )
            )
            for d in domains
        }
        best_domain = max(dom_ev, key=dom_ev.get)
        log.info(
            "vocabulary: best domain %s (%s)",
            best_domain,
            ", ".join(f"{d} {v:.2f}" for d, v in sorted(dom_ev.items(), key=lambda x: -x[1])),
        )
        picks = sorted(
            (i for i, it in enumerate(self.items) if it.domain == best_domain),
            key=lambda i: -ev[i],
        )[: self.max_items]
        return [
            Description(
                text=self.items[i].en,
                priority=self.items[i].priority,
                source="vocab",
                domain=best_domain,
            )
            for i in picks
        ]
