"""Where the main job's memory peaks: resident memory by stage, on the throughput bench video.

    .venv/bin/python bench/memory_profile.py [--minutes 10] [--encoder open_clip:ViT-B-32:random]
                                             [--warm]

Runs ``highlight_video`` then ``export_highlights`` once on ``bench/throughput.py``'s video
(made there, cached in bench/out/) with the stages wrapped as in ``bench/cpu_profile.py`` and a
thread sampling ``VmRSS`` and ``VmHWM`` (``/proc/self/status``) every 50 ms. For each stage,
in the order first entered: the RSS when it was first entered, the highest RSS sampled while it
was the innermost open stage, the RSS when it last left, and the process's peak (``VmHWM``) as
last raised while it was innermost (a spike between two samples shows there). The process's
peak (``getrusage`` ``ru_maxrss``) is printed after the analysis and after the export.
Transcripts and MiniLM's text cache start empty (a fresh cache folder sharing the joined
whisper model) unless ``--warm``: the worst case, as ``bench/throughput.py`` is run for issue 14.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MIB = 1 << 20
_STACK: list[str] = ["imports + setup"]
ENTER: dict[str, float] = {}
PEAK: dict[str, float] = {}
LEAVE: dict[str, float] = {}
RAISED: dict[str, float] = {}  # stage -> the process's peak (VmHWM) it raised, last seen


def vm_rss_mib(field: str = "VmRSS") -> float:
    """This process's resident memory now (``VmRSS``), or its peak so far (``VmHWM``), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (``ru_maxrss``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sample(stop: threading.Event) -> None:
    hwm = 0.0
    while not stop.wait(0.05):
        name, rss, now = _STACK[-1], vm_rss_mib(), vm_rss_mib("VmHWM")
        PEAK[name] = max(PEAK.get(name, 0.0), rss)
        if now > hwm:  # the peak rose since the last sample, maybe between two samples
            RAISED[name], hwm = now, now


def staged(name: str, fn: Callable) -> Callable:
    """``fn`` run as stage ``name``: RSS noted on entry and exit, sampled inside."""

    def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        rss = vm_rss_mib()
        ENTER.setdefault(name, rss)
        PEAK[name] = max(PEAK.get(name, 0.0), rss)
        _STACK.append(name)
        try:
            return fn(*args, **kwargs)
        finally:
            _STACK.pop()
            LEAVE[name] = vm_rss_mib()

    return run


def patch(obj: object, attr: str, name: str) -> None:
    """Wrap ``obj.attr`` (which must exist) as stage ``name``."""
    setattr(obj, attr, staged(name, getattr(obj, attr)))


def instrument() -> None:
    """Wrap the stages of the main job and its export."""
    import indexer.speech.transcribe as tr
    import retrieval_hl.pipeline as pipe
    import retrieval_hl.render.plots as plots
    import retrieval_hl.render.timeline as timeline
    import retrieval_hl.signals.meter as meter
    import retrieval_hl.speech.channel as channel

    patch(pipe, "index_video", "index pass (decode, CLIP, meter)")
    patch(meter.PresenceDetector, "__init__", "detectors: construction")
    patch(meter.SignalMeter, "finish", "meter: finish")
    patch(meter, "measure_audio", "audio signals")
    patch(channel, "listen", "listen: transcript + MiniLM")
    patch(channel, "transcribe_video", "transcription (whisper)")
    patch(tr, "create_recognizer", "whisper: model load")
    patch(tr.FasterWhisperRecognizer, "_speech_regions", "whisper: VAD")
    patch(channel, "create_text_encoder", "MiniLM: model load")
    patch(channel, "embed_speech", "MiniLM: embed speech")
    patch(channel, "store_speech", "store (speech)")
    patch(pipe, "_describe", "describe + retrieve (CLIP text)")
    patch(pipe, "export_highlight", "export: json, srt, mp4")
    patch(timeline, "write_timelines", "export: timelines")
    patch(plots, "write_plots", "export: plots")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--encoder", default="open_clip:ViT-B-32:random")
    ap.add_argument("--warm", action="store_true", help="keep the user's transcript cache")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from throughput import make_video

    video = make_video(args.minutes)
    stop = threading.Event()
    threading.Thread(target=_sample, args=(stop,), daemon=True).start()
    instrument()
    from indexer.encoders import create_encoder
    from indexer.speech.transcribe import user_cache_dir, whisper_model_dir
    from retrieval_hl.config import load_settings
    from retrieval_hl.pipeline import export_highlights, highlight_video

    with tempfile.TemporaryDirectory() as tmp:
        if not args.warm:  # a fresh cache, sharing the joined whisper model
            model = whisper_model_dir()
            os.environ["RHL_CACHE_DIR"] = f"{tmp}/cache"
            (user_cache_dir() / "models").mkdir(parents=True)
            os.symlink(model, user_cache_dir() / "models" / model.name)
        s = load_settings(None, encoder=args.encoder, store=f"{tmp}/store")
        enc = staged("CLIP: model load", create_encoder)(s.encoder)
        t0 = time.perf_counter()
        hl = staged("highlight_video: other", highlight_video)(video, settings=s, encoder=enc)
        peak_analysis = peak_rss_mib()
        staged("export: other", export_highlights)(hl, f"{tmp}/run", settings=s)
        wall = time.perf_counter() - t0
    stop.set()
    print(f"{video.name}: {len(hl.segments)} segments; {wall:.0f} s wall; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'stage':36s} {'RSS in':>8s} {'peak':>8s} {'RSS out':>8s} {'HWM to':>8s}  (MiB)")
    for name in PEAK:
        raised = f"{RAISED[name]:8.0f}" if name in RAISED else f"{'':8s}"
        print(f"{name:36s} {ENTER.get(name, 0):8.0f} {PEAK[name]:8.0f} "
              f"{LEAVE.get(name, vm_rss_mib()):8.0f} {raised}")
    print(f"peak RSS analysis {peak_analysis:.0f} MiB, with export {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
