"""The settings module read in fresh processes, as a server would start: defaults with nothing
set, services with URLs set, and the production guard."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

WEB_DIR = Path(__file__).resolve().parent.parent
PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
    "DJANGO_ALLOWED_HOSTS": "example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://example.com",
    "DATABASE_URL": "postgres://u:p@localhost:5432/db",
    "REDIS_URL": "redis://localhost:6379/0",
    "DJANGO_NUM_PROXIES": "1",
    "DJANGO_SECURE_SSL_REDIRECT": "1",
    "DJANGO_HSTS_SECONDS": "31536000",
}
PRINT_SETTINGS = (
    "import django; django.setup(); from django.conf import settings as s; "
    "from config.celery import app; "
    "print(s.DATABASES['default']['ENGINE'], s.CACHES['default']['BACKEND'], "
    "app.conf.task_always_eager, app.conf.broker_url, s.DEBUG)"
)


def run(code_or_args, env):
    """Run Python in services/web with only ``env`` (plus PATH) in the environment."""
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    clean_env = {"PATH": os.environ.get("PATH", ""), "DJANGO_SETTINGS_MODULE": "config.settings"}
    return subprocess.run(  # noqa: S603  (our own interpreter, fixed arguments)
        [sys.executable, *args],
        cwd=WEB_DIR,
        env={**clean_env, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_defaults_need_nothing_installed():
    result = run(PRINT_SETTINGS, {"DJANGO_DEBUG": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "django.core.cache.backends.locmem.LocMemCache",
        "True",
        "memory://",
        "True",
    ]


def test_urls_switch_to_postgres_redis_and_a_real_broker():
    result = run(PRINT_SETTINGS, PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "django_redis.cache.RedisCache",
        "False",
        "redis://localhost:6379/0",
        "False",
    ]


def test_celery_broker_url_overrides_redis_url():
    env = {**PRODUCTION_ENV, "CELERY_BROKER_URL": "redis://broker:6379/1"}
    assert "redis://broker:6379/1" in run(PRINT_SETTINGS, env).stdout


PRINT_DB_OPTIONS = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.DATABASES['default']['OPTIONS']['options'])"
)


@pytest.mark.parametrize(
    ("change", "options"),
    [
        ({}, "-c statement_timeout=15000"),
        ({"DJANGO_DB_STATEMENT_TIMEOUT_MS": "0"}, "-c statement_timeout=0"),
        ({"DJANGO_DB_STATEMENT_TIMEOUT_MS": "2500"}, "-c statement_timeout=2500"),
        # Options already in DATABASE_URL are kept.
        (
            {"DATABASE_URL": "postgres://u:p@localhost:5432/db?options=-c%20search_path%3Dapp"},
            "-c search_path=app -c statement_timeout=15000",
        ),
    ],
)
def test_statement_timeout_is_a_connection_option(change, options):
    result = run(PRINT_DB_OPTIONS, {**PRODUCTION_ENV, **change})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == options


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "too-short"}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "django-insecure-" + "a1b2c3d4e5" * 6}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_ALLOWED_HOSTS": ""}, "DJANGO_ALLOWED_HOSTS"),
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"DATABASE_URL": "sqlite:////tmp/prod.sqlite3"}, "DATABASE_URL"),
        ({"DJANGO_REQUEST_LOG": "loud"}, "DJANGO_REQUEST_LOG"),
        ({"DJANGO_DB_STATEMENT_TIMEOUT_MS": "-1"}, "DJANGO_DB_STATEMENT_TIMEOUT_MS"),
        ({"DJANGO_SEARCH_MAX_TERMS": "0"}, "DJANGO_SEARCH_MAX_TERMS"),
        ({"DJANGO_SEARCH_MAX_TERM_LENGTH": "0"}, "DJANGO_SEARCH_MAX_TERM_LENGTH"),
    ],
)
def test_production_guard_stops_start_up_with_one_line(change, variable):
    env = {key: value for key, value in {**PRODUCTION_ENV, **change}.items() if value}
    result = run(PRINT_SETTINGS, env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable} ")
    assert "set" in lines[0]


def test_production_guard_also_applies_to_manage_py():
    result = run(["manage.py", "check"], {"DJANGO_DEBUG": "0"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if "DJANGO_SECRET_KEY" in line
    ]


# --- Secrets read from files (*_FILE: Docker secrets on a swarm, docs/swarm.md) ---------------

PRINT_SECRETS = (
    "import django, redis; django.setup(); from django.conf import settings as s; "
    "from config.celery import app; "
    "print(s.SECRET_KEY); print(s.DATABASES['default']['PASSWORD']); "
    "print(redis.Redis.from_url(s.REDIS_URL).connection_pool.connection_kwargs['password']); "
    "print(redis.Redis.from_url(app.conf.broker_url).connection_pool.connection_kwargs['password'])"
)


@pytest.fixture
def secret_files(tmp_path):
    """The three secrets as files (a trailing newline, as `echo` or an editor leaves one), and
    a production environment that names them instead of holding the values."""
    values = {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DATABASE_PASSWORD": "db pass/with:odd@chars" + secrets.token_hex(4),
        "REDIS_PASSWORD": "redis/pass:with@odd chars%" + secrets.token_hex(4),
    }
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DJANGO_SECRET_KEY"}
    env["DATABASE_URL"] = "postgres://u@localhost:5432/db"
    for name, value in values.items():
        path = tmp_path / name.lower()
        path.write_text(value + "\n", encoding="utf-8")
        env[f"{name}_FILE"] = str(path)
    return values, env


def test_secrets_are_read_from_their_files(secret_files):
    """The key, the database password and the Redis password (into the cache's URL and the
    broker's, quoted so that any character survives) come from the files, newline dropped."""
    values, env = secret_files
    result = run(PRINT_SECRETS, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        values["DJANGO_SECRET_KEY"],
        values["DATABASE_PASSWORD"],
        values["REDIS_PASSWORD"],
        values["REDIS_PASSWORD"],
    ]


@pytest.mark.parametrize("name", ["DJANGO_SECRET_KEY", "DATABASE_PASSWORD", "REDIS_PASSWORD"])
def test_a_missing_secret_file_stops_start_up_with_one_line(secret_files, tmp_path, name):
    _, env = secret_files
    missing = tmp_path / "not-there"
    result = run(PRINT_SETTINGS, {**env, f"{name}_FILE": str(missing)})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {name}_FILE is '{missing}'")
    assert "No such file" in lines[0]


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"DJANGO_SECRET_KEY": secrets.token_urlsafe(64)}, "DJANGO_SECRET_KEY"),
        ({"DATABASE_URL": "postgres://u:p@localhost:5432/db"}, "DATABASE_URL"),
        ({"REDIS_URL": "redis://:p@localhost:6379/0"}, "REDIS_URL"),
    ],
)
def test_a_secret_both_in_the_environment_and_in_a_file_is_refused(secret_files, change, variable):
    """Which one would win is not guessed: start-up stops, naming both."""
    _, env = secret_files
    result = run(PRINT_SETTINGS, {**env, **change})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable} ")
    assert "_FILE" in lines[0]
    assert "set only one of them" in lines[0]
