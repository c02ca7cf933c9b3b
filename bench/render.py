"""Render time: the renderer against a plain ffmpeg cut of the same segments.

    .venv/bin/python bench/render.py [--video FILE] [--segments 6] [--seconds 5] [--repeat 3]
        [--starts S1,S2,...]

The segments are spread evenly over the video, or start at ``--starts`` (seconds).

The plain cut is one ffmpeg command: every segment input-seeked (``-ss``/``-t``), joined with
the concat filter, encoded with the same codec settings (libx264 veryfast crf 20, AAC); its
inputs take ``-reinit_filter 0``, without which a file whose picture format changes mid-way
(clips joined by stream copy) stalls that one graph for good. Against
it: ``render_highlight`` with hard cuts and no loudness target (what the renderer adds: per-cut
normalisation of size, rate and sound), then with the default -14 LUFS loudness target, then
with a 0.5 s crossfade; and, reported apart, the reframed 9:16 render at its publishing size
(crop boxes centred; the grounding stage's own cost is not in it). Each figure is the median
wall time of ``--repeat`` runs in this process; ratios are against the plain cut.
The default video is generated once into bench/out/ (2 minutes, 1280x720, 30 fps, with sound).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from indexer.probe import probe_video
from retrieval_hl.models import CropBox, Description, Highlight, Segment
from retrieval_hl.render.export import publish_size, render_highlight, render_reframed
from retrieval_hl.render.renderer import ffmpeg_file
from rhl_common.ffmpeg import ffmpeg_binary

OUT = Path(__file__).parent / "out"


def make_video() -> Path:
    path = OUT / "bench_render_2min_720p30.mp4"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run([
            ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=120",
            "-f", "lavfi", "-i", "sine=frequency=440:duration=120",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "60",
            "-c:a", "aac", "-shortest", str(path),
        ], check=True)
    return path


def plain_cut(path: str, spans: list[tuple[float, float]], out: Path, audio: bool) -> None:
    args = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y"]
    for a, d in spans:
        args += ["-reinit_filter", "0", "-ss", f"{a:.6f}", "-t", f"{d:.6f}", "-i",
                 ffmpeg_file(path)]
    n = len(spans)
    pads = "".join(f"[{k}:v:0]" + (f"[{k}:a:0]" if audio else "") for k in range(n))
    graph = f"{pads}concat=n={n}:v=1:a={int(audio)}[v]" + ("[a]" if audio else "")
    args += ["-filter_complex", graph, "-map", "[v]"]
    if audio:
        args += ["-map", "[a]", "-c:a", "aac", "-b:a", "160k"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
             "-movflags", "+faststart", str(out)]
    subprocess.run(args, check=True)


def timed(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", default=None)
    ap.add_argument("--segments", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--starts", default=None, help="comma-separated segment starts, seconds")
    a = ap.parse_args()
    info = probe_video(a.video or make_video())
    step = info.duration_s / a.segments
    starts = ([float(x) for x in a.starts.split(",")] if a.starts
              else [k * step + 0.5 for k in range(a.segments)])
    segs = []
    for start_s in starts:
        f0 = info.frame_at(start_s)
        f1 = min(f0 + round(a.seconds * info.fps), info.n_frames)
        segs.append(Segment(video_id=info.video_id, start_frame=f0, end_frame=f1,
                            start_s=f0 / info.fps, end_s=f1 / info.fps, description_index=0,
                            priority=1, score_raw=0.0, score_norm=0.0))
    cw = round(info.height_px * 9 / 16) // 2 * 2
    boxes = tuple(CropBox(frame=f, x_px=(info.width_px - cw) // 2, y_px=0, w_px=cw,
                          h_px=info.height_px)
                  for s in segs for f in range(s.start_frame, s.end_frame))
    hl = Highlight(video=info, encoder="none", descriptions=(Description(text="x"),),
                   segments=tuple(segs), crops=boxes, ratio_wh=(9, 16))
    spans = [(s.start_s, s.duration_s) for s in segs]
    kept = sum(d for _, d in spans)
    print(f"{info.path}: {info.width_px}x{info.height_px} @ {info.fps:g} fps, audio "
          f"{info.has_audio}; {len(segs)} segments, {kept:.1f} s kept; median of {a.repeat}")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        base = timed(lambda: plain_cut(info.path, spans, d / "plain.mp4", info.has_audio),
                     a.repeat)
        rows = [
            ("renderer, hard cuts, no loudness target",
             lambda: render_highlight(hl, d / "h0.mp4", loudness_lufs=None)),
            ("renderer, hard cuts, -14 LUFS", lambda: render_highlight(hl, d / "h1.mp4")),
            ("renderer, 0.5 s crossfade, -14 LUFS",
             lambda: render_highlight(hl, d / "h2.mp4", 0.5)),
        ]
        print(f"{'plain ffmpeg cut (reference)':44s} {base:7.2f} s   1.00x")
        for name, fn in rows:
            t = timed(fn, a.repeat)
            print(f"{name:44s} {t:7.2f} s   {t / base:.2f}x")
        size = publish_size((9, 16), (cw, info.height_px))
        t = timed(lambda: render_reframed(hl, d / "h0.mp4", d / "r.mp4", size), a.repeat)
        print(f"{f'reframed 9:16 at {size[0]}x{size[1]} (from the cut)':44s} {t:7.2f} s   "
              f"{t / base:.2f}x  (reported apart)")


if __name__ == "__main__":
    main()
