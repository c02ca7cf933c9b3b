"""``rhl library add|list|search|rm|export`` and ``rhl assemble``: parse, call the library, print.

Registered on the ``rhl`` group in ``retrieval_hl.cli.main``; errors of the library
(``RHLError``) are turned into one line and exit code 1 there. Heavy modules load inside the
commands, so ``rhl --help`` stays fast, and nothing here imports ``retrieval_hl.cli.main``
(which imports this).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from retrieval_hl.cli.common import Command, Group, make_executor, ray_options, video_files

log = logging.getLogger(__name__)


def _library_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--encoder", default=None,
                     help="Encoder spec for a new library (an existing one keeps its own).")(f)
    f = click.option("--collection", default=None,
                     help="Vector collection name (default 'library'; for shared servers).")(f)
    f = click.option("--store", default=None,
                     help="Vector store if not the library directory: qdrant:PATH or a URL.")(f)
    f = click.option("--library", "library_path", default=None,
                     help="Library: DIR, faiss:DIR, qdrant:PATH (default $RHL_LIBRARY or "
                          "~/.cache/retrieval-hl/library).")(f)
    return f


def _open(ctx: click.Context, library_path: str | None, store: str | None,
          collection: str | None, encoder: str | None, *, create: bool = False):  # noqa: ANN202
    from library.catalog import Library
    from retrieval_hl.config import load_settings

    config = (ctx.obj or {}).get("config")
    settings = load_settings(config, encoder=encoder, library=library_path)
    log.debug("effective settings: %s", settings.model_dump_json())
    return Library.open(settings.library, store=store, collection=collection,
                        encoder=encoder, settings=settings, create=create)


def _split_tags(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(t for v in values for t in v.split(",") if t.strip())


def _clip_row(clip, missing: bool = False) -> str:  # noqa: ANN001
    tags = ",".join(clip.tags) or "-"
    return (f"{clip.clip_id}\t{clip.duration_s:6.2f}s\t{clip.category or '-'}\t{tags}\t"
            f"{Path(clip.source_path).name} {clip.start_s:.2f}-{clip.end_s:.2f}s"
            + ("\tMISSING MEDIA" if missing else "")
            + (f"\t{clip.summary}" if clip.summary else ""))


@click.group("library", cls=Group)
def library() -> None:
    """Catalog of past highlight clips: add, list, search, rm, export."""


@library.command("add")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--from-run", "runs", multiple=True, type=click.Path(),
              help="A `rhl highlight` output directory: add its segments (repeatable).")
@click.option("--tags", multiple=True, help="Tags for the new clips: a,b,c (repeatable).")
@click.option("--category", default=None, help="Category of the new clips, e.g. basketball.")
@click.option("--mode", type=click.Choice(["auto", "clip", "video"]), default="auto",
              show_default=True,
              help="clip: a file is one clip; video: cut into shot clips; auto: by length.")
@click.option("--link", is_flag=True,
              help="Keep a reference to each source instead of copying the clip's media into "
                   "the library; moving or deleting a source then breaks its clips.")
@_library_options
@ray_options
@click.option("--time-limit", "time_limit_s", type=click.FloatRange(min=0, min_open=True),
              default=3600.0, show_default=True,
              help="With --ray: seconds per file; a file over it is reported, not added.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per new clip.")
@click.pass_context
def add(ctx, paths, runs, tags, category, mode, link, library_path, store, collection, encoder,
        ray_address, workers, time_limit_s, as_json) -> None:  # noqa: ANN001
    """Add clip files or whole videos (PATHS: files, or folders of video files) and highlight
    runs (--from-run) to the library.
    """
    if not paths and not runs:
        raise click.UsageError("give clip/video PATHS or --from-run DIR")
    tag_list = _split_tags(tags)
    executor = make_executor(ray_address, workers)
    files = video_files(paths)
    added, failed = [], []
    with _open(ctx, library_path, store, collection, encoder, create=True) as lib:
        if executor is not None and files:
            from library.bulk import add_paths

            for r in add_paths(lib, files, executor, mode=mode, tags=tag_list,
                               category=category, link=link, time_limit_s=time_limit_s):
                added += r.clips
                if r.error:
                    failed.append(r)
                    click.echo(f"{r.path}\tnot added: {r.error}", err=True)
            files = []
        for p in files:
            added += lib.add_path(p, mode=mode, tags=tag_list, category=category, link=link)
        for r in runs:
            added += lib.add_from_run(r, tags=tag_list, category=category, link=link)
        total = len(lib)
    for clip in added:
        click.echo(clip.model_dump_json() if as_json else _clip_row(clip))
    if not as_json:
        click.echo(f"added {len(added)} clip(s); the library has {total}")
    if failed:
        ctx.exit(1)


@library.command("list")
@click.option("--category", default=None, help="Only this category.")
@click.option("--tags", multiple=True, help="Only clips with all these tags: a,b (repeatable).")
@_library_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per clip.")
@click.pass_context
def list_clips(ctx, category, tags, library_path, store, collection, encoder,
               as_json) -> None:  # noqa: ANN001
    """List the clips of the library; clips whose media is gone are marked MISSING MEDIA."""
    with _open(ctx, library_path, store, collection, encoder) as lib:
        rows = [(c, lib.media_missing(c)) for c in lib.list(category=category,
                                                             tags=_split_tags(tags))]
    for clip, missing in rows:
        if as_json:
            click.echo(json.dumps({**clip.model_dump(mode="json"), "media_missing": missing}))
        else:
            click.echo(_clip_row(clip, missing))
    if any(m for _, m in rows):
        log.warning("%d clip(s) have no media left (source moved or deleted, added with --link)",
                    sum(m for _, m in rows))


@library.command("search")
@click.argument("text")
@click.option("--category", default=None, help="Only this category.")
@click.option("--tags", multiple=True, help="Only clips with all these tags: a,b (repeatable).")
@click.option("--top", "top_k", type=click.IntRange(1, 1000), default=10, show_default=True)
@_library_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit.")
@click.pass_context
def search(ctx, text, category, tags, top_k, library_path, store, collection, encoder,
           as_json) -> None:  # noqa: ANN001
    """Search every clip of the library for TEXT, by what is shown and by what is said
    (z = visual score normalised over the library, said = best sentence's cosine; the two
    rankings fused by reciprocal rank, as `rhl search` does).
    """
    with _open(ctx, library_path, store, collection, encoder) as lib:
        hits = lib.search(text, category=category, tags=_split_tags(tags), top_k=top_k)

    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    for h in hits:
        if as_json:
            click.echo(json.dumps({
                "clip_id": h.clip.clip_id, "channels": list(h.channels),
                "score_fused": round(h.score_fused or 0.0, 6),
                **{k: None if v is None else round(v, 4) for k, v in (
                    ("score_norm", h.score_norm), ("score_raw", h.score_raw),
                    ("score_speech", h.score_speech))},
                "source_path": h.clip.source_path, "start_s": h.clip.start_s,
                "end_s": h.clip.end_s, "category": h.clip.category, "tags": list(h.clip.tags),
                "summary": h.clip.summary,
            }))
        else:
            click.echo(f"{'+'.join(h.channels):13s} z={num(h.score_norm, '6.2f')}  "
                       f"cos={num(h.score_raw, '.4f')}  said={num(h.score_speech, '.3f')}  "
                       f"{_clip_row(h.clip)}")


@library.command("rm")
@click.argument("clip_ids", nargs=-1, required=True)
@_library_options
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_context
def rm(ctx, clip_ids, library_path, store, collection, encoder, as_json) -> None:  # noqa: ANN001
    """Remove clips (and their vectors) by id."""
    with _open(ctx, library_path, store, collection, encoder) as lib:
        n = lib.remove(list(clip_ids))
        left = len(lib)
    if as_json:
        click.echo(json.dumps({"removed": n, "left": left}))
    else:
        click.echo(f"removed {n} clip(s); {left} left")


@library.command("export")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON here instead of standard output.")
@_library_options
@click.pass_context
def export(ctx, out_path, library_path, store, collection, encoder) -> None:  # noqa: ANN001
    """Export the catalog (clips, tags, sources, encoder) as JSON."""
    if out_path is not None:
        from rhl_common.atomic import check_writable

        check_writable(out_path)
    with _open(ctx, library_path, store, collection, encoder) as lib:
        text = lib.export(out_path)
    if out_path is None:
        click.echo(text)
    else:
        click.echo(f"wrote {out_path}")


@click.command("assemble", cls=Command)
@click.argument("script")
@_library_options
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="edit.mp4",
              show_default=True, help="The rendered edit; the plan and SRT go next to it.")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), default=None,
              help="Plan JSON path (default OUT with .plan.json).")
@click.option("--size", default=None, help="Output WIDTHxHEIGHT (default: the first cut's).")
@click.option("--fps", type=click.FloatRange(0, 240, min_open=True), default=None,
              help="Output frame rate (default: the first cut's).")
@click.option("--crossfade", "crossfade_s", type=click.FloatRange(0, 5), default=0.0,
              show_default=True, help="Crossfade between cuts in seconds (0 = hard cuts).")
@click.option("--allow-reuse", is_flag=True, help="Let several events use the same clip.")
@click.option("--min-z", type=float, default=None,
              help="Match threshold on the normalised score (default: by library size, >= 2).")
@click.option("--no-render", is_flag=True, help="Write the plan and SRT only.")
@click.option("--timeline", "timelines", multiple=True,
              type=click.Choice(["otio", "fcpxml", "xml", "edl"]),
              help="Editor timeline formats besides OUT with .otio (repeatable): fcpxml, xml "
                   "(FCP7 XML), edl (CMX 3600).")
@click.option("--transition", type=click.Choice(["crossfade", "dip"]), default=None,
              help="How --crossfade joins the cuts: crossfade or dip through black.")
@click.option("--music", default=None, help="Background music FILE (or a DIR to pick from), "
              "ducked under the cuts' own sound, faded at the ends.")
@click.option("--letterbox", is_flag=True,
              help="Fit clips of another shape with black bars instead of reframing them.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.pass_context
def assemble(ctx, script, library_path, store, collection, encoder, out_path, plan_path, size,
             fps, crossfade_s, allow_reuse, min_z, no_render, timelines, transition, letterbox,
             music, as_json) -> None:  # noqa: ANN001
    """Assemble an edit from the library following SCRIPT; writes the plan, SRT, OUT with .otio
    (the editor timeline) and the mp4.

    SCRIPT is a text file (one event per line, English or Chinese), a YAML script, template:NAME
    for a built-in template (basketball, soccer, wedding, ...), or a saved .plan.json to render
    again. Events without a good match are reported and left out.
    """
    from library.assemble import load_plan, plan_assembly, plan_srt, render_plan, save_plan
    from library.script import load_script
    from library.templates import load_script_template
    from retrieval_hl.config import parse_wh
    from rhl_common.atomic import check_writable, write_atomic
    from rhl_common.errors import RenderError

    out = check_writable(out_path)
    plan_file = Path(plan_path) if plan_path else out.with_suffix(".plan.json")
    srt_file = out.with_suffix(".srt")
    check_writable(plan_file, what="--plan")
    if script.endswith(".json"):
        plan = load_plan(script)
        plan_file = Path(script)
        if size:  # render a saved plan at another size
            w, h = parse_wh(size, "size")
            plan = plan.model_copy(update={"width_px": w - w % 2, "height_px": h - h % 2})
        if transition:
            plan = plan.model_copy(update={"transition": transition})
    else:
        parsed = (load_script_template(script[len("template:"):])
                  if script.startswith("template:") else load_script(script))
        with _open(ctx, library_path, store, collection, encoder) as lib:
            plan = plan_assembly(parsed, lib, min_z=min_z, allow_reuse=allow_reuse,
                                 size=parse_wh(size, "size") if size else None, fps=fps,
                                 crossfade_s=crossfade_s)
        if transition:
            plan = plan.model_copy(update={"transition": transition})
        save_plan(plan, plan_file)
    write_atomic(srt_file, plan_srt(plan))
    written = {"plan": str(plan_file), "srt": str(srt_file)}
    if not plan.steps:
        raise RenderError(
            f"no event of {script} matched a library clip; nothing to render "
            f"(plan written to {plan_file})"
        )
    from library.timeline import write_plan_timelines

    for kind, path in write_plan_timelines(plan, out.with_suffix(""), timelines).items():
        written[kind] = str(path)
    if not no_render:
        written["mp4"] = str(render_plan(plan, out, reframe=not letterbox, music=music))
    if as_json:
        click.echo(json.dumps({
            "steps": len(plan.steps), "duration_s": round(plan.duration_s, 3),
            "missed": [m.model_dump(mode="json") for m in plan.missed], **written,
        }))
        return
    for s in plan.steps:
        click.echo(f"{s.out_start_s:7.2f}-{s.out_end_s:7.2f}s  z={s.score_norm:5.2f}  "
                   f"{s.channel:6s}  {s.clip_id}  {s.text}")
    for m in plan.missed:
        click.echo(f"  missed event {m.event_index + 1} {m.text!r}: {m.reason}")
    click.echo(f"{len(plan.steps)} cuts, {plan.duration_s:.1f} s, {len(plan.missed)} missed -> "
               + ", ".join(written.values()))
