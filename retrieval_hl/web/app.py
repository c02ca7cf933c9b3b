"""``rhl serve``: a Gradio page to drop a video, watch the run, look at what was picked and why,
adjust it and download the files.

Bound to 127.0.0.1 unless told otherwise, uploads capped in size, one job at a time (a queue of
``MAX_QUEUE`` waiting), no analytics and no outside fonts. Bad input is shown as one line on the
page; anything unexpected is logged on the server with its traceback and shown as one line too.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from retrieval_hl.config import Settings  # noqa: E402
from retrieval_hl.web.jobs import (  # noqa: E402
    RATIOS,
    JobRequest,
    JobResult,
    adjust_job,
    run_job,
    stage_upload,
)
from rhl_common.errors import ConfigError, RHLError  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD = "500mb"
MAX_QUEUE = 8
VIDEO_TYPES = [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv"]
DOWNLOAD_KINDS = ("json", "predictions", "srt", "otio", "fcpxml", "xml", "edl", "mp4", "reframed")
INTRO = """# retrieval-hl: highlights from a long video
Drop a video, optionally say what to keep (English or 中文, e.g. *the goals and the
celebrations* / *挑几个好玩的镜头*), pick a publishing ratio and a length budget
(`60s`, `2m`, `0.2` of the video, or `none`). Without a request the video's own signals decide
(motion, sound, cuts, faces, people).
"""


def _segment_choices(result: JobResult) -> list[tuple[str, str]]:
    hl = result.highlight
    return [
        (f"{k + 1} · {s.start_s:.1f}–{s.end_s:.1f} s · {hl.descriptions[s.description_index].text}",
         str(k))
        for k, s in enumerate(hl.segments)
    ]


def _summary(result: JobResult) -> str:
    hl = result.highlight
    note = ""
    if result.request.prompt and hl.encoder == "none":
        note = ("\n\n*Your request was not used: semantic matching is off on this server, so the "
                "video's signals decided.*")
    if not hl.segments:
        return (f"**No highlight found** in {hl.video.video_id} ({hl.video.duration_s:.1f} s)."
                + note)
    rows = "\n".join(
        f"| {k + 1} | {s.start_s:.2f}–{s.end_s:.2f} s | {s.duration_s:.1f} s | {s.score_norm:.2f} "
        f"| {hl.descriptions[s.description_index].text} |"
        for k, s in enumerate(hl.segments)
    )
    return (
        f"**{len(hl.segments)} segment(s), {hl.duration_s:.1f} s** of {hl.video.duration_s:.1f} s "
        f"(encoder: `{hl.encoder}`)\n\n| # | from–to | length | score | description |\n"
        f"|---|---|---|---|---|\n{rows}{note}"
    )


def _downloads(result: JobResult) -> list[str]:
    return [result.files[k] for k in DOWNLOAD_KINDS if k in result.files]


def build_app(settings: Settings, work_dir: str | Path):  # noqa: ANN201
    """The page as a ``gradio.Blocks``, writing every run under ``work_dir``."""
    import gradio as gr

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)

    def outputs(result: JobResult | None, message: str):  # noqa: ANN202
        if result is None:
            return (message, None, None, None, gr.update(value=None, visible=False),
                    gr.update(choices=[], value=[]), None, None)
        files = result.files
        reframed = files.get("reframed")
        return (
            message or _summary(result),
            files.get("timeline"),
            files.get("contact_sheet"),
            files.get("mp4"),
            gr.update(value=reframed, visible=reframed is not None),
            gr.update(choices=_segment_choices(result),
                      value=[str(k) for k in range(len(result.highlight.segments))]),
            _downloads(result),
            result,
        )

    def guarded(job):  # noqa: ANN001, ANN202
        """Run ``job``; bad input becomes one line on the page, never a traceback."""
        try:
            return outputs(job(), "")
        except RHLError as exc:
            return outputs(None, f"**error:** {exc}")
        except Exception as exc:  # noqa: BLE001  (the page must not show a traceback)
            log.exception("web job failed")
            return outputs(None, f"**error:** the run failed on the server ({type(exc).__name__});"
                                 " its log has the details")

    def start(upload, prompt, ratio, budget, progress=gr.Progress()):  # noqa: ANN001, ANN202, B008
        def job() -> JobResult:
            video = stage_upload(upload, work)
            req = JobRequest(video_path=str(video), prompt=(prompt or "").strip() or None,
                             ratio=ratio, budget=(budget or "").strip() or "0.2")
            try:
                return run_job(req, work, settings, lambda f, s: progress(f, desc=s))
            except RHLError as exc:  # name the file as the user knows it, not the server's path
                raise type(exc)(str(exc).replace(str(video), video.name)) from None

        return guarded(job)

    def adjust(previous, keep, budget, progress=gr.Progress()):  # noqa: ANN001, ANN202, B008
        def job() -> JobResult:
            if previous is None:
                raise ConfigError("nothing to adjust yet: run the video first")
            return adjust_job(previous, [int(k) for k in keep or []], (budget or "").strip(),
                              work, settings, lambda f, s: progress(f, desc=s))

        return guarded(job)

    with gr.Blocks(title="retrieval-hl") as app:
        gr.Markdown(INTRO)
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Video", file_types=VIDEO_TYPES, type="filepath",
                                 elem_id="upload")
                prompt = gr.Textbox(label="What to keep (optional, English or 中文)",
                                    placeholder="the goals and the celebrations / 挑几个好玩的镜头",
                                    elem_id="prompt")
                with gr.Row():
                    ratio = gr.Dropdown(list(RATIOS), value="9:16", label="Ratio",
                                        elem_id="ratio")
                    budget = gr.Textbox(value=settings.budget, label="Budget",
                                        info="60s, 2m, 0.2 (of the video) or none",
                                        elem_id="budget")
                go = gr.Button("Find highlights", variant="primary", elem_id="go")
                keep = gr.CheckboxGroup(label="Segments (untick to drop)", choices=[],
                                        elem_id="keep")
                apply = gr.Button("Apply: drop unticked segments / use the new budget",
                                  elem_id="apply")
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                    elem_id="downloads")
            with gr.Column(scale=2):
                status = gr.Markdown("Results appear here.", elem_id="status")
                with gr.Row():
                    video = gr.Video(label="Highlight video", interactive=False, height=380,
                                     elem_id="highlight")
                    reframed = gr.Video(label="Reframed video", interactive=False, height=380,
                                        visible=False, elem_id="reframed")
                # The pictures carry their own titles; a label badge would cover them.
                timeline = gr.Image(type="filepath", interactive=False, show_label=False,
                                    elem_id="timeline")
                sheet = gr.Image(type="filepath", interactive=False, show_label=False,
                                 elem_id="sheet")
        shown = [status, timeline, sheet, video, reframed, keep, downloads, state]
        go.click(start, [upload, prompt, ratio, budget], shown, concurrency_limit=1)
        apply.click(adjust, [state, keep, budget], shown, concurrency_limit=1)
    return app


def upload_limit_bytes(text: str) -> int:
    """``500mb``, ``2 GB``, ``800kb`` -> bytes.

    Raises:
        ConfigError: anything else.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(kb|mb|gb)\s*", str(text).lower())
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"bad upload limit {text!r}; use a size like 500mb, 2gb or 800kb")
    return int(float(m.group(1)) * {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}[m.group(2)])


def serve(
    settings: Settings,
    work_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_upload: str = DEFAULT_MAX_UPLOAD,
    block: bool = True,
):  # noqa: ANN201
    """Start the page; with ``block`` serve until interrupted, else return the app running.

    Raises:
        ConfigError: gradio is not installed, or ``max_upload`` is not a size like ``500mb``.
    """
    try:
        import gradio as gr
    except ImportError:
        raise ConfigError("the web page needs gradio: pip install 'retrieval-hl[web]'") from None
    limit = upload_limit_bytes(max_upload)
    app = build_app(settings, work_dir)
    app.queue(default_concurrency_limit=1, max_size=MAX_QUEUE)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])
    log.info("serving on http://%s:%d (runs under %s, uploads up to %s)", host, port, work_dir,
             max_upload)
    app.launch(server_name=host, server_port=port, max_file_size=limit, theme=theme,
               allowed_paths=[str(Path(work_dir).resolve())], prevent_thread_lock=not block,
               share=False, ssr_mode=False, footer_links=[], quiet=True, show_error=False)
    return app
