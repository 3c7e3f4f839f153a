"""Drop cached token lookups (apps.accounts.authentication) when what they say changes."""

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from rest_framework.authtoken.models import Token

from apps.accounts.authentication import forget_token


@receiver(post_delete, sender=Token)
def _token_deleted(sender, instance, **kwargs) -> None:
    forget_token(instance.key)


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
@receiver(post_delete, sender=settings.AUTH_USER_MODEL)
def _user_changed(sender, instance, **kwargs) -> None:
    for key in Token.objects.filter(user_id=instance.pk).values_list("key", flat=True):
        forget_token(key)
