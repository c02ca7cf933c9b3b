"""The speech channel: what is said in a video (offline whisper), as sentences laid on slices."""

from indexer.speech.models import Sentence, SpeechSegment, Transcript, Word
from indexer.speech.transcribe import speech_unavailable, transcribe_video
from indexer.speech.windows import cut_transcript, sentences_of, slice_texts

__all__ = [
    "Sentence",
    "SpeechSegment",
    "Transcript",
    "Word",
    "cut_transcript",
    "sentences_of",
    "slice_texts",
    "speech_unavailable",
    "transcribe_video",
]
