"""What was said in a video: words with times, segments, the language and the model."""

from __future__ import annotations

from pydantic import Field, model_validator

from rhl_common.models import Frozen


class Word(Frozen):
    """One spoken word as the recogniser wrote it: English words keep their leading space, so
    ``"".join`` of words is the text in any language (Chinese has no spaces).
    """

    text: str
    start_s: float = Field(ge=0)
    end_s: float
    probability: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _check_order(self) -> Word:
        if self.end_s < self.start_s:
            raise ValueError(f"word {self.text!r} ends at {self.end_s} before it starts")
        return self


class SpeechSegment(Frozen):
    """A stretch of speech the recogniser decoded as one piece, with its words."""

    start_s: float = Field(ge=0)
    end_s: float
    text: str
    words: tuple[Word, ...] = ()


class Sentence(Frozen):
    """A sentence: consecutive words up to end punctuation, a long pause or a segment end."""

    start_s: float = Field(ge=0)
    end_s: float
    text: str
    first_word: int = Field(ge=0)
    n_words: int = Field(ge=1)

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.end_s - self.start_s


class Transcript(Frozen):
    """Everything said in one video. Empty ``segments`` means nobody speaks (or no audio)."""

    video_id: str
    language: str | None = None
    language_probability: float = 0.0
    model: str
    audio_duration_s: float = Field(0.0, ge=0)
    vad: bool = True
    segments: tuple[SpeechSegment, ...] = ()

    @property
    def words(self) -> tuple[Word, ...]:
        """Every word in time order."""
        return tuple(w for seg in self.segments for w in seg.words)

    @property
    def text(self) -> str:
        """The whole transcript as one string."""
        return " ".join(seg.text.strip() for seg in self.segments).strip()

    @property
    def has_speech(self) -> bool:
        """True when at least one word was heard."""
        return any(seg.words for seg in self.segments)
