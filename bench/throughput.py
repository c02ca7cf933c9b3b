"""Throughput: the main job on a 720p30 video of real footage vs a plain ffmpeg decode of it.

    .venv/bin/python bench/throughput.py [--minutes 10 60] [--encoder open_clip:ViT-B-32:random]
                                         [--ratio 9:16]

The main job is ``highlight_video`` (index + signals in one decode pass, describe, retrieve,
select; grounding with --ratio) followed by ``export_highlights`` (JSON, SRT, rendered mp4).

The video is the real footage of ``../shared/data`` (filler: conveyor, traffic, a corridor; and
clips: a juggler, a long jump, two moments and DAVIS actions), each scaled and padded to
1280x720 at 30 fps with its sound (silence where it has none), joined and looped to the length
asked for (stream copy): a mix of still stretches and action, as a long raw video is. It is
generated once into bench/out/ (git-ignored).

Each length runs in a child process of its own (peak RSS is per process), which prints which
ffmpeg is the reference, wall times, the ratio pipeline / ``ffmpeg -f null`` decode (both measured
in that child, so the ratio holds on a loaded machine), how many sampled frames the encoder really
embedded, and its peak RSS.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rhl_common.ffmpeg import ffmpeg_binary

OUT = Path(__file__).parent / "out"
DATA = Path(os.environ.get("RHL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
# Real footage, filler and action interleaved (DAVIS sequences are 2-4 s each).
SOURCES = (
    "filler/one-by-one-person-detection.mp4",
    "clips/juggle.mp4",
    "filler/bottle-detection.mp4",
    "davis16/parkour.mp4",
    "davis16/motocross-jump.mp4",
    "clips/long_jump.mp4",
    "filler/car-detection.mp4",
    "davis16/breakdance.mp4",
    "davis16/dog.mp4",
    "moments/Y1HGC.mp4",
    "davis16/kite-surf.mp4",
    "davis16/dance-twirl.mp4",
    "moments/v_GGSY1Qvo990.mp4",
    "davis16/camel.mp4",
)
SIZE = (1280, 720)
FPS = 30


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True)


def _part(src: Path, n: int) -> Path:
    """``src`` as 1280x720 30 fps H.264 (GOP 2 s) with 44.1 kHz stereo AAC, silence if mute."""
    path = OUT / "real_parts" / f"{n:02d}_{src.stem}.mp4"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = SIZE
    fit = (f"scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,"
           f"setsar=1,fps={FPS},format=yuv420p")
    tmp = path.with_suffix(".part.mp4")
    _ffmpeg("-i", str(src), "-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo",
            "-filter_complex", f"[0:v]{fit}[v];[0:a]aresample=44100,"
            "aformat=channel_layouts=stereo[a]" if _has_audio(src) else f"[0:v]{fit}[v]",
            "-map", "[v]", "-map", "[a]" if _has_audio(src) else "1:a", "-shortest",
            "-c:v", "libx264", "-preset", "veryfast", "-g", str(2 * FPS),
            "-c:a", "aac", "-ar", "44100", "-ac", "2", str(tmp))
    return tmp.rename(path)


def _has_audio(src: Path) -> bool:
    from indexer.probe import probe_video

    return probe_video(src).has_audio


def make_video(minutes: float) -> Path:
    """The bench video: the real footage of ``SOURCES`` looped to ``minutes`` (made once)."""
    path = OUT / f"bench_real_{minutes:g}min_720p30.mp4"
    if path.exists():
        return path
    missing = [s for s in SOURCES if not (DATA / s).exists()]
    if missing:
        sys.exit(f"shared data missing under {DATA} (set RHL_SHARED_DATA): {', '.join(missing)}")
    parts = [_part(DATA / s, n) for n, s in enumerate(SOURCES)]
    playlist = OUT / "real_playlist.txt"
    playlist.write_text("".join(f"file '{p.resolve()}'\n" for p in parts) * 100)
    part = path.with_suffix(".part.mp4")
    _ffmpeg("-f", "concat", "-safe", "0", "-i", str(playlist), "-t", f"{minutes * 60:g}",
            "-c", "copy", str(part))
    return part.rename(path)


def ffmpeg_version() -> str:
    out = subprocess.run([ffmpeg_binary(), "-version"], capture_output=True, text=True).stdout
    return (out.splitlines() or ["?"])[0]


class CountingEncoder:
    """The encoder, counting the frames it is asked to embed."""

    def __init__(self, enc) -> None:  # noqa: ANN001
        self._enc = enc
        self.n_images = 0

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._enc, name)

    def encode_images(self, frames):  # noqa: ANN001, ANN201
        self.n_images += len(frames)
        return self._enc.encode_images(frames)


def run_one(args: argparse.Namespace, minutes: float) -> None:
    """One length, in this process: the ffmpeg reference, then the main job, then the numbers."""
    video = make_video(minutes)
    t0 = time.perf_counter()
    _ffmpeg("-i", str(video), "-f", "null", "-")
    t_ref = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_ref = kids.ru_utime + kids.ru_stime  # CPU seconds: steadier than wall on a busy machine

    from indexer.encoders import create_encoder
    from indexer.probe import probe_video
    from indexer.slicing import sample_frames
    from retrieval_hl.config import load_settings, parse_wh
    from retrieval_hl.pipeline import export_highlights, highlight_video
    from rhl_common.errors import RenderError

    ratio = parse_wh(args.ratio) if args.ratio else None
    info = probe_video(video)
    with tempfile.TemporaryDirectory() as tmp:
        s = load_settings(None, encoder=args.encoder, store=f"{tmp}/store", reader=args.reader)
        # model construction is not decode work: outside the clock
        enc = CountingEncoder(create_encoder(s.encoder))
        n_sampled = len(sample_frames(info, s.sample_fps))
        t0 = time.perf_counter()
        c0 = time.process_time()
        hl = highlight_video(video, settings=s, encoder=enc, ratio_wh=ratio)
        t_find = time.perf_counter() - t0
        cpu_find = time.process_time() - c0
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        grounded = " + ground" if ratio else ""
        print(f"video                          {video.name} ({info.duration_s / 60:.1f} min, "
              f"{info.width_px}x{info.height_px}, {info.fps:g} fps)")
        print(f"reference ffmpeg               {ffmpeg_binary()} ({ffmpeg_version()})")
        print(f"encoder                        {s.encoder}")
        print(f"load average after analysis    {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"ffmpeg -f null                 {t_ref:7.1f} s")
        print(f"highlight_video{grounded:9s}       {t_find:7.1f} s  ({len(hl.slices)} slices, "
              f"{len(hl.segments)} segments, {hl.duration_s:.0f} s kept)")
        print(f"frames embedded / sampled      {enc.n_images} / {n_sampled} "
              f"({enc.n_images / max(n_sampled, 1):.0%})")
        print(f"ratio analysis/ffmpeg-decode   {t_find / t_ref:5.2f}")
        cpu = f"{cpu_find / cpu_ref:5.2f} ({cpu_find:.0f} / {cpu_ref:.0f} CPU s)"
        print(f"ratio CPU analysis/decode      {cpu}")
        print(f"peak RSS analysis (this proc)  {rss_mib:7.0f} MiB", flush=True)
        try:
            export_highlights(hl, f"{tmp}/run", settings=s)
        except RenderError as exc:
            print(f"export failed                  {exc}")
            return
        t_all = time.perf_counter() - t0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"... + export (render)          {t_all:7.1f} s")
    print(f"ratio end-to-end/ffmpeg-decode {t_all / t_ref:5.2f}")
    print(f"peak RSS with export           {rss_mib:7.0f} MiB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    ap.add_argument("--encoder", default="open_clip:ViT-B-32:random")
    ap.add_argument("--reader", default="auto")
    ap.add_argument("--ratio", default=None, help="Also ground and reframe, e.g. 9:16.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if len(args.minutes) == 1:
        run_one(args, args.minutes[0])
        return
    for minutes in args.minutes:  # a child each: peak RSS is per process
        make_video(minutes)
        print(f"--- {minutes:g} min", flush=True)
        child = ["--minutes", f"{minutes:g}", "--encoder", args.encoder, "--reader", args.reader]
        child += ["--ratio", args.ratio] if args.ratio else []
        subprocess.run([sys.executable, __file__, *child], check=True)


if __name__ == "__main__":
    main()
