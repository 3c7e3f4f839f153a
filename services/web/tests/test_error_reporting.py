"""Errors reach someone: Sentry only with SENTRY_DSN, mail to ADMINS through EMAIL_URL, and
malformed values stopping start-up with one line (settings read in fresh processes, as a server
starts). The delivery itself, to a Sentry and a mail server stand-in, is tested on the running
stack (tests/e2e/test_error_reporting.py)."""

import logging

import pytest
from django.core import mail

from apps.core.context import request_id_var, task_id_var
from apps.core.sentry import add_request_id, drop_redis_keys, drop_redis_keys_from_spans
from tests.test_settings import PRODUCTION_ENV, run

DSN = "https://public-key@sentry.example.com/42"
PRINT_SENTRY = (
    "import django; django.setup(); import sentry_sdk; "
    "print(sentry_sdk.is_initialized()); client = sentry_sdk.get_client(); "
    "options = client.options if sentry_sdk.is_initialized() else {}; "
    "print(*(options.get(k) for k in ('environment', 'release', 'send_default_pii', "
    "'sample_rate', 'traces_sample_rate', 'max_request_body_size', "
    "'include_local_variables')), sep='|'); "
    "print(*sorted(client.integrations if sentry_sdk.is_initialized() else []))"
)
PRINT_MAIL = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.EMAIL_BACKEND, s.EMAIL_HOST or '-', s.EMAIL_PORT, s.EMAIL_USE_TLS, s.EMAIL_USE_SSL, "
    "s.EMAIL_HOST_USER or '-', s.SERVER_EMAIL); print(s.ADMINS)"
)


def sentry(env: dict) -> list[str]:
    result = run(PRINT_SENTRY, env)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_without_a_dsn_sentry_is_not_initialised():
    assert sentry(PRODUCTION_ENV)[0] == "False"
    assert sentry({"DJANGO_DEBUG": "1"})[0] == "False"


def test_with_a_dsn_sentry_reports_the_release_without_personal_data_or_traces():
    initialised, options, integrations = sentry(
        {**PRODUCTION_ENV, "SENTRY_DSN": DSN, "DRS_RELEASE": "v2026.12.1"}
    )
    assert initialised == "True"
    assert options.split("|") == [
        "production",
        "v2026.12.1",
        "False",  # send_default_pii
        "1.0",
        "None",  # traces off: no transaction is even built
        "never",  # request bodies
        "False",  # frame locals
    ]
    assert {"django", "celery", "redis"} <= set(integrations.split())


def test_sentry_environment_and_sample_rates_come_from_the_environment():
    env = {
        **PRODUCTION_ENV,
        "SENTRY_DSN": DSN,
        "SENTRY_ENVIRONMENT": "staging",
        "SENTRY_SAMPLE_RATE": "0.5",
        "SENTRY_TRACES_SAMPLE_RATE": "0.25",
    }
    environment, _, _, sample, traces, *_ = sentry(env)[1].split("|")
    assert (environment, sample, traces) == ("staging", "0.5", "0.25")


def test_events_are_tagged_with_the_request_and_task_id_they_happened_in():
    assert "request_id" not in add_request_id({}, {})["tags"]
    request_token = request_id_var.set("req-123")
    task_token = task_id_var.set("task-456")
    try:
        event = add_request_id({"tags": {"other": "kept"}}, {})
    finally:
        task_id_var.reset(task_token)
        request_id_var.reset(request_token)
    assert event["tags"] == {"other": "kept", "request_id": "req-123", "task_id": "task-456"}


def test_redis_breadcrumbs_and_spans_keep_the_command_not_the_key():
    """The anonymous throttle's Redis key holds the client's address: it must not leave."""
    key = "web:1:throttle_anon_203.0.113.7"
    crumb = drop_redis_keys(
        {
            "category": "redis",
            "message": f"EVALSHA '{key}' [Filtered]",
            "data": {"redis.command": "EVALSHA", "redis.key": key},
        },
        {},
    )
    assert crumb["message"] == "EVALSHA"
    assert crumb["data"] == {"redis.command": "EVALSHA"}
    other = {"category": "query", "message": "SELECT 1", "data": {"key": "kept"}}
    assert drop_redis_keys(dict(other), {}) == other
    event = drop_redis_keys_from_spans(
        {"spans": [{"op": "db.redis", "description": f"GET '{key}'", "data": {"db.key": key}}]},
        {},
    )
    assert event["spans"] == [{"op": "db.redis", "description": "GET", "data": {}}]


def test_mail_goes_nowhere_in_production_without_email_url_and_to_the_console_in_debug():
    result = run(PRINT_MAIL, PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0].split()[0] == "django.core.mail.backends.dummy.EmailBackend"
    assert result.stdout.split("\n")[1] == "[]"
    result = run(PRINT_MAIL, {"DJANGO_DEBUG": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "django.core.mail.backends.console.EmailBackend"


def test_email_url_and_admins_are_parsed():
    env = {
        **PRODUCTION_ENV,
        "EMAIL_URL": "smtp+tls://mailer:s3cret@smtp.example.com:587",
        "DJANGO_ADMINS": "Ops Team <ops@example.com>, dev@example.com",
        "DJANGO_SERVER_EMAIL": "errors@example.com",
    }
    result = run(PRINT_MAIL, env)
    assert result.returncode == 0, result.stderr
    first, admins = result.stdout.splitlines()
    assert first.split() == [
        "django.core.mail.backends.smtp.EmailBackend",
        "smtp.example.com",
        "587",
        "True",
        "False",
        "mailer",
        "errors@example.com",
    ]
    assert admins == "[('Ops Team', 'ops@example.com'), ('', 'dev@example.com')]"


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"SENTRY_DSN": "https://sentry.example.com/42"}, "SENTRY_DSN"),  # no key
        ({"SENTRY_DSN": "https://key@sentry.example.com/"}, "SENTRY_DSN"),  # no project
        ({"SENTRY_DSN": "sentry.example.com"}, "SENTRY_DSN"),
        ({"SENTRY_SAMPLE_RATE": "2"}, "SENTRY_SAMPLE_RATE"),
        ({"SENTRY_TRACES_SAMPLE_RATE": "ten percent"}, "SENTRY_TRACES_SAMPLE_RATE"),
        ({"EMAIL_URL": "smtpx://smtp.example.com"}, "EMAIL_URL"),
        ({"EMAIL_URL": "smtp://smtp.example.com:port"}, "EMAIL_URL"),
        ({"DJANGO_ADMINS": "ops at example.com"}, "DJANGO_ADMINS"),
    ],
)
def test_malformed_error_reporting_settings_stop_start_up_with_one_line(change, variable):
    result = run(PRINT_SENTRY, {**PRODUCTION_ENV, **change})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable} ")
    assert "set it" in lines[0] or "copy it" in lines[0]


# --- The test-only error views and the mail to ADMINS (in-process) -----------------------------


def test_error_test_views_are_not_found_unless_turned_on(client):
    assert client.get("/api/test/error/").status_code == 404
    assert client.post("/api/test/task-error/").status_code == 404


def test_server_error_mails_the_admins_with_its_request_id(client, settings):
    settings.ERROR_TEST_VIEWS = True
    settings.ADMINS = [("Ops", "ops@example.com")]
    client.raise_request_exception = False
    response = client.get("/api/test/error/", headers={"X-Request-ID": "mail-test-1234"})
    assert response.status_code == 500
    assert response.json()["error"]["request_id"] == "mail-test-1234"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com"]
    assert "Internal Server Error: /api/test/error/" in message.subject
    assert "Request id: mail-test-1234" in message.body
    assert "ErrorReportingTestError" in message.body  # the traceback


def test_no_admins_no_mail(client, settings):
    settings.ERROR_TEST_VIEWS = True
    settings.ADMINS = []
    client.raise_request_exception = False
    assert client.get("/api/test/error/").status_code == 500
    assert mail.outbox == []


def test_answered_server_errors_such_as_503_send_no_mail(settings):
    """Django logs every 5xx answer at ERROR; only a crash (a traceback) is mailed, so a database
    outage answered with 503s does not send a mail per request."""
    settings.ADMINS = [("Ops", "ops@example.com")]
    logger = logging.getLogger("django.request")
    logger.error("Service Unavailable: /api/posts/", extra={"status_code": 503})
    assert mail.outbox == []
    try:
        raise RuntimeError("crash")
    except RuntimeError:
        logger.exception("Internal Server Error: /api/posts/", extra={"status_code": 500})
    assert len(mail.outbox) == 1
