"""Local vs Ray: the competition batch on N short generated videos, on this machine.

    PYTHONPATH=. .venv/bin/python bench/ray_batch.py [--videos 20] [--seconds 8] [--workers 2]
        [--encoder open_clip:rhl-tiny-vit:random] [--rate-encoder open_clip:ViT-B-32:random]

Runs the same index through ``run_batch`` twice, with the local executor (a child process per
video, the encoder loaded in each) and with the Ray executor (``--workers`` actors, the encoder
loaded once per actor, Ray started here with 2 CPUs), checks that both wrote the same file, and
prints wall times, their ratio, the load average, and the per-video cost. With
``--rate-encoder`` it also times the main job on one 60 s 640x360 video with that encoder
(random weights cost what trained ones do), the processing rate the scale-out plan starts from.
On a 2-CPU machine expect no gain from Ray: the point is the path.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

from rhl_common.ffmpeg import ffmpeg_binary

OUT = Path(__file__).parent / "out" / "ray_batch"
SOURCES = (
    "testsrc2=size=320x180:rate=25:duration={s}",
    "color=c=0x202020:s=320x180:r=25:d={s}[bg];color=c=white:s=30x30:r=25:d={s}[b];"
    "[bg][b]overlay=x='20+t*30':y=70",
    "mandelbrot=size=320x180:rate=25,trim=duration={s}",
)


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True)


def make_videos(n: int, seconds: float) -> Path:
    d = OUT / f"{n}x{seconds:g}s"
    d.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        path = d / f"v{k:02d}.mp4"
        if not path.exists():
            src = SOURCES[k % len(SOURCES)].format(s=seconds)
            ffmpeg("-f", "lavfi", "-i", src, "-c:v", "libx264", "-pix_fmt", "yuv420p",
                   "-g", "25", str(path.with_suffix(".part.mp4")))
            path.with_suffix(".part.mp4").rename(path)
    return d


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--encoder", default="open_clip:rhl-tiny-vit:random")
    ap.add_argument("--rate-encoder", default=None)
    ap.add_argument("--rate-only", action="store_true", help="Only the --rate-encoder timing.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch  # noqa: F401  (before decord)

    from retrieval_hl.competition.batch import for_remote_workers, make_predictor, run_batch
    from retrieval_hl.config import Settings
    from retrieval_hl.executors.local import LocalExecutor
    from retrieval_hl.executors.ray_actors import RayExecutor

    if args.rate_only:
        return rate(args.rate_encoder)
    vids = make_videos(args.videos, args.seconds)
    tmp = Path(tempfile.mkdtemp(prefix="ray_batch_"))
    index = tmp / "index.json"
    index.write_text(json.dumps([{"video_id": f"v{k:02d}", "targetRatioWH": [9, 16]}
                                 for k in range(args.videos)]))
    s = Settings(encoder=args.encoder, semantic="on", budget="none", render=False,
                 allow_empty=True, store=str(tmp / "store"))
    print(f"{args.videos} videos of {args.seconds:g} s, 320x180 25 fps; encoder {args.encoder}; "
          f"{os.cpu_count()} CPUs; load average {load()}")

    t0 = time.monotonic()
    res = run_batch(index, vids, tmp / "local.jsonl", make_predictor(s), executor=LocalExecutor())
    t_local = time.monotonic() - t0
    print(f"local: {t_local:.1f} s ({t_local / args.videos:.2f} s/video), "
          f"{len(res.failed)} failed; load {load()}")

    import ray

    t0 = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t_init = time.monotonic() - t0
    t0 = time.monotonic()
    res = run_batch(index, vids, tmp / "ray.jsonl", make_predictor(for_remote_workers(s)),
                    executor=RayExecutor(workers=args.workers))
    t_ray = time.monotonic() - t0
    ray.shutdown()
    same = (tmp / "local.jsonl").read_text() == (tmp / "ray.jsonl").read_text()
    print(f"ray ({args.workers} actors): {t_ray:.1f} s ({t_ray / args.videos:.2f} s/video) "
          f"+ {t_init:.1f} s ray.init, {len(res.failed)} failed; load {load()}")
    print(f"ray / local wall time: {t_ray / t_local:.2f} (with ray.init: "
          f"{(t_ray + t_init) / t_local:.2f}); outputs identical: {same}")

    if args.rate_encoder:
        rate(args.rate_encoder)


def rate(encoder: str) -> None:
    """The main job with 9:16 crops on one 60 s 640x360 30 fps video: wall and CPU seconds."""
    from retrieval_hl.config import Settings
    from retrieval_hl.pipeline import highlight_video, load_encoder_or_none

    path = OUT / "rate_60s_640x360.mp4"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=60", "-c:v",
               "libx264", "-pix_fmt", "yuv420p", str(path))
    rs = Settings(encoder=encoder, semantic="on", budget="none", render=False, allow_empty=True,
                  store="qdrant::memory:")
    enc = load_encoder_or_none(rs, required=True)
    c0, t0 = time.process_time(), time.monotonic()
    highlight_video(path, settings=rs, ratio_wh=(9, 16), encoder=enc)
    cpu, wall = time.process_time() - c0, time.monotonic() - t0
    print(f"main job + 9:16 crops, 60 s 640x360 30 fps, {encoder} (loaded before): wall "
          f"{wall:.1f} s = {wall / 60:.3f} s per video second; CPU {cpu:.1f} s = "
          f"{cpu / 60:.3f} CPU-s per video second; load {load()}")

if __name__ == "__main__":
    main()
