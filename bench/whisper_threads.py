"""CPU time of whisper's transcription by CTranslate2 thread count, on the throughput bench video.

    .venv/bin/python bench/whisper_threads.py [--minutes 10] [--threads 1 2] [--repeats 2]

Transcribes the audio of ``bench/throughput.py``'s video (made there, cached in bench/out/) as
the product does (``FasterWhisperRecognizer``: VAD, batched windows), with each thread count in
turn, interleaved ``--repeats`` times so that the machine's load falls on all alike. Model
loading is outside the clock. Prints per run the process CPU time (every thread) and wall time,
then per thread count the median and its ratio to the first count's; the words must come out
the same for every count.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from throughput import make_video

    from indexer.probe import probe_video
    from indexer.speech.transcribe import AudioTrack, FasterWhisperRecognizer

    info = probe_video(make_video(args.minutes))
    cpu: dict[int, list[float]] = {n: [] for n in args.threads}
    words: dict[int, list[str]] = {}
    print(f"{info.path} ({info.duration_s / 60:.1f} min); {os.cpu_count()} cores; "
          f"load {os.getloadavg()[0]:.1f}")
    for rep in range(args.repeats):
        for n in args.threads:
            rec = FasterWhisperRecognizer(cpu_threads=n)
            c0, w0 = time.process_time(), time.perf_counter()
            t = rec.transcribe(AudioTrack(info.path), info.video_id)
            c, w = time.process_time() - c0, time.perf_counter() - w0
            cpu[n].append(c)
            words.setdefault(n, [x.text for x in t.words])
            print(f"run {rep + 1} threads {n}: {c:6.1f} CPU s {w:6.1f} s wall, "
                  f"{len(t.words)} words, load {os.getloadavg()[0]:.1f}", flush=True)
    first = args.threads[0]
    for n in args.threads:
        med = statistics.median(cpu[n])
        print(f"threads {n}: median {med:6.1f} CPU s, x{med / statistics.median(cpu[first]):.2f} "
              f"of {first} thread(s); same words as {first}: {words[n] == words[first]}")


if __name__ == "__main__":
    main()
