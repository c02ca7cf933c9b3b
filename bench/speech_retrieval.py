"""Speech retrieval through the real models: narration over real footage, queried by paraphrase.

24 topics, one sentence each, are spoken by Debian's espeak-ng and laid at known times over real
ordinary footage (``../shared/data/filler``, looped); each is then asked for with a paraphrase
that shares none of its content words, through the product path (``highlight_video`` with
``--prompt``, speech only: ``semantic="off"``). Reported:

- R@1 at tIoU >= 0.5 and >= 0.7 (the best-scoring segment against the sentence's audible span),
  mAP at the same thresholds (one true span per query, segments ranked by score);
- WER of the transcript against the narration text;
- transcription time per audio minute (int8, 2 cores): the product's recogniser (VAD, batches
  of 8), one window at a time with VAD on and off, and batches of 4 and 16, on this sparse
  narration and on a speech-dense one, as a ratio to ``ffmpeg -f null`` decoding the same file
  in the same process;
- with ``--zh``: a Chinese narration, detected language and CER with and without
  ``language="zh"``.

    PYTHONPATH=. .venv/bin/python bench/speech_retrieval.py [--zh] [--long-min 10]
    PYTHONPATH=. .venv/bin/python bench/speech_retrieval.py --no-retrieval --no-speed --long-min 10
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from indexer.probe import probe_video  # noqa: E402
from indexer.speech.transcribe import (  # noqa: E402
    SAMPLE_RATE_HZ,
    AudioTrack,
    create_recognizer,
    whisper_model_dir,
)
from retrieval_hl.config import load_settings  # noqa: E402
from retrieval_hl.pipeline import highlight_video  # noqa: E402
from rhl_common.ffmpeg import ffmpeg_binary  # noqa: E402
from tests.conftest import make_narration_video  # noqa: E402

# (narration, paraphrase query): the query avoids the narration's content words.
TOPICS = [
    ("The city council approved a new budget for public schools.",
     "money set aside for education by local government"),
    ("Our cat learned to open the kitchen door by itself.",
     "a pet that figured out how a door works"),
    ("Heavy rain is expected across the north coast this weekend.",
     "storms and wet weather by the sea in the coming days"),
    ("The football team won the championship after extra time.",
     "a soccer side took the title in overtime"),
    ("Remember to water the tomato plants every morning.",
     "daily garden chores for vegetables"),
    ("Scientists discovered a new species of frog in the rainforest.",
     "researchers found an unknown amphibian in the jungle"),
    ("The price of gasoline went up again this month.",
     "fuel costs are rising"),
    ("My grandmother baked an apple pie for the family dinner.",
     "a dessert made by grandma for a meal with relatives"),
    ("The train to the airport was delayed by two hours.",
     "late rail service to the flights terminal"),
    ("Doctors recommend thirty minutes of exercise every day.",
     "physicians advise a daily workout"),
    ("The museum opened an exhibition of ancient Egyptian art.",
     "a gallery show about pharaohs and old relics"),
    ("Our company released a new smartphone with a bigger battery.",
     "a mobile phone launch with longer charge life"),
    ("The children built a huge sandcastle on the beach.",
     "kids playing with sand by the ocean"),
    ("The bank raised interest rates to fight inflation.",
     "monetary policy tightening because prices climb"),
    ("A volcano erupted on the island last night.",
     "lava and ash from a mountain blast"),
    ("She practices the piano for two hours after school.",
     "a girl rehearsing music on a keyboard instrument"),
    ("The hospital hired fifty new nurses this year.",
     "more medical staff employed at the clinic"),
    ("Astronauts repaired the telescope during a spacewalk.",
     "crew fixing an observatory while outside their orbiting craft"),
    ("The bakery on the corner sells fresh bread at dawn.",
     "a shop with loaves early in the morning"),
    ("Traffic jams are getting worse in the city centre.",
     "congestion of cars downtown"),
    ("The election results will be announced tomorrow evening.",
     "when we learn who won the vote"),
    ("He caught a large salmon while fishing in the river.",
     "landing a big fish from a stream"),
    ("The library extended its opening hours for students.",
     "books available longer for people studying"),
    ("Wildfires destroyed hundreds of homes in the valley.",
     "blazes burned many houses"),
]
# Chinese sentences and their pinyin: espeak-ng's Mandarin dictionary lacks most characters and
# spells them as English letters, so the pinyin voice speaks the pinyin instead.
ZH = [
    ("今天的天气非常好我们去公园散步", "jin1 tian1 de5 tian1 qi4 fei1 chang2 hao3, wo3 men5 qu4 "
     "gong1 yuan2 san4 bu4."),
    ("这家餐厅的饺子特别好吃", "zhe4 jia1 can1 ting1 de5 jiao3 zi5 te4 bie2 hao3 chi1."),
    ("明天早上八点开会", "ming2 tian1 zao3 shang4 ba1 dian3 kai1 hui4."),
    ("我的猫喜欢在窗台上睡觉", "wo3 de5 mao1 xi3 huan1 zai4 chuang1 tai2 shang4 shui4 jiao4."),
]


def tiou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal IoU of two spans."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between token lists."""
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return int(d[-1])


def norm_words(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    return re.findall(r"[a-z0-9']+", text.lower())


def ffmpeg_null_s(path: Path) -> float:
    """Seconds for ffmpeg to decode ``path`` to nothing (the reference)."""
    return timed_child([ffmpeg_binary(), "-v", "error", "-i", str(path), "-f", "null", "-"])[0]


def timed_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``cmd``; its wall seconds and CPU seconds (user + system, with its children): CPU
    time is steadier than wall time on a shared machine.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def transcription_speed(path: Path, label: str) -> None:
    """Real-time factors of VAD on/off and the batched pipeline on ``path``'s audio."""
    from faster_whisper import BatchedInferencePipeline

    audio = AudioTrack(path).read()
    minutes = len(audio) / SAMPLE_RATE_HZ / 60
    ref = ffmpeg_null_s(path)
    rec = create_recognizer()
    model = rec._model  # noqa: SLF001
    rows = []
    t = time.perf_counter()
    tr = rec.transcribe(AudioTrack(path), "bench", language="en", vad=True)
    rows.append(("product (vad, batched)", time.perf_counter() - t, len(tr.words)))
    for name, vad in (("vad on, sequential", True), ("vad off, sequential", False)):
        t = time.perf_counter()
        pieces, _ = model.transcribe(audio, language="en", word_timestamps=True, vad_filter=vad,
                                     condition_on_previous_text=False)
        n_words = sum(len(p.words or ()) for p in pieces)
        rows.append((name, time.perf_counter() - t, n_words))
    for batch in (4, 16):
        t = time.perf_counter()
        pieces, _ = BatchedInferencePipeline(model).transcribe(
            audio, language="en", word_timestamps=True, batch_size=batch)
        n_words = sum(len(p.words or ()) for p in pieces)
        rows.append((f"vad, batched {batch}", time.perf_counter() - t, n_words))
    print(f"\n{label}: {minutes * 60:.1f} s of audio; ffmpeg -f null of the file {ref:.2f} s")
    for name, secs, n in rows:
        print(f"  {name:22s} {secs:6.1f} s  = {secs / minutes:5.1f} s per audio minute  "
              f"(RTF {secs / (minutes * 60):.3f}, {secs / ref:5.1f}x ffmpeg -f null)  {n} words")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gap", type=float, default=3.0, help="Silence between sentences (s).")
    ap.add_argument("--zh", action="store_true", help="Also try a Chinese narration.")
    ap.add_argument("--no-speed", action="store_true", help="Skip the speed section.")
    ap.add_argument("--no-retrieval", action="store_true", help="Skip the retrieval section.")
    ap.add_argument("--long-min", type=float, default=0.0,
                    help="Also time `rhl highlight` on a narration this many minutes long.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    filler = REPO.parent / "shared" / "data" / "filler" / "one-by-one-person-detection.mp4"
    if not filler.is_file():
        sys.exit(f"missing {filler}")
    work = Path(tempfile.mkdtemp(prefix="rhl-speech-bench-"))
    os.environ.setdefault("RHL_CACHE_DIR", str(work / "cache"))
    t = time.perf_counter()
    whisper_model_dir()
    print(f"model folder ready in {time.perf_counter() - t:.1f} s")

    video = work / "narration.mp4"
    spans = make_narration_video(video, [s for s, _ in TOPICS], gap_s=args.gap, lead_s=2.0,
                                 base=filler)
    info = probe_video(video)
    print(f"narration: {len(TOPICS)} topics over {filler.name}, {info.duration_s:.1f} s")
    s = load_settings(store=str(work / "store"), semantic="off", speech="on", budget="none",
                      order="score", render=False)

    if not args.no_retrieval:
        retrieval(video, spans, s)
    if not args.no_speed:
        transcription_speed(video, f"sparse narration ({args.gap:.0f} s gaps)")
        dense = work / "dense.mp4"
        make_narration_video(dense, [s for s, _ in TOPICS], gap_s=0.3, lead_s=0.3, base=filler)
        transcription_speed(dense, "speech-dense narration (0.3 s gaps)")
    if args.zh:
        chinese(work, filler)
    if args.long_min > 0:
        long_run(work, filler, args.long_min, gap_s=1.0)


def retrieval(video: Path, spans: list[tuple[float, float]], s) -> None:  # noqa: ANN001
    """R@1, mAP and WER of speech-only retrieval by paraphrase, through ``highlight_video``."""
    r1 = {0.5: 0, 0.7: 0}
    ap_sum = {0.5: 0.0, 0.7: 0.0}
    first = True
    t_first = t_rest = 0.0
    hl = None
    for k, ((_, query), span) in enumerate(zip(TOPICS, spans, strict=True)):
        t = time.perf_counter()
        hl = highlight_video(video, prompt=query, settings=s)
        dt = time.perf_counter() - t
        if first:
            t_first, first = dt, False
        else:
            t_rest += dt
        ranked = sorted(hl.segments, key=lambda g: -g.score_norm)
        ious = [tiou((g.start_s, g.end_s), span) for g in ranked]
        for th in r1:
            if ious and ious[0] >= th:
                r1[th] += 1
            hit = next((i for i, v in enumerate(ious) if v >= th), None)
            ap_sum[th] += 0.0 if hit is None else 1.0 / (hit + 1)
        top = f"{ranked[0].start_s:6.2f}-{ranked[0].end_s:6.2f}" if ranked else "   none    "
        print(f"  {k:2d} truth {span[0]:6.2f}-{span[1]:6.2f}  top {top}  "
              f"tIoU {ious[0] if ious else 0:.2f}  ({len(ranked)} segs)  {query}")
    n = len(TOPICS)
    print(f"\nspeech-only retrieval, {n} paraphrase queries:")
    for th in r1:
        print(f"  R@1 tIoU>={th}: {r1[th] / n:.3f}   mAP tIoU>={th}: {ap_sum[th] / n:.3f}")
    print(f"  highlight_video: first query {t_first:.1f} s (transcribes), then "
          f"{t_rest / (n - 1):.1f} s per query (transcript cached)")
    assert hl is not None and hl.transcript is not None
    ref = [w for text, _ in TOPICS for w in norm_words(text)]
    hyp = norm_words(hl.transcript.text)
    print(f"  WER {edit_distance(ref, hyp) / len(ref):.3f} ({len(ref)} reference words), "
          f"language {hl.transcript.language} ({hl.transcript.language_probability:.2f})")


def chinese(work: Path, filler: Path) -> None:
    """Detected language and CER of a Chinese espeak-ng narration, detected and forced."""
    zh = work / "zh.mp4"
    make_narration_video(zh, [p for _, p in ZH], voice="cmn-latn-pinyin", base=filler)
    zinfo = probe_video(zh)
    from indexer.speech.transcribe import transcribe_video

    ref_chars = "".join(re.findall(r"[\u4e00-\u9fff]", "".join(h for h, _ in ZH)))
    for lang in (None, "zh"):
        tr = transcribe_video(zinfo, language=lang)
        hyp_chars = "".join(re.findall(r"[\u4e00-\u9fff]", tr.text))
        cer = edit_distance(list(ref_chars), list(hyp_chars)) / len(ref_chars)
        print(f"\nChinese, language={lang}: detected {tr.language} "
              f"({tr.language_probability:.2f}), CER {cer:.3f}\n  {tr.text}")


def long_run(work: Path, filler: Path, minutes: float, gap_s: float) -> None:
    """`rhl highlight` on a ``minutes``-long narration over real footage against ffmpeg -f null
    of the same file: cold (transcribes), warm (transcript cached), and where the time goes
    (an in-process profile of the same job with a cold transcript cache).
    """
    import cProfile
    import pstats

    from retrieval_hl.pipeline import export_highlights

    long = work / "long.mp4"
    sentences = [s for s, _ in TOPICS] * int(np.ceil(minutes * 60 / (len(TOPICS) * 3.0)))
    t = time.perf_counter()
    full = work / "long_full.mp4"
    spans = make_narration_video(full, sentences, gap_s=gap_s, lead_s=1.0, base=filler,
                                 size="768x432")
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-i", str(full), "-t",
                    f"{minutes * 60:.3f}", "-c", "copy", str(long)], check=True)
    info = probe_video(long)
    n_spoken = sum(1 for a, _ in spans if a < info.duration_s)
    talk = sum(min(b, info.duration_s) - a for a, b in spans if a < info.duration_s)
    print(f"\nlong narration: {info.duration_s:.1f} s, {info.width_px}x{info.height_px} "
          f"@ {info.fps:g} fps over {filler.name} (looped), {n_spoken} sentences, "
          f"{talk:.0f} s of speech (built in {time.perf_counter() - t:.0f} s)")
    ref, ref_cpu = timed_child([ffmpeg_binary(), "-v", "error", "-i", str(long), "-f", "null",
                                "-"])
    print(f"  ffmpeg -f null: {ref:.1f} s wall, {ref_cpu:.1f} CPU s")
    cache = work / "long-cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RHL_CACHE_DIR": str(cache)}
    for label in ("cold (transcribes)", "warm (transcript cached)"):
        cmd = [sys.executable, "-m", "retrieval_hl", "-q", "highlight", str(long), "--store",
               str(work / "long-store"), "--out", str(work / "long-run")]
        dt, cpu = timed_child(cmd, env)
        print(f"  `rhl highlight` {label}: {dt:.1f} s wall = {dt / ref:.1f}x ffmpeg -f null "
              f"({dt / info.duration_s:.3f}x real time); {cpu:.1f} CPU s = "
              f"{cpu / ref_cpu:.1f}x ffmpeg's CPU")
    # Where the time goes: the same job in this process, profiled, transcript cache cold.
    os.environ["RHL_CACHE_DIR"] = str(work / "long-cache-profile")
    s = load_settings(store=str(work / "long-store-profile"))
    prof = cProfile.Profile()
    t, c = time.perf_counter(), time.process_time()
    prof.enable()
    hl = highlight_video(long, settings=s)
    export_highlights(hl, work / "long-run-profile", settings=s)
    prof.disable()
    total, cpu = time.perf_counter() - t, time.process_time() - c
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    stages = {
        "probe": "probe_video",
        "signals: decode + measure": "measure_signals_and_cuts",
        "audio decode (16 kHz, whisper's 2 passes)": "blocks",
        "whisper model load": "create_recognizer",
        "transcription (whisper, VAD, batched)": "transcribe",
        "MiniLM load": "create_text_encoder",
        "speech embedding (MiniLM)": "embed_speech",
        "speech store write": "store_speech",
        "event selection": "select_highlights",
        "snap cuts to words": "snap_segments",
        "export + render": "export_highlights",
    }
    print(f"  where the time goes (in-process, cold transcript, {total:.1f} s wall in all, "
          f"{cpu:.1f} CPU s of this process; encoder {hl.encoder}, {len(hl.segments)} "
          f"segments; wall time per stage):")
    for label, fn in stages.items():
        cum = max((v[3] for (f, _, name), v in stats.items()
                   if name == fn and "site-packages" not in f), default=0.0)
        print(f"    {label:40s} {cum:7.1f} s  {100 * cum / total:5.1f} %")


if __name__ == "__main__":
    main()
