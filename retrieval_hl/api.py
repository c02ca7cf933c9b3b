"""The Python API in three calls: ``index_video``, ``find_highlights``, ``export_highlights``.

>>> video = index_video("match.mp4")
>>> hl = find_highlights(video, prompt="the goals and the celebrations")
>>> export_highlights(hl, "out/match")
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from indexer.encoders import Encoder, create_encoder
from indexer.pipeline import IndexedVideo, embed_video, load_video, store_video
from indexer.probe import probe_video
from indexer.stores import VectorStore, open_store
from retrieval_hl.config import Settings, parse_budget
from retrieval_hl.dedup import apply_budget, order_segments, suppress_overlaps
from retrieval_hl.describe.base import Describer
from retrieval_hl.describe.request import RequestDescriber
from retrieval_hl.describe.vocab import VocabDescriber
from retrieval_hl.export import export_highlight
from retrieval_hl.merge import claim_slices, merge_adjacent
from retrieval_hl.models import Highlight
from retrieval_hl.scoring import retrieve

log = logging.getLogger(__name__)


def index_video(
    path: str | Path,
    *,
    settings: Settings | None = None,
    store: VectorStore | None = None,
    encoder: Encoder | None = None,
    video_id: str | None = None,
    tags: tuple[str, ...] = (),
    reindex: bool = False,
    progress: Callable[[int], None] | None = None,
) -> IndexedVideo:
    """Probe, decode, embed and store one video; reuse the stored slices if it is already indexed.

    Raises:
        VideoOpenError: the file is missing or not a decodable video.
        EncoderError: the encoder's weights cannot be had.
        StoreError: the store holds vectors of another encoder.

    """
    s = settings or Settings()
    info = probe_video(path, video_id)
    enc = encoder or create_encoder(s.encoder)
    db = store or open_store(s.store)
    if db.encoder_spec not in (None, enc.spec):
        from indexer.errors import StoreError

        raise StoreError(
            f"store {s.store!r} holds vectors of {db.encoder_spec}, not {enc.spec}; "
            "use another --store or the same --encoder"
        )
    if not reindex and (have := load_video(db, info)) is not None:
        log.info("%s already indexed (%d slices); reusing them", info.video_id, len(have.slices))
        return have
    video = embed_video(
        info,
        enc,
        window_s=s.window_s,
        sample_fps=s.sample_fps,
        snap_to_shots=s.snap_to_shots,
        reader=s.reader,
        tags=tags,
        progress=progress,
    )
    added = store_video(db, video)
    log.info("%s: %d new points in %s (%d in all)", info.video_id, added, db.name, db.count())
    return video


def find_highlights(
    video: IndexedVideo,
    *,
    prompt: str | None = None,
    describer: Describer | None = None,
    settings: Settings | None = None,
    encoder: Encoder | None = None,
) -> Highlight:
    """Describe, retrieve, merge and deduplicate: the highlights of an indexed video.

    The describer is ``describer`` if given, else the user's ``prompt``, else a VLM when
    ``settings.vlm_url`` is set, else the offline vocabulary.
    """
    s = settings or Settings()
    enc = encoder or create_encoder(video.encoder_spec or s.encoder)
    if describer is None:
        describer = _default_describer(s, prompt)
    descriptions = describer.describe(video, enc)
    log.info(
        "%d descriptions from %s: %s",
        len(descriptions),
        describer.name,
        "; ".join(f"[{d.priority}] {d.text}" for d in descriptions),
    )
    text_vectors = enc.encode_texts([d.text for d in descriptions])
    hits = retrieve(video.slices, video.vectors, descriptions, text_vectors)
    claims = claim_slices(hits, descriptions, s.threshold_z)
    segments = merge_adjacent(
        video.slices,
        hits,
        claims,
        descriptions,
        max_gap_s=s.max_gap_s,
        min_len_s=s.min_len_s,
        max_len_s=s.max_len_s,
    )
    segments = suppress_overlaps(segments, s.min_len_s)
    segments = apply_budget(segments, parse_budget(s.budget, video.info.duration_s), video.info.fps)
    segments = order_segments(segments, s.order)
    log.info(
        "%s: %d segments, %.1f s of %.1f s",
        video.info.video_id,
        len(segments),
        sum(x.duration_s for x in segments),
        video.info.duration_s,
    )
    return Highlight(
        video=video.info,
        encoder=enc.spec,
        descriptions=tuple(descriptions),
        segments=tuple(segments),
        slices=video.slices,
        settings=s.model_dump(mode="json"),
        order=s.order,
    )


def _default_describer(s: Settings, prompt: str | None) -> Describer:
    if prompt:
        return RequestDescriber(prompt, max_items=s.max_descriptions)
    if s.vlm_url:
        from retrieval_hl.describe.vlm import VLMDescriber

        return VLMDescriber(
            base_url=s.vlm_url, model=s.vlm_model or "default", max_items=s.max_descriptions
        )
    return VocabDescriber(domains=s.domains, max_items=s.max_descriptions)


def export_highlights(
    highlight: Highlight, out_dir: str | Path, *, settings: Settings | None = None
) -> dict[str, Path]:
    """Write ``highlights.json``, ``highlights.srt`` and ``highlight.mp4`` into ``out_dir``."""
    s = settings or Settings()
    return export_highlight(highlight, out_dir, render=s.render, crossfade_s=s.crossfade_s)
