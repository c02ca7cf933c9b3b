"""Throughput: the main job on a 10-minute 720p30 video vs a plain ffmpeg decode of the same file.

    .venv/bin/python bench/throughput.py [--minutes 10] [--encoder open_clip:ViT-B-32:random]
                                         [--ratio 9:16]

The main job is ``highlight_video`` (index + signals in one decode pass, describe, retrieve,
select; grounding with --ratio) followed by ``export_highlights`` (JSON, SRT, rendered mp4).

Prints which ffmpeg is the reference, wall times, the ratio pipeline / ``ffmpeg -f null`` decode
(both measured in this run, so the ratio holds on a loaded machine), how many sampled frames the
encoder really embedded, and peak RSS of this process. The test video is generated once into
bench/out/ (git-ignored); a video longer than 10 minutes is the 10-minute one repeated (stream
copy), so a 60-minute run costs no encoding.
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
    if minutes > 10 and minutes % 10 == 0:
        base = make_video(10)
        playlist = OUT / f"concat_{minutes:g}.txt"
        playlist.write_text(f"file '{base.name}'\n" * int(minutes // 10))
        part = path.with_suffix(".part.mp4")
        cmd = ["-f", "concat", "-safe", "0", "-i", str(playlist), "-c", "copy", str(part)]
        subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *cmd],
                       check=True)
        return part.rename(path)
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
            str(path.with_suffix(".part.mp4")),
        ],
        check=True,
    )
    return path.with_suffix(".part.mp4").rename(path)


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
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_ref = kids.ru_utime + kids.ru_stime  # CPU seconds: steadier than wall on a busy machine

    from indexer.encoders import create_encoder
    from indexer.probe import probe_video
    from indexer.slicing import sample_frames
    from retrieval_hl.config import load_settings, parse_wh
    from retrieval_hl.pipeline import export_highlights, highlight_video

    ratio = parse_wh(args.ratio) if args.ratio else None
    with tempfile.TemporaryDirectory() as tmp:
        s = load_settings(None, encoder=args.encoder, store=f"{tmp}/store", reader=args.reader)
        # model construction is not decode work: outside the clock
        enc = CountingEncoder(create_encoder(s.encoder))
        n_sampled = len(sample_frames(probe_video(video), s.sample_fps))
        t0 = time.perf_counter()
        c0 = time.process_time()
        hl = highlight_video(video, settings=s, encoder=enc, ratio_wh=ratio)
        t_find = time.perf_counter() - t0
        cpu_find = time.process_time() - c0
        export_highlights(hl, f"{tmp}/run", settings=s)
        t_all = time.perf_counter() - t0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    grounded = " + ground" if ratio else ""
    print(f"video                          {video.name} ({args.minutes:g} min, 1280x720, 30 fps)")
    print(f"reference ffmpeg               {ffmpeg_binary()} ({ffmpeg_version()})")
    print(f"encoder                        {s.encoder}")
    print(f"ffmpeg -f null                 {t_ref:7.1f} s")
    print(f"highlight_video{grounded:9s}       {t_find:7.1f} s  ({len(hl.slices)} slices, "
          f"{len(hl.segments)} segments, {hl.duration_s:.0f} s kept)")
    print(f"frames embedded / sampled      {enc.n_images} / {n_sampled} "
          f"({enc.n_images / max(n_sampled, 1):.0%})")
    print(f"... + export (render)          {t_all:7.1f} s")
    print(f"ratio analysis/ffmpeg-decode   {t_find / t_ref:5.2f}")
    print(f"ratio end-to-end/ffmpeg-decode {t_all / t_ref:5.2f}")
    cpu = f"{cpu_find / cpu_ref:5.2f} ({cpu_find:.0f} / {cpu_ref:.0f} CPU s)"
    print(f"ratio CPU analysis/decode      {cpu}")
    print(f"peak RSS (this process)        {rss_mib:7.0f} MiB")


if __name__ == "__main__":
    main()
