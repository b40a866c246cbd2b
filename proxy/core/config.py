"""Settings, read from the environment once (`Settings.from_env()`).

Nothing else in the project reads `os.environ`: every module receives the `Settings` it needs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from proxy.core.addresses import parse_allowed_hosts
from proxy.core.providers import BY_NAME, REGISTRY

# Each provider's API unless `LECTR_<PROVIDER>_BASE_URL` says otherwise (Azure's is per org).
DEFAULT_BASE_URLS: dict[str, str] = {p.name: p.base_url for p in REGISTRY if p.base_url is not None}


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or choices[0]
    if raw not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
    return raw


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return int(_float(env, name, default))


def _otel_signal(env: Mapping[str, str], signal: str) -> bool:
    """Whether to export a signal (TRACES or METRICS) over OTLP: an endpoint for it is set
    (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`), and neither
    `OTEL_SDK_DISABLED=true` nor `OTEL_<SIGNAL>_EXPORTER=none` says otherwise (their standard meaning)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get(f"OTEL_{signal}_EXPORTER", "").strip().lower() == "none":
        return False
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    return any(env.get(name, "").strip() for name in endpoints)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable about Lectr; see README "Configuration"."""

    database_url: str | None = None
    data_dir: Path = Path(".lectr")
    port: int = 8080
    base_urls: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_BASE_URLS))
    # Hosts (names, .suffixes, IPs) an org's Azure endpoint may use besides <resource>.openai.azure.com:
    # the operator's own gateways. Listed hosts, like the base URLs, may be private addresses.
    azure_allowed_hosts: tuple[str, ...] = ()
    # Lets tenant-set upstreams (Azure endpoints) reach loopback, private and metadata addresses.
    allow_private_upstreams: bool = False
    connect_timeout: float = 10.0
    # Seconds without a byte from the provider; long generations are normal.
    upstream_timeout: float = 300.0
    max_body_bytes: int = 32 * 1024 * 1024
    # A whole (non-stream) answer is buffered, and decompressed for its usage, up to this size; a
    # bigger one is relayed as it comes, its usage estimated (proxy/pipeline/relay.py).
    max_response_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    # How often each worker reloads keys and routing rules (revocation must land within 5 s).
    refresh_seconds: float = 2.0
    # How often each worker reloads budgets and their spend from the rollups (SPEC §9: at most 5 s).
    budget_refresh_seconds: float = 2.0
    # Alerts (proxy/alerts/sender.py): how often the elected worker checks budgets and sends what is
    # due; how often the others try to take over (a dead sender is replaced within this, < 30 s);
    # how often anomalies are looked for, and how long after an anomaly ends it counts as the same
    # episode; the first retry's delay (doubling, at most 10 min), how long to keep retrying, and
    # each attempt's timeout.
    alert_check_seconds: float = 5.0
    alert_election_seconds: float = 10.0
    anomaly_check_seconds: float = 300.0
    anomaly_quiet_seconds: float = 3600.0
    alert_backoff_seconds: float = 10.0
    alert_retry_seconds: float = 3600.0
    alert_timeout: float = 10.0
    # Event writer: flush when this many events are queued or the oldest is this old.
    writer_batch_size: int = 5000
    # A batch goes at once when traffic pauses (proxy/events/writer.py); under steady traffic once a
    # second (each flush disturbs the requests it meets: docs/PERFORMANCE.md step 16). Held
    # events are mirrored in the spool, so a worker killed outright loses none of them.
    writer_flush_seconds: float = 1.0
    # Events held in memory while Postgres is unreachable, before spilling to the journal.
    writer_queue_size: int = 100_000
    journal_dir: Path | None = None
    # Per-org requests per second; 0 turns rate limiting off.
    rate_limit_rps: float = 0.0
    rate_limit_burst: float | None = None
    max_streams: int = 10_000
    # Per worker: open client connections (over it: 503 and close), and the seconds a client has
    # to send a whole request body (then 408): a slow client must not hold a worker's memory.
    max_connections: int = 10_000
    body_timeout: float = 60.0
    # Months of raw events kept (monthly partitions dropped), and of rollups kept (rows deleted);
    # 0 keeps all. Rollups can outlive raw events: a year of dashboards on a month of raw rows.
    retention_months: int = 0
    rollup_retention_months: int = 0
    log_level: str = "INFO"
    # Where apps reach the proxy, as the dashboard's quickstart shows it (`lectr up` sets it).
    proxy_url: str = "http://localhost:8080/v1"
    # Who speaks plain HTTP/1.1 inside Hypercorn's worker: "lean" (`proxy/http/server.py`) or "hypercorn".
    http1: str = "lean"
    # OpenTelemetry export (SPEC §10, proxy/events/telemetry.py): spans when an OTLP endpoint for traces
    # is set, metrics when one for metrics is; the SDK reads the other OTEL_* variables itself.
    otel_traces: bool = False
    otel_metrics: bool = False
    # Spans held per worker while the collector is slow or away (then dropped, counted in /metrics),
    # and the most sent in one export (never more than the queue holds: the SDK refuses that).
    otel_queue_size: int = 2048
    otel_batch_size: int = 512

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        base_urls = dict(DEFAULT_BASE_URLS)
        for provider in base_urls:
            override = env.get(BY_NAME[provider].base_url_variable, "").strip()
            if override:
                base_urls[provider] = override.rstrip("/")
        data_dir = Path(env.get("LECTR_DATA_DIR", "").strip() or ".lectr")
        journal = env.get("LECTR_JOURNAL_DIR", "").strip()
        return cls(
            database_url=env.get("DATABASE_URL", "").strip() or None,
            data_dir=data_dir,
            port=_int(env, "PORT", 8080),
            base_urls=base_urls,
            azure_allowed_hosts=parse_allowed_hosts(env.get("LECTR_AZURE_ALLOWED_HOSTS", "")),
            allow_private_upstreams=env.get("LECTR_ALLOW_PRIVATE_UPSTREAMS", "").strip().lower() in ("1", "true"),
            connect_timeout=_float(env, "LECTR_UPSTREAM_CONNECT_TIMEOUT", 10.0),
            upstream_timeout=_float(env, "LECTR_UPSTREAM_TIMEOUT", 300.0),
            max_body_bytes=_int(env, "LECTR_MAX_BODY_BYTES", 32 * 1024 * 1024),
            max_response_bytes=_int(env, "LECTR_MAX_RESPONSE_BYTES", 64 * 1024 * 1024),
            max_header_bytes=_int(env, "LECTR_MAX_HEADER_BYTES", 16 * 1024),
            refresh_seconds=_float(env, "LECTR_REFRESH_SECONDS", 2.0),
            budget_refresh_seconds=_float(env, "LECTR_BUDGET_REFRESH_SECONDS", 2.0),
            alert_check_seconds=_float(env, "LECTR_ALERT_CHECK_SECONDS", 5.0),
            alert_election_seconds=_float(env, "LECTR_ALERT_ELECTION_SECONDS", 10.0),
            anomaly_check_seconds=_float(env, "LECTR_ANOMALY_CHECK_SECONDS", 300.0),
            anomaly_quiet_seconds=_float(env, "LECTR_ANOMALY_QUIET_SECONDS", 3600.0),
            alert_backoff_seconds=_float(env, "LECTR_ALERT_BACKOFF_SECONDS", 10.0),
            alert_retry_seconds=_float(env, "LECTR_ALERT_RETRY_SECONDS", 3600.0),
            alert_timeout=_float(env, "LECTR_ALERT_TIMEOUT", 10.0),
            writer_batch_size=_int(env, "LECTR_WRITER_BATCH_SIZE", 5000),
            writer_flush_seconds=_float(env, "LECTR_WRITER_FLUSH_SECONDS", 1.0),
            writer_queue_size=_int(env, "LECTR_WRITER_QUEUE_SIZE", 100_000),
            journal_dir=Path(journal) if journal else None,
            rate_limit_rps=_float(env, "LECTR_RATE_LIMIT_RPS", 0.0),
            rate_limit_burst=_float(env, "LECTR_RATE_LIMIT_BURST", 0.0) or None,
            max_streams=_int(env, "LECTR_MAX_STREAMS", 10_000),
            max_connections=_int(env, "LECTR_MAX_CONNECTIONS", 10_000),
            body_timeout=_float(env, "LECTR_BODY_TIMEOUT", 60.0),
            retention_months=_int(env, "LECTR_RETENTION_MONTHS", 0),
            rollup_retention_months=_int(env, "LECTR_ROLLUP_RETENTION_MONTHS", 0),
            log_level=env.get("LECTR_LOG_LEVEL", "INFO").strip().upper() or "INFO",
            proxy_url=env.get("LECTR_PROXY_URL", "").strip() or "http://localhost:8080/v1",
            http1=_choice(env, "LECTR_HTTP1", ("lean", "hypercorn")),
            otel_traces=_otel_signal(env, "TRACES"),
            otel_metrics=_otel_signal(env, "METRICS"),
            otel_queue_size=(queue := max(1, _int(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048))),
            otel_batch_size=min(queue, max(1, _int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))),
        )

    @property
    def journal_path(self) -> Path:
        return self.journal_dir if self.journal_dir is not None else self.data_dir / "journal"
