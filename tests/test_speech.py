"""The speech channel through the real models (whisper base, MiniLM) on generated narration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from indexer.probe import probe_video
from indexer.speech import sentences_of, speech_unavailable, transcribe_video
from indexer.speech import transcribe as tr
from rhl_common.errors import SpeechError
from tests.conftest import ffmpeg, make_narration_video

SENTENCES = [
    "The city council approved a new budget for public schools.",
    "Our cat learned to open the kitchen door by itself.",
    "Heavy rain is expected across the north coast this weekend.",
    "The football team won the championship after extra time.",
    "Remember to water the tomato plants every morning.",
]
# A paraphrase of sentence 3 sharing none of its content words.
PARAPHRASE_3 = "storms and wet weather by the sea in the coming days"

needs_speech = pytest.mark.skipif(
    speech_unavailable() is not None, reason=f"speech models absent: {speech_unavailable()}"
)


@pytest.fixture(scope="module")
def narration(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    d = tmp_path_factory.mktemp("speech")
    path = d / "narration.mp4"
    return path, make_narration_video(path, SENTENCES)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech-cache")


@needs_speech
def test_transcript_holds_the_sentences_and_is_cached(narration, cache_dir) -> None:
    path, spans = narration
    info = probe_video(path)
    t = transcribe_video(info, cache_dir=cache_dir)
    assert t.language == "en"
    text = t.text.lower()
    assert "kitchen door" in text and "championship" in text
    sents = sentences_of(t)
    assert len(sents) == len(SENTENCES)
    for s, (a, b) in zip(sents, spans, strict=True):
        assert abs(s.start_s - a) < 0.6 and abs(s.end_s - b) < 0.6, (s, a, b)
    words = t.words
    assert all(w.end_s >= w.start_s for w in words)
    assert all(words[k].start_s <= words[k + 1].start_s for k in range(len(words) - 1))

    class Refuse:
        name, model = "refuse", tr.WHISPER_MODEL

        def transcribe(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
            raise AssertionError("a cached transcript was transcribed again")

    again = transcribe_video(info, cache_dir=cache_dir, recognizer=Refuse())
    assert again == t


@needs_speech
def test_whisper_is_freed_when_its_transcription_ends(narration, tmp_path, monkeypatch) -> None:
    """A transcription loads whisper for itself and lets it go as it returns (no collector
    run needed); the next one in the same process loads it again and hears the same words.
    """
    import weakref

    loaded: list[weakref.ref] = []

    class Watched(tr.FasterWhisperRecognizer):
        def __init__(self) -> None:
            super().__init__()
            loaded.extend((weakref.ref(self), weakref.ref(self._model)))

    monkeypatch.setattr(tr, "FasterWhisperRecognizer", Watched)
    info = probe_video(narration[0])
    heard = []
    for run in ("first", "second"):  # a cache each: both are transcribed
        t = transcribe_video(info, cache_dir=tmp_path / run)
        assert len(loaded) == 2 * len(heard) + 2
        assert [ref() for ref in loaded] == [None] * len(loaded)
        heard.append([(w.text, w.start_s, w.end_s) for w in t.words])
    assert len(heard[0]) > 20 and heard[0] == heard[1]


def test_missing_wheels_say_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(tr, "WHISPER_PACKAGES", ("no_such_whisper_part1", "no_such_part2"))
    why = speech_unavailable()
    assert why is not None and "pip install" in why and "no-such-whisper-part1" in why
    with pytest.raises(SpeechError, match="unavailable"):
        tr.whisper_model_dir()


@needs_speech
def test_model_folder_is_joined_once_and_checked(tmp_path) -> None:
    out = tr.whisper_model_dir(tmp_path)
    assert (out / "model.bin").stat().st_size == tr.WHISPER_BIN_BYTES
    mtime = (out / "model.bin").stat().st_mtime_ns
    assert tr.whisper_model_dir(tmp_path) == out
    assert (out / "model.bin").stat().st_mtime_ns == mtime  # not joined again
    with open(out / "model.bin", "r+b") as f:  # a truncated file is rebuilt
        f.truncate(1000)
    tr.whisper_model_dir(tmp_path)
    assert (out / "model.bin").stat().st_size == tr.WHISPER_BIN_BYTES


def test_a_video_without_audio_has_an_empty_transcript(videos, tmp_path) -> None:
    class Never:
        name, model = "never", tr.WHISPER_MODEL

        def transcribe(self, audio, video_id, **k):  # noqa: ANN001, ANN003, ANN202
            assert audio.read().size == 0
            return tr.Transcript(video_id=video_id, model=self.model)

    t = transcribe_video(probe_video(videos["silent"]), cache_dir=tmp_path, recognizer=Never())
    assert not t.has_speech and t.text == ""


@needs_speech
def test_a_track_without_speech_is_not_given_to_whisper(videos, monkeypatch) -> None:
    """Sound the VAD finds no speech in (a tone) makes an empty transcript of no language,
    without an encoder pass of whisper's (its language detection on silence).
    """
    from faster_whisper import WhisperModel

    def never(*a):  # noqa: ANN002, ANN202
        raise AssertionError("whisper encoded a track without speech")

    rec = tr.create_recognizer()
    monkeypatch.setattr(WhisperModel, "encode", never)
    t = rec.transcribe(tr.AudioTrack(videos["plain"]), "tone")
    assert not t.has_speech and t.language is None
    assert t.audio_duration_s == pytest.approx(probe_video(videos["plain"]).duration_s, abs=0.1)


@needs_speech
def test_streamed_vad_finds_faster_whispers_regions(narration) -> None:
    """Fed in blocks of any size, the VAD finds the very regions faster-whisper finds on the
    whole track, over more than one of its ONNX runs, with a last window cut short or not.
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from indexer.speech.vad import WINDOW, StreamingVad, speech_regions

    theirs = 10_000 * WINDOW  # the samples faster-whisper gives the model at once
    speech = tr.AudioTrack(narration[0]).read()
    looped = np.tile(speech, 2 * theirs // len(speech) + 1)
    options = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
    for n, block in ((theirs + 3 * WINDOW + 100, 7777), (2 * theirs, 1024)):
        track = looped[:n]
        want = get_speech_timestamps(track, options)
        vad = StreamingVad()
        for k in range(0, n, block):
            vad.feed(track[k : k + block])
        assert vad.n_samples == n
        assert speech_regions(vad.finish(), n, options) == want
        assert len(want) >= n // len(speech)  # a region per loop at least


@needs_speech
def test_streamed_transcript_is_faster_whispers_on_the_whole_track(narration, tmp_path) -> None:
    """The track read once in blocks (VAD, spooled, the speech read back) is transcribed exactly as
    faster-whisper's batched pipeline transcribes it whole: the same words at the same times,
    over several 30-s chunks.
    """
    from faster_whisper import BatchedInferencePipeline

    path = tmp_path / "long.mp4"  # the narration three times: 30-s chunks of several regions
    ffmpeg("-stream_loop", "2", "-i", str(narration[0]), "-c", "copy", str(path))
    rec = tr.create_recognizer()
    got = rec.transcribe(tr.AudioTrack(path), "long")
    pieces, info = BatchedInferencePipeline(rec._model).transcribe(  # noqa: SLF001
        tr.AudioTrack(path).read(), word_timestamps=True, batch_size=tr.BATCH_SIZE
    )
    want = [(w.word, w.start, w.end, w.probability) for p in pieces for w in p.words]
    assert len(want) > 3 * 40
    assert [(w.text, w.start_s, w.end_s, w.probability) for w in got.words] == want
    assert (got.language, got.language_probability) == (info.language, info.language_probability)



@needs_speech
def test_speech_in_groups_of_chunks_is_transcribed_as_in_one_call(narration, tmp_path,
                                                                   monkeypatch) -> None:
    """Read once and transcribed a few 30-s chunks at a time, the speech gives the words, times
    and language of one call on all its chunks: batches are never split across groups, the
    language found on the first group is given to the others.
    """
    from faster_whisper import BatchedInferencePipeline

    assert tr.GROUP_CHUNKS % tr.BATCH_SIZE == 0 and tr.GROUP_CHUNKS >= 4
    path = tmp_path / "long.mp4"  # the narration five times: four 30-s chunks
    ffmpeg("-stream_loop", "4", "-i", str(narration[0]), "-c", "copy", str(path))
    rec = tr.create_recognizer()
    groups: list[list[dict]] = []

    def counted(*args):  # noqa: ANN002, ANN202
        for speech, clips in speech_groups(*args):
            groups.append(clips)
            yield speech, clips

    speech_groups = tr._speech_groups  # noqa: SLF001
    monkeypatch.setattr(tr, "_speech_groups", counted)
    languages = []
    transcribe = BatchedInferencePipeline.transcribe

    def spied(self, audio, **options):  # noqa: ANN001, ANN003, ANN202
        languages.append(options["language"])
        return transcribe(self, audio, **options)

    monkeypatch.setattr(BatchedInferencePipeline, "transcribe", spied)
    monkeypatch.setattr(tr, "BATCH_SIZE", 1)  # two batches a group: the time carried over both
    heard = []
    for group_chunks in (1000, 2):
        groups.clear()
        languages.clear()
        monkeypatch.setattr(tr, "GROUP_CHUNKS", group_chunks)
        t = rec.transcribe(tr.AudioTrack(path), "long")
        heard.append(([(w.text, w.start_s, w.end_s, w.probability) for w in t.words],
                      t.language, t.language_probability))
        assert sum(len(c) for c in groups) >= 4
    assert len(groups) >= 2 and all(len(c) == 2 for c in groups[:-1])
    assert languages == [None] + ["en"] * (len(groups) - 1)
    assert len(heard[0][0]) > 5 * 40 and heard[1] == heard[0]


@needs_speech
def test_a_chunk_whose_text_ends_early_is_resumed_from_its_last_word(narration, monkeypatch):
    """Whisper's decoding cut short (``max_new_tokens``: ~a sentence a decode, as when it ends
    the text early) still gives every sentence of a 30-s chunk, in time order: the chunk is
    decoded again from its last word on until its words reach its end.
    """
    from faster_whisper import BatchedInferencePipeline

    rec = tr.create_recognizer()
    whole = rec.transcribe(tr.AudioTrack(narration[0]), "whole").words
    transcribe = BatchedInferencePipeline.transcribe
    calls = []

    def cut_short(self, audio, **options):  # noqa: ANN001, ANN003, ANN202
        calls.append(options["clip_timestamps"])
        return transcribe(self, audio, max_new_tokens=16, **options)

    monkeypatch.setattr(BatchedInferencePipeline, "transcribe", cut_short)
    t = rec.transcribe(tr.AudioTrack(narration[0]), "short")
    text = t.text.lower()  # all but the last sentence: it is said in under RESUME_GAP_S
    assert all(k in text for k in ("budget", "kitchen door", "north coast", "championship"))
    assert len(t.words) >= 0.75 * len(whole)
    starts = [w.start_s for w in t.words]
    assert starts == sorted(starts) and t.words[-1].end_s > whole[-1].end_s - tr.RESUME_GAP_S
    assert len(calls) >= 3 and len(calls[0]) == 1  # one chunk, decoded again and again


# -- what is said as a retrieval channel -----------------------------------------------------


def _words_at(cuts_s: list[float], words) -> list[str]:  # noqa: ANN001
    return [w.text for t in cuts_s for w in words if w.start_s < t < w.end_s]


def _tiou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


@needs_speech
def test_a_paraphrase_finds_its_sentence_offline_and_cuts_respect_words(narration, tmp_path):
    from retrieval_hl.config import load_settings
    from retrieval_hl.pipeline import highlight_video
    from retrieval_hl.render.export import export_highlight

    path, spans = narration
    s = load_settings(store=str(tmp_path / "store"), semantic="off", budget="none",
                      render=False)
    hl = highlight_video(path, prompt=PARAPHRASE_3, settings=s)
    assert hl.encoder == "none" and hl.transcript is not None
    assert len(hl.segments) >= 1
    best = max(hl.segments, key=lambda g: g.score_norm)
    assert _tiou((best.start_s, best.end_s), spans[2]) >= 0.5, (best, spans[2])
    words = hl.transcript.words
    assert _words_at([t for g in hl.segments for t in (g.start_s, g.end_s)], words) == []
    # The captions are the spoken words, inside the clip's time line.
    out = export_highlight(hl, tmp_path / "run", render=False)
    srt = out["srt"].read_text()
    assert "weekend" in srt.lower() and "highlight" not in srt.lower()
    ends = [line.split(" --> ")[1] for line in srt.splitlines() if " --> " in line]
    last = ends[-1]
    h, m, rest = last.split(":")
    assert int(h) * 3600 + int(m) * 60 + float(rest.replace(",", ".")) <= hl.duration_s + 0.01


@needs_speech
@pytest.mark.parametrize("kind", ["faiss", "qdrant"])
def test_speech_index_is_idempotent_and_searchable(narration, tmp_path, kind):
    from indexer.probe import probe_video
    from indexer.slicing import make_slices
    from indexer.speech.store import open_speech_store
    from retrieval_hl.config import load_settings
    from retrieval_hl.speech.channel import open_speech_channel
    from retrieval_hl.speech.search import search_text

    path, spans = narration
    info = probe_video(path)
    uri = str(tmp_path / "store") if kind == "faiss" else f"qdrant:{tmp_path / 'qdrant'}"
    s = load_settings(store=uri, semantic="off")
    grid = make_slices(info, 2.0, ())
    first = open_speech_channel(info, grid, s)
    assert first is not None and len(first.spoken.slices) >= len(SENTENCES)
    db = open_speech_store(s.store)
    n = db.count()
    db.close()
    open_speech_channel(info, grid, s)
    db = open_speech_store(s.store)
    assert db.count() == n == len(first.spoken.slices)
    db.close()
    found = search_text("a pet that figured out how a door works", s, top_k=3)
    assert found and found[0].channels == ("speech",)
    top = found[0].slice
    # The top 2-s slice lies on the paraphrased sentence (index 1) more than on any other; how
    # much of it the slice covers depends on where the 2-s grid happens to cut the sentence.
    overlap = [_tiou((top.start_s, top.end_s), span) for span in spans]
    assert max(range(len(spans)), key=overlap.__getitem__) == 1 and overlap[1] > 0, (top, spans)


def test_fusion_keeps_the_stronger_channel_and_says_which() -> None:
    from retrieval_hl.models import Hit
    from retrieval_hl.speech.hybrid import fuse_hits

    vis = [Hit(slice_index=i, description_index=0, score_raw=0.2, score_norm=z)
           for i, z in enumerate([0.5, 2.0, -1.0])]
    sp = [Hit(slice_index=i, description_index=0, score_raw=0.5, score_norm=z, channel="speech")
          for i, z in enumerate([1.5, 0.1, -0.5])]
    fused = {h.slice_index: h for h in fuse_hits(vis, sp)}
    assert [fused[i].channel for i in range(3)] == ["speech", "visual", "speech"]
    assert [fused[i].score_norm for i in range(3)] == [1.5, 2.0, -0.5]


def test_speech_scores_never_match_below_the_cosine_floor() -> None:

    from indexer.models import Slice
    from retrieval_hl.speech.hybrid import SPEECH_MIN_COSINE, speech_hits

    grid = [Slice(video_id="v", index=i, start_frame=i * 20, end_frame=(i + 1) * 20,
                  start_s=i * 2.0, end_s=(i + 1) * 2.0) for i in range(6)]
    q = np.array([[1.0, 0.0]])
    low = SPEECH_MIN_COSINE / 2
    vecs = np.array([[low, np.sqrt(1 - low**2)]])
    hits = speech_hits(grid, grid[2:3], vecs, q)
    assert len(hits) == 6 and all(h.channel == "speech" for h in hits)
    assert hits[2].score_raw == pytest.approx(low) and hits[2].score_norm == 0.0
    hits = speech_hits(grid, grid[2:3], np.array([[1.0, 0.0]]), q)
    assert hits[2].score_norm > 2.0 and max(h.score_norm for h in hits[3:]) < 0
    # A neighbouring theme well below the answer does not join it, a close second does.
    near = [np.array([c, np.sqrt(1 - c * c)]) for c in (0.5, 0.3, 0.42)]
    hits = speech_hits(grid, grid[1:4], np.stack(near), q)
    assert hits[1].score_norm > 1.0 and hits[3].score_norm > 0.5 and hits[2].score_norm == 0.0


def test_cuts_snap_out_of_words_and_keep_sentences_whole() -> None:
    from indexer.models import VideoInfo
    from indexer.speech.models import SpeechSegment, Transcript, Word
    from indexer.speech.windows import sentences_of
    from retrieval_hl.models import Segment
    from retrieval_hl.speech.snap import PAD_S, snap_segments, snap_span

    # Two sentences: words of 0.4 s with 0.1 s gaps, 1.5 s of silence between the sentences.
    def sentence(t0: float, texts: list[str]) -> SpeechSegment:
        ws = tuple(Word(text=" " + x, start_s=t0 + 0.5 * k, end_s=t0 + 0.5 * k + 0.4)
                   for k, x in enumerate(texts))
        return SpeechSegment(start_s=ws[0].start_s, end_s=ws[-1].end_s,
                             text="".join(w.text for w in ws), words=ws)

    tr_ = Transcript(video_id="v", model="m", segments=(
        sentence(1.0, ["one", "two", "three", "four."]),
        sentence(4.5, ["five", "six", "seven."]),
    ))
    words, sents = tr_.words, sentences_of(tr_)
    assert [s.text for s in sents] == ["one two three four.", "five six seven."]
    # Mostly inside sentence 1 (1.0-2.9): widened to it, plus a little air.
    a, b = snap_span(1.2, 2.7, words, sents)
    assert 1.0 - PAD_S - 1e-9 <= a <= 1.0 and 2.9 <= b <= 2.9 + PAD_S + 1e-9
    # Only the tail of sentence 2 (4.5-5.9): left out, the cut lands where it ends.
    a, b = snap_span(5.6, 7.0, words, sents)
    assert a == pytest.approx(5.9) and b == 7.0
    # ... unless what remains would be shorter than the shortest clip: then only off the word.
    a, b = snap_span(5.6, 7.0, words, sents, min_keep_s=1.5)
    assert a == pytest.approx(5.45) and b == 7.0  # "seven" starts at 5.5; half the 0.1 s gap
    # Silence trimmed from a span chosen for what is said.
    a, b = snap_span(0.2, 3.8, words, sents, tighten=True)
    assert (a, b) == (pytest.approx(1.0 - PAD_S), pytest.approx(2.9 + PAD_S))
    # A long segment ending inside one word of a long sentence: moved to the word's end.
    long = Transcript(video_id="v", model="m", segments=(
        sentence(0.0, [f"w{k}" for k in range(20)]),))
    a, b = snap_span(0.0, 2.2, long.words, sentences_of(long), max_extend_s=1.0)
    assert b >= 2.4 and not any(w.start_s < b < w.end_s for w in long.words)
    info = VideoInfo(path="x", video_id="v", width_px=16, height_px=16, fps=10.0, n_frames=100,
                     duration_s=10.0)
    segs = [Segment(video_id="v", start_frame=f0, end_frame=f1, start_s=f0 / 10, end_s=f1 / 10,
                    description_index=0, priority=1, score_raw=0.3, score_norm=z)
            for f0, f1, z in [(47, 60, 2.0), (12, 28, 1.0)]]  # score order, not time order
    out = snap_segments(segs, words, sents, info)
    assert [g.score_norm for g in out] == [2.0, 1.0]
    for g in out:
        assert not any(w.start_s < t < w.end_s for w in words for t in (g.start_s, g.end_s))
    assert out[1].start_s <= 1.0 and out[1].end_s >= 2.9
    assert snap_segments(segs, (), (), info) == segs


@needs_speech
def test_cli_prompt_and_search_by_what_is_said(narration, tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from retrieval_hl.cli.main import cli
    from retrieval_hl.render.export import load_highlight

    path, spans = narration
    store, out = str(tmp_path / "store"), tmp_path / "run"

    def run(*args: str) -> str:
        res = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
        assert res.exit_code == 0, res.output + res.stderr
        return res.stdout

    run("highlight", str(path), "--prompt", "the part about the budget", "--semantic", "off",
        "--store", store, "--out", str(out), "--no-render", "--budget", "none")
    hl = load_highlight(out / "highlights.json")
    best = max(hl.segments, key=lambda g: g.score_norm)
    assert _tiou((best.start_s, best.end_s), spans[0]) >= 0.5
    rows = [json.loads(x) for x in run("search", "gardening chores", "--store", store,
                                       "--json", "--top", "2").splitlines()]
    assert rows[0]["channels"] == ["speech"] and rows[0]["score_visual"] is None
    assert rows[0]["start_s"] < spans[4][1] and rows[0]["end_s"] > spans[4][0]
    res = CliRunner().invoke(cli, ["highlight", str(path), "--prompt", "x", "--semantic", "off",
                                   "--speech", "off", "--store", store, "--out", str(out)])
    assert res.exit_code == 1 and "neither is available" in res.stderr


def test_burnt_captions_sit_low_inside_the_safe_area(tmp_path) -> None:
    import av

    from retrieval_hl.speech.burn import SAFE_BOTTOM, ass_text, burn_captions
    from retrieval_hl.speech.captions import Cue
    from tests.conftest import ffmpeg

    assert "Dialogue: 0,0:00:01.50,0:00:02.00,Caption,,0,0,0,,a (b)" in ass_text(
        [Cue(1.5, 2.0, "a {b}")], 1080, 1920)
    video = tmp_path / "black.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:size=180x320:rate=10:duration=2",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video))
    burn_captions(video, [Cue(0.0, 1.0, "HELLO WORLD")])
    with av.open(str(video)) as c:
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert len(frames) == 20
    lit = frames[5] > 128
    rows = np.flatnonzero(lit.any(axis=1))
    assert rows.size and rows.max() < 320 * (1 - SAFE_BOTTOM) and rows.min() > 320 * 0.5
    assert not (frames[15] > 128).any()  # the cue is over by then


def test_without_the_wheels_one_line_and_speech_off(narration, tmp_path, monkeypatch, caplog):
    import logging

    from retrieval_hl.config import load_settings
    from retrieval_hl.pipeline import highlight_video
    from rhl_common.errors import EncoderError

    monkeypatch.setattr(tr, "WHISPER_PACKAGES", ("no_such_whisper_part1", "no_such_part2"))
    path, _ = narration
    s = load_settings(store=str(tmp_path / "store"), semantic="off", render=False)
    with caplog.at_level(logging.WARNING):
        hl = highlight_video(path, settings=s)
    assert hl.transcript is None and hl.segments
    lines = [r.getMessage() for r in caplog.records if "speech channel off" in r.getMessage()]
    assert len(lines) == 1 and "pip install" in lines[0]
    with pytest.raises(EncoderError, match="neither is available"):
        highlight_video(path, prompt="the budget", settings=s)
    with pytest.raises(SpeechError, match="unavailable"):
        highlight_video(path, settings=s.model_copy(update={"speech": "on"}))


def test_caption_cues_follow_the_output_time_line() -> None:
    from indexer.models import VideoInfo
    from indexer.speech.models import SpeechSegment, Transcript, Word
    from retrieval_hl.models import Description, Highlight, Segment
    from retrieval_hl.speech.captions import caption_cues

    words = tuple(Word(text=f" w{k}" + ("." if k == 3 else ""), start_s=10.0 + 0.5 * k,
                       end_s=10.4 + 0.5 * k) for k in range(10))
    tr_ = Transcript(video_id="v", model="m", segments=(
        SpeechSegment(start_s=10.0, end_s=14.9, text="", words=words),))
    info = VideoInfo(path="x", video_id="v", width_px=16, height_px=16, fps=10.0,
                     n_frames=300, duration_s=30.0)

    def seg(a: float, b: float, d: int) -> Segment:
        return Segment(video_id="v", start_frame=int(a * 10), end_frame=int(b * 10), start_s=a,
                       end_s=b, description_index=d, priority=1, score_raw=0.0, score_norm=1.0)

    hl = Highlight(video=info, encoder="none", segments=(seg(2.0, 5.0, 1), seg(9.8, 15.0, 0)),
                   descriptions=(Description(text="talk"), Description(text="a quiet bit")),
                   transcript=tr_)
    cues = caption_cues(hl, [(0.0, 3.0), (3.0, 8.2)], max_words=3)
    assert cues[0] == (0.0, 3.0, "a quiet bit")
    texts = [c.text for c in cues[1:]]
    assert texts == ["w0 w1 w2", "w3.", "w4 w5 w6", "w7 w8 w9"]  # a break after the full stop
    assert cues[1].start_s == pytest.approx(3.0 + 0.2) and cues[-1].end_s <= 8.2
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in zip(cues[1:], cues[2:], strict=False))
    assert caption_cues(hl, [(0.0, 3.0), (3.0, 8.2)], describe_silence=False)[0].text != (
        "a quiet bit")


# -- the clip library keeps what is said -----------------------------------------------------

LIB_SETTINGS = {"window_s": 1.0, "sample_fps": 4.0}
# Paraphrases of SENTENCES[1] (clip "home") and SENTENCES[2] (clip "news"), none of their words.
PARAPHRASE_1 = "a pet that figured out how a door works"


@pytest.fixture(scope="module")
def spoken_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("spoken-clips")
    out = {}
    for name, sentences in (("home", SENTENCES[:2]), ("news", SENTENCES[2:4])):
        make_narration_video(d / f"{name}.mp4", sentences, gap_s=0.8, lead_s=0.5)
        out[name] = d / f"{name}.mp4"
    # The same test pattern as the narrations: the random-weight visual channel cannot tell
    # the clips apart, so what is said decides.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=4", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(d / "silent.mp4"))
    out["silent"] = d / "silent.mp4"
    return out


def _library(location: str):  # noqa: ANN202
    from library.catalog import Library
    from retrieval_hl.config import Settings
    from tests.conftest import TINY

    return Library.open(location, encoder=TINY, settings=Settings(encoder=TINY, **LIB_SETTINGS))


def _srt_cues(srt: str) -> list[tuple[float, float, str]]:
    """(start_s, end_s, text) of each cue of an SRT file's text."""

    def seconds(stamp: str) -> float:
        h, m, s = stamp.replace(",", ".").split(":")
        return 3600 * int(h) + 60 * int(m) + float(s)

    cues = []
    for block in srt.strip().split("\n\n"):
        _, times, *text = block.strip().splitlines()
        a, b = times.split(" --> ")
        cues.append((seconds(a), seconds(b), " ".join(text)))
    return cues


@needs_speech
@pytest.mark.parametrize("kind", ["faiss", "qdrant"])
def test_library_clips_keep_their_words_and_are_found_by_them(spoken_clips, tmp_path, kind):
    from library.assemble import load_plan, plan_assembly, plan_srt, save_plan
    from library.models import Script, ScriptStep

    loc = str(tmp_path / "lib") if kind == "faiss" else f"qdrant:{tmp_path / 'qlib'}"
    lib = _library(loc)
    try:
        ids = {n: lib.add_clip_file(p, tags=[n])[0].clip_id for n, p in spoken_clips.items()}
        home = lib.get(ids["home"])
        assert home.transcript is not None and "kitchen door" in home.transcript.text.lower()
        assert "weekend" not in home.transcript.text.lower()  # the other clip's words
        words = home.transcript.words
        assert words[0].start_s >= 0 and words[-1].end_s <= home.duration_s + 1e-6
        assert lib.get(ids["silent"]).transcript is None
        n_home = lib.speech_store.count(ids["home"])
        assert n_home > 0 and lib.speech_store.count(ids["silent"]) == 0
        assert lib.add_clip_file(spoken_clips["home"]) == []  # re-add: nothing changes
        assert lib.speech_store.count(ids["home"]) == n_home

        hits = lib.search(PARAPHRASE_1)
        assert hits[0].clip.clip_id == ids["home"] and "speech" in hits[0].channels
        assert hits[0].score_speech > 0.3
        assert all("speech" not in h.channels for h in hits if h.clip.clip_id == ids["silent"])

        script = Script(steps=(ScriptStep(text=PARAPHRASE_3),
                               ScriptStep(text=PARAPHRASE_1, duration_s=2.0)))
        plan = plan_assembly(script, lib)
        assert [(s.clip_id, s.channel) for s in plan.steps] == [
            (ids["news"], "speech"), (ids["home"], "speech")]
        # The 2 s stretch of "home" is where the cat sentence (its second) is said.
        cat = lib.get(ids["home"]).transcript
        said = [w for w in cat.words if "cat" in w.text.lower()][0]
        step = plan.steps[1]
        assert step.start_s - home.start_s <= said.start_s + 0.5 <= step.end_s - home.start_s + 1
        # The edit's captions are the words said in each cut, timed to the edit (not the
        # event texts: both cuts have speech), and a saved plan keeps them.
        cues = _srt_cues(plan_srt(plan))
        text = " ".join(t for *_, t in cues).lower()
        assert "championship" in text and "cat" in text and PARAPHRASE_1 not in text
        assert "weekend" in text or "north coast" in text
        assert all(0 <= a < b <= plan.duration_s + 1e-3 for a, b, _ in cues)
        cat_cue = next(c for c in cues if "cat" in c[2].lower())
        assert step.out_start_s <= cat_cue[0] < step.out_end_s
        assert cat_cue[0] == pytest.approx(
            step.out_start_s + max(0.0, said.start_s - (step.start_s - home.start_s)), abs=0.7)
        assert plan_srt(load_plan(save_plan(plan, tmp_path / "p.plan.json"))) == plan_srt(plan)

        assert lib.remove([ids["home"]]) == 1
        assert lib.speech_store.count(ids["home"]) == 0
        assert all(h.clip.clip_id != ids["home"] for h in lib.search(PARAPHRASE_1))
    finally:
        lib.close()


@needs_speech
def test_bulk_add_and_cli_search_and_assemble_by_what_is_said(spoken_clips, tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from library.bulk import add_paths
    from retrieval_hl.cli.main import cli
    from retrieval_hl.executors.local import LocalExecutor

    lib = _library(str(tmp_path / "lib"))
    with lib:
        reports = add_paths(lib, [spoken_clips["home"], spoken_clips["news"]],
                            LocalExecutor(isolate=False))
        assert all(len(r.clips) == 1 and r.clips[0].transcript is not None for r in reports)
    ids = {n: r.clips[0].clip_id for n, r in zip(("home", "news"), reports, strict=True)}

    def run(*args: str) -> str:
        res = CliRunner().invoke(cli, ["-q", *args, "--library", str(tmp_path / "lib")],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output + res.stderr
        return res.stdout

    rows = [json.loads(x) for x in run("library", "search", PARAPHRASE_3, "--json").splitlines()]
    assert rows[0]["clip_id"] == ids["news"] and "speech" in rows[0]["channels"]
    script = tmp_path / "story.txt"
    script.write_text(f"{PARAPHRASE_1}\n")
    out = json.loads(run("assemble", str(script), "--out", str(tmp_path / "edit.mp4"),
                         "--no-render", "--json"))
    plan = json.loads(Path(out["plan"]).read_text())
    assert [(s["clip_id"], s["channel"]) for s in plan["steps"]] == [(ids["home"], "speech")]


@needs_speech
def test_find_highlights_uses_what_is_said(narration, tmp_path) -> None:
    from retrieval_hl.config import load_settings
    from retrieval_hl.pipeline import find_highlights, index_video
    from tests.conftest import TINY

    path, spans = narration
    s = load_settings(store=str(tmp_path / "store"), encoder=TINY, budget="none",
                      window_s=1.0)
    video = index_video(path, settings=s)
    hl = find_highlights(video, prompt=PARAPHRASE_3, settings=s)
    assert hl.transcript is not None and "weekend" in hl.transcript.text.lower()
    # The visual channel is random here: the sentence is found, whatever noise joins it.
    a, b = spans[2]
    assert max(min(g.end_s, b) - max(g.start_s, a) for g in hl.segments) >= 0.8 * (b - a)
    assert _words_at([t for g in hl.segments for t in (g.start_s, g.end_s)],
                     hl.transcript.words) == []


def test_words_per_second_counts_each_word_in_its_slice() -> None:
    from indexer.models import Slice
    from indexer.speech.models import Word
    from retrieval_hl.select.events import Weights, fuse_signals
    from retrieval_hl.signals.meter import SliceSignals
    from retrieval_hl.speech.rate import words_per_second

    slices = [Slice(video_id="v", index=k, start_frame=10 * k, end_frame=10 * k + 10,
                    start_s=float(k), end_s=float(k + 1)) for k in range(6)]
    # three words in slice 1, one straddling 3|4 (its middle in 4), none elsewhere
    words = [Word(text=" a", start_s=1.0, end_s=1.2), Word(text=" b", start_s=1.3, end_s=1.5),
             Word(text=" c", start_s=1.6, end_s=1.9), Word(text=" d", start_s=3.8, end_s=4.4)]
    rate = words_per_second(words, slices)
    assert rate.tolist() == [0.0, 3.0, 0.0, 0.0, 1.0, 0.0]
    sig = dataclasses.replace(SliceSignals.zeros(6), speech_rate=rate)
    assert not fuse_signals(sig).any()  # off by default
    lifted = fuse_signals(sig, Weights(speech_rate=1.0))
    assert lifted.argmax() == 1 and lifted[4] > 0 and lifted[0] == 0


def test_cut_transcript_keeps_the_words_of_a_span_and_retimes_them() -> None:
    from indexer.speech.models import SpeechSegment, Transcript, Word
    from indexer.speech.windows import cut_transcript

    words = [Word(text=f" w{k}", start_s=k, end_s=k + 0.8) for k in range(6)]
    t = Transcript(video_id="src", model="m", audio_duration_s=6.0, language="en",
                   segments=(SpeechSegment(start_s=0, end_s=5.8, text="", words=tuple(words)),))
    # w1 (1.0-1.8, middle 1.4) is in, w3 (middle 3.4) is out of [1.3, 3.2)
    cut = cut_transcript(t, 1.3, 3.2, "clip")
    assert [w.text for w in cut.words] == [" w1", " w2"] and cut.video_id == "clip"
    assert cut.segments[0].text == "w1 w2" and cut.words[0].start_s == 1.0
    own = cut_transcript(t, 1.3, 3.2, "clip", retime=True)
    assert [(w.start_s, round(w.end_s, 6)) for w in own.words] == [(0.0, 0.5), (0.7, 1.5)]
    assert own.audio_duration_s == pytest.approx(1.9) and own.language == "en"
    assert not cut_transcript(t, 6.5, 9.0, "clip").has_speech


# -- how it is said: emphasis as a query-free signal -----------------------------------------


def test_voicing_takes_a_pitched_buzz_and_not_noise() -> None:
    import numpy as np

    from retrieval_hl.signals.meter import AUDIO_FFT, AUDIO_RATE_HZ, voiced_hops

    rng = np.random.default_rng(0)
    t = np.arange(AUDIO_FFT) / AUDIO_RATE_HZ
    buzz = [np.sign(np.sin(2 * np.pi * f0 * t)) + 0.3 * rng.standard_normal(t.size)
            for f0 in (95.0, 180.0, 310.0)]
    noise = rng.standard_normal((200, AUDIO_FFT))
    window = np.hanning(AUDIO_FFT)
    assert voiced_hops(np.array(buzz), window).all()
    assert not voiced_hops(noise, window).any()
    assert not voiced_hops(np.zeros((3, AUDIO_FFT)), window).any()


def test_emphasis_is_the_rise_over_the_speakers_own_level() -> None:
    import numpy as np

    from retrieval_hl.speech.rate import emphasis_db

    level = np.array([np.nan, -20.0, -21.0, -19.0, -12.0, -3.0, -20.0, np.nan])
    speaking = np.array([False, True, True, True, True, False, True, True])
    # the speaker's level is the median of the speaking slices (-20 dB); -3 dB where nobody
    # speaks (a pitched sound, not a voice) does not count; softer is 0, like silence
    assert emphasis_db(level, speaking).tolist() == [0, 0, 0, 1, 8, 0, 0, 0]
    assert not emphasis_db(level, np.zeros(8, bool)).any()


@pytest.fixture(scope="module")
def emphatic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    path = tmp_path_factory.mktemp("emphatic") / "emphatic.mp4"
    return path, make_narration_video(path, SENTENCES, emphasised={2})


@needs_speech
def test_the_emphasised_sentence_has_the_highest_emphasis(emphatic) -> None:
    import numpy as np

    from indexer.slicing import make_slices
    from retrieval_hl.select.events import fuse_signals
    from retrieval_hl.signals.meter import measure_signals_and_cuts
    from retrieval_hl.speech.rate import emphasis_db, words_per_second

    path, spans = emphatic
    info = probe_video(path)
    fine = make_slices(info, 1.0, ())
    sig, _ = measure_signals_and_cuts(info, fine, None)
    rate = words_per_second(transcribe_video(info).words, fine)
    emph = emphasis_db(sig.voice_loudness_db, rate > 0)
    mids = np.array([(s.start_s + s.end_s) / 2 for s in fine])
    a, b = spans[2]
    inside = (mids > a) & (mids < b)
    others = ~inside & np.any([(mids > x) & (mids < y) for x, y in spans], axis=0)
    assert a < mids[emph.argmax()] < b
    # espeak-ng's amplitude 200 is ~6 dB over its 100: the raised sentence, not the others
    assert np.median(emph[inside]) > 3.0 and emph[others].max() < 2.5
    sig = dataclasses.replace(sig, speech_rate=rate, speech_emphasis_db=emph)
    assert a < mids[fuse_signals(sig).argmax()] < b  # on by default


@needs_speech
def test_without_speech_emphasis_is_zero(videos, tmp_path) -> None:
    from retrieval_hl.config import Settings
    from retrieval_hl.pipeline import highlight_video

    # a 440 Hz tone is pitched (voiced to the meter) but nobody speaks
    s = Settings(encoder="none", semantic="off", speech="on")
    hl = highlight_video(videos["plain"], settings=s)
    assert hl.transcript is None  # nobody speaks: no transcript kept
    track = hl.track.signals
    assert any(v is not None for v in track["voice_loudness_db"])
    assert set(track["speech_emphasis_db"]) == {0.0}
