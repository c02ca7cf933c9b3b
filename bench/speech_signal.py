"""Should speech weigh in the query-free highlightness, and how? Remarks over real footage.

For each video of ``../shared/data/filler`` (real ordinary footage, no speech, no event), espeak-ng
says ordinary remarks, one of them *emphasised* (espeak amplitude 200 and pitch 80 instead of
100 and 50: about 6 dB louder and higher, ``tests.conftest.EMPHASIS``). Three scenes:

- ``silent``: remarks every ~10 s, the filler's own audio dropped: each remark is the only sound,
  so loudness alone marks every one;
- ``ambience``: the same over a steady pink-noise bed ~15 dB under the voice (a street, a room);
- ``talk``: someone talks all along (remarks 0.8 s apart over the whole video, a vlog or a
  commentary) over the bed: loudness and speech rate are flat, only how it is said varies.

The signals are measured once per video and scene, the transcript gives ``speech_rate`` and
``speech_emphasis_db``, and the query-free selection runs with several weights of the two:

- ``stands out`` is the competition batch's rule (``allow_empty``: only events that stand out);
- ``main job`` is ``rhl highlight``'s (budget ``auto``, clips of at least ``min_clip_s``).

Printed per weight: the best sustained contrast (robust spreads of the fused score, the unit
of ``STAND_OUT``) on the raised remark and on the best ordinary one; per mode whether the raised
remark is kept (a segment covers half of it or more) and whether it is the best-scoring segment
(``first``), how many ordinary remarks are kept, and how many of the footage's own visual events
(those chosen with every audio and speech weight at 0) are still kept. A good weight keeps the
raised remark, not the ordinary ones, and does not drop the footage's events.

    PYTHONPATH=. .venv/bin/python bench/speech_signal.py
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._runner import ffmpeg  # noqa: E402
from indexer.probe import probe_video  # noqa: E402
from indexer.slicing import make_slices  # noqa: E402
from indexer.speech.transcribe import transcribe_video  # noqa: E402
from retrieval_hl.config import Settings, parse_budget  # noqa: E402
from retrieval_hl.select.events import (  # noqa: E402
    Weights,
    baseline,
    fuse_signals,
    select_highlights,
    sustained_score,
)
from retrieval_hl.signals.meter import measure_signals_and_cuts  # noqa: E402
from retrieval_hl.speech.rate import emphasis_db, words_per_second  # noqa: E402
from tests.conftest import make_narration_video  # noqa: E402

REMARKS = [
    "We are walking along the path next to the old factory building.",
    "The weather is fine today, a bit cloudy but still quite warm.",
    "I think we will stop for lunch in about an hour or so.",
    "This part of town is much quieter than I expected it to be.",
    "My friend told me about this place when we met last summer.",
    "Let me check the map to see where exactly we are right now.",
]
REMARK_S = 3.3  # about how long espeak-ng takes to say one, for spreading them out
# (speech_rate, speech_emphasis) weights tried; the first is "speech off".
CONFIGS = [(0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.0, 2.0), (0.25, 0.5)]
SCENES = ("silent", "ambience", "talk")
RAISED_AT = (0.25, 0.5, 0.75)  # where the raised remark is, as a fraction of the remarks
VISUAL_ONLY = Weights(audio_loudness=0.0, audio_onset=0.0, speech_rate=0.0, speech_emphasis=0.0)
AMBIENCE_VOLUME = 0.05  # pink noise ~-38 dBFS RMS under a voice at ~-20


def covered(segs, span: tuple[float, float], frac: float = 0.5) -> bool:  # noqa: ANN001
    """A segment covers at least ``frac`` of ``span``."""
    a, b = span
    return any(min(g.end_s, b) - max(g.start_s, a) >= frac * (b - a) for g in segs)


def pick(fine, score, info, cuts, looks, s: Settings, main_job: bool):  # noqa: ANN001, ANN201
    """The query-free selection as ``highlight_video`` runs it (batch: ``allow_empty``)."""
    return select_highlights(
        fine, score, info, cuts=cuts, min_len_s=s.min_len_s, max_len_s=s.max_len_s,
        max_gap_s=s.max_gap_s, budget_s=parse_budget(s.budget, info.duration_s) if main_job
        else None, allow_empty=not main_job,
        min_clip_s=max(s.min_len_s, s.min_clip_s) if main_job else s.min_len_s, looks=looks)


def narrate(src: Path, out: Path, k: int, scene: str, which: float) -> tuple[list, int]:
    """``src`` with remarks over it, the one at fraction ``which`` of them emphasised; their
    spans and the emphasised one's index.
    """
    duration = probe_video(src).duration_s
    if scene == "talk":
        gap = 0.8
        n = max(3, int((duration - 2 * gap) // (REMARK_S + gap)))
    else:
        n = min(len(REMARKS), max(3, round(duration / 10)))
        gap = max(1.0, (duration - n * REMARK_S) / (n + 1))
    loud = min(n - 1, int(which * n))
    lines = [REMARKS[(k + i) % len(REMARKS)] for i in range(n)]
    plain = out.with_suffix(".plain.mp4") if scene != "silent" else out
    spans = make_narration_video(plain, lines, gap_s=gap, lead_s=gap, base=src,
                                 emphasised={loud})
    if scene != "silent":
        ffmpeg("-i", str(plain), "-f", "lavfi", "-i", "anoisesrc=color=pink:seed=7",
               "-filter_complex",
               f"[1:a]volume={AMBIENCE_VOLUME}[n];[0:a][n]amix=inputs=2:duration=first:"
               "normalize=0[a]", "-map", "0:v", "-map", "[a]", "-c:v", "copy", "-c:a", "aac",
               str(out))
        plain.unlink()
    return spans, loud


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    filler = REPO.parent / "shared" / "data" / "filler"
    if not filler.is_dir():
        sys.exit(f"missing {filler}")
    work = Path(tempfile.mkdtemp(prefix="rhl-speech-signal-"))
    os.environ.setdefault("RHL_CACHE_DIR", str(work / "cache"))
    s = Settings()
    modes = ("stands out", "main job")
    # (scene, config) -> [runs, raised contrast above every ordinary remark's] and
    # (scene, config, mode) -> [raised kept, raised first, ordinary kept, ordinary, visual kept,
    # visual]
    lifts: dict[tuple[str, tuple[float, float]], list[int]] = {}
    totals: dict[tuple[str, tuple[float, float], str], list[int]] = {}
    for scene in SCENES:
        for k, src in enumerate(sorted(filler.glob("*.mp4"))):
            for which in RAISED_AT:
                path = work / f"{scene}-{which:g}-{src.name}"
                spans, loud = narrate(src, path, k, scene, which)
                info = probe_video(path)
                fine = make_slices(info, s.signal_window_s, ())
                sig, cuts = measure_signals_and_cuts(info, fine, None)
                rate = words_per_second(transcribe_video(info).words, fine)
                sig = dataclasses.replace(sig, speech_rate=rate, speech_emphasis_db=emphasis_db(
                    sig.voice_loudness_db, rate > 0))
                inside = [np.array([a <= (sl.start_s + sl.end_s) / 2 < b for sl in fine])
                          for a, b in spans]
                levels = [float(sig.speech_emphasis_db[m].max(initial=0.0)) for m in inside]
                print(f"\n{scene} {src.name} {info.duration_s:.1f} s, {len(spans)} remarks, "
                      f"the raised one at {spans[loud][0]:.0f} s; peak emphasis (dB) raised "
                      f"{levels[loud]:.1f}, ordinary at most "
                      f"{max(levels[:loud] + levels[loud + 1:]):.1f}")
                visual = {m: pick(fine, fuse_signals(sig, VISUAL_ONLY), info, cuts, sig.looks,
                                  s, m == "main job") for m in modes}
                for rate_w, emph_w in CONFIGS:
                    score = fuse_signals(sig, Weights(speech_rate=rate_w, speech_emphasis=emph_w))
                    m, spread = baseline(score)
                    contrast = (sustained_score(score, fine, s.min_len_s) - m) / spread
                    c = [float(contrast[x].max(initial=0.0)) for x in inside]
                    best_other = max(c[:loud] + c[loud + 1:])
                    lift = lifts.setdefault((scene, (rate_w, emph_w)), [0, 0])
                    lift[0] += 1
                    lift[1] += c[loud] > best_other
                    row = [f"contrast raised {c[loud]:4.1f} ordinary {best_other:4.1f}"]
                    for mode in modes:
                        segs = pick(fine, score, info, cuts, sig.looks, s, mode == "main job")
                        hit = covered(segs, spans[loud])
                        first = bool(segs) and covered(
                            [max(segs, key=lambda g: g.score_norm)], spans[loud])
                        ordinary = sum(covered(segs, sp) for i, sp in enumerate(spans)
                                       if i != loud)
                        kept = sum(covered(segs, (v.start_s, v.end_s)) for v in visual[mode])
                        t = totals.setdefault((scene, (rate_w, emph_w), mode), [0] * 6)
                        for j, v in enumerate((hit, first, ordinary, len(spans) - 1, kept,
                                               len(visual[mode]))):
                            t[j] += v
                        row.append(f"{mode}: {len(segs)} segs, raised "
                                   f"{'first' if first else 'yes  ' if hit else 'no   '}, "
                                   f"ordinary {ordinary}/{len(spans) - 1}, visual "
                                   f"{kept}/{len(visual[mode])}")
                    print(f"  rate {rate_w:<4g} emphasis {emph_w:<4g} " + " | ".join(row))
    print("\nall runs: raised remark's contrast above every ordinary one's; per mode raised "
          "remark kept (and first) / ordinary remarks kept / footage's visual events kept")
    for (scene, cfg), (runs, above) in lifts.items():
        parts = []
        for mode in modes:
            t = totals[(scene, cfg, mode)]
            parts.append(f"{mode}: raised {t[0]}/{runs} ({t[1]} first), ordinary "
                         f"{t[2]}/{t[3]}, visual {t[4]}/{t[5]}")
        print(f"  {scene:8s} rate {cfg[0]:<4g} emphasis {cfg[1]:<4g} above {above}/{runs}  "
              + "  |  ".join(parts))

if __name__ == "__main__":
    main()
