"""Settings read from ``SMARTSVC_*`` environment variables.

With nothing set, everything runs on embedded defaults under ``./var/``:
a SQLite database in WAL mode, kombu's filesystem broker (no server, works
across processes) and the ``log`` push provider. Production sets at least
``SMARTSVC_DATABASE_URL`` (PostgreSQL + PostGIS) and ``SMARTSVC_BROKER_URL``
(Redis). Invalid values fail at start with a message naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

PREFIX = "SMARTSVC_"
SPOT_SEARCH_CHOICES = ("auto", "index", "postgis")


class ConfigError(ValueError):
    """A setting is invalid; the message names the environment variable."""


def _as_int(name: str, raw: str, minimum: int, maximum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not an integer") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{PREFIX}{name}={value} must be between {minimum} and {maximum}")
    return value


def _as_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{PREFIX}{name}={raw!r} is not a boolean (use 1/0, true/false)")


def _as_service_area(name: str, raw: str) -> tuple[float, float, float, float]:
    """``min_lon,min_lat,max_lon,max_lat`` in decimal degrees, a non-empty box on the globe."""
    parts = [p.strip() for p in raw.split(",")]
    try:
        min_lon, min_lat, max_lon, max_lat = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(
            f"{PREFIX}{name}={raw!r} is not a bounding box: use min_lon,min_lat,max_lon,max_lat "
            "in decimal degrees, e.g. 13.08,52.33,13.76,52.68"
        ) from None
    if not (-180 <= min_lon < max_lon <= 180 and -90 <= min_lat < max_lat <= 90):
        raise ConfigError(
            f"{PREFIX}{name}={raw!r} is not a bounding box: longitudes must lie in -180..180 and latitudes "
            "in -90..90, each minimum below its maximum (order: min_lon,min_lat,max_lon,max_lat)"
        )
    return (min_lon, min_lat, max_lon, max_lat)


def _check_database_url(url: str) -> str:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in {"sqlite", "postgres", "postgresql", "postgresql+psycopg"}:
        raise ConfigError(
            f"{PREFIX}DATABASE_URL={url!r} is not supported: use sqlite:///PATH "
            "or postgresql+psycopg://USER:PASSWORD@HOST/DB"
        )
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        # psycopg 3 is the only PostgreSQL driver we ship.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _check_broker_url(url: str) -> str:
    if url.split("://", 1)[0] not in {"redis", "rediss", "filesystem", "memory"}:
        raise ConfigError(
            f"{PREFIX}BROKER_URL={url!r} is not supported: use redis://HOST:PORT/DB "
            "or filesystem:// (embedded)"
        )
    return url


@dataclass(frozen=True)
class Settings:
    """Every setting of the service, with its embedded default."""

    var_dir: Path = Path("var")
    database_url: str = ""
    broker_url: str = "filesystem://"
    secret_key: str = ""
    access_token_ttl_s: int = 3600
    max_body_bytes: int = 1_048_576
    rate_limit: str = "1200/minute"
    rate_limit_storage_url: str = "memory://"
    # "auto": a device goes to its platform's provider when that one is configured, else to the log one;
    # "log": every push to the log provider.
    push_provider: str = "auto"
    log_level: str = "INFO"
    log_json: bool = True
    outbox_relay_interval_s: int = 2
    outbox_batch_size: int = 500
    # After commits that wrote outbox rows, a process wakes the relay at most once per this interval (a commit
    # inside it is relayed at its end): a relay task per request would cost the workers more than the work.
    outbox_wake_interval_ms: int = 200
    # A message sent but not completed this long ago (its worker died, the broker lost it) is published again.
    outbox_redeliver_after_s: int = 300
    task_soft_time_limit_s: int = 60
    max_devices_per_user: int = 20
    max_products_per_user: int = 50
    # Where uploads wait for the import worker; API and workers must share it
    # (None: <var_dir>/uploads, see ``upload_folder``).
    upload_dir: Path | None = None
    max_upload_bytes: int = 512 * 1024 * 1024
    import_max_features: int = 2_000_000
    import_max_vertices: int = 50_000
    import_max_depth: int = 32
    import_time_limit_s: int = 3600
    # (min_lon, min_lat, max_lon, max_lat): features outside it are rejected on import.
    service_area: tuple[float, float, float, float] | None = None
    # How GET /v1/spots finds candidates: "auto" (the database decides: SQLite -> the
    # in-process index, PostgreSQL -> PostGIS), "index" or "postgis" (PostgreSQL only).
    spot_search: str = "auto"
    # Geofences (one operator namespace): how many, how many polygon vertices in all (every process
    # holds them in its in-memory index), and the body limit of POST/PATCH /v1/geofences (a
    # 10,000-vertex polygon, pretty-printed, can pass the app-wide 1 MiB).
    max_geofences: int = 100_000
    max_geofence_vertices_total: int = 5_000_000
    max_geofence_body_bytes: int = 4 * 1024 * 1024
    # Rules (one operator namespace): every process caches them all and evaluates those of an event.
    max_rules: int = 1000
    # Context events: how late an event may arrive and still be applied, the arrival radius of a trip,
    # and the events per POST /v1/me/context batch.
    context_late_window_s: int = 600
    arrival_radius_m: int = 75
    max_context_events: int = 500
    # Suggestions: dismissals in a row that mute a rule for a user, and the lifetime when a recipe gives none.
    mute_after_dismissals: int = 3
    suggestion_ttl_s: int = 21600
    # Location history and context events older than this many days are purged by a daily task.
    retention_days: int = 30
    # FCM HTTP v1: the push service's base URL, the Firebase project (default: the credentials file's) and
    # the service-account JSON file (unset: FCM devices get the log provider).
    fcm_url: str = "https://fcm.googleapis.com"
    fcm_project_id: str = ""
    fcm_credentials: Path | None = None
    # Pushes: tries per device when the push service says "later" (429, 5xx, network), and the waits
    # between tries (the last repeats; a longer Retry-After wins).
    push_max_tries: int = 5
    # A device's push claimed by a worker that then died is sent again after this long (it may have gone out:
    # at least once; the collapse key makes the phone show one).
    push_stale_claim_s: int = 120
    push_retry_backoff_s: tuple[int, ...] = (30, 120, 600)
    # Due push messages the outbox relay hands to one delivery task (one claim and one settle transaction).
    push_batch_size: int = 200
    # Due trigger messages the outbox relay hands to one engine task (one transaction for the batch: small
    # enough that a batch's suggestions are committed, and pushed, well within a second).
    engine_batch_size: int = 50
    # Partner webhooks: the waits before each try of a delivery (the first 0: at once; jittered), how long
    # an endpoint may fail without a success before it is disabled, and endpoints per API key.
    webhook_retry_schedule: tuple[int, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    webhook_disable_after_s: int = 5 * 86400
    max_webhooks: int = 20
    # Webhook destinations: private/loopback addresses (tests, local setups) and plain http are refused
    # unless allowed; one send (connect to last byte read) is bounded by the timeout.
    webhook_allow_private: bool = False
    webhook_allow_http: bool = False
    webhook_timeout_s: float = 15.0
    # Batches sending to one endpoint at a time (each a worker slot): a slow or dead endpoint holds at most this
    # many webhook worker slots; its other deliveries wait for one to finish. Times a batch's sending threads
    # (webhook_batch.SEND_CONCURRENCY, 4), at most 32 requests in flight to one endpoint.
    webhook_max_in_flight: int = 8
    # Due deliveries the outbox relay hands to one task, per endpoint (one claim and one finish transaction,
    # the sends over kept-alive connections).
    webhook_batch_size: int = 200
    # APNs (token auth): base URL, the .p8 key file with its key id, the team id and the app's bundle id
    # (the key file set: iOS devices get APNs), and a CA file replacing the system trust store (tests).
    apns_url: str = "https://api.push.apple.com"
    apns_key_file: Path | None = None
    apns_key_id: str = ""
    apns_team_id: str = ""
    apns_topic: str = ""
    apns_ca_file: Path | None = None
    # Web Push: the VAPID private key (a PEM file; set: Web Push devices get Web Push), the VAPID contact
    # (mailto: or https:), a CA file replacing the system trust store, and whether endpoints may resolve
    # to private addresses (off: a subscription cannot make the server post into its own network).
    vapid_private_key: Path | None = None
    vapid_subject: str = ""
    webpush_ca_file: Path | None = None
    webpush_allow_private: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_sqlite(self) -> bool:
        """True when the database is the embedded SQLite one."""
        return self.database_url.startswith("sqlite")

    @property
    def broker_data_dir(self) -> Path:
        """Folder of the embedded filesystem broker."""
        return self.var_dir / "broker"

    @property
    def upload_folder(self) -> Path:
        """Folder of uploaded dataset files waiting for (or being read by) an import."""
        return self.upload_dir if self.upload_dir is not None else self.var_dir / "uploads"

    @property
    def pushes_log_path(self) -> Path:
        """Where the ``log`` push provider writes one JSON line per push."""
        return self.var_dir / "pushes.jsonl"

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some settings changed (tests build their own)."""
        return dataclasses.replace(self, **changes)


_PARSERS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "VAR_DIR": ("var_dir", lambda n, v: Path(v)),
    "DATABASE_URL": ("database_url", lambda n, v: _check_database_url(v)),
    "BROKER_URL": ("broker_url", lambda n, v: _check_broker_url(v)),
    "SECRET_KEY": ("secret_key", lambda n, v: v),
    "ACCESS_TOKEN_TTL_S": ("access_token_ttl_s", lambda n, v: _as_int(n, v, 60, 86400 * 30)),
    "MAX_BODY_BYTES": ("max_body_bytes", lambda n, v: _as_int(n, v, 1024, 1 << 30)),
    "RATE_LIMIT": ("rate_limit", lambda n, v: _check_rate_limit(v)),
    "RATE_LIMIT_STORAGE_URL": ("rate_limit_storage_url", lambda n, v: v),
    "PUSH_PROVIDER": ("push_provider", lambda n, v: _check_choice(n, v.strip().lower(), {"auto", "log"})),
    "LOG_LEVEL": ("log_level", lambda n, v: _check_choice(n, v.upper(), {"DEBUG", "INFO", "WARNING", "ERROR"})),
    "LOG_JSON": ("log_json", _as_bool),
    "OUTBOX_RELAY_INTERVAL_S": ("outbox_relay_interval_s", lambda n, v: _as_int(n, v, 1, 3600)),
    "OUTBOX_BATCH_SIZE": ("outbox_batch_size", lambda n, v: _as_int(n, v, 1, 100_000)),
    "OUTBOX_WAKE_INTERVAL_MS": ("outbox_wake_interval_ms", lambda n, v: _as_int(n, v, 0, 10_000)),
    "OUTBOX_REDELIVER_AFTER_S": ("outbox_redeliver_after_s", lambda n, v: _as_int(n, v, 1, 86400)),
    "TASK_SOFT_TIME_LIMIT_S": ("task_soft_time_limit_s", lambda n, v: _as_int(n, v, 1, 86400)),
    "MAX_DEVICES_PER_USER": ("max_devices_per_user", lambda n, v: _as_int(n, v, 1, 1000)),
    "MAX_PRODUCTS_PER_USER": ("max_products_per_user", lambda n, v: _as_int(n, v, 1, 10_000)),
    "UPLOAD_DIR": ("upload_dir", lambda n, v: _as_path(n, v)),
    "MAX_UPLOAD_BYTES": ("max_upload_bytes", lambda n, v: _as_int(n, v, 1024, 1 << 40)),
    "IMPORT_MAX_FEATURES": ("import_max_features", lambda n, v: _as_int(n, v, 1, 100_000_000)),
    "IMPORT_MAX_VERTICES": ("import_max_vertices", lambda n, v: _as_int(n, v, 2, 10_000_000)),
    "IMPORT_MAX_DEPTH": ("import_max_depth", lambda n, v: _as_int(n, v, 2, 1000)),
    "IMPORT_TIME_LIMIT_S": ("import_time_limit_s", lambda n, v: _as_int(n, v, 60, 7 * 86400)),
    "SERVICE_AREA": ("service_area", _as_service_area),
    "SPOT_SEARCH": ("spot_search", lambda n, v: _check_choice(n, v.strip().lower(), set(SPOT_SEARCH_CHOICES))),
    "MAX_GEOFENCES": ("max_geofences", lambda n, v: _as_int(n, v, 1, 10_000_000)),
    "MAX_GEOFENCE_VERTICES_TOTAL": ("max_geofence_vertices_total", lambda n, v: _as_int(n, v, 4, 1_000_000_000)),
    "MAX_GEOFENCE_BODY_BYTES": ("max_geofence_body_bytes", lambda n, v: _as_int(n, v, 1024, 1 << 30)),
    "MAX_RULES": ("max_rules", lambda n, v: _as_int(n, v, 1, 1_000_000)),
    "CONTEXT_LATE_WINDOW_S": ("context_late_window_s", lambda n, v: _as_int(n, v, 0, 7 * 86400)),
    "ARRIVAL_RADIUS_M": ("arrival_radius_m", lambda n, v: _as_int(n, v, 5, 10_000)),
    "MAX_CONTEXT_EVENTS": ("max_context_events", lambda n, v: _as_int(n, v, 1, 10_000)),
    "MUTE_AFTER_DISMISSALS": ("mute_after_dismissals", lambda n, v: _as_int(n, v, 1, 1000)),
    "SUGGESTION_TTL_S": ("suggestion_ttl_s", lambda n, v: _as_int(n, v, 60, 30 * 86400)),
    "WEBHOOK_RETRY_SCHEDULE": ("webhook_retry_schedule",
                               lambda n, v: tuple(_as_int(n, part.strip(), 0, 7 * 86400) for part in v.split(","))),
    "WEBHOOK_DISABLE_AFTER_S": ("webhook_disable_after_s", lambda n, v: _as_int(n, v, 60, 365 * 86400)),
    "MAX_WEBHOOKS": ("max_webhooks", lambda n, v: _as_int(n, v, 1, 10_000)),
    "WEBHOOK_ALLOW_PRIVATE": ("webhook_allow_private", _as_bool),
    "WEBHOOK_ALLOW_HTTP": ("webhook_allow_http", _as_bool),
    "WEBHOOK_TIMEOUT_S": ("webhook_timeout_s", lambda n, v: float(_as_int(n, v, 1, 300))),
    "WEBHOOK_MAX_IN_FLIGHT": ("webhook_max_in_flight", lambda n, v: _as_int(n, v, 1, 1000)),
    "WEBHOOK_BATCH_SIZE": ("webhook_batch_size", lambda n, v: _as_int(n, v, 1, 500)),
    "FCM_URL": ("fcm_url", lambda n, v: _as_base_url(n, v)),
    "FCM_PROJECT_ID": ("fcm_project_id", lambda n, v: v.strip()),
    "FCM_CREDENTIALS": ("fcm_credentials", lambda n, v: _as_path(n, v)),
    "PUSH_MAX_TRIES": ("push_max_tries", lambda n, v: _as_int(n, v, 1, 50)),
    "PUSH_STALE_CLAIM_S": ("push_stale_claim_s", lambda n, v: _as_int(n, v, 1, 86400)),
    "PUSH_BATCH_SIZE": ("push_batch_size", lambda n, v: _as_int(n, v, 1, 1000)),
    "ENGINE_BATCH_SIZE": ("engine_batch_size", lambda n, v: _as_int(n, v, 1, 1000)),
    "PUSH_RETRY_BACKOFF_S": ("push_retry_backoff_s",
                             lambda n, v: tuple(_as_int(n, part.strip(), 1, 86400) for part in v.split(","))),
    "APNS_URL": ("apns_url", lambda n, v: _as_base_url(n, v)),
    "APNS_KEY_FILE": ("apns_key_file", lambda n, v: _as_path(n, v)),
    "APNS_KEY_ID": ("apns_key_id", lambda n, v: v.strip()),
    "APNS_TEAM_ID": ("apns_team_id", lambda n, v: v.strip()),
    "APNS_TOPIC": ("apns_topic", lambda n, v: v.strip()),
    "APNS_CA_FILE": ("apns_ca_file", lambda n, v: _as_path(n, v)),
    "VAPID_PRIVATE_KEY": ("vapid_private_key", lambda n, v: _as_path(n, v)),
    "VAPID_SUBJECT": ("vapid_subject", lambda n, v: v.strip()),
    "WEBPUSH_CA_FILE": ("webpush_ca_file", lambda n, v: _as_path(n, v)),
    "WEBPUSH_ALLOW_PRIVATE": ("webpush_allow_private", _as_bool),
    "RETENTION_DAYS": ("retention_days", lambda n, v: _as_int(n, v, 1, 3650)),
}


def _as_path(name: str, raw: str) -> Path:
    if not raw.strip():
        raise ConfigError(f"{PREFIX}{name} is empty: give a folder path")
    return Path(raw)


def _as_base_url(name: str, raw: str) -> str:
    url = raw.strip().rstrip("/")
    if not url.startswith(("https://", "http://")) or len(url.split("://", 1)[1]) == 0:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not a base URL such as https://fcm.googleapis.com")
    return url


def _check_choice(name: str, value: str, choices: set[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{PREFIX}{name}={value!r} must be one of {sorted(choices)}")
    return value


def _check_rate_limit(value: str) -> str:
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(
            f"{PREFIX}RATE_LIMIT={value!r} is not a rate limit such as '600/minute'"
        ) from None
    return value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the environment (``os.environ`` by default).

    Unknown ``SMARTSVC_*`` variables are rejected so that a typo in a
    variable name is not silently ignored.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX):]
        if name not in _PARSERS:
            if name in _PASSTHROUGH:
                continue
            raise ConfigError(f"{key} is not a known setting (known: {', '.join(sorted(_PARSERS))})")
        attr, parse = _PARSERS[name]
        values[attr] = parse(name, raw)
    settings = Settings(**values)
    if "rate_limit_storage_url" not in values and settings.broker_url.startswith("redis"):
        # Several API processes must share one count; Redis is already there.
        settings = settings.replace(rate_limit_storage_url=settings.broker_url)
    if not settings.database_url:
        path = (settings.var_dir / "smartsvc.db").resolve()
        settings = settings.replace(database_url=f"sqlite:///{path}")
    _check_push_keys(settings)
    if settings.spot_search == "postgis" and settings.is_sqlite:
        raise ConfigError(
            f"{PREFIX}SPOT_SEARCH=postgis needs a PostgreSQL {PREFIX}DATABASE_URL (SQLite has no PostGIS)")
    return settings


def _check_push_keys(settings: Settings) -> None:
    """APNs and Web Push need their companion settings once their key is set (a half setup fails at start)."""
    if settings.apns_key_file is not None:
        missing = [f"{PREFIX}{name}" for name, value in (("APNS_KEY_ID", settings.apns_key_id),
                   ("APNS_TEAM_ID", settings.apns_team_id), ("APNS_TOPIC", settings.apns_topic)) if not value]
        if missing:
            raise ConfigError(f"{PREFIX}APNS_KEY_FILE is set, so {', '.join(missing)} must be set too")
    if settings.vapid_private_key is not None and not settings.vapid_subject.startswith(("mailto:", "https://")):
        raise ConfigError(f"{PREFIX}VAPID_PRIVATE_KEY is set, so {PREFIX}VAPID_SUBJECT must be a mailto: "
                          "or https: contact (e.g. mailto:ops@example.com)")
    for name, path in (("APNS_KEY_FILE", settings.apns_key_file), ("APNS_CA_FILE", settings.apns_ca_file),
                       ("VAPID_PRIVATE_KEY", settings.vapid_private_key),
                       ("WEBPUSH_CA_FILE", settings.webpush_ca_file)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{PREFIX}{name}={path} is not a readable file")


# Variables read by other parts (delivery, geodata) that later issues own;
# accepted here so the strict check above does not refuse them.
_PASSTHROUGH = {"ENV"}


def ensure_secret_key(settings: Settings) -> Settings:
    """Return settings with a secret key, creating ``var/secret_key`` once.

    Production sets ``SMARTSVC_SECRET_KEY``; the embedded default keeps a
    generated key on disk so tokens survive restarts and are shared by the
    API and worker processes.
    """
    if settings.secret_key:
        if len(settings.secret_key) < 32:
            raise ConfigError(f"{PREFIX}SECRET_KEY must be at least 32 characters")
        return settings
    path = settings.var_dir / "secret_key"
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of this service created it first
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
    return settings.replace(secret_key=path.read_text().strip())
