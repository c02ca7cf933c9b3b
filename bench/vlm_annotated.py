"""The VLM methods against a VLM stand-in that answers from annotations.

    PYTHONPATH=. .venv/bin/python bench/vlm_annotated.py [--data ../shared/data] [--show]

The set: real ordinary footage from ``../shared/data/filler/`` into which DAVIS-2016 sequences
(1.7-4.2 s of real action) are cut, replacing the filler's frames there (854x480, 24 fps, no
sound). Built once into ``bench/out/vlm_annotated/``. One item puts its action across a chunk
border on purpose.

The VLM is ``tests/vlm_server.AnnotatedVLM``: it answers each chunk with the true times of the
actions that a frame sent falls inside (so frames per chunk matter), with jitter, misses, junk and
delay as asked. It tests our chunking, time mapping, merging, dedup and fusion, not a model.
Per method and condition: the mean over items of the temporal F (frames kept vs true action
frames), requests and frames sent per video minute, and wall time (all averaged over ``--seeds``
runs for the random conditions); the 10 s latency condition is run at concurrency 4 and, as the
reference in the same run, at concurrency 1.

No CLIP weights are reachable here: ``hybrid`` and ``retrieval`` use the seeded random tiny
encoder, so their retrieval part is noise, and what they show is how the VLM's ranges survive it.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval_hl.config import Settings  # noqa: E402
from retrieval_hl.pipeline import highlight_video  # noqa: E402
from rhl_common.ffmpeg import ffmpeg_binary  # noqa: E402
from tests.vlm_server import AnnotatedVLM  # noqa: E402

OUT = Path(__file__).parent / "out" / "vlm_annotated"
FPS = 24
SIZE = (854, 480)
TINY = "open_clip:rhl-tiny-vit:random"
TEXT = {
    "breakdance": "a dancer spins on the floor breakdancing",
    "motocross-jump": "a motocross rider jumps over a hill",
    "parkour": "a man vaults over walls doing parkour",
    "kite-surf": "a kite surfer rides across the water",
    "dance-twirl": "a dancer twirls in a white dress",
    "dog": "a dog runs across the yard",
    "blackswan": "a black swan swims on a pond",
    "camel": "a camel walks past a fence",
    "car-roundabout": "a car drives around a roundabout",
    "libby": "a dog runs through the grass",
}


@dataclass(frozen=True)
class Item:
    """``length_s`` of ``filler`` from ``start_s`` with DAVIS sequences cut in at seconds."""

    video_id: str
    filler: str
    start_s: float
    length_s: float
    actions: tuple[tuple[str, float], ...]


ITEMS = (
    Item("conveyor_breakdance", "bottle-detection.mp4", 0, 39, (("breakdance", 15.0),)),
    Item("traffic_moto", "car-detection.mp4", 0, 30, (("motocross-jump", 20.0),)),
    Item("corridor_two", "one-by-one-person-detection.mp4", 0, 120,
         (("parkour", 40.0), ("kite-surf", 95.0))),
    # 40 s: chunks 0-21 and 19-40 (about); the twirl (3.75 s) runs across both borders
    Item("conveyor_border", "bottle-detection.mp4", 0, 40, (("dance-twirl", 18.0),)),
    Item("corridor_dog", "one-by-one-person-detection.mp4", 15, 120, (("dog", 61.0),)),
    Item("traffic_two", "car-detection.mp4", 0, 30, (("kite-surf", 5.6), ("car-roundabout", 19.3))),
    Item("conveyor_two", "bottle-detection.mp4", 0, 38, (("libby", 8.8), ("parkour", 27.45))),
    Item("corridor_three", "one-by-one-person-detection.mp4", 0, 139,
         (("blackswan", 30.0), ("camel", 70.0), ("breakdance", 110.0))),
)
STOCHASTIC = ("jitter 1 s", "30% missed", "20% junk")

CONDITIONS = {
    "perfect": {},
    "jitter 1 s": {"jitter_s": 1.0},
    "30% missed": {"miss": 0.3},
    "20% junk": {"junk": 0.2},
    "10 s latency": {"delay_s": 10.0},
}


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True)


def build(data: Path) -> dict[str, tuple[Path, list[tuple[float, float, str]]]]:
    """The items' videos and their true events (start_s, end_s, text)."""
    ann = json.loads((data / "davis16" / "annotations.json").read_text())
    OUT.mkdir(parents=True, exist_ok=True)
    out = {}
    w, h = SIZE
    for it in ITEMS:
        path = OUT / f"{it.video_id}.mp4"
        events, pieces, inputs, t = [], [], ["-i", str(data / "filler" / it.filler)], 0.0
        for k, (seq, at) in enumerate(it.actions, 1):
            dur = ann[seq]["n_frames"] / ann[seq]["fps"]
            inputs += ["-i", str(data / "davis16" / f"{seq}.mp4")]
            pieces.append(("f", t, at))
            pieces.append((k, 0.0, dur))
            events.append((at, at + dur, TEXT[seq]))
            t = at + dur
        pieces.append(("f", t, it.length_s))
        if not path.exists():
            fillers = [p for p in pieces if p[0] == "f"]
            graph = [f"[0:v]split={len(fillers)}" + "".join(f"[s{i}]" for i in range(len(fillers)))]
            labels, nf = [], 0
            for src, a, b in pieces:
                lab = f"p{len(labels)}"
                if src == "f":
                    graph.append(f"[s{nf}]trim=start={it.start_s + a}:end={it.start_s + b},"
                                 f"setpts=PTS-STARTPTS,fps={FPS},scale={w}:{h},setsar=1[{lab}]")
                    nf += 1
                else:
                    graph.append(f"[{src}:v]fps={FPS},scale={w}:{h},setsar=1,"
                                 f"setpts=PTS-STARTPTS[{lab}]")
                labels.append(f"[{lab}]")
            graph.append("".join(labels) + f"concat=n={len(labels)}:v=1:a=0[v]")
            ffmpeg(*inputs, "-filter_complex", ";".join(graph), "-map", "[v]", "-an",
                   "-c:v", "libx264", "-pix_fmt", "yuv420p", "-r", str(FPS), str(path))
        out[it.video_id] = (path, events)
    return out


def temporal_f(segments, events, fps: float) -> float:
    """F of the kept frames against the true action frames."""
    truth = set()
    for a, b, _ in events:
        truth.update(range(int(round(a * fps)), int(round(b * fps))))
    kept = {f for s in segments for f in range(s.start_frame, s.end_frame)}
    hit = len(truth & kept)
    if not hit:
        return 0.0
    p, r = hit / len(kept), hit / len(truth)
    return 2 * p * r / (p + r)


def run(items, method: str, condition: dict, store: str, concurrency: int = 4, show=False,
        seed: int = 7):
    srv = AnnotatedVLM({k: ev for k, (_, ev) in items.items()}, seed=seed, **condition)
    fs, minutes, t0 = [], 0.0, time.perf_counter()
    try:
        for vid, (path, events) in items.items():
            s = Settings(
                method=method, vlm_url=srv.url if method != "retrieval" else None,
                vlm_model=vid, vlm_cache=False, vlm_concurrency=concurrency,
                semantic="off" if method == "vlm" else "auto", encoder=TINY, store=store,
                render=False,
            )  # fmt: skip
            hl = highlight_video(path, settings=s, video_id=vid)
            fs.append(temporal_f(hl.segments, events, hl.video.fps))
            minutes += hl.video.duration_s / 60
            if show:
                print(f"  {vid}: truth " + ", ".join(f"{a:.2f}-{b:.2f}" for a, b, _ in events))
                for seg in hl.segments:
                    d = hl.descriptions[seg.description_index]
                    print(f"    kept {seg.start_s:6.2f}-{seg.end_s:6.2f} p{seg.priority} "
                          f"[{d.source}] {d.text}")
    finally:
        srv.close()
    return {
        "F": float(np.mean(fs)),
        "per_item": [round(f, 3) for f in fs],
        "requests_per_min": srv.requests / minutes,
        "frames_per_min": srv.images / minutes,
        "wall_s": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--methods", default="vlm,hybrid,retrieval")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--show", action="store_true", help="Print truth and kept ranges per item.")
    ap.add_argument("--seeds", type=int, default=3, help="Runs (seeds) per random condition.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    items = build(Path(args.data))
    print(f"{len(items)} items, {sum(len(e) for _, e in items.values())} actions")
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "store")
        for method in args.methods.split(","):
            conds = ["perfect"] if method == "retrieval" else args.conditions.split(",")
            for name in conds:
                seeds = range(args.seeds) if name in STOCHASTIC else [0]
                rs = [run(items, method, CONDITIONS[name], store, show=args.show, seed=k)
                      for k in seeds]
                r = {k: float(np.mean([x[k] for x in rs])) for k in
                     ("F", "requests_per_min", "frames_per_min", "wall_s")}
                fs = [round(x["F"], 3) for x in rs]
                print(f"{method:9s} {name:13s} F {r['F']:.3f}  req/min {r['requests_per_min']:5.2f}"
                      f"  frames/min {r['frames_per_min']:6.1f}  wall {r['wall_s']:6.1f} s  "
                      f"per seed {fs}  per item {rs[0]['per_item']}", flush=True)
                if name == "10 s latency" and method == "vlm":
                    ref = run(items, method, CONDITIONS[name], store, concurrency=1)
                    print(f"{method:9s} {name:13s} at concurrency 1: wall {ref['wall_s']:.1f} s "
                          f"(concurrency 4 takes {r['wall_s'] / ref['wall_s']:.2f} of it)",
                          flush=True)


if __name__ == "__main__":
    main()
