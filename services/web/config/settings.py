"""Django settings: one module, every value read from the environment.

With nothing set it runs on its own for tests (SQLite file, in-process Celery, local-memory
cache). Set ``DATABASE_URL`` / ``REDIS_URL`` and it uses PostgreSQL, Redis and a real Celery
broker. Every variable is documented in docs/configuration.md.

With ``DJANGO_DEBUG`` off (the default) a production guard at the end of this module stops
start-up with one line when a required value is missing.
"""

import sys
from datetime import timedelta
from email.utils import getaddresses
from pathlib import Path
from typing import NoReturn
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# True while the test suite runs: relaxes the production guard and supplies test defaults.
TESTING = "pytest" in sys.modules or (len(sys.argv) > 1 and sys.argv[1] == "test")


def _rate(name: str, default: str) -> str | None:
    """A DRF throttle rate such as ``100/min``; empty, ``off`` or ``none`` disables it."""
    value = env.str(name, default=default).strip()
    return None if value.lower() in {"", "off", "none", "0"} else value


def _refuse(message: str) -> NoReturn:
    """Stop start-up with one line naming the variable and how to set it.

    Printed here (not only as the SystemExit message) so the line also reaches the log when a
    gunicorn or Celery child process, whose exit message nobody prints, is the one stopping.
    """
    print(f"configuration error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _secret_file(name: str) -> str:
    """The content of the file ``NAME_FILE`` names (a Docker secret under /run/secrets:
    docs/swarm.md), without its final newline; empty when ``NAME_FILE`` is not set."""
    path = env.str(f"{name}_FILE", default="")
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        _refuse(
            f"{name}_FILE is {path!r}, which cannot be read ({reason}); set it to a readable "
            f"file holding the value (a Docker secret: /run/secrets/NAME), or unset it"
        )


def _secret(name: str) -> str:
    """A secret from ``NAME`` or from ``NAME_FILE``, as the official images' ``*_FILE``
    variables: setting both is refused."""
    if env.str(name, default="") and env.str(f"{name}_FILE", default=""):
        _refuse(f"{name} and {name}_FILE are both set; set only one of them")
    return _secret_file(name) or env.str(name, default="")


def _http_url(url: str) -> tuple[SplitResult, None] | tuple[None, str]:
    """``url`` split, or why it is not an http:// or https:// URL with a host (a port that is
    not a number included): the shared start of the origin and DSN checks below."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError as exc:
        return None, str(exc)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return None, "it needs http:// or https:// and a host"
    return parts, None


def _with_password(variable: str, url: str, password: str, password_variable: str) -> str:
    """The URL in ``variable`` with ``password`` (read from the file ``password_variable``
    names) put in; a URL that has a password of its own is refused."""
    if not url or not password:
        return url
    parts = urlsplit(url)
    if parts.password:
        _refuse(
            f"{variable} has a password and {password_variable} is set; set only one of them "
            f"(take the password out of {variable}, or unset {password_variable})"
        )
    user = quote(parts.username or "", safe="")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


# --- Core -------------------------------------------------------------------------------------

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = _secret("DJANGO_SECRET_KEY")
if not SECRET_KEY and (DEBUG or TESTING):
    # Development and tests only: the production guard below refuses an empty key.
    SECRET_KEY = "dev-only-not-secret-" + "x" * 40

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[])
if not ALLOWED_HOSTS and (DEBUG or TESTING):
    ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", "testserver"]
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

ROOT_URLCONF = "config.urls"
CSRF_FAILURE_VIEW = "apps.core.errors.csrf_failure"
WSGI_APPLICATION = "config.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # PostgreSQL index expressions (OpClass) for the posts' trigram search indexes.
    "django.contrib.postgres",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "apps.core",
    "apps.accounts",
    "apps.posts",
    "apps.exports",
]

MIDDLEWARE = [
    # Request id and request log first, so every response carries X-Request-ID.
    "apps.core.middleware.RequestIdMiddleware",
    # /healthz and /readyz answer here: before host validation and the HTTPS redirect, so
    # container health checks can call http://127.0.0.1:8000/healthz whatever the settings.
    "apps.core.middleware.HealthCheckMiddleware",
    # CORS (below): answers preflights itself, so before anything else that answers.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so its process_exception sees view errors first: a lost database answers JSON 503.
    "apps.core.middleware.DatabaseUnavailableMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# The per-username lockout (apps/accounts/lockout.py) counts every password check before the
# hasher runs; Django's own ModelBackend does the check.
AUTHENTICATION_BACKENDS = ["apps.accounts.backends.LockoutModelBackend"]

if TESTING:
    # Password hashing dominates test time otherwise; never used outside the test suite.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Largest request body accepted (bytes); larger answers 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", default=1024 * 1024)

# --- Database ---------------------------------------------------------------------------------

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
# Persistent connections, checked before reuse so a restarted database is survived.
# DATABASE_PASSWORD_FILE: the password read from a file (a Docker secret), not in the URL.
if _db_password := _secret_file("DATABASE_PASSWORD"):
    if DATABASES["default"].get("PASSWORD"):
        _refuse(
            "DATABASE_URL has a password and DATABASE_PASSWORD_FILE is set; set only one of them "
            "(take the password out of DATABASE_URL, or unset DATABASE_PASSWORD_FILE)"
        )
    DATABASES["default"]["PASSWORD"] = _db_password
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Longest one SQL statement may run, in milliseconds (0: no limit); PostgreSQL cancels it and
# the API answers JSON 504 `query_timeout`. A searched list page runs two statements (count and
# page): 2 x 15 s stays under nginx's proxy_read_timeout (35 s), so the work stops before nginx
# gives up on the request. For web requests only: compose sets 0 for migrate, worker and beat,
# whose work has its own bounds (docs/reliability.md, "Threats and limits").
DB_STATEMENT_TIMEOUT_MS = env.int("DJANGO_DB_STATEMENT_TIMEOUT_MS", default=15_000)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    _db_options.setdefault("connect_timeout", env.int("DJANGO_DB_CONNECT_TIMEOUT", default=5))
    # libpq's `options`: set for the whole session as it starts (options from DATABASE_URL kept).
    _timeout_option = f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}"
    _db_options["options"] = f"{_db_options.get('options', '')} {_timeout_option}".strip()

# --- Cache (Redis when REDIS_URL is set, else local memory) -------------------------------------

# REDIS_PASSWORD_FILE: the password read from a file (a Docker secret) and put into REDIS_URL and
# CELERY_BROKER_URL, which then carry none.
REDIS_PASSWORD_FROM_FILE = _secret_file("REDIS_PASSWORD")
REDIS_URL = _with_password(
    "REDIS_URL", env.str("REDIS_URL", default=""), REDIS_PASSWORD_FROM_FILE, "REDIS_PASSWORD_FILE"
)
if REDIS_URL:
    CACHES = {
        "default": {
            # django-redis: one client per process, reused (hiredis parses replies when
            # installed); apps/core/cache.py counts with its redis-py client.
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "web",
            # Short socket timeouts: a dead Redis must fail fast, not hang a request.
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Static and media files -------------------------------------------------------------------

STATIC_URL = env.str("DJANGO_STATIC_URL", default="/static/")
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
MEDIA_URL = env.str("DJANGO_MEDIA_URL", default="/media/")
MEDIA_ROOT = Path(env.str("DJANGO_MEDIA_ROOT", default=str(BASE_DIR / "media")))
# Hashed static names (base.3f2a9c1b7d4e.css) let nginx cache them for a year. The manifest
# exists only after collectstatic (the image build); with DEBUG on Django serves plain names
# anyway, and tests, which never run collectstatic, use the plain storage.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if TESTING
        else "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"
    },
}

# Export downloads: behind nginx, answer with X-Accel-Redirect to an internal location that
# aliases MEDIA_ROOT, so nginx streams the file; otherwise Django streams it.
USE_X_ACCEL_REDIRECT = env.bool("DJANGO_USE_X_ACCEL_REDIRECT", default=False)
X_ACCEL_PREFIX = env.str("DJANGO_X_ACCEL_PREFIX", default="/_protected/media/")

# --- Security and proxy -----------------------------------------------------------------------

# Number of reverse proxies in front of Django (nginx = 1). Used by DRF to find the client
# address for throttling, and by default turns on trust in X-Forwarded-Proto.
NUM_PROXIES = env.int("DJANGO_NUM_PROXIES", default=0)
# Safe only because the proxy overwrites X-Forwarded-Proto on every request.
if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=NUM_PROXIES > 0):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Browsers honour HSTS only over HTTPS, and Django sends it only on secure requests.
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- CORS: browser front ends on other origins (django-cors-headers) --------------------------

# Origins (scheme://host[:port], as a browser sends them) whose pages may call the API; none by
# default. Their preflights are answered and /api/ answers carry Access-Control-Allow-Origin;
# any other origin gets no CORS header, so browsers keep the answer from its page.
CORS_ALLOWED_ORIGINS = env.list("DJANGO_CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/api/"
# Tokens travel in the Authorization header: no cookies across origins.
CORS_ALLOW_CREDENTIALS = False
# Answer headers a page may read, beyond the CORS-safelisted ones.
CORS_EXPOSE_HEADERS = ["Content-Disposition", "Location", "Retry-After", "X-Request-ID"]


def _origin_problem(origin: str) -> str | None:
    """Why ``origin`` is not an origin a browser sends (None if it is one)."""
    if any(character.isspace() for character in origin):
        return "it has a space in it"
    parts, problem = _http_url(origin)
    if parts is None:
        return problem
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return "an origin is only scheme://host[:port], without path, / or query"
    if origin != origin.lower():
        return "browsers send origins in lower case"
    return None


_CORS_ORIGIN_PROBLEMS = {o: p for o in CORS_ALLOWED_ORIGINS if (p := _origin_problem(o))}

# --- Django REST framework --------------------------------------------------------------------

REST_FRAMEWORK = {
    # Token first: unauthenticated requests then get 401 with WWW-Authenticate, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_RENDERER_CLASSES": [
        "apps.core.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # JSON only: the schema then lists one request media type (clients generated from it work),
    # and other bodies answer 415. Bodies over DATA_UPLOAD_MAX_MEMORY_SIZE answer 413.
    "DEFAULT_PARSER_CLASSES": ["apps.core.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_FILTER_BACKENDS": ["apps.core.filters.FilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": [
        "apps.core.throttles.AnonRateThrottle",
        "apps.core.throttles.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": _rate("DJANGO_THROTTLE_ANON", "100/min"),
        "user": _rate("DJANGO_THROTTLE_USER", "1000/min"),
        "login": _rate("DJANGO_THROTTLE_LOGIN", "10/min"),
    },
    "NUM_PROXIES": NUM_PROXIES or None,
    "EXCEPTION_HANDLER": "apps.core.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Django REST Stack API",
    "DESCRIPTION": (
        "Sample service: posts, asynchronous exports and health checks. Every error answers "
        'with `{"error": {"status", "code", "detail", "fields"?, "request_id"}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and Redoc assets come from drf-spectacular-sidecar: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation documents its error answers too (apps/core/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.core.schema.add_error_responses",
        "apps.core.schema.close_request_bodies",
    ],
}

# --- API tokens and logins (apps/accounts) ------------------------------------------------------

# API tokens (django-rest-knox): only a SHA-512 digest is stored, so the database and its
# backups hold no usable token; every request reads the token from the database, so a revoked
# token (logout, password change, deactivation, deletion) fails from the commit on.
# DJANGO_TOKEN_TTL_HOURS: a token's lifetime (0: never expires). DJANGO_TOKENS_PER_USER: a new
# login beyond this many live tokens of one user deletes that user's oldest tokens.
TOKEN_TTL_HOURS = env.int("DJANGO_TOKEN_TTL_HOURS", default=0)
TOKENS_PER_USER = env.int("DJANGO_TOKENS_PER_USER", default=10)
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=TOKEN_TTL_HOURS) if TOKEN_TTL_HOURS > 0 else None,
    "AUTO_REFRESH": False,
    "AUTH_HEADER_PREFIX": "Token",
}
# Per-username lockout for the token endpoint and /admin/login/: a username gets
# DJANGO_LOGIN_LOCKOUT_ATTEMPTS password checks per window of DJANGO_LOGIN_LOCKOUT_SECONDS,
# which opens at the first attempt (a cool-off: never longer). A successful login closes it.
# Counted in Redis; if Redis refuses, logins are refused (503) rather than let through unlimited.
LOGIN_LOCKOUT_ATTEMPTS = env.int("DJANGO_LOGIN_LOCKOUT_ATTEMPTS", default=5)
LOGIN_LOCKOUT_SECONDS = env.int("DJANGO_LOGIN_LOCKOUT_SECONDS", default=900)

# Unfiltered lists of a table with more rows than this report PostgreSQL's row estimate as
# `count` instead of running COUNT(*) on every page (0: always exact).
PAGINATION_ESTIMATE_ABOVE = env.int("DJANGO_PAGINATION_ESTIMATE_ABOVE", default=10_000)
# Each process keeps an estimate this many seconds (0: ask PostgreSQL on every page).
PAGINATION_ESTIMATE_CACHE_SECONDS = env.int("DJANGO_PAGINATION_ESTIMATE_CACHE_SECONDS", default=10)

# ?search= on the posts list: every term is one more pattern match (ILIKE '%term%') on the title
# and the body (up to 10,000 characters) of every row, so terms are capped in number and length
# (more is a 400 naming the limit). 5 covers what people type (a few words; a quoted phrase is
# one term) and holds a search to at most 5 matches per field and row; 64 characters is longer
# than any word or short phrase, and a match costs more the longer its pattern.
SEARCH_MAX_TERMS = env.int("DJANGO_SEARCH_MAX_TERMS", default=5)
SEARCH_MAX_TERM_LENGTH = env.int("DJANGO_SEARCH_MAX_TERM_LENGTH", default=64)

# Bench-only bare Django view at /api/bench/posts/ (prices DRF's overhead). Off in production.
BENCH_VIEWS = env.bool("DJANGO_BENCH_VIEWS", default=False)
# Test-only views that fail on purpose (apps/core/views.py): /api/test/error/ raises, and
# POST /api/test/task-error/ queues a task that raises. They prove that errors reach Sentry and
# the admins' mailbox (tests/e2e/test_error_reporting.py). Off in production.
ERROR_TEST_VIEWS = env.bool("DJANGO_ERROR_TEST_VIEWS", default=False)

# --- Metrics (Prometheus; docs/observability.md, "Metrics and alerts") ------------------------

# Request and task metrics (apps/core/metrics.py), served on DJANGO_METRICS_PORT inside the
# stack's networks (gunicorn's second listener; the worker's main process), never through nginx.
# Off (0): no middleware, no listener, nothing imported (make bench compares both).
METRICS_ENABLED = env.bool("DJANGO_METRICS", default=True)
METRICS_PORT = env.int("DJANGO_METRICS_PORT", default=8001)
if METRICS_ENABLED:
    # First: it times everything below it, and a scrape skips host checks and the request log.
    MIDDLEWARE.insert(0, "apps.core.middleware.MetricsMiddleware")

# --- Exports ----------------------------------------------------------------------------------

EXPORT_TTL_DAYS = env.int("EXPORT_TTL_DAYS", default=7)
# An export still "queued" after this long (its message was lost) is sent again.
EXPORT_STUCK_MINUTES = env.int("EXPORT_STUCK_MINUTES", default=15)
# A running export touches its heartbeat this often; one whose heartbeat is older than the
# timeout lost its worker (SIGKILL, OOM, host crash) and is re-queued by the sweep, or failed
# after EXPORT_MAX_ATTEMPTS runs. Recovery takes about timeout + sweep interval, whatever
# the broker's visibility timeout (docs/reliability.md).
EXPORT_HEARTBEAT_SECONDS = env.int("EXPORT_HEARTBEAT_SECONDS", default=5)
EXPORT_HEARTBEAT_TIMEOUT_SECONDS = env.int("EXPORT_HEARTBEAT_TIMEOUT_SECONDS", default=30)
EXPORT_MAX_ATTEMPTS = env.int("EXPORT_MAX_ATTEMPTS", default=3)
# Hard time limit of one export run (seconds); the soft limit (clean failure) is 30 s earlier.
EXPORT_TASK_TIME_LIMIT = env.int("EXPORT_TASK_TIME_LIMIT", default=300)
EXPORT_SWEEP_INTERVAL_SECONDS = env.int("EXPORT_SWEEP_INTERVAL_SECONDS", default=10)
EXPORT_PURGE_INTERVAL_SECONDS = env.int("EXPORT_PURGE_INTERVAL_SECONDS", default=3600)
# Quotas (docs/reliability.md, "Threats and limits"); 0 turns a cap off. Per user: exports
# queued or running at once, and exports asked for in any 24 hours (both 429). All users: exports
# queued or running at once, which bounds the broker's backlog in Redis (503).
EXPORT_MAX_ACTIVE_PER_USER = env.int("EXPORT_MAX_ACTIVE_PER_USER", default=5)
EXPORT_MAX_PER_USER_PER_DAY = env.int("EXPORT_MAX_PER_USER_PER_DAY", default=100)
EXPORT_MAX_ACTIVE_TOTAL = env.int("EXPORT_MAX_ACTIVE_TOTAL", default=1000)
# Free space the media volume keeps (it shares a disk with PostgreSQL, Redis and backups): an
# export is refused (507), and a running one stops, below the larger of the two.
EXPORT_MIN_FREE_BYTES = env.int("EXPORT_MIN_FREE_BYTES", default=1024**3)
EXPORT_MIN_FREE_PERCENT = env.float("EXPORT_MIN_FREE_PERCENT", default=5.0)

# --- Celery -----------------------------------------------------------------------------------

CELERY_BROKER_URL = (
    _with_password(
        "CELERY_BROKER_URL",
        env.str("CELERY_BROKER_URL", default=""),
        REDIS_PASSWORD_FROM_FILE,
        "REDIS_PASSWORD_FILE",
    )
    or REDIS_URL
    or "memory://"
)
# No broker configured: run tasks in-process, so the app works with nothing else installed.
CELERY_TASK_ALWAYS_EAGER = env.bool(
    "CELERY_TASK_ALWAYS_EAGER", default=CELERY_BROKER_URL == "memory://"
)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = EXPORT_TASK_TIME_LIMIT
CELERY_TASK_SOFT_TIME_LIMIT = max(EXPORT_TASK_TIME_LIMIT - 30, 1)
# With acks_late, Redis redelivers an unacknowledged task after the visibility timeout: it must
# exceed the longest task time limit, or a slow task is delivered twice; the larger it is, the
# later a task whose worker died is retried.
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=600)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = 2
# Publishing retries briefly: with the broker down the API answers 503 quickly, not hangs.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # keep Django's LOGGING (JSON lines with task id)
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE_FILENAME = env.str(
    "CELERY_BEAT_SCHEDULE_FILENAME",
    default="/tmp/celerybeat-schedule",  # noqa: S108
)
# Beat takes a Redis lock before sending anything: a second beat stands by (config/beat.py).
CELERY_BEAT_SCHEDULER = "config.beat:SingleBeatScheduler"
CELERY_BEAT_SCHEDULE = {
    "purge-expired-exports": {
        "task": "apps.exports.tasks.purge_expired_exports",
        "schedule": timedelta(seconds=EXPORT_PURGE_INTERVAL_SECONDS),
        "options": {"expires": EXPORT_PURGE_INTERVAL_SECONDS},
    },
    "sweep-stuck-exports": {
        "task": "apps.exports.tasks.sweep_stuck_exports",
        "schedule": timedelta(seconds=EXPORT_SWEEP_INTERVAL_SECONDS),
        "options": {"expires": EXPORT_SWEEP_INTERVAL_SECONDS},
    },
}

# --- Logging (stdout; JSON lines in production, readable in development) -----------------------

LOG_LEVEL = env.str("DJANGO_LOG_LEVEL", default="INFO").upper()
# The request log (apps.core.middleware): "all" logs every request; "errors" only responses of
# 400 and up and slow requests (production: nginx's access log already has every request, with
# its request id and timing). A request slower than DJANGO_REQUEST_LOG_SLOW_MS is a WARNING.
REQUEST_LOG = env.str("DJANGO_REQUEST_LOG", default="all").strip().lower()
REQUEST_LOG_SLOW_MS = env.int("DJANGO_REQUEST_LOG_SLOW_MS", default=1000)
LOG_FORMAT = env.str("DJANGO_LOG_FORMAT", default="console" if DEBUG else "json").lower()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "apps.core.logging.ContextFilter"}},
    "formatters": {
        "json": {"()": "apps.core.logging.JsonFormatter"},
        "console": {
            "format": "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s",
        },
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "filters": ["context"],
            "formatter": "json" if LOG_FORMAT == "json" else "console",
        },
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # Our request log (apps.core.middleware) replaces Django's per-request 4xx warnings.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
    },
}

# --- Error reporting: Sentry (or GlitchTip) when SENTRY_DSN is set, and mail to ADMINS ---------

# Problems found while reading these settings; the guard below refuses to start on any.
_ERROR_REPORTING_PROBLEMS: list[str] = []


def _fraction(name: str, default: float) -> float:
    """A sample rate between 0 and 1 (a problem is recorded, not raised, on anything else)."""
    raw = env.str(name, default=str(default)).strip()
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        _ERROR_REPORTING_PROBLEMS.append(
            f"{name} is {raw!r}; set it to a number from 0 to 1, e.g. {name}={default}"
        )
    return value


def _dsn_problem(dsn: str) -> str | None:
    """Why ``dsn`` is not a Sentry DSN (https://PUBLIC_KEY@HOST/PROJECT_ID), None if it is."""
    parts, problem = _http_url(dsn)
    if parts is None:
        return problem
    if not parts.username:
        return "it has no public key (the part before @)"
    if not parts.path.rstrip("/").rsplit("/", 1)[-1].isdigit():
        return "it does not end with a project id (a number)"
    return None


# The DSN the project's settings page shows (Sentry: Client Keys; GlitchTip: the DSN). Unset:
# the SDK is not even initialised. SENTRY_DSN_FILE: read from a file (a Docker secret,
# docs/swarm.md).
SENTRY_DSN = _secret("SENTRY_DSN").strip()
SENTRY_ENVIRONMENT = env.str("SENTRY_ENVIRONMENT", default="production").strip() or "production"
# The deployed image tag (compose sets DRS_RELEASE from DRS_TAG): which deploy an error came from.
SENTRY_RELEASE = env.str("DRS_RELEASE", default="").strip() or None
# Share of errors sent (1 = all), and of requests and tasks traced for performance (0 = off).
SENTRY_SAMPLE_RATE = _fraction("SENTRY_SAMPLE_RATE", 1.0)
SENTRY_TRACES_SAMPLE_RATE = _fraction("SENTRY_TRACES_SAMPLE_RATE", 0.0)
if SENTRY_DSN and (_dsn_error := _dsn_problem(SENTRY_DSN)):
    _ERROR_REPORTING_PROBLEMS.append(
        f"SENTRY_DSN is not a DSN: {_dsn_error}; copy it from the project's settings, e.g. "
        "SENTRY_DSN=https://PUBLIC_KEY@sentry.example.com/1 (or leave it empty: no Sentry)"
    )

# Who gets a mail for every server error (500) and what sends it. DJANGO_ADMINS: comma-separated
# addresses, each optionally with a name: "Ops <ops@example.com>, dev@example.com". Mail goes
# through EMAIL_URL: smtp://user:password@host:25 (STARTTLS: smtp+tls://; SSL: smtp+ssl://); without
# it production sends none, development prints mail on the console. EMAIL_URL_FILE: read from a
# file (a Docker secret, docs/swarm.md).
_admins_raw = env.str("DJANGO_ADMINS", default="").strip()
ADMINS = [(name, address) for name, address in getaddresses([_admins_raw]) if name or address]
for _name, _address in ADMINS:
    if "@" not in _address or any(character.isspace() for character in _address):
        _ERROR_REPORTING_PROBLEMS.append(
            f"DJANGO_ADMINS has {_address or _name!r}, which is not an e-mail address; set it to "
            'comma-separated addresses, e.g. DJANGO_ADMINS="Ops <ops@example.com>, dev@example.com"'
        )
_email_url = _secret("EMAIL_URL").strip() or ("consolemail://" if DEBUG else "dummymail://")
try:
    _email = env.email_url_config(_email_url)
except (ImproperlyConfigured, ValueError) as exc:
    _email = env.email_url_config("dummymail://")
    _ERROR_REPORTING_PROBLEMS.append(
        f"EMAIL_URL is not a mail server URL ({exc}); set it like "
        "EMAIL_URL=smtp+tls://user:password@smtp.example.com:587 (or leave it empty: no mail)"
    )
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST") or ""
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _email.get("EMAIL_USE_SSL", False)
# Error mail is sent inside the failing request: a mail server that hangs must not hang it long.
EMAIL_TIMEOUT = env.int("DJANGO_EMAIL_TIMEOUT", default=10)
SERVER_EMAIL = env.str("DJANGO_SERVER_EMAIL", default="root@localhost")  # sender of error mail
DEFAULT_FROM_EMAIL = env.str("DJANGO_DEFAULT_FROM_EMAIL", default="webmaster@localhost")

# Error mail through Django's AdminEmailHandler, besides the JSON log lines, when DEBUG is off:
# Django's ERROR lines with a traceback (an unhandled exception: a 500), with the request id.
# Not the 503s answered while the database is away (an outage would send a mail per request).
# It sends nothing while ADMINS is empty.
LOGGING["filters"]["require_debug_false"] = {"()": "django.utils.log.RequireDebugFalse"}
LOGGING["filters"]["unhandled_errors"] = {"()": "apps.core.logging.UnhandledErrorFilter"}
LOGGING["formatters"]["mail"] = {"format": "%(message)s\nRequest id: %(request_id)s"}
LOGGING["handlers"]["mail_admins"] = {
    "class": "django.utils.log.AdminEmailHandler",
    "level": "ERROR",
    "filters": ["require_debug_false", "unhandled_errors", "context"],
    "formatter": "mail",
}
# Replaces the handlers of Django's default logging on "django" (its own mail_admins, and a
# console handler for debug only); the lines still propagate to the stdout handler.
LOGGING["loggers"]["django"] = {"handlers": ["mail_admins"], "level": "INFO"}

# --- Production guard -------------------------------------------------------------------------


if REQUEST_LOG not in {"all", "errors"}:
    _refuse(
        f"DJANGO_REQUEST_LOG is {REQUEST_LOG!r}; set it to all (every request) or errors "
        "(responses of 400 and up, and slow requests)"
    )

if DB_STATEMENT_TIMEOUT_MS < 0:
    _refuse(
        f"DJANGO_DB_STATEMENT_TIMEOUT_MS is {DB_STATEMENT_TIMEOUT_MS}; set it to a number of "
        "milliseconds (0 = no limit), e.g. DJANGO_DB_STATEMENT_TIMEOUT_MS=15000"
    )
for _name, _value, _example in [
    ("DJANGO_SEARCH_MAX_TERMS", SEARCH_MAX_TERMS, 5),
    ("DJANGO_SEARCH_MAX_TERM_LENGTH", SEARCH_MAX_TERM_LENGTH, 64),
]:
    if _value < 1:
        _refuse(f"{_name} is {_value}; set it to 1 or more, e.g. {_name}={_example}")

for _problem in _ERROR_REPORTING_PROBLEMS:
    _refuse(_problem)

for _origin, _problem in _CORS_ORIGIN_PROBLEMS.items():
    _refuse(
        f"DJANGO_CORS_ALLOWED_ORIGINS has {_origin!r}: {_problem}; set it to comma-separated "
        "origins, e.g. DJANGO_CORS_ALLOWED_ORIGINS=https://app.example.com,http://localhost:3000"
    )

if not DEBUG and not TESTING:
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure"):
        _refuse(
            "DJANGO_SECRET_KEY is missing or weak; set it to 50+ random characters, e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(64))' "
            "(or set DJANGO_DEBUG=1 for development)"
        )
    if not ALLOWED_HOSTS:
        _refuse(
            "DJANGO_ALLOWED_HOSTS is empty; set it to the comma-separated host names this site "
            "answers to, e.g. DJANGO_ALLOWED_HOSTS=example.com,www.example.com"
        )
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        _refuse(
            "DATABASE_URL is not set (SQLite is for development and tests only); set it to "
            "a PostgreSQL URL, e.g. DATABASE_URL=postgres://user:password@db:5432/app"
        )

# --- Sentry: initialised last, once every setting passed the guard -----------------------------

if SENTRY_DSN:
    from apps.core.sentry import sentry_init

    sentry_init(
        dsn=SENTRY_DSN,
        environment=SENTRY_ENVIRONMENT,
        release=SENTRY_RELEASE,
        sample_rate=SENTRY_SAMPLE_RATE,
        traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE,
    )
