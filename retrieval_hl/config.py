"""All settings in one object: CLI flags over ``RHL_*`` env vars over a YAML file over defaults.

This is the one place that reads retrieval-hl's environment variables; the layers below take
their values as arguments.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from indexer.encoders import DEFAULT_ENCODER
from indexer.stores.base import DEFAULT_APPROX_THRESHOLD
from retrieval_hl.select.events import MAX_LEN_S, MIN_LEN_S
from rhl_common.errors import ConfigError
from rhl_common.paths import cache_dir

# Settings also read from the names other tools use, when the RHL_ name is unset.
CONVENTIONAL_ENV = {"qdrant_api_key": "QDRANT_API_KEY", "vlm_api_key": "OPENAI_API_KEY"}


def default_store() -> str:
    """The embedded FAISS index shared by all runs: ``$XDG_CACHE_HOME/retrieval-hl/store``."""
    return str(cache_dir("store"))


def default_library() -> str:
    """The clip library used when none is named: ``$XDG_CACHE_HOME/retrieval-hl/library``."""
    return str(cache_dir("library"))


class _ConventionalEnv(PydanticBaseSettingsSource):
    """``QDRANT_API_KEY`` and ``OPENAI_API_KEY``, below their ``RHL_*`` names."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return os.environ.get(CONVENTIONAL_ENV.get(field_name, "")), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {f: os.environ[e] for f, e in CONVENTIONAL_ENV.items() if os.environ.get(e)}


class Settings(BaseSettings):
    """Every knob of the pipeline. Field names double as ``RHL_<NAME>`` env vars."""

    model_config = SettingsConfigDict(env_prefix="RHL_", frozen=True, extra="forbid")

    encoder: str = DEFAULT_ENCODER
    store: str = Field(default_factory=default_store)
    library: str = Field(default_factory=default_library)
    # FAISS searches go approximate (IVF) above this many points.
    faiss_approx_threshold: int = Field(DEFAULT_APPROX_THRESHOLD, ge=0)
    # Sharding and replication of new collections on a Qdrant server (None: the server's).
    qdrant_shards: int | None = Field(None, ge=1)
    qdrant_replicas: int | None = Field(None, ge=1)
    # Secrets: never logged, never written with a run's outputs.
    qdrant_api_key: SecretStr | None = Field(None, exclude=True)
    vlm_api_key: SecretStr | None = Field(None, exclude=True)
    reader: Literal["auto", "decord", "pyav"] = "auto"
    window_s: float = Field(2.0, ge=1.0, le=3.0)
    signal_window_s: float = Field(1.0, ge=1.0, le=3.0)
    sample_fps: float = Field(2.0, gt=0, le=30)
    snap_to_shots: bool = True
    threshold_z: float = 1.0
    max_gap_s: float = Field(2.0, ge=0)
    min_len_s: float = Field(MIN_LEN_S, gt=0)
    min_clip_s: float = Field(3.0, ge=0)  # the main job widens shorter clips to this
    max_len_s: float = Field(MAX_LEN_S, gt=0)
    budget: str = "auto"
    order: Literal["chronological", "score"] = "chronological"
    max_descriptions: int = Field(5, ge=1, le=50)
    domains: tuple[str, ...] = ()
    crossfade_s: float = Field(0.0, ge=0, le=2)
    transition: Literal["crossfade", "dip"] = "crossfade"  # with crossfade_s > 0: how cuts join
    size: str | None = None  # publishing WxH of the reframed video (default by ratio, 1080 short)
    max_upscale: float = Field(2.0, ge=1)  # the default size never enlarges a crop more
    loudness_lufs: float | None = Field(-14.0, ge=-70, le=0)  # EBU R128 target; None = as is
    music: str | None = None  # a file, or a folder to pick one from, under the rendered mp4s
    vlm_url: str | None = None
    vlm_model: str | None = None
    # How highlights are found: "retrieval" (descriptions as CLIP queries, or signals), "vlm"
    # (the VLM's own time ranges, no encoder needed), "hybrid" (VLM descriptions as queries,
    # its ranges as priors and gap-fillers); "auto": hybrid when a VLM is configured and the
    # encoder loads, vlm when only the VLM is there, else retrieval.
    method: Literal["auto", "retrieval", "vlm", "hybrid"] = "auto"
    vlm_chunk_s: float = Field(30.0, ge=2.0, le=600.0)
    vlm_overlap_s: float = Field(2.0, ge=0.0, le=30.0)
    vlm_frames_per_chunk: int = Field(8, ge=1, le=64)
    vlm_concurrency: int = Field(4, ge=1, le=64)
    vlm_timeout_s: float = Field(60.0, gt=0)
    vlm_retries: int = Field(1, ge=0, le=10)
    vlm_max_tokens: int = Field(1024, ge=16)
    vlm_strict: bool = False  # a failed or empty VLM answer is an error, not a warning
    vlm_cache: bool = True  # reuse stored VLM answers for the same file, frames, prompt, model
    max_clips: int | None = Field(None, ge=1)  # the most segments kept (e.g. "3 clips")
    render: bool = True
    plots: bool = True  # timeline.png and contact_sheet.png beside the outputs
    # Editor timelines beside the outputs: .otio always, and these formats too when they can
    # hold the cuts exactly (see retrieval_hl.render.timeline).
    timelines: tuple[Literal["otio", "fcpxml", "xml", "edl"], ...] = ("otio",)
    semantic: Literal["auto", "on", "off"] = "auto"
    # A video where nothing stands out: keep its best stretch anyway (the main job), or output
    # nothing when nothing in it moves either (the competition batch, where an empty list is
    # then the right answer; a video busy everywhere still gets its best stretch).
    allow_empty: bool = False
    signal_weight: float = Field(0.5, ge=0, le=5)
    # What is said: auto transcribes when the model wheels are installed and the video has
    # audio (silence costs almost nothing behind the VAD); on fails without them.
    speech: Literal["auto", "on", "off"] = "auto"
    language: str | None = None  # whisper language code ("en", "zh"...); None detects it
    captions: Literal["srt", "burn"] = "srt"  # burn: also draw the spoken words into the mp4s

    @field_validator("vlm_overlap_s")
    @classmethod
    def _check_overlap(cls, v: float, info: Any) -> float:
        chunk = info.data.get("vlm_chunk_s", 30.0)
        if v * 2 >= chunk:
            raise ValueError(f"vlm_overlap_s {v:g} must be under half of vlm_chunk_s {chunk:g}")
        return v

    @field_validator("size")
    @classmethod
    def _check_size(cls, v: str | None) -> str | None:
        if v is not None:
            parse_wh(v, "size")
        return v

    @field_validator("budget")
    @classmethod
    def _check_budget(cls, v: str) -> str:
        parse_budget(v, 1.0)
        return v

    def store_options(self) -> dict[str, Any]:
        """Keyword arguments for ``indexer.stores.open_store`` from these settings."""
        key = self.qdrant_api_key
        return {
            "approx_threshold": self.faiss_approx_threshold,
            "api_key": key.get_secret_value() if key is not None else None,
            "shards": self.qdrant_shards,
            "replicas": self.qdrant_replicas,
        }

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Init kwargs (CLI flags and the config file, merged in ``load_settings``) over env."""
        return init_settings, env_settings, _ConventionalEnv(settings_cls)


AUTO_BUDGET_FRAC = 0.2
AUTO_BUDGET_MIN_S = 10.0
AUTO_BUDGET_MAX_S = 180.0


def parse_budget(text: str, duration_s: float) -> float | None:
    """Seconds of highlights allowed: ``60s``/``60`` seconds, ``2m``, ``0.2`` a fraction of the
    video, ``none`` no budget, ``auto`` (the default) a fifth of the video but at least 10 s, at
    most 3 min and at most half the video: 5 s of a 10 s clip, 10 s of a 30 s clip, 2 min of a
    10-min match, 3 min of a 1-h video.

    Raises:
        ConfigError: anything else.

    """
    t = str(text).strip().lower()
    if t in ("none", "off", "0s", ""):
        return None
    if t == "auto":
        return min(max(AUTO_BUDGET_FRAC * duration_s, AUTO_BUDGET_MIN_S), AUTO_BUDGET_MAX_S,
                   duration_s / 2)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min)?", t)
    if not m:
        raise ConfigError(
            f"bad budget {text!r}; use seconds like 60s, minutes like 2m, "
            "a fraction of the video like 0.2, auto, or none"
        )
    value, unit = float(m.group(1)), m.group(2)
    if unit in ("m", "min"):
        return value * 60
    if unit is None and value < 1:
        return value * duration_s
    return value


_WH_RE = re.compile(r"\s*(\d+)\s*[:xX/]\s*(\d+)\s*")


def parse_wh(text: str, what: str = "ratio") -> tuple[int, int]:
    """Two positive integers ``W:H`` (also ``WxH`` or ``W/H``): an aspect ratio such as
    ``9:16``, or with ``what="size"`` a frame size such as ``1280x720``.

    Raises:
        ConfigError: anything else; the message names ``what`` and gives an example.

    """
    m = _WH_RE.fullmatch(str(text))
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        example = "1280x720" if what == "size" else "9:16 or 16:9"
        raise ConfigError(f"bad {what} {text!r}; use two positive whole numbers W:H, e.g. "
                          f"{example}")
    return int(m.group(1)), int(m.group(2))


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, then ``config_file`` (YAML), then env, then non-None ``overrides``.

    Raises:
        ConfigError: unreadable file, unknown keys or invalid values, with the bad name.

    """
    values: dict[str, Any] = {}
    path = config_file or os.environ.get("RHL_CONFIG")
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of settings")
        try:
            env_set = {*EnvSettingsSource(Settings)(), *_ConventionalEnv(Settings)()}
        except SettingsError as exc:
            raise ConfigError(f"bad RHL_* environment variable: {exc}") from None
        values.update({k: v for k, v in loaded.items() if k not in env_set})
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except SettingsError as exc:
        raise ConfigError(f"bad RHL_* environment variable: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(x) for x in err["loc"]) or "settings"
        raise ConfigError(f"bad setting {name}: {err['msg']}") from None
