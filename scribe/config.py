"""One settings object for the whole service.

Values come, highest priority first, from: explicit arguments, ``SCRIBE_*`` environment
variables (nested with ``__``, e.g. ``SCRIBE_ASR__MODEL=base``), a TOML file (``--config``
or ``SCRIBE_CONFIG``; ``./scribe.toml`` when present), then the defaults below. The
defaults are the embedded, offline configuration: they run on a 2-core laptop with no GPU
and no network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def default_data_dir() -> Path:
    """Where the store and model caches live unless configured (XDG-style, per user)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "scribe"


class AsrSettings(BaseModel):
    """Speech recognition (faster-whisper)."""

    model: str = "tiny.en"
    """``tiny.en`` (packaged), ``base`` (packaged, assembled once), or a local CTranslate2 dir."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = "auto"
    """``auto``: float16 on CUDA, int8 on CPU."""
    cpu_threads: int = 0
    """0 = let CTranslate2 decide (all cores)."""
    num_workers: int = 1
    """Concurrent decodes the shared model allows (one per core is a sensible maximum)."""
    beam_size: int = 1
    language: str | None = None
    """Default language when the client does not send one; English-only models force ``en``."""
    hotwords: bool | None = None
    """Bias decoding toward the medical lexicon. ``None`` = on only for models where it was
    measured to help (multilingual ``base``); tiny.en loops with hotwords."""
    lexicon: Path | None = None
    """A file of terms (one per line) for hotwords; default: the packaged drug lexicon."""
    policy: Literal["auto", "utterance", "local_agreement"] = "auto"
    """``utterance``: VAD-delimited, decoded once at end of speech (cheap, for CPUs);
    ``local_agreement``: re-decode a growing buffer and commit agreed prefixes (for GPUs);
    ``auto`` picks by device."""
    vad_threshold: float = 0.5
    min_silence_ms: int = 500
    """Silence that ends an utterance. Shorter = lower latency, more fragments."""
    max_utterance_s: float = 15.0
    """Cap on utterance length so a monologue is still committed in pieces."""
    speech_pad_ms: int = 200
    context_s: float = 0.0
    """Already-committed audio decoded again as lead-in before each utterance (its words are
    dropped): tiny.en was clearly steadier with it on short turns (see docs/benchmarks.md)."""
    partial_interval_s: float = 1.5
    """How often to decode the open utterance for display. 0 disables partials."""
    cache_dir: Path | None = None
    """Where assembled models (``base``) are kept; default ``<data_dir>/models``."""


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8765
    tokens: list[SecretStr] = Field(default_factory=list)
    """Accepted bearer tokens. Empty list + ``allow_no_auth`` false = refuse to start."""
    allow_no_auth: bool = False
    max_message_bytes: int = 256 * 1024
    max_frame_seconds: float = 2.0
    """Largest audio frame accepted, in seconds of audio."""
    queue_seconds: float = 60.0
    """Audio a session may buffer ahead of the transcriber before reads are paused."""
    supported_rates: list[int] = Field(
        default_factory=lambda: [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000]
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SCRIBE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    database: str | None = None
    """SQLite file path; default ``<data_dir>/scribe.db``."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    asr: AsrSettings = Field(default_factory=AsrSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(v).expanduser()

    @property
    def database_path(self) -> Path:
        return Path(self.database).expanduser() if self.database else self.data_dir / "scribe.db"

    @property
    def model_cache_dir(self) -> Path:
        return self.asr.cache_dir or self.data_dir / "models"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _config_file()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    def public_dict(self) -> dict[str, Any]:
        """The effective configuration with secrets masked (for ``scribe config``)."""
        data = self.model_dump(mode="json")
        data["server"]["tokens"] = [f"***({len(self.server.tokens)} configured)"] if self.server.tokens else []
        data["database"] = str(self.database_path)
        data["config_file"] = str(_config_file()) if _config_file() else None
        return data


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message says how."""


def _config_file() -> Path | None:
    explicit = os.environ.get("SCRIBE_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"SCRIBE_CONFIG points at {path}, which is not a file")
        return path
    local = Path("scribe.toml")
    return local if local.is_file() else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, optionally from an explicit TOML file (sets ``SCRIBE_CONFIG``)."""
    if config_file is not None:
        os.environ["SCRIBE_CONFIG"] = str(config_file)
    try:
        return Settings(**overrides)
    except ConfigError:
        raise
    except Exception as exc:  # pydantic ValidationError or a TOML syntax error
        raise ConfigError(f"invalid configuration: {exc}") from exc
