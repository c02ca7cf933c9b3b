"""Where the main job's CPU time goes: a table of shares by stage, on the throughput bench video.

    .venv/bin/python bench/cpu_profile.py [--minutes 10] [--encoder open_clip:ViT-B-32:random]

Runs ``highlight_video`` once on ``bench/throughput.py``'s video (made there, cached in
bench/out/) with the stages wrapped in timers: process CPU time (every thread of this process,
so torch's, CTranslate2's and LiteRT's worker threads count) and wall time, each stage
exclusive of the stages it calls. The decode runs in the caller's thread here (no prefetch), so
CPU deltas do not mix a concurrent decode into other stages; the total CPU is what the job costs,
the wall time is longer than a normal run's by the overlap given up. Run it twice to see the
transcript cached (the second run skips transcription); ``--cold`` transcribes in a fresh
transcript cache each time (the whisper model folder is shared).

Stages are wrapped by patching the module attributes the pipeline calls through, so a renamed
function shows up as a missing stage (an error here), not as a silently wrong table.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CPU: dict[str, float] = defaultdict(float)
WALL: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
_STACK: list[list[float]] = []  # per open stage: [cpu of children, wall of children]


def _enter() -> tuple[float, float]:
    _STACK.append([0.0, 0.0])
    return time.process_time(), time.perf_counter()


def _leave(name: str, c0: float, w0: float) -> None:
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    child_cpu, child_wall = _STACK.pop()
    CPU[name] += cpu - child_cpu
    WALL[name] += wall - child_wall
    CALLS[name] += 1
    if _STACK:
        _STACK[-1][0] += cpu
        _STACK[-1][1] += wall


def timed(name: str, fn: Callable) -> Callable:
    """``fn`` with its exclusive CPU and wall time added to stage ``name``."""

    def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        c0, w0 = _enter()
        try:
            return fn(*args, **kwargs)
        finally:
            _leave(name, c0, w0)

    return run


def timed_iter(name: str, it: Iterator) -> Iterator:
    """``it`` with the time spent producing each item added to stage ``name``."""
    while True:
        c0, w0 = _enter()
        try:
            item = next(it)
        except StopIteration:
            return
        finally:
            _leave(name, c0, w0)
        yield item


def patch(obj: object, attr: str, name: str) -> None:
    """Wrap ``obj.attr`` (which must exist) as stage ``name``."""
    setattr(obj, attr, timed(name, getattr(obj, attr)))


def instrument() -> None:
    """Wrap every stage of the main job (see the module docstring)."""
    import indexer.decode as decode
    import indexer.pipeline as ipipe
    import indexer.shots as shots
    import indexer.speech.transcribe as tr
    import retrieval_hl.pipeline as pipe
    import retrieval_hl.select.events as events
    import retrieval_hl.signals.meter as meter
    import retrieval_hl.speech.channel as channel

    open_reader = decode.open_reader

    def reader(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        r = open_reader(*args, **kwargs)

        class Timed:
            name = r.name

            def iter_frames(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
                return timed_iter("decode video (reader)", r.iter_frames(*a, **k))

            def iter_chunks(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
                return timed_iter("decode video (reader)", r.iter_chunks(*a, **k))

        return Timed()

    proxy_chunks = decode.proxy_chunks
    decode.open_reader = reader
    decode.proxy_chunks = lambda *a, **k: timed_iter(
        "decode: scale to proxies", proxy_chunks(*a, **k)
    )
    decode.prefetch = lambda chunks, depth=2: chunks  # sequential: clean CPU deltas
    patch(pipe, "probe_video", "probe")
    patch(ipipe.FrameEmbedder, "feed", "embed: other (isin, bookkeeping)")
    patch(ipipe.FrameEmbedder, "_plan", "embed: EmbedPlan (thumbnails, change)")
    patch(shots.ShotDetector, "feed", "shot detection")
    patch(shots.ShotDetector, "cuts", "shot detection")
    patch(meter.SignalMeter, "feed", "meter: other (grey, blur, bookkeeping)")
    patch(meter, "residual_motion", "meter: motion + camera motion")
    patch(meter, "look_of", "meter: looks")
    patch(meter, "sharpness_of", "meter: sharpness + exposure")
    patch(meter, "exposure_penalty", "meter: sharpness + exposure")
    patch(meter.PresenceDetector, "__call__", "detectors (faces, objects)")
    patch(meter.PresenceDetector, "__init__", "detectors: construction")
    patch(meter, "measure_audio", "audio signals (decode + measure)")
    patch(meter.SignalMeter, "finish", "meter: per-slice reduction")
    patch(pipe, "store_video", "store (visual)")
    patch(channel, "transcribe_video", "transcription: other (whisper)")
    patch(tr.FasterWhisperRecognizer, "_speech_regions", "VAD (audio read in blocks)")
    patch(tr, "create_recognizer", "transcription: model load")
    patch(channel, "create_text_encoder", "text encoding (MiniLM): model load")
    patch(channel, "embed_speech", "text encoding (MiniLM)")
    patch(channel, "store_speech", "store (speech)")
    patch(pipe, "_describe", "describe + retrieve")
    patch(events, "select_highlights", "select")
    patch(events, "fuse_signals", "select")
    patch(pipe, "_label_segments", "select")
    patch(channel.SpeechChannel, "snap", "select")


class TimedEncoder:
    """The encoder, its image and text calls timed as stages."""

    def __init__(self, enc) -> None:  # noqa: ANN001
        self._enc = enc
        self.n_images = 0
        self.encode_texts = timed("CLIP text encoding", enc.encode_texts)
        self._images = timed("CLIP image encoding", enc.encode_images)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._enc, name)

    def encode_images(self, frames):  # noqa: ANN001, ANN201
        self.n_images += len(frames)
        return self._images(frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--encoder", default="open_clip:ViT-B-32:random")
    ap.add_argument("--cold", action="store_true", help="transcribe again (fresh transcript cache)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from throughput import make_video

    video = make_video(args.minutes)
    instrument()
    from indexer.encoders import create_encoder
    from indexer.speech.transcribe import user_cache_dir, whisper_model_dir
    from retrieval_hl.config import load_settings
    from retrieval_hl.pipeline import highlight_video

    with tempfile.TemporaryDirectory() as tmp:
        if args.cold:  # a fresh transcript cache, sharing the joined whisper model
            model = whisper_model_dir()
            os.environ["RHL_CACHE_DIR"] = f"{tmp}/cache"
            (user_cache_dir() / "models").mkdir(parents=True)
            os.symlink(model, user_cache_dir() / "models" / model.name)
        s = load_settings(None, encoder=args.encoder, store=f"{tmp}/store")
        enc = TimedEncoder(create_encoder(s.encoder))  # model construction: outside the clock
        c0, w0 = time.process_time(), time.perf_counter()
        hl = highlight_video(video, settings=s, encoder=enc)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        shutil.rmtree(tmp, ignore_errors=True)
    CPU["other"] = cpu - sum(CPU.values())
    WALL["other"] = wall - sum(WALL.values())
    print(f"{video.name}: {len(hl.slices)} slices, {len(hl.segments)} segments; "
          f"{enc.n_images} frames embedded; load {os.getloadavg()[0]:.1f}")
    print(f"{'stage':42s} {'CPU s':>8s} {'share':>6s} {'wall s':>8s} {'calls':>7s}")
    for name in sorted(CPU, key=CPU.get, reverse=True):
        print(f"{name:42s} {CPU[name]:8.1f} {CPU[name] / cpu:6.1%} {WALL[name]:8.1f} "
              f"{CALLS.get(name, 0):7d}")
    print(f"{'total':42s} {cpu:8.1f} {1:6.1%} {wall:8.1f}")
    print("segments (s): " + ", ".join(f"{g.start_s:.2f}-{g.end_s:.2f}" for g in hl.segments))


if __name__ == "__main__":
    main()
