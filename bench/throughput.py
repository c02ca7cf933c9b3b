"""Throughput: the main job on a 10-minute 720p30 video vs a plain ffmpeg decode of the same file.

    .venv/bin/python bench/throughput.py [--minutes 10] [--encoder open_clip:ViT-B-32:random]
                                         [--ratio 9:16]

The main job is ``highlight_video`` (index + signals in one decode pass, describe, retrieve,
select; grounding with --ratio) followed by ``export_highlights`` (JSON, SRT, rendered mp4).

Prints wall times, the ratio pipeline / ``ffmpeg -f null`` decode (both measured in this run),
and peak RSS of this process. The test video is generated once into bench/out/.
"""

from __future__ import annotations

import argparse
import logging
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from rhl_common.ffmpeg import ffmpeg_binary

OUT = Path(__file__).parent / "out"


def make_video(minutes: float) -> Path:
    path = OUT / f"bench_{minutes:g}min_720p30.mp4"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    secs = minutes * 60
    subprocess.run(
        [
            ffmpeg_binary(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=1280x720:rate=30:duration={secs}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={secs}",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "60",
            "-c:a",
            "aac",
            "-shortest",
            str(path),
        ],
        check=True,
    )
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--encoder", default="open_clip:ViT-B-32:random")
    ap.add_argument("--reader", default="auto")
    ap.add_argument("--ratio", default=None, help="Also ground and reframe, e.g. 9:16.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    video = make_video(args.minutes)

    t0 = time.perf_counter()
    subprocess.run(
        [
            ffmpeg_binary(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(video),
            "-f",
            "null",
            "-",
        ],
        check=True,
    )
    t_ref = time.perf_counter() - t0

    from indexer.encoders import create_encoder
    from retrieval_hl.config import load_settings, parse_wh
    from retrieval_hl.pipeline import export_highlights, highlight_video

    ratio = parse_wh(args.ratio) if args.ratio else None
    with tempfile.TemporaryDirectory() as tmp:
        s = load_settings(None, encoder=args.encoder, store=f"{tmp}/store", reader=args.reader)
        enc = create_encoder(s.encoder)  # model construction is not decode work: outside the clock
        t0 = time.perf_counter()
        hl = highlight_video(video, settings=s, encoder=enc, ratio_wh=ratio)
        t_find = time.perf_counter() - t0
        export_highlights(hl, f"{tmp}/run", settings=s)
        t_all = time.perf_counter() - t0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    grounded = " + ground" if ratio else ""
    print(f"video                          {video.name} ({args.minutes:g} min, 1280x720, 30 fps)")
    print(f"ffmpeg -f null                 {t_ref:7.1f} s")
    print(f"highlight_video{grounded:9s}       {t_find:7.1f} s  ({len(hl.slices)} slices, "
          f"{len(hl.segments)} segments, {hl.duration_s:.0f} s kept)")
    print(f"... + export (render)          {t_all:7.1f} s")
    print(f"ratio analysis/ffmpeg-decode   {t_find / t_ref:5.2f}")
    print(f"ratio end-to-end/ffmpeg-decode {t_all / t_ref:5.2f}")
    print(f"peak RSS (this process)        {rss_mib:7.0f} MiB")


if __name__ == "__main__":
    main()
