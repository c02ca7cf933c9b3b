"""The base of every artefact."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, ValidationError

from rhl_common.errors import ConfigError


class Frozen(BaseModel):
    """Base of every artefact: immutable, strict about unknown fields, JSON round-trip."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str], what: str) -> Self:
        """Read an artefact saved as JSON; ``what`` names it in the error.

        Raises:
            ConfigError: the file is missing or not a valid ``what`` (its first problem said).
        """
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except (OSError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"not a readable {what} {str(path)!r}: {first}") from None
