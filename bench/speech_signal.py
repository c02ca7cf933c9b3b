"""Should speech weigh in the query-free highlightness by default? One remark over real footage.

For each video of ``../shared/data/filler`` (real ordinary footage, no speech, no event), one
espeak-ng sentence is laid over it at about 40 % of its length. The signals are measured once,
the transcript gives ``speech_rate`` (words per second per slice), and the query-free selection
(``select_highlights``, events that stand out only) runs with ``Weights.speech_rate`` at 0, 0.5
and 1. Printed per weight: how many events stand out, and how many of them overlap the remark.
A remark in ordinary footage is not a highlight by itself; a weight that makes it one, or that
drowns the footage's own events, should not be on by default. The filler has no audio track, so
the remark is the only sound (loudness alone already marks it); real ambience would hide it more
from loudness, not from ``speech_rate``.

    PYTHONPATH=. .venv/bin/python bench/speech_signal.py
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from indexer.probe import probe_video  # noqa: E402
from indexer.slicing import make_slices  # noqa: E402
from indexer.speech.transcribe import transcribe_video  # noqa: E402
from retrieval_hl.config import Settings  # noqa: E402
from retrieval_hl.select.events import Weights, fuse_signals, select_highlights  # noqa: E402
from retrieval_hl.signals.meter import measure_signals_and_cuts  # noqa: E402
from retrieval_hl.speech.rate import words_per_second  # noqa: E402
from tests.conftest import make_narration_video  # noqa: E402

REMARK = "Look at that, I think this is the spot where we parked the car yesterday."


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    filler = REPO.parent / "shared" / "data" / "filler"
    if not filler.is_dir():
        sys.exit(f"missing {filler}")
    work = Path(tempfile.mkdtemp(prefix="rhl-speech-signal-"))
    os.environ.setdefault("RHL_CACHE_DIR", str(work / "cache"))
    s = Settings()
    totals = {w: [0, 0] for w in (0.0, 0.5, 1.0)}
    for src in sorted(filler.glob("*.mp4")):
        lead = 0.4 * probe_video(src).duration_s
        path = work / src.name
        (a, b), = make_narration_video(path, [REMARK], lead_s=lead, base=src)
        info = probe_video(path)
        fine = make_slices(info, s.signal_window_s, ())
        sig, cuts = measure_signals_and_cuts(info, fine, None)
        rate = words_per_second(transcribe_video(info).words, fine)
        sig = dataclasses.replace(sig, speech_rate=rate)
        row = []
        for w in totals:
            score = fuse_signals(sig, Weights(speech_rate=w))
            segs = select_highlights(fine, score, info, cuts=cuts, allow_empty=True)
            on_remark = sum(1 for g in segs if g.start_s < b and g.end_s > a)
            totals[w][0] += len(segs)
            totals[w][1] += on_remark
            row.append(f"w={w:g}: {len(segs)} events, {on_remark} on the remark")
        print(f"{src.name:36s} {info.duration_s:5.1f} s, remark {a:5.1f}-{b:5.1f} s  "
              + "  |  ".join(row))
    for w, (n, on) in totals.items():
        print(f"speech_rate weight {w:g}: {n} events stand out in all, {on} of them on the remark")


if __name__ == "__main__":
    main()
