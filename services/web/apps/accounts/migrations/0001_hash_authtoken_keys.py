"""Carry DRF authtoken keys (stored in plain text) over to knox rows (a SHA-512 digest), then
empty the plain-text table: every client keeps its token, and no usable token stays in the
database or in backups made from now on.

The emptied table stays (expand/contract): ``make rollback`` to a release from before knox
finds the table it expects; its clients log in again there. A later release drops it.

A knox row finds a token by its first 15 characters and checks the digest of the whole token,
so an old 40-character key authenticates as it did. Carried-over tokens get the configured
lifetime from the migration on (``DJANGO_TOKEN_TTL_HOURS``; 0: they never expire, as before).
Not reversible into plain text: migrating back leaves the knox rows as they are.
"""

from django.conf import settings
from django.db import migrations
from django.utils import timezone
from knox.crypto import hash_token
from knox.settings import CONSTANTS, knox_settings

OLD_TABLE = "authtoken_token"


def hash_authtoken_keys(apps, schema_editor):
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return  # a database made after rest_framework.authtoken left INSTALLED_APPS
    AuthToken = apps.get_model("knox", "AuthToken")
    ttl = knox_settings.TOKEN_TTL
    expiry = timezone.now() + ttl if ttl else None
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id FROM {OLD_TABLE}")  # noqa: S608 (constant name)
        rows = cursor.fetchall()
    AuthToken.objects.bulk_create(
        AuthToken(
            digest=hash_token(key),
            token_key=key[: CONSTANTS.TOKEN_KEY_LENGTH],
            user_id=user_id,
            expiry=expiry,
        )
        for key, user_id in rows
    )
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {OLD_TABLE}")  # noqa: S608 (constant name)


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(hash_authtoken_keys, migrations.RunPython.noop)]
