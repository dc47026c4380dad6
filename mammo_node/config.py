"""Settings: one validated object, built once at the edge (CLI) and passed down.

Every field can be set from the environment with the ``MAMMO_`` prefix (``MAMMO_DATA_DIR``,
``MAMMO_QUIET_SECONDS`` ...). Lists take comma-separated values. Unknown ``MAMMO_`` variables
fail loudly so that a typo does not silently leave a default in place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mammo_node.domain import OverwritePolicy
from mammo_node.errors import ConfigError

ENV_PREFIX = "MAMMO_"
#: largest Secondary Capture in pixels (18 MB of RGB), the writers' default too
DEFAULT_SC_MAX_PIXELS = 6_000_000


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(Path("mammo-data"), description="Root for the database and instances")
    db_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in data_dir")

    # --- DICOM (DIMSE) -----------------------------------------------------------------
    ae_title: str = "MAMMO_NODE"
    host: str = Field("0.0.0.0", description="Address the DICOM and HTTP listeners bind to")
    port: int = Field(11112, ge=0, le=65535)
    require_called_ae: bool = Field(True, description="Refuse associations not addressed to us")
    allowed_peers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description='Allow-list of calling peers: "AE", "AE@host" or "*@host"; empty = off',
    )
    max_associations: int = Field(16, ge=1)
    max_pdu_size: int = Field(0, ge=0, description="0 = unlimited (fastest receive)")
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 120.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = Field(None, description="When set, peers must present a cert from it")
    min_free_disk_mb: int = Field(1024, ge=0, description="Refuse new instances below this")
    overwrite_policy: OverwritePolicy = Field(
        OverwritePolicy.SAME_SOURCE,
        description="other bytes under a stored SOP Instance UID: never (keep the first, refuse "
        "and keep the newcomer aside), same-source (the same calling AE from the same host may "
        "correct its own instance) or always",
    )

    # --- grouping --------------------------------------------------------------------
    quiet_seconds: float = Field(10.0, ge=0, description="4 views + this long idle = READY")
    stable_seconds: float = Field(120.0, ge=0, description="idle this long with views missing")
    grouping_interval: float = Field(1.0, gt=0)
    prior_after_days: int = Field(
        30,
        ge=0,
        description="a study whose StudyDate is older than this is filed as a prior and not "
        "scored automatically (a PACS prefetch); 0 = every study is scored",
    )

    # --- HTTP ------------------------------------------------------------------------
    http_port: int = Field(8080, ge=0, le=65535)
    api_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description='"name:role:secret" entries (role read or admin)'
    )
    api_tokens_file: Path | None = None
    loopback_without_token: bool = False
    public_url: str | None = Field(
        None, description="Base URL handed out in DICOMweb answers when behind a proxy"
    )

    # --- scoring ---------------------------------------------------------------------
    model_bundle: Path | None = Field(None, description="Model bundle dir; default: demo bundle")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    precision: str = Field("auto", description="auto, fp32 or bf16")
    serve_worker: bool = Field(
        True,
        description="serve runs a scoring worker; false when `mammo-node worker` "
        "processes (e.g. on GPU machines sharing PostgreSQL) do the scoring",
    )
    worker_poll_seconds: float = Field(1.0, gt=0)
    scoring_batch_size: int = Field(
        0,
        ge=0,
        description="READY exams the worker claims and scores in one batch (on CUDA all their "
        "views go through the model together); 0 = automatic: 1 on CPU, 4 on CUDA",
    )
    scoring_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="scoring child processes, each claiming, reading, scoring, writing and "
        "storing its own exams (one model each; on a GPU they share it): more than 1 on a "
        "machine with many cores, so that the CPU stages of one exam run while another is in "
        "the model; threads and the automatic memory limit are divided among them",
    )
    scoring_warm_up: bool | None = Field(
        None,
        description="score a synthetic exam (model and writers) before the first claim; "
        "unset = on CUDA only, where kernels and the CUDA context load on first use",
    )
    max_attempts: int = Field(3, ge=1, description="failures before an exam is parked")
    shutdown_grace_seconds: float = Field(
        60.0, ge=0, description="on SIGTERM, how long the exam being scored may take to finish"
    )
    claim_timeout_seconds: float = Field(
        900.0, gt=0, description="a SCORING claim older than this is taken back"
    )
    # receiving comes first: the scoring and pixel-check processes yield the CPUs to the
    # listeners
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="niceness the scoring process and the pixel-check decoder add to the "
        "node's (0 = same priority as receiving; 19 = lowest)",
    )
    worker_sched_idle: bool = Field(
        False,
        description="run the scoring process under SCHED_IDLE (only CPU time nothing else "
        "wants; scoring may stall on a loaded machine)",
    )
    worker_threads: int = Field(
        0,
        ge=0,
        description="torch threads of the scoring process (and, from 2, the writers build "
        "pixel objects beside documents); 0 = the CPUs it may use",
    )
    worker_reuse_freed_memory: bool = Field(
        True,
        description="the scoring process keeps the image buffers an exam freed for the next "
        "one (glibc mallopt) instead of unmapping them, and returns them when it runs out "
        "of exams: faster preprocessing and writing, the same peak memory (mammo_node.heap)",
    )
    worker_threads_receiving: int = Field(
        0,
        ge=0,
        description="torch threads while associations are open (set between exams and between "
        "scoring and writing); 0 = half of worker_threads, at least 1",
    )

    # --- outputs ---------------------------------------------------------------------
    sc_max_pixels: int = Field(
        DEFAULT_SC_MAX_PIXELS,
        ge=1,
        description="largest Secondary Capture in pixels: a larger stored grid is reduced by the "
        "smallest integer factor that fits (a 4096x3328 image becomes 2048x1664, 10 MB of RGB); "
        "each SC is sent to every destination that takes SCs and kept by the node",
    )

    # --- export ----------------------------------------------------------------------
    return_to_sender: bool = Field(True, description="also send results to a known sender AE")
    outbox_max_age_seconds: float = Field(24 * 3600.0, gt=0)
    outbox_backoff_base: float = Field(2.0, gt=0)
    outbox_backoff_max: float = Field(600.0, gt=0)

    # --- retention (see mammo_node.operations.retention) ------------------------------
    retention_days: float | None = Field(
        None,
        ge=0,
        description="delete received images this many days after their exam's "
        "results were all delivered; unset = keep for ever",
    )
    max_storage_gb: float | None = Field(
        None,
        gt=0,
        description="above this many GB of stored images, recycle the oldest "
        "fully-delivered exams first; unset = no limit",
    )
    retention_output_days: float | None = Field(
        None,
        ge=0,
        description="delete the node's own outputs (SR, SC, SEG) this many days "
        "after delivery, never before their sources; unset = keep for ever",
    )
    retention_interval_seconds: float = Field(
        3600.0, gt=0, description="how often `serve` prunes (when a retention limit is set)"
    )

    # --- monitoring (see mammo_node.observe.monitor) ------------------------------------
    monitor_weeks: int = Field(26, ge=1, description="weeks the /monitor page covers")
    drift_psi_threshold: float = Field(
        0.25, gt=0, description="PSI of a week's scores above this raises the drift alert"
    )
    drift_min_exams: int = Field(20, ge=1, description="fewer exams in a week: no drift value")
    drift_reference_weeks: int = Field(
        4, ge=1, description="without a calibration population: a version's first weeks"
    )

    # --- limits checked before work (hostile input) -----------------------------------
    max_image_pixels: int = Field(
        60_000_000, ge=1, description="Rows x Columns of one frame (mammograms are < 30 MP)"
    )
    max_image_bytes: int = Field(
        512 * 2**20, ge=1, description="decoded pixel bytes one decode may produce"
    )
    max_inflated_bytes: int = Field(
        512 * 2**20, ge=1, description="a Deflated data set may inflate to at most this"
    )
    max_instance_bytes: int = Field(
        8 * 2**30,
        ge=0,
        description="largest data set one C-STORE may send (0 = any); past it the association "
        "is aborted and the partial file dropped (tomosynthesis objects reach a few GB)",
    )
    max_associate_rq_bytes: int = Field(
        64 * 1024, ge=1024, description="largest A-ASSOCIATE-RQ PDU read from a peer"
    )
    max_stow_concurrency: int = Field(4, ge=1, description="STOW-RS requests filed at once")
    max_stow_parts: int = Field(
        2000, ge=1, description="instances (multipart parts) in one STOW-RS request"
    )
    stow_body_idle_timeout: float = Field(
        30.0, gt=0, description="seconds a STOW-RS body may send nothing before it is dropped"
    )
    stow_min_bytes_per_second: int = Field(
        16 * 1024,
        ge=0,
        description="slowest average STOW-RS body rate kept after its first 30 s (0 = any)",
    )
    http_header_timeout: float = Field(
        10.0, gt=0, description="seconds a client may take to send its request headers"
    )
    http_keepalive_timeout: float = Field(5.0, gt=0, description="idle keep-alive connection")
    worker_memory_limit_mb: int = Field(
        0, ge=0, description="address-space limit of the scoring process; 0 = automatic"
    )
    decoder_memory_limit_mb: int = Field(
        0, ge=0, description="address-space limit of the pixel-check process; 0 = automatic"
    )
    max_pixel_check_attempts: int = Field(3, ge=1, description="before an image is failed")

    # --- web trust -------------------------------------------------------------------
    trusted_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host header values accepted (DNS rebinding); empty = any, '*.x' wildcards",
    )
    anonymous_view: bool = Field(
        False, description="worklist pages without sign-in (counts only, no patient data)"
    )
    https_cert: Path | None = Field(None, description="certificate for HTTPS on http_port")
    https_key: Path | None = None

    # --- logging ---------------------------------------------------------------------
    log_level: str = "INFO"

    @field_validator("allowed_peers", "api_tokens", "trusted_hosts", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > 16 or "\\" in value or not value.isprintable():
            raise ValueError(
                f'Argument "ae_title" should be 1-16 printable characters, got {value!r}.'
            )
        return value

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str) -> str:
        if value not in {"auto", "fp32", "bf16"}:
            raise ValueError(f'Argument "precision" should be auto, fp32 or bf16, got {value!r}.')
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key (MAMMO_TLS_CERT, MAMMO_TLS_KEY).")
        if (self.https_cert is None) != (self.https_key is None):
            raise ValueError(
                "HTTPS needs both https_cert and https_key (MAMMO_HTTPS_CERT, MAMMO_HTTPS_KEY)."
            )
        return self

    @model_validator(mode="after")
    def _outputs_outlive_sources(self) -> Settings:
        days, outputs = self.retention_days, self.retention_output_days
        if outputs is not None and (days is None or outputs < days):
            raise ValueError(
                f"retention_output_days ({outputs}) must be at least retention_days ({days}): "
                "outputs are kept as long as their sources or longer."
            )
        return self

    # --- derived ---------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.data_dir / 'mammo.db').resolve()}"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "instances"


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment plus explicit overrides (None means 'not given')."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ConfigError(
            f"Unknown setting(s) in the environment: {', '.join(unknown)}. "
            f"Known: {', '.join(sorted(known))}."
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValueError as exc:
        raise ConfigError(f"Invalid settings: {exc}") from exc
