"""The ``rhl`` command: parse, build settings, call the library, print. Nothing else lives here."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from retrieval_hl.cli.common import (
    PACKAGES,
    Group,
    log_options,
    make_executor,
    ray_options,
    setup_logging,
    video_files,
)
from rhl_common.errors import RHLError

log = logging.getLogger("retrieval_hl.cli.main")


@contextlib.contextmanager
def _progress(
    ctx: click.Context, total: int | None, desc: str, unit: str = "frame"
) -> Iterator[Callable[[float], None]]:
    """A tqdm bar on a terminal, nothing with --quiet or when stderr is not a TTY."""
    if ctx.obj["quiet"] or not sys.stderr.isatty():
        yield lambda n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, leave=False) as bar:
        yield bar.update


class _Group(Group):
    """Maps the library's errors, and the system's (disk full, permission), to one line on
    stderr and exit code 1.
    """

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except RHLError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except OSError as exc:
            where = f": {exc.filename!r}" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}", err=True)
            ctx.exit(1)


class _LogFile(logging.FileHandler):
    """A log file whose write errors (disk full) are one warning on stderr, not a traceback."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if not self.failed:
            self.failed = True
            click.echo(f"warning: cannot write the log file {self.baseFilename}; "
                       "logging there stops", err=True)


@click.group(cls=_Group)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML file of settings (flags and RHL_* env vars override it).",
)
@log_options
@click.version_option(package_name="retrieval-hl")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None) -> None:
    """retrieval-hl: long raw video in, highlights out.

    -q and -v may also follow the command: rhl index -q VIDEO.
    """
    state = ctx.ensure_object(dict)
    state.setdefault("quiet", False)
    state.setdefault("verbose", 0)
    state["config"] = config_file
    setup_logging(state["verbose"], state["quiet"])


def _settings(ctx: click.Context, **overrides):  # noqa: ANN202
    from retrieval_hl.config import load_settings

    s = load_settings(ctx.obj["config"], **overrides)
    log.debug("effective settings: %s", s.model_dump_json())
    return s


_store_opt = click.option(
    "--store", default=None, help="faiss:DIR (default), DIR, qdrant::memory:, qdrant:PATH or a URL."
)
_encoder_opt = click.option(
    "--encoder", default=None,
    help="open_clip:ARCH:TAG|PATH|random (default ViT-B-32 laion2b), or the video encoder "
         "xclip:MODEL_ID:hub / xclip:FOLDER:local.",
)


def _index_one(ctx: click.Context, path: str, settings, reindex: bool, tags=()):  # noqa: ANN001, ANN202
    from indexer.probe import probe_video
    from retrieval_hl.pipeline import index_video

    info = probe_video(path)
    with _progress(ctx, int(info.duration_s * settings.sample_fps) + 1, info.video_id) as bar:
        return index_video(path, settings=settings, reindex=reindex, tags=tuple(tags), progress=bar)


@cli.command()
@click.argument("videos", nargs=-1, required=True)
@_store_opt
@_encoder_opt
@click.option("--window", "window_s", type=float, default=None,
              help="Slice length in seconds, 1-3.  [default: 2.0]")
@click.option("--tag", "tags", multiple=True, help="Tag stored with every slice (repeatable).")
@click.option("--reindex", is_flag=True, help="Decode and embed again even if already indexed.")
@ray_options
@click.option("--time-limit", "time_limit_s", type=click.FloatRange(min=0, min_open=True),
              default=3600.0, show_default=True,
              help="With --ray: seconds per video; a video over it is reported, not indexed.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def index(ctx, videos, store, encoder, window_s, tags, reindex, ray_address, workers,
          time_limit_s, as_json) -> None:  # noqa: ANN001
    """Index VIDEOS (files, or folders of video files) into the vector store."""
    s = _settings(ctx, store=store, encoder=encoder, window_s=window_s)
    executor = make_executor(ray_address, workers)
    if executor is not None:
        _index_many(ctx, video_files(videos), s, executor, reindex, tuple(tags), time_limit_s,
                    as_json)
        return
    rows = []
    for path in video_files(videos):
        v = _index_one(ctx, path, s, reindex, tags)
        rows.append({"video_id": v.info.video_id, "path": v.info.path, "slices": len(v.slices)})
    for r in rows:
        click.echo(json.dumps(r) if as_json else f"{r['video_id']}\t{r['slices']} slices")


def _index_many(ctx, paths, settings, executor, reindex, tags, time_limit_s,  # noqa: ANN001, ANN202
                as_json):
    """``rhl index --ray``: the videos on the executor's workers; exit 1 if any failed."""
    from retrieval_hl.pipeline import index_videos

    if not paths:
        raise click.UsageError("no video files in the folders given")
    with _progress(ctx, len(paths), "videos") as bar:
        reports = index_videos(paths, executor, settings=settings, reindex=reindex, tags=tags,
                               time_limit_s=time_limit_s, progress=bar)
    for r in reports:
        if as_json:
            click.echo(json.dumps({"video_id": r.video_id, "path": r.path, "slices": r.slices,
                                   **({"error": r.error} if r.error else {})}))
        elif r.error:
            click.echo(f"{r.path}\tnot indexed: {r.error}")
        else:
            click.echo(f"{r.video_id}\t{r.slices} slices" + (" (already indexed)" * r.reused))
    if any(r.error for r in reports):
        ctx.exit(1)


@cli.command()
@click.argument("video")
@click.option("--prompt", default=None, help="What to keep, in your words (English or Chinese).")
@click.option("--ratio", default=None, help="Reframe for publishing: 9:16, 16:9, 1:1 ...")
@click.option("--budget", default=None,
              help="Total length: auto (a fifth of the video, 10 s to 3 min), 60s, 2m, a "
                   "fraction of the video like 0.2, or none.  [default: auto]")
@click.option("--out", "out_dir", default=None, help="Run directory (default ./highlights/<name>).")
@_store_opt
@_encoder_opt
@click.option("--semantic", type=click.Choice(["auto", "on", "off"]), default=None,
              help="auto: use the encoder if its weights load, else signals only (default).")
@click.option("--speech", type=click.Choice(["auto", "on", "off"]), default=None,
              help="What is said as a channel: auto (default) when the speech models are "
                   "installed and the video has audio.")
@click.option("--language", default=None,
              help="Spoken language as a whisper code (en, zh...); default: detected.")
@click.option("--captions", type=click.Choice(["srt", "burn"]), default=None,
              help="srt (default): highlights.srt only; burn: also draw the spoken words, a "
                   "few at a time, into the rendered videos.")
@click.option("--domain", "domains", multiple=True, help="Vocabulary domain(s) to rank.")
@click.option("--category", default=None,
              help="Add a highlight script's events (prompts/scripts/) as queries, e.g. soccer.")
@click.option("--library", "library_dir", default=None,
              help="With --category: the library's clips of that category as image queries.")
@click.option("--order", type=click.Choice(["chronological", "score"]), default=None,
              help="Segment order in the outputs: as in the video, or best first.  "
                   "[default: chronological]")
@click.option("--crossfade", "crossfade_s", type=float, default=None, help="Seconds, 0 = cut.")
@click.option("--vlm-url", "--vlm", "vlm_url", default=None,
              help="OpenAI-compatible endpoint of a VLM, or local:MODEL_ID|FOLDER (transformers).")
@click.option("--vlm-model", default=None, help="Model name at --vlm-url.")
@click.option("--method", type=click.Choice(["auto", "retrieval", "vlm", "hybrid"]), default=None,
              help="retrieval (CLIP queries), vlm (the VLM's time ranges), hybrid (both); auto: "
                   "hybrid with --vlm-url and CLIP weights, vlm with --vlm-url alone.")
@click.option("--vlm-strict", is_flag=True, default=None,
              help="A failed, junk or empty VLM answer is an error (default: a warning).")
@click.option("--no-cache", is_flag=True, help="Ask the VLM again even for answers it gave.")
@click.option("--no-render", is_flag=True, help="Write JSON and SRT only.")
@click.option("--size", default=None,
              help="Publishing WxH of the reframed video (default by ratio: 1080x1920 for 9:16, "
                   "1920x1080 for 16:9, 1080x1080 for 1:1; a small crop is enlarged at most "
                   "2x unless a size is given).")
@click.option("--transition", type=click.Choice(["crossfade", "dip"]), default=None,
              help="How --crossfade joins the clips: crossfade or dip through black.")
@click.option("--music", default=None, help="Background music FILE (or a DIR to pick from), "
              "ducked under speech and loud moments, faded at the ends.")
@click.option("--no-plots", is_flag=True, help="Skip timeline.png and contact_sheet.png.")
@click.option("--timeline", "timelines", multiple=True,
              type=click.Choice(["otio", "fcpxml", "xml", "edl"]),
              help="Editor timeline formats besides highlights.otio (repeatable): fcpxml (Final "
                   "Cut Pro), xml (FCP7 XML: Premiere, Resolve), edl (CMX 3600).")
@click.option("--json", "as_json", is_flag=True, help="Print the written paths as JSON.")
@click.pass_context
def highlight(ctx, video, prompt, ratio, budget, out_dir, store, encoder, semantic, speech,
              language, captions, domains, category, library_dir, order, crossfade_s, vlm_url,
              vlm_model, method, vlm_strict, no_cache, no_render, no_plots, timelines, size,
              transition, music, as_json) -> None:  # noqa: ANN001
    """Find the highlights of VIDEO; write highlights.json, .srt, highlight.mp4 (and with
    --ratio a reframed mp4 and predictions.jsonl) into the run directory.
    """
    from indexer.probe import probe_video
    from retrieval_hl.config import parse_wh
    from retrieval_hl.pipeline import export_highlights, highlight_video

    s = _settings(ctx, store=store, encoder=encoder, budget=budget, order=order,
                  domains=tuple(domains) or None, crossfade_s=crossfade_s, vlm_url=vlm_url,
                  vlm_model=vlm_model, render=False if no_render else None, semantic=semantic,
                  method=method, vlm_strict=vlm_strict or None,
                  vlm_cache=False if no_cache else None,
                  plots=False if no_plots else None,
                  size=size, transition=transition,
                  music=music, speech=speech, language=language, captions=captions,
                  timelines=("otio", *timelines) if timelines else None)
    from indexer.stores import check_store_uri
    from rhl_common.atomic import check_writable

    ratio_wh = parse_wh(ratio) if ratio is not None else None
    check_store_uri(s.store)  # even when this run ends up using signals only
    out = Path(out_dir) if out_dir else Path("highlights") / Path(video).stem
    check_writable(out, directory=True)
    info = probe_video(video)
    extra, images = _category_queries(category, library_dir, s) if category else ([], [])
    with (_progress(ctx, int(info.duration_s * s.sample_fps) + 1, info.video_id) as bar,
          _progress(ctx, round(info.duration_s), "speech", unit="s") as speech_bar):
        hl = highlight_video(video, prompt=prompt, settings=s, ratio_wh=ratio_wh, progress=bar,
                             extra_descriptions=extra, image_queries=images,
                             speech_progress=speech_bar)
    written = export_highlights(hl, out, settings=s)
    if as_json:
        click.echo(json.dumps({"segments": len(hl.segments), "duration_s": hl.duration_s,
                               "encoder": hl.encoder, **{k: str(p) for k, p in written.items()}}))
        return
    for seg in hl.segments:
        d = hl.descriptions[seg.description_index]
        click.echo(f"{seg.start_s:8.2f}-{seg.end_s:8.2f} s  p{seg.priority}  "
                   f"score {seg.score_norm:.2f}  {d.text}")
    click.echo(f"{len(hl.segments)} segments, {hl.duration_s:.1f} s -> {out}")


def _category_queries(category: str, library_dir: str | None, settings):  # noqa: ANN001, ANN202
    """A category's script events, and its library clips as image queries (same encoder only)."""
    from library.catalog import Library
    from library.script import normalise_label
    from library.templates import category_queries
    from retrieval_hl.models import Description

    lib = Library.open(library_dir, create=False) if library_dir else None
    if lib is not None and lib.encoder_spec != settings.encoder:
        log.warning("library %s uses encoder %s, not %s: its clips are not used as queries",
                    library_dir, lib.encoder_spec, settings.encoder)
        lib = None
    descriptions, vectors = category_queries(category, lib)
    # The same clips, in the same order, as category_queries takes its vectors from.
    clips = [c for c in lib.list(category=normalise_label(category)) if lib.store.count(c.clip_id)
             ] if lib is not None else []
    images = [
        (Description(text=f"like library clip: {c.summary or c.clip_id}", priority=2,
                     source="template", domain=category), v)
        for c, v in zip(clips, vectors, strict=True)
    ]
    return descriptions, images


@cli.command()
@click.argument("index_path", metavar="INDEX", type=click.Path(exists=True, dir_okay=False))
@click.option("--videos", "videos_dir", required=True, type=click.Path(file_okay=False),
              help="Folder holding the videos the index names (VIDEO_ID.mp4 or its file name).")
@click.option("--out", "out_path", default="predictions.jsonl", show_default=True)
@click.option("--resume", is_flag=True, help="Keep finished videos of an earlier run.")
@click.option("--time-limit", "time_limit_s", type=float, default=600.0, show_default=True,
              help="Seconds per video (> 0); a video over it gets an empty prediction.")
@click.option("--log", "log_path", default=None, help="Log file (default OUT.log).")
@_store_opt
@_encoder_opt
@click.option("--semantic", type=click.Choice(["auto", "on", "off"]), default=None,
              help="auto: use the encoder if its weights load (checked once), else signals "
                   "only (default); on: missing weights are an error; off: signals only.")
@ray_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def batch(ctx, index_path, videos_dir, out_path, resume, time_limit_s, log_path, store, encoder,
          semantic, ray_address, workers, as_json) -> None:  # noqa: ANN001
    """Competition batch: one predictions line per INDEX entry, in index order."""
    from retrieval_hl.competition.batch import (
        check_batch_args,
        for_remote_workers,
        make_predictor,
        run_batch,
    )

    log_path = log_path or f"{out_path}.log"
    check_batch_args(index_path, out_path, log_path, time_limit_s)
    # Speech off: transcription (~0.1-0.3x real time here) would eat the per-video time limit
    # for cuts that only move to word edges in the query-free picking the batch does.
    s = _settings(ctx, store=store, encoder=encoder, semantic=semantic, budget="none",
                  render=False, allow_empty=True, speech="off")
    executor = make_executor(ray_address, workers)
    if executor is not None:
        s = for_remote_workers(s)
    handler = _LogFile(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    for name in PACKAGES:
        logging.getLogger(name).setLevel(min(logging.getLogger(name).level, logging.INFO))
    try:
        from indexer.probe import probe_video  # noqa: F401  (warm imports before forking)
        from retrieval_hl.competition.format import load_index

        load_index(index_path)  # a bad index fails before the encoder is settled
        with _progress(ctx, None, "videos") as bar:
            res = run_batch(index_path, videos_dir, out_path, make_predictor(s), resume=resume,
                            time_limit_s=time_limit_s, progress=bar, executor=executor)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    if as_json:
        click.echo(json.dumps({"written": res.written, "skipped": res.skipped,
                               "failed": [{"video_id": v, "reason": r} for v, r in res.failed],
                               "out": str(out_path)}))
        return
    click.echo(f"{res.written} written, {res.skipped} kept from before, {len(res.failed)} failed"
               f" -> {out_path}")


@cli.command()
@click.argument("text")
@click.option("--video", "video_id", default=None, help="Only this video id.")
@click.option("--tag", "tags", multiple=True, help="Only slices with this tag (repeatable).")
@click.option("--top", "top_k", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How many hits.")
@_store_opt
@_encoder_opt
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit.")
@click.pass_context
def search(ctx, text, video_id, tags, top_k, store, encoder, as_json) -> None:  # noqa: ANN001
    """Search every indexed slice for TEXT, by what is shown and by what is said."""
    from retrieval_hl.speech.search import search_text

    s = _settings(ctx, store=store, encoder=encoder)
    hits = search_text(text, s, encoder=encoder, top_k=top_k, video_id=video_id, tags=tags)
    if not hits:
        click.echo("nothing found: the store is empty or no channel can search it; "
                   "run `rhl index VIDEO` (or `rhl highlight VIDEO`) first", err=True)
        return
    for h in hits:
        row = {
            "video_id": h.slice.video_id,
            "slice": h.slice.index,
            "start_s": h.slice.start_s,
            "end_s": h.slice.end_s,
            "score": round(h.score_fused, 6),
            "channels": list(h.channels),
            "score_visual": h.score_visual,
            "score_speech": h.score_speech,
        }
        span = f"{h.slice.start_s:.2f}-{h.slice.end_s:.2f} s"
        click.echo(json.dumps(row) if as_json else
                   f"{h.score_fused:.4f}  {h.slice.video_id}  {span}  {'+'.join(h.channels)}")


@cli.command()
@click.argument("pred", type=click.Path(exists=True, dir_okay=False))
@click.option("--index", "index_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--videos", "videos_dir", default=None, type=click.Path(file_okay=False),
              help="Probe the videos here to check frame ranges and boxes inside the frame.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per issue.")
@click.pass_context
def validate(ctx, pred, index_path, videos_dir, as_json) -> None:  # noqa: ANN001
    """Check a predictions file against its index; exit 1 if there is any error."""
    from retrieval_hl.competition.batch import probe_sizes
    from retrieval_hl.competition.format import load_index, load_predictions
    from retrieval_hl.competition.validate import validate_predictions

    index = load_index(index_path)
    sizes = probe_sizes(index, videos_dir) if videos_dir else None
    issues = validate_predictions(load_predictions(pred), index, sizes)
    for issue in issues:
        click.echo(issue.model_dump_json() if as_json else str(issue))
    errors = sum(i.level == "error" for i in issues)
    if not as_json:
        click.echo(f"{len(index)} videos, {errors} errors, {len(issues) - errors} warnings")
    if errors:
        ctx.exit(1)


@cli.command("eval")
@click.argument("gt", type=click.Path(exists=True, dir_okay=False))
@click.argument("pred", type=click.Path(exists=True, dir_okay=False))
@click.option("--videos", "videos_dir", default=None, type=click.Path(file_okay=False),
              help="Probe the videos here so out-of-range frames and boxes count as invalid.")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
def evaluate(gt, pred, videos_dir, as_json) -> None:  # noqa: ANN001
    """Score PRED against GT: mean over videos of the IoU-weighted F, x100."""
    from retrieval_hl.competition.batch import probe_sizes
    from retrieval_hl.competition.format import IndexEntry, load_ground_truth
    from retrieval_hl.competition.metric import evaluate_files

    sizes = None
    if videos_dir:
        entries = [IndexEntry(video_id=v.video_id, ratio_wh=v.ratio_wh or (9, 16))
                   for v in load_ground_truth(gt).values()]
        sizes = probe_sizes(entries, videos_dir)
    report = evaluate_files(gt, pred, sizes)
    click.echo(report.model_dump_json(indent=2) if as_json else report.to_table())


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 opens the page to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option("--max-upload", default="500mb", show_default=True, help="Largest upload.")
@click.option("--work", "work_dir", default=None, type=click.Path(file_okay=False),
              help="Where runs are written (default: a new temporary directory).")
@_store_opt
@_encoder_opt
@click.option("--semantic", type=click.Choice(["auto", "on", "off"]), default=None)
@click.pass_context
def serve(ctx, host, port, max_upload, work_dir, store, encoder, semantic) -> None:  # noqa: ANN001
    """The web page: drop a video, see and adjust its highlights, download the files."""
    import tempfile

    from retrieval_hl.web.app import serve as serve_page

    s = _settings(ctx, store=store, encoder=encoder, semantic=semantic)
    work = work_dir or tempfile.mkdtemp(prefix="rhl-serve-")
    click.echo(f"rhl serve: http://{host}:{port}  (runs under {work}; Ctrl+C stops)")
    serve_page(s, work, host=host, port=port, max_upload=max_upload)


# The library sits above retrieval_hl; only the command line, at the top, brings the two together.
from retrieval_hl.cli.library import assemble, library  # noqa: E402

cli.add_command(library)
cli.add_command(assemble)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="rhl")
