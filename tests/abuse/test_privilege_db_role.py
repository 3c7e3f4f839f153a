"""Least privilege, database: the app connects as an ordinary role that owns its database, not
as a superuser, so SQL it can be made to run (an injection) cannot become a shell in the
database container (COPY ... TO PROGRAM), read server files or raise its own rights
(services/postgres/README.md, "Roles"; docs/reliability.md, "Threats and limits")."""

import json

from abuselib import record_figures

# What a superuser could do and the app's role must not; each must fail with "permission denied".
ATTEMPTS = {
    "copy_to_program": "COPY (SELECT 1) TO PROGRAM 'id'",
    "read_server_file": "SELECT pg_read_file('/etc/passwd')",
    "become_superuser": "ALTER ROLE CURRENT_USER SUPERUSER",
    "create_role": "CREATE ROLE drs_abuse_probe SUPERUSER LOGIN",
}

PROBE = """
import json
from django.db import connection, transaction
out = {}
with connection.cursor() as c:
    c.execute(
        "SELECT current_user, rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"
    )
    out["role"] = c.fetchone()
    c.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
    out["database_owner"] = c.fetchone()[0]
    c.execute(
        "SELECT count(*) FROM pg_tables"
        " WHERE schemaname = 'public' AND tableowner <> current_user"
    )
    out["tables_not_owned"] = c.fetchone()[0]
for name, sql in ATTEMPTS.items():
    try:
        with transaction.atomic(), connection.cursor() as c:
            c.execute(sql)
        out[name] = "RAN"
    except Exception as exc:
        out[name] = str(exc).splitlines()[0]
print("RESULT", json.dumps(out))
"""


def test_app_role_is_no_superuser_and_cannot_reach_the_shell(stack, request):
    out = stack.manage(f"ATTEMPTS = {ATTEMPTS!r}\n{PROBE}")
    result = json.loads(out.split("RESULT ", 1)[1])
    user, superuser, createdb = result["role"]
    refused = {name: result[name] for name in ATTEMPTS if "permission denied" in result[name]}
    record_figures(
        request,
        "app database role",
        role=user,
        superuser=superuser,
        attempts=len(ATTEMPTS),
        refused=len(refused),
    )
    assert superuser is False, f"the app connects as {user}, a superuser"
    assert createdb is True  # backups verify into a scratch database; Django's tests need it
    assert result["database_owner"] == user
    assert result["tables_not_owned"] == 0
    assert refused == {name: result[name] for name in ATTEMPTS}, result
