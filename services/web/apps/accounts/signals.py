"""A user's tokens are revoked when the password changes or the account is deactivated, however
the user is saved: the API, the admin (password form, "active" box), ``manage.py
changepassword``, ``set_password`` + ``save``. Deleting the user deletes its tokens (cascade).

The revocation runs in the saving transaction, so it takes effect when the save commits (knox
reads tokens from the database on every request; nothing caches them). Saves limited to other
fields (``update_fields``, e.g. ``last_login`` at each login) cost nothing; any other save one
primary-key read of the stored row.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models.signals import pre_save
from django.dispatch import receiver

from apps.accounts.services import token_revoke_all

_CREDENTIAL_FIELDS = {"password", "is_active"}


@receiver(pre_save, sender=settings.AUTH_USER_MODEL)
def _revoke_tokens_on_credential_change(sender, instance, raw, update_fields, **kwargs) -> None:
    if raw or instance.pk is None:
        return
    if update_fields is not None and not _CREDENTIAL_FIELDS & set(update_fields):
        return
    stored = get_user_model().objects.filter(pk=instance.pk).values("password", "is_active").first()
    if stored is None:
        return
    deactivated = stored["is_active"] and not instance.is_active
    if stored["password"] != instance.password or deactivated:
        token_revoke_all(user_id=instance.pk)
