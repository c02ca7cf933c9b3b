"""The exception family. Messages name the bad value and, where there are any, the choices."""


class RHLError(Exception):
    """Base of every error retrieval-hl raises on purpose; the CLI maps it to exit code 1."""


class VideoOpenError(RHLError):
    """A video cannot be opened, probed or decoded."""


class EncoderError(RHLError):
    """An encoder spec is invalid or its weights cannot be had."""


class StoreError(RHLError):
    """A vector store cannot be opened, or refuses the vectors it is given."""


class VLMResponseError(RHLError):
    """A vision-language model endpoint failed or replied with something unusable."""


class ConfigError(RHLError):
    """A setting or command-line value is invalid."""


class RenderError(RHLError):
    """ffmpeg failed to render an output."""


class SpeechError(RHLError):
    """Speech recognition or its model is unavailable, or audio cannot be decoded."""
