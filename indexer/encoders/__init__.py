"""Encoders: proxy frames and texts to unit vectors in one space. Back-ends load on demand."""

from indexer.encoders.base import (
    DEFAULT_ENCODER,
    ENCODERS,
    MULTILINGUAL_ENCODER,
    Encoder,
    EncoderSpec,
    create_encoder,
)

__all__ = [
    "DEFAULT_ENCODER",
    "ENCODERS",
    "MULTILINGUAL_ENCODER",
    "Encoder",
    "EncoderSpec",
    "create_encoder",
]
