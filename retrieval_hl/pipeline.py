"""The Python API: ``index_video``, ``find_highlights``, ``export_highlights``, and
``highlight_video`` which does all of it for one file, with or without a semantic encoder.

    >>> video = index_video("match.mp4")
    >>> hl = find_highlights(video, prompt="the goals and the celebrations")
    >>> export_highlights(hl, "out/match")

    >>> hl = highlight_video("match.mp4", ratio_wh=(9, 16))  # query-free if no weights here
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexer.decode import FrameSink
from indexer.encoders import Encoder, create_encoder
from indexer.models import Slice, VideoInfo
from indexer.pipeline import IndexedVideo, embed_video, load_video, store_video
from indexer.probe import probe_video
from indexer.slicing import make_slices
from indexer.stores import VectorStore, open_store
from retrieval_hl.config import Settings, parse_budget, parse_wh
from retrieval_hl.describe.base import Describer, StaticDescriber
from retrieval_hl.describe.request import ParsedRequest, RequestDescriber, parse_request
from retrieval_hl.describe.vocab import VocabDescriber
from retrieval_hl.executors import Executor, run_files
from retrieval_hl.models import Description, Highlight, Hit, ScoreTrack, Segment
from retrieval_hl.render.export import export_highlight
from retrieval_hl.select.dedup import (
    apply_budget,
    extend_to_min_len,
    order_segments,
    suppress_overlaps,
)
from retrieval_hl.select.merge import claim_slices, merge_adjacent
from retrieval_hl.select.ranges import (
    clip_to_ranges,
    fill_missed,
    limit_count,
    range_segments,
    steer_hits,
)
from retrieval_hl.select.scores import retrieve
from rhl_common.errors import ConfigError, EncoderError, StoreError, VLMResponseError
from rhl_common.paths import cache_dir

if TYPE_CHECKING:
    from retrieval_hl.describe.vlm import VLMAnswer, VLMDescriber

if TYPE_CHECKING:
    from retrieval_hl.signals.meter import SliceSignals

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
    sinks: Sequence[FrameSink] = (),
    speech: bool = True,
) -> IndexedVideo:
    """Probe, decode, embed and store one video; reuse the stored slices if it is already indexed.
    With ``speech`` (and ``settings.speech`` not off) what is said is stored too, on the same
    slices, in the store's speech collection.

    Raises:
        VideoOpenError: the file is missing or not a decodable video.
        EncoderError: the encoder's weights cannot be had.
        StoreError: the store holds vectors of another encoder.
    """
    s = settings or Settings()
    info = probe_video(path, video_id)
    enc = encoder or create_encoder(s.encoder)
    db = store or open_store(s.store, **s.store_options())
    if db.encoder_spec not in (None, enc.spec):
        raise StoreError(
            f"store {s.store!r} holds vectors of {db.encoder_spec}, not {enc.spec}; "
            "use another --store or the same --encoder"
        )
    if not reindex and (have := load_video(db, info)) is not None:
        log.info("%s already indexed (%d slices); reusing them", info.video_id, len(have.slices))
        if speech:
            _index_speech(have, s, db if store is None else None)
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
        sinks=sinks,
    )
    added = store_video(db, video)
    log.info("%s: %d new points in %s (%d in all)", info.video_id, added, db.name, db.count())
    # Go on with the vectors as stored (each back-end normalises them its own way, which can
    # move the last bit), so a rerun that loads them (``load_video``) scores exactly as this run.
    video = dataclasses.replace(video, vectors=db.get_video(info.video_id)[1])
    if speech:
        _index_speech(video, s, db if store is None else None)
    return video


def _index_speech(video: IndexedVideo, s: Settings, own_store: VectorStore | None) -> None:
    from retrieval_hl.speech.channel import open_speech_channel

    if own_store is not None:
        own_store.close()  # a Qdrant folder admits one client: free it for the speech collection
    open_speech_channel(video.info, video.slices, s)


def default_describer(settings: Settings, prompt: str | None) -> Describer:
    """The user's ``prompt`` if any, else a VLM when ``settings.vlm_url`` is set, else the
    offline vocabulary.
    """
    if prompt:
        return RequestDescriber(prompt, max_items=settings.max_descriptions)
    if settings.vlm_url:
        return vlm_describer(settings)
    return VocabDescriber(domains=settings.domains, max_items=settings.max_descriptions)


def vlm_describer(settings: Settings, request: str | None = None) -> VLMDescriber:
    """The chunked VLM describer that ``settings`` configure, told the user's ``request``.

    Raises:
        ConfigError: no ``vlm_url``, or a URL that is not http(s).
    """
    from retrieval_hl.describe.vlm import VLMDescriber
    from retrieval_hl.describe.vlm_cache import ResponseCache

    if not settings.vlm_url:
        raise ConfigError(f"method {settings.method!r} needs a VLM: give --vlm-url")
    key = settings.vlm_api_key
    return VLMDescriber(
        base_url=settings.vlm_url,
        model=settings.vlm_model or "default",
        api_key=key.get_secret_value() if key is not None else None,
        frames_per_chunk=settings.vlm_frames_per_chunk,
        chunk_s=settings.vlm_chunk_s,
        overlap_s=settings.vlm_overlap_s,
        concurrency=settings.vlm_concurrency,
        max_items=settings.max_descriptions,
        timeout_s=settings.vlm_timeout_s,
        retries=settings.vlm_retries,
        max_tokens=settings.vlm_max_tokens,
        max_len_s=settings.max_len_s,
        user_request=request,
        strict=settings.vlm_strict,
        cache=ResponseCache(cache_dir("vlm")) if settings.vlm_cache else None,
    )


def _describe(
    video: IndexedVideo,
    describer: Describer,
    enc: Encoder,
    extra_descriptions: Sequence[Description] = (),
    image_queries: Sequence[tuple[Description, np.ndarray]] = (),
) -> tuple[list[Description], np.ndarray, list[Hit]]:
    descriptions = [*describer.describe(video, enc), *extra_descriptions]
    log.info(
        "%d descriptions from %s%s: %s",
        len(descriptions),
        describer.name,
        " and extra queries" if extra_descriptions or image_queries else "",
        "; ".join(f"[{d.priority}] {d.text}" for d in descriptions),
    )
    vectors = enc.encode_texts([d.text for d in descriptions])
    if image_queries:
        descriptions += [d for d, _ in image_queries]
        vectors = np.vstack([vectors, np.stack([v for _, v in image_queries])])
    return descriptions, vectors, retrieve(video.slices, video.vectors, descriptions, vectors)


def _segments_from_hits(
    slices: Sequence[Slice],
    hits: Sequence[Hit],
    descriptions: Sequence[Description],
    s: Settings,
    info: VideoInfo,
    fill_from_hints: bool = False,
) -> list[Segment]:
    claims = claim_slices(hits, descriptions, s.threshold_z)
    segments = merge_adjacent(
        slices,
        hits,
        claims,
        descriptions,
        max_gap_s=s.max_gap_s,
        min_len_s=s.min_len_s,
        max_len_s=s.max_len_s,
    )
    if fill_from_hints:  # hybrid: trimmed to the VLM's ranges, which fill what retrieval missed
        segments = clip_to_ranges(segments, descriptions, info)
        segments = fill_missed(segments, descriptions, info, score_norm=s.threshold_z)
    segments = suppress_overlaps(segments, s.min_len_s)
    segments = apply_budget(segments, parse_budget(s.budget, info.duration_s), info.fps)
    return order_segments(segments, s.order)


def find_highlights(
    video: IndexedVideo,
    *,
    prompt: str | None = None,
    describer: Describer | None = None,
    settings: Settings | None = None,
    encoder: Encoder | None = None,
) -> Highlight:
    """Describe, retrieve, merge and deduplicate: the highlights of an indexed video, by meaning.

    The describer is ``describer`` if given, else ``default_describer(settings, prompt)``. What
    is said (``settings.speech``) is matched too, as ``highlight_video`` does: each description
    is scored by both channels, fused per slice (``retrieval_hl.speech.hybrid``), no segment
    starts or ends mid-word, and the transcript is kept (captions).

    Raises:
        EncoderError: the encoder's weights cannot be had.
        SpeechError: ``speech="on"`` and the whisper model is unavailable.
    """
    from retrieval_hl.speech.channel import open_speech_channel
    from retrieval_hl.speech.hybrid import fuse_hits

    s = settings or Settings()
    enc = encoder or create_encoder(video.encoder_spec or s.encoder)
    descriptions, _, hits = _describe(video, describer or default_describer(s, prompt), enc)
    speech = open_speech_channel(video.info, video.slices, s)
    if speech is not None:
        hits = fuse_hits(hits, speech.hits(descriptions))
    segments = _segments_from_hits(video.slices, hits, descriptions, s, video.info)
    if speech is not None:
        segments = speech.snap(segments, video.info, hits, min_keep_s=s.min_len_s)
    _log_result(video.info, segments)
    match = _match_matrix(video.slices, hits, len(descriptions))
    return Highlight(
        video=video.info,
        encoder=enc.spec,
        descriptions=tuple(descriptions),
        segments=tuple(segments),
        slices=video.slices,
        settings=s.model_dump(mode="json"),
        order=s.order,
        track=_score_track(video.slices, None, match.max(axis=1), s.threshold_z,
                           "best description match (z)", semantic=match),
        transcript=speech.transcript if speech is not None else None,
    )


def _log_result(info: VideoInfo, segments: Sequence[Segment]) -> None:
    log.info(
        "%s: %d segments, %.1f s of %.1f s",
        info.video_id,
        len(segments),
        sum(x.duration_s for x in segments),
        info.duration_s,
    )


def load_encoder_or_none(
    settings: Settings, required: bool, instead: str = "query-free highlights only"
) -> Encoder | None:
    """The semantic encoder, or ``None`` (with a one-line warning saying what runs ``instead``)
    when its weights cannot be had and semantic matching is optional.

    Raises:
        EncoderError: the weights cannot be had and ``required`` (or ``semantic == "on"``).
    """
    if settings.semantic == "off":
        return None
    try:
        return create_encoder(settings.encoder)
    except EncoderError as exc:
        if required or settings.semantic == "on":
            raise
        log.warning("semantic matching is off (%s): %s", instead, exc)
        return None


def nearest_slices(src: Sequence[Slice], dst: Sequence[Slice]) -> np.ndarray:
    """For each slice of ``dst``, the position in ``src`` of the slice holding its middle frame."""
    starts = np.array([x.start_frame for x in src])
    mids = np.array([(x.start_frame + x.end_frame) // 2 for x in dst])
    return np.clip(np.searchsorted(starts, mids, side="right") - 1, 0, len(src) - 1)


def _label_segments(
    segments: Sequence[Segment],
    slices: Sequence[Slice],
    sig: SliceSignals,
    descriptions: Sequence[Description],
    hits: Sequence[Hit],
    threshold_z: float,
) -> tuple[list[Segment], list[Description]]:
    """Label each query-free segment with what the signals saw there (``describe_evidence``),
    led by the query description that matches its slices clearly (mean z at least
    ``threshold_z``), if any. Returns the segments pointing at their labels, and the
    descriptions with the labels appended (one per distinct text).
    """
    from retrieval_hl.select.labels import describe_evidence

    n_desc = len(descriptions)
    z: dict[int, np.ndarray] = {}
    for h in hits:
        z.setdefault(h.slice_index, np.zeros(n_desc))[h.description_index] = h.score_norm
    pos = {sl.index: k for k, sl in enumerate(slices)}
    mids_s = [(sl.start_s + sl.end_s) / 2 for sl in slices]  # the fine slices, in time order
    out, labels = [], list(descriptions)
    for seg in segments:
        text = describe_evidence(sig, [pos[i] for i in seg.slice_indices if i in pos], mids_s)
        rows = [z[i] for i in seg.slice_indices if i in z]
        if rows:
            fit = np.mean(rows, axis=0)
            if fit.max() >= threshold_z:
                text = f"{descriptions[int(np.argmax(fit))].text}: {text}"
        have = [k for k, d in enumerate(labels) if k >= n_desc and d.text == text]
        if not have:
            labels.append(Description(text=text, priority=1, source="signals"))
        seg = seg.model_copy(update={"description_index": have[0] if have else len(labels) - 1})
        out.append(seg)
    return out, labels


# --- the VLM methods (issue 12): vlm = the VLM's own ranges; hybrid = its words as queries and
# its ranges as priors and gap-fillers; retrieval = CLIP only (the VLM is not asked).

# Hybrid priors, in z units on top of ``retrieve``'s +1 inside a description's time range: inside
# a slice is kept unless retrieval clearly disagrees (z < -1), outside only a strong match
# (z >= 3) passes.
VLM_INSIDE_Z = 1.0
VLM_OUTSIDE_Z = 2.0


def apply_request(s: Settings, request: ParsedRequest | None) -> Settings:
    """``s`` with the durations and counts said in the request ("under 20 seconds", "3 clips",
    "30秒以内", "剪三段") as settings; values set explicitly (flags, env, file) win.
    """
    if request is None:
        return s
    update = {}
    if request.budget_s is not None:
        if "budget" in s.model_fields_set:
            log.info("the request's %g s total is ignored: budget %s was set", request.budget_s,
                     s.budget)
        else:
            update["budget"] = f"{request.budget_s:g}s"
    if request.max_clips is not None and s.max_clips is None:
        update["max_clips"] = request.max_clips
    if request.clip_len_s is not None and "max_len_s" not in s.model_fields_set:
        update["max_len_s"] = request.clip_len_s
        update["min_clip_s"] = min(s.min_clip_s, request.clip_len_s)
        update["min_len_s"] = min(s.min_len_s, request.clip_len_s)
    if update:
        log.info("from the request: %s", ", ".join(f"{k}={v}" for k, v in update.items()))
    return s.model_copy(update=update) if update else s


def _vlm_answer(
    pending: Future | None, s: Settings, method: str, have_encoder: bool
) -> VLMAnswer | None:
    """The VLM's answer, or ``None`` with a warning naming the cause (an error with
    ``vlm_strict``) when it failed or found nothing.
    """
    if pending is None:
        return None
    fallback = "retrieval" if have_encoder else "signals"
    try:
        answer = pending.result()
    except VLMResponseError as exc:
        if s.vlm_strict:
            raise
        log.warning("VLM unusable (%s); method %s continues with %s only", exc, method, fallback)
        return None
    if answer.empty or (method == "vlm" and not answer.descriptions):
        log.warning("VLM gave no timed highlights in %d chunks; method %s continues with %s only",
                    answer.n_chunks, method, fallback)
        return None
    return answer


def _vlm_segments(
    descriptions: Sequence[Description],
    support: Sequence[int],
    s: Settings,
    info: VideoInfo,
    budget_s: float | None,
) -> list[Segment]:
    """The ``vlm`` method: the merged ranges are the segments, chosen by priority and support."""
    segments = range_segments(descriptions, info, support)
    segments = suppress_overlaps(segments)  # a short action is still an action: keep it
    segments = apply_budget(segments, budget_s, info.fps)
    if not s.allow_empty:
        segments = extend_to_min_len(segments, s.min_clip_s, info.fps, info.n_frames)
    return order_segments(segments, s.order)


def _user_parts(request: ParsedRequest | None) -> list[Description]:
    """The request's content parts as queries beside the VLM's (first part most important)."""
    if request is None:
        return []
    return [Description(text=p, priority=1 if n == 0 else 2, source="user")
            for n, p in enumerate(request.parts)]


def highlight_video(
    path: str | Path,
    *,
    prompt: str | None = None,
    settings: Settings | None = None,
    ratio_wh: tuple[int, int] | None = None,
    video_id: str | None = None,
    encoder: Encoder | None = None,
    progress: Callable[[int], None] | None = None,
    extra_descriptions: Sequence[Description] = (),
    image_queries: Sequence[tuple[Description, np.ndarray]] = (),
    speech_progress: Callable[[float], None] | None = None,
) -> Highlight:
    """The main job for one file: highlights by signals (motion, audio, shots, faces, quality),
    fused with meaning when a semantic encoder is available, then a crop box per kept frame
    when ``ratio_wh`` is given.

    With ``prompt`` the user's words lead (retrieve -> merge -> dedup by description, the
    signals lifting livelier slices); without it the fused highlightness decides the extent
    and each segment is labelled with the description that fits it best. Without an encoder
    (weights unavailable, or ``semantic="off"``), the signals alone decide.

    With a VLM (``settings.vlm_url``) the method is ``settings.method``: ``vlm`` keeps the
    VLM's merged time ranges (no encoder needed), ``hybrid`` uses its descriptions as queries and
    its ranges as priors and gap-fillers, ``retrieval`` does not ask it; ``auto`` is hybrid when
    the encoder loads, else vlm. The VLM is asked while the video is decoded; when it fails or
    finds nothing, a warning names the cause and retrieval or the signals carry on (an error
    with ``vlm_strict``). Durations and counts said in ``prompt`` become settings; a prompt
    that names no content is answered like no prompt (VLM, vocabulary, or signals).

    ``extra_descriptions`` (text) and ``image_queries`` (a description with a query vector in
    the encoder's space, e.g. a library clip) join the describer's queries, as a category's
    highlight script does.

    What is said (``settings.speech``, on by default where the models are installed) is a
    second retrieval channel, fused per slice with the visual one (``retrieval_hl.speech.hybrid``);
    it answers a ``prompt`` alone when no encoder loads. Where someone speaks, no segment starts
    or ends mid-word. ``speech_progress`` gets seconds of audio transcribed.

    Raises:
        VideoOpenError: the file is missing or not a decodable video.
        EncoderError: ``prompt`` (or ``semantic="on"``) needs an encoder whose weights are missing
            and, for a prompt, nobody speaks in the video (or speech is off).
        ConfigError: method ``vlm``/``hybrid`` without ``vlm_url``, or a bad VLM URL.
        VLMResponseError: with ``vlm_strict``, the VLM failed, answered junk or found nothing.
        SpeechError: ``speech="on"`` and the whisper model is unavailable.
    """
    from retrieval_hl.select.events import (
        NEW_LOOK_FRACTION,
        STAND_OUT,
        fuse_signals,
        keep_level,
        select_highlights,
    )
    from retrieval_hl.signals.meter import SAMPLE_FPS, SignalMeter, measure_signals_and_cuts
    from retrieval_hl.speech.channel import listen, prompt_descriptions, speech_channel
    from retrieval_hl.speech.hybrid import fuse_hits
    from retrieval_hl.speech.rate import emphasis_db, words_per_second

    s = settings or Settings()
    request = parse_request(prompt) if prompt else None
    s = apply_request(s, request)
    query = request.query if request else None  # None when the request names no content
    info = probe_video(path, video_id)
    # --- method: which of retrieval / vlm / hybrid, and the VLM asked alongside the decode
    wants_vlm = s.method in ("vlm", "hybrid") or (s.method == "auto" and bool(s.vlm_url))
    asker = vlm_describer(s, prompt) if wants_vlm else None
    if s.method == "vlm":
        enc = None
    else:
        # A query can be answered by what is said: the encoder is required only without speech.
        required = s.method == "hybrid" or (bool(query) and asker is None and s.speech == "off")
        instead = "the VLM's time ranges" if asker is not None else "query-free highlights only"
        enc = encoder or load_encoder_or_none(s, required=required, instead=instead)
    method = s.method if s.method != "auto" else (
        "retrieval" if asker is None else "hybrid" if enc is not None else "vlm")
    log.info("%s: method %s", info.video_id, method)
    if s.method == "retrieval" and s.vlm_url:
        log.info("method retrieval: the VLM at %s is not asked", s.vlm_url)
    pool = ThreadPoolExecutor(max_workers=1) if asker is not None else None
    pending = pool.submit(asker.ask, info) if pool is not None else None
    video: IndexedVideo | None = None
    cuts: Sequence[int] | None = None
    # Transcribed before the index pass, not on top of what the pass leaves resident: whisper's
    # peak on the 10-min bench went from 2189 to 1892 MiB (bench/memory_profile.py). Whisper is
    # freed when done; its libraries stay mapped (~100 MiB under the pass).
    heard = listen(info, s, progress=speech_progress)
    meter = SignalMeter(info, detect_cuts=False)
    if enc is not None:
        # The signal meter rides along the indexing pass: one decode for both.
        video = index_video(path, settings=s, encoder=enc, video_id=info.video_id,
                            progress=progress, sinks=(meter,), speech=False)
        info = video.info
        # The index's cuts, whether just found or stored; None (an index written before the
        # cuts were stored): the meter's own pass finds them.
        cuts = video.cuts
    # Signals work on a finer grid than the index: extents matter to the frame.
    fine = tuple(make_slices(info, s.signal_window_s, cuts or ()))
    answer = None
    if method == "vlm" and pending is not None and ratio_wh is None:
        # The VLM's ranges need no signals: measure them only if it fails.
        answer = _vlm_answer(pending, s, method, False)
        pending = None
    if meter.n_fed:
        sig, cuts = meter.finish(fine, cuts or ())
    elif answer is None:  # signals only, or the index was already there: a pass of their own
        # ``progress`` counts frames at the index's sample rate; the meter samples at its own.
        ticks = (lambda n: progress(n * s.sample_fps / SAMPLE_FPS)) if progress else None
        sig, cuts = measure_signals_and_cuts(info, fine, cuts, reader=s.reader, progress=ticks)
    budget_s = parse_budget(s.budget, info.duration_s)
    # the shortest clip: the main job's are long enough to watch
    shortest_s = s.min_len_s if s.allow_empty else max(s.min_len_s, s.min_clip_s)
    if pending is not None:
        answer = _vlm_answer(pending, s, method, enc is not None)
    if pool is not None:
        pool.shutdown()
    vlm_only = answer is not None and method == "vlm"
    if vlm_only:
        descriptions = list(answer.descriptions)
        segments = _vlm_segments(descriptions, answer.support, s, info, budget_s)
        hits, query_vectors, slices = [], None, fine
    grid = video.slices if video is not None else tuple(make_slices(info, s.window_s, cuts or ()))
    speech = speech_channel(info, grid, s, *heard) if heard is not None else None
    if speech is not None and not vlm_only:  # what is said, and how, as query-free signals
        rate = words_per_second(speech.transcript.words, fine)
        sig = dataclasses.replace(sig, speech_rate=rate,
                                  speech_emphasis_db=emphasis_db(sig.voice_loudness_db, rate > 0))
    if query and enc is None and speech is None and answer is None:
        raise EncoderError(
            "--prompt needs CLIP weights or speech in the video, and neither is available here "
            f"(encoder {s.encoder!r}, speech {s.speech!r}); see the warnings above"
        )
    if vlm_only:
        pass
    elif video is not None and enc is not None:
        if answer is not None:  # hybrid: the VLM's words are the queries, its times the priors
            descriptions = list(answer.descriptions) + list(answer.untimed)
            describer: Describer = StaticDescriber(descriptions, name="vlm")
            extra_descriptions = [*_user_parts(request), *extra_descriptions]
        else:  # the user's words, or the vocabulary (never the VLM again)
            describer = (RequestDescriber(query, max_items=s.max_descriptions) if query else
                         VocabDescriber(domains=s.domains, max_items=s.max_descriptions))
        descriptions, query_vectors, hits = _describe(
            video, describer, enc, extra_descriptions, image_queries
        )
        if answer is not None:
            hits = steer_hits(hits, video.slices, descriptions, VLM_INSIDE_Z, VLM_OUTSIDE_Z)
        if speech is not None:
            hits = fuse_hits(hits, speech.hits(descriptions))
    elif speech is not None and query:
        descriptions = [*prompt_descriptions(query), *extra_descriptions]
        query_vectors, hits = None, speech.hits(descriptions)
        log.info("%d descriptions, matched by what is said: %s", len(descriptions),
                 "; ".join(f"[{d.priority}] {d.text}" for d in descriptions))
    else:
        if extra_descriptions or image_queries:
            log.warning("category/extra queries need semantic matching, which is off: ignored")
        descriptions, query_vectors, hits = [], None, []
    if not descriptions:  # e.g. a vocabulary with nothing to rank: label by the signals
        query_vectors, hits = None, []
    track: ScoreTrack | None = None  # what the selection saw, for the pictures
    if vlm_only:
        pass  # segments from the VLM's ranges, above
    elif (query or answer is not None) and (video is not None or speech is not None):
        slices = grid
        fused = np.clip(fuse_signals(sig), -2.0, 3.0) * s.signal_weight
        lift = fused[nearest_slices(fine, slices)]
        pos = {sl.index: k for k, sl in enumerate(slices)}
        match = _match_matrix(slices, hits, len(descriptions))
        # Signals lift livelier slices; a speech hit that does not match at all (z capped at
        # 0, see retrieval_hl.speech.hybrid) stays out: motion alone is not something said.
        hits = [h if h.channel == "speech" and h.score_norm <= 0 else
                h.model_copy(update={"score_norm": h.score_norm + lift[pos[h.slice_index]]})
                for h in hits]
        segments = _segments_from_hits(slices, hits, descriptions, s, info,
                                       fill_from_hints=method == "hybrid")
        to_fine = nearest_slices(slices, fine)
        track = _score_track(fine, sig, (match + lift[:, None]).max(axis=1)[to_fine],
                             s.threshold_z, "request match (z, lifted by signals)",
                             semantic=match[to_fine])
    else:
        semantic = None
        if hits and video is not None:
            coarse = np.zeros((len(video.slices), len(descriptions)))
            pos = {sl.index: k for k, sl in enumerate(video.slices)}
            for h in hits:
                coarse[pos[h.slice_index], h.description_index] = h.score_norm
            semantic = coarse[nearest_slices(video.slices, fine)]
            hits = [Hit(slice_index=sl.index, description_index=d, score_raw=0.0,
                        score_norm=float(semantic[k, d]))
                    for k, sl in enumerate(fine) for d in range(len(descriptions))]
        slices = fine
        score = fuse_signals(sig, semantic=semantic)
        track = _score_track(fine, sig, score, keep_level(score), semantic=semantic,
                             new_view=keep_level(score, NEW_LOOK_FRACTION * STAND_OUT))
        segments = select_highlights(
            slices, score, info, cuts=cuts, min_len_s=s.min_len_s, max_len_s=s.max_len_s,
            max_gap_s=s.max_gap_s, budget_s=budget_s, allow_empty=s.allow_empty,
            min_clip_s=shortest_s,
            looks=sig.looks,
        )
        segments, descriptions = _label_segments(
            segments, slices, sig, descriptions, hits, s.threshold_z
        )
        segments = order_segments(segments, s.order)
    if speech is not None:  # no clip starts or ends mid-word, none cut below the shortest
        segments = speech.snap(segments, info, hits, min_keep_s=shortest_s)
    segments = limit_count(segments, s.max_clips)
    _log_result(info, segments)
    crops = ()
    if ratio_wh is not None and segments:
        crops = _ground(info, segments, ratio_wh, cuts, s, enc, query_vectors)
    return Highlight(
        video=info,
        encoder=enc.spec if enc is not None else "none",
        descriptions=tuple(descriptions),
        segments=tuple(segments),
        slices=tuple(slices),
        crops=crops,
        ratio_wh=ratio_wh,
        settings=s.model_dump(mode="json"),
        order=s.order,
        track=track,
        transcript=speech.transcript if speech is not None else None,
    )


def _match_matrix(slices: Sequence[Slice], hits: Sequence[Hit], n_desc: int) -> np.ndarray:
    """Hit z-scores as a (slice, description) matrix, rows in the order of ``slices``."""
    pos = {sl.index: k for k, sl in enumerate(slices)}
    out = np.zeros((len(slices), n_desc))
    for h in hits:
        out[pos[h.slice_index], h.description_index] = h.score_norm
    return out


def _score_track(
    fine: Sequence[Slice],
    sig: SliceSignals | None,
    decision: np.ndarray,
    threshold: float,
    label: str = "fused highlightness (signal z)",
    semantic: np.ndarray | None = None,
    new_view: float = float("nan"),
) -> ScoreTrack:
    """What the selection saw, per slice of ``fine`` (time order), for the pictures; without
    signals (``sig`` is ``None``) only the decision and the semantic match.
    """
    from retrieval_hl.select.events import fuse_signals

    def r(values: np.ndarray) -> tuple[float, ...]:
        return tuple(round(float(v), 4) for v in values)

    return ScoreTrack(
        start_s=r([x.start_s for x in fine]),
        end_s=r([x.end_s for x in fine]),
        decision_score=r(decision),
        decision_threshold=round(float(threshold), 4) if np.isfinite(threshold) else None,
        new_view_threshold=round(float(new_view), 4) if np.isfinite(new_view) else None,
        decision_label=label,
        fused_z=r(fuse_signals(sig)) if sig is not None else (),
        signals={k: tuple(None if v is None else round(v, 4) for v in vals)
                 for k, vals in sig.to_dict().items()} if sig is not None else {},
        semantic_z=tuple(r(col) for col in semantic.T) if semantic is not None else (),
    )


def _ground(
    info: VideoInfo,
    segments: Sequence[Segment],
    ratio_wh: tuple[int, int],
    cuts: Sequence[int],
    s: Settings,
    enc: Encoder | None,
    query_vectors: np.ndarray | None,
) -> tuple:
    """Crop boxes for every kept frame. With trained CLIP weights each segment is grounded on
    its own, with the patch relevance of the description that chose it as an extra cue.
    """
    from retrieval_hl.reframe.crops import ground_frames

    frames = [f for seg in segments for f in range(seg.start_frame, seg.end_frame)]
    semantic = (
        enc is not None and query_vectors is not None and enc.patch_relevance
    )
    if not semantic:
        return tuple(ground_frames(info, frames, ratio_wh, cuts, reader=s.reader))
    by_frame = {}
    for seg in segments:
        query = query_vectors[seg.description_index]

        def relevance(rgb: np.ndarray, query: np.ndarray = query) -> np.ndarray:
            return enc.relevance_maps(rgb[None], query)[0]

        span = range(seg.start_frame, seg.end_frame)
        for box in ground_frames(info, span, ratio_wh, cuts, reader=s.reader,
                                 relevance=relevance):
            by_frame[box.frame] = box
    return tuple(by_frame[f] for f in frames)


def export_highlights(
    highlight: Highlight, out_dir: str | Path, *, settings: Settings | None = None
) -> dict[str, Path]:
    """Write ``highlights.json``, ``highlights.srt`` and ``highlight.mp4`` into ``out_dir``; the
    editor timeline ``highlights.otio`` (and the ``settings.timelines`` formats) when there are
    segments; unless ``settings.plots`` is off, ``timeline.png`` and ``contact_sheet.png``.
    """
    from retrieval_hl.render.timeline import build_timeline, highlight_clips, write_timelines

    s = settings or Settings()
    written = export_highlight(
        highlight, out_dir, render=s.render, crossfade_s=s.crossfade_s, transition=s.transition,
        loudness_lufs=s.loudness_lufs, size=parse_wh(s.size, "size") if s.size else None,
        max_upscale=s.max_upscale, music=s.music, captions=s.captions,
    )
    if highlight.segments:
        timeline = build_timeline(f"{highlight.video.video_id} highlights",
                                  highlight_clips(highlight), crossfade_s=s.crossfade_s,
                                  transition=s.transition)
        written.update(write_timelines(timeline, Path(out_dir) / "highlights", s.timelines))
    if s.plots:
        from retrieval_hl.render.plots import write_plots

        written.update(write_plots(highlight, out_dir, reader=s.reader))
    return written


@dataclass(frozen=True)
class IndexWork:
    """Executor work: one video file in, its :class:`IndexedVideo` (frame-level fields dropped,
    and the vectors too when the worker wrote them) out. The encoder, and the store when the
    worker writes, are opened once per process.

    Attributes:
        settings: Encoder, store and slicing settings.
        write: The worker writes the slices into ``settings.store`` itself (a Qdrant server that
            every worker reaches; point ids are deterministic, so a retried video rewrites the
            same points). Otherwise the caller writes what the worker returns.
        reindex: Decode and embed again even if the store has the video (``write`` only).
        tags: Stored with every slice.
    """

    settings: Settings
    write: bool = False
    reindex: bool = False
    tags: tuple[str, ...] = ()

    @functools.cached_property
    def encoder(self) -> Encoder:
        """The encoder, loaded on first use in each worker process."""
        return create_encoder(self.settings.encoder)

    @functools.cached_property
    def store(self) -> VectorStore:
        """The shared store, opened on first use in each worker process."""
        return open_store(self.settings.store, **self.settings.store_options())

    def __call__(self, path: str) -> IndexedVideo:
        """Index (``write``) or embed one video."""
        s = self.settings
        if self.write:
            v = index_video(path, settings=s, store=self.store, encoder=self.encoder,
                            reindex=self.reindex, tags=self.tags)
        else:
            v = embed_video(probe_video(path), self.encoder, window_s=s.window_s,
                            sample_fps=s.sample_fps, snap_to_shots=s.snap_to_shots,
                            reader=s.reader, tags=self.tags)
        # Written already: the vectors need not travel back to the caller.
        vectors = v.vectors[:0] if self.write else v.vectors
        return IndexedVideo(v.info, v.slices, vectors, v.encoder_spec)


@dataclass(frozen=True)
class IndexReport:
    """What ``index_videos`` did with one file: its slices, or why it has none."""

    path: str
    video_id: str | None
    slices: int = 0
    reused: bool = False
    error: str | None = None


def index_videos(
    paths: Sequence[str | Path],
    executor: Executor,
    *,
    settings: Settings | None = None,
    reindex: bool = False,
    tags: tuple[str, ...] = (),
    time_limit_s: float = 3600.0,
    progress: Callable[[int], None] | None = None,
) -> list[IndexReport]:
    """Index many videos on ``executor`` (e.g. Ray workers) into ``settings.store``.

    Videos the store already holds are skipped unless ``reindex`` (so an interrupted run
    resumes). With a Qdrant server store the workers write their slices themselves; with any
    other store (a folder is local to each machine, Qdrant's local mode is one process) they
    return the vectors and this process writes them, one video at a time as each arrives.
    A video that fails (unreadable, over ``time_limit_s``, its worker died after retries) is
    reported and the others go on.

    Returns:
        One report per path, in the order given.

    Raises:
        StoreError: the store cannot be opened or refuses the vectors (another encoder).
    """
    s = settings or Settings()
    write = s.store.strip().startswith(("http://", "https://"))
    db = open_store(s.store, **s.store_options())

    def stored(p: str, vid: str) -> IndexReport | None:
        if reindex or not (n := db.count(vid)):
            return None
        log.info("%s already indexed (%d slices); skipped", vid, n)
        return IndexReport(p, vid, n, reused=True)

    def indexed(p: str, video: IndexedVideo, elapsed_s: float) -> IndexReport:
        if not write:
            store_video(db, video)
        log.info("%s: %d slices in %.1f s", video.info.video_id, len(video.slices), elapsed_s)
        return IndexReport(p, video.info.video_id, len(video.slices))

    def failed(p: str, reason: str) -> IndexReport:
        log.error("%s: not indexed: %s", p, reason)
        return IndexReport(p, None, error=reason)

    work = IndexWork(s, write=write, reindex=reindex, tags=tuple(tags))
    try:
        return run_files(paths, executor, work, stored=stored, done=indexed, failed=failed,
                         time_limit_s=time_limit_s, progress=progress)
    finally:
        db.close()
