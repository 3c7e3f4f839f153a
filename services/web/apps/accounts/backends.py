"""Django's ModelBackend behind the per-username lockout (apps/accounts/lockout.py).

Every password login goes through ``django.contrib.auth.authenticate``: the token endpoint
(``LoginSerializer``) and ``/admin/login/``. ``LoginLocked`` / ``LoginUnavailable`` are raised
out of ``authenticate`` on purpose (not ``PermissionDenied``, which Django turns into a plain
failed login) so the API answers 429 / 503 and the admin form says why it refuses.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend

from apps.accounts.lockout import login_attempt_count, login_attempts_clear


class LockoutModelBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        login_attempt_count(str(username))
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None:
            login_attempts_clear(str(username))
        return user
